//! The application layer: what only the `llm` command line needs (feature `cli`, on by
//! default; the chapters build the library without it). The teaching modules never import
//! it.
//!
//! - [`run`]: run folders (config, tokenizer, checkpoints, metrics, plots, the lock), the
//!   run settings as flags and config-file keys ([`run::RunSpec`]), planning a run;
//! - [`finetune`]: finetuning runs (`llm finetune classify|instruct`, chapter 10), their data
//!   and their measures;
//! - [`wiki`]: plain article text from a Wikipedia XML dump, streamed.

pub mod finetune;
pub mod run;
pub mod wiki;
