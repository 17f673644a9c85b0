//! The library's and the `llm` command's integration tests, in one test binary: each file
//! below was a binary of its own, and every test binary links libtorch and the whole library
//! again (about half of a fresh `cargo test` was spent building them). Tests of one binary
//! run on parallel threads, so whatever draws from libtorch's one global generator holds
//! [`common::rng_lock`]. Three stay apart because they change what the whole process shares:
//! `download.rs` (environment variables), `interrupt.rs` (the interrupt flag) and `mlflow.rs`
//! (run on its own by `make test`, once MLflow is installed).

#[path = "../common/mod.rs"]
mod common;
#[path = "../tiny_model/mod.rs"]
mod tiny_model;

mod bpe;
mod checkpoint;
mod cli;
mod cli_finetune;
mod cli_tokenizer;
mod cli_train;
mod data_and_bigram;
mod ddp;
mod finetune;
mod generate;
mod gpt;
mod hf;
mod layers;
mod llama;
mod precision;
mod tokenizer;
mod train;
mod train_vs_pytorch;
mod try_this;
mod wiki;
