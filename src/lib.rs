//! # llm_from_scratch
//!
//! The library behind the chapter notebooks of *llm-from-scratch*: a GPT built from an empty
//! file, in Rust, on [`tch`] (libtorch). Each module is one idea of the course, introduced by
//! the chapter of the same name:
//!
//! | module        | chapter | idea                                                    |
//! |---------------|---------|---------------------------------------------------------|
//! | [`tokenizer`] | 1, 6    | text to integer ids and back (characters, words, BPE)    |
//! | [`data`]      | 1–2, 10 | download a corpus, split it, sample `(x, y)` batches; labelled and instruction data, padded |
//! | [`model`]     | 3–5, 7, 8, 10, 11 | the bigram model, self-attention, the GPT, the KV cache, GPT-2 in and out ([`model::hf`]), a classifier, LoRA, a Llama and its layers |
//! | [`train`]     | 3, 5    | the training loop, AdamW, schedules, history, checkpoints |
//! | [`plot`]      | 3, 5, 7 | loss curves, heatmaps, bar charts, inline or saved as PNG |
//! | [`generate`]  | 5, 7    | sampling (greedy, temperature, top-k, top-p), batches of samples, cached |
//! | [`precision`] | 9       | mixed precision: bfloat16 matmuls under autocast, float32 weights |
//! | [`finetune`]  | 10      | a vocabulary grown for new data; a classifier's accuracy, an instruction follower's response loss and endings |
//! | [`device`]    | all     | CPU or CUDA, and seeding; bfloat16 hardware               |
//! | [`interrupt`] | all     | ■ / Ctrl-C stops training and sampling, keeping the model |
//! | [`app`]       | CLI     | what only `llm` needs (feature `cli`): run folders ([`app::run`]), Wikipedia dumps ([`app::wiki`]) |
//! | [`report`]    | 5       | a run watched live in its cell (and in MLflow, when asked) |
//! | [`track`]     | any     | optional: the curves live in MLflow's UI (REST API)       |
//!
//! Every fallible call returns [`Result`] with an [`Error`] that says what went wrong and
//! where; nothing panics on user input.

#[cfg(feature = "cli")]
pub mod app;
pub mod data;
pub mod device;
pub mod finetune;
pub mod generate;
pub mod interrupt;
pub mod model;
pub mod plot;
pub mod precision;
pub mod report;
pub mod tokenizer;
pub mod track;
pub mod train;

mod error;
mod io;
pub use error::{Error, Result};

/// What a chapter notebook usually needs, in one `use llm_from_scratch::prelude::*;`.
///
/// The `model` module is not in it: every chapter names its model `model`, and a cell that
/// reads that variable after it was lost should say "cannot find value `model`", not
/// "expected value, found module `model`" (write `llm_from_scratch::model::...`).
pub mod prelude {
    pub use crate::data::{self, Split, TokenData};
    pub use crate::device::{self, seed};
    pub use crate::generate::{self, Sampling};
    pub use crate::interrupt;
    pub use crate::model::{Bigram, Gpt, GptConfig, LanguageModel};
    pub use crate::plot::{self, Figure};
    pub use crate::precision::Precision;
    pub use crate::report::LiveReport;
    pub use crate::tokenizer::{AnyTokenizer, CharTokenizer, Tokenizer, WordTokenizer};
    pub use crate::train::{self, Checkpoint, History, TrainConfig, TrainEvent, Trainer};
    pub use crate::{Error, Result};
    pub use tch::nn::OptimizerConfig;
    pub use tch::{self, nn, Device, Kind, Tensor};
}
