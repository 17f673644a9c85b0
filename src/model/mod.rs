//! Language models: given a context of token ids, scores for the next token.
//!
//! Chapter 3's [`Bigram`] is the first; the [`Gpt`] of chapter 5 implements the same
//! [`LanguageModel`] trait ([`lm`]), so the training loop and the sampler work for both.
//! Chapter 4's lecture forms of self-attention live in [`lecture`] and its ladder (the block
//! built up piece by piece) in [`ladder`]; chapter 8's GPT-2 in and out of the Hugging Face
//! format in [`hf`]; a Llama-style model (RMSNorm, rotary positions, SwiGLU, grouped-query
//! attention) in [`llama`].
//!
//! The models are built from [`layers`], which import no model: the linear layer, the norm,
//! the MLP, positions, the embedding and head, attention, the KV cache and the block. Each
//! model's config converts itself into the layers' small configs.

mod bigram;
pub mod classifier;
pub mod config;
pub mod gpt;
pub mod hf;
pub mod ladder;
pub mod layers;
pub mod lecture;
pub mod llama;
pub mod lm;

/// Chapter 4's three forms of attention under one path: the lecture's [`Head`] and
/// [`MultiHeadAttention`], and nanoGPT's fused [`CausalSelfAttention`].
pub mod attention {
    pub use super::layers::attention::{AttentionConfig, CausalSelfAttention};
    pub use super::lecture::{Head, MultiHeadAttention};
}

pub use bigram::Bigram;
pub use classifier::{Classifier, ClassifierConfig, Tune};
pub use config::{AnyModel, ModelConfig};
pub use gpt::{Gpt, GptConfig};
pub use ladder::{lecture_ladder, Ladder, LadderConfig};
pub use layers::kv_cache;
pub use layers::{sinusoidal_positions, Activation, Block, CausalSelfAttention, KvCache, Linear, Position};
pub use lecture::{Head, MultiHeadAttention};
pub use llama::{Llama, LlamaConfig};
pub use lm::{cross_entropy, trainable_variables, LanguageModel};
