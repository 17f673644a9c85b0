//! Training: the loop of chapter 3, grown in chapter 5 into nanoGPT's.
//!
//! Chapter 3's loop is the five lines every PyTorch course writes — sample a batch, forward,
//! zero the gradients, backward, step — plus a periodic estimate of the train and validation
//! loss. Chapter 5 adds what training a GPT needs, one piece per module:
//!
//! - [`AdamW`] (`adamw`): the optimizer, written out on tensors, with weight decay on the
//!   matrices and embeddings only, and its state (step, moments) open for checkpoints;
//! - [`LrSchedule`] (`schedule`): linear warmup, then cosine decay to `min_lr`;
//! - [`clip_grad_norm`] (`clip`): gradient clipping by global norm;
//! - gradient accumulation ([`backward_accumulated`]): `grad_accum` micro-batches per
//!   optimizer step, for batches larger than memory allows;
//! - [`Trainer`]: the loop itself, resumable, and usable piece by piece across notebook cells;
//! - [`History`] (`history`): every loss estimate and log line, as plots, JSON or CSV;
//! - [`checkpoint`]: save a run and continue it exactly later.
//!
//! The trainer reports what happens as [`TrainEvent`]s to the observer each training call is
//! given (a closure), and knows none of them: the notebook's live report and MLflow
//! ([`crate::report`], [`crate::track`]), the command line's run folder ([`crate::app`]) each
//! take the events they want.
//!
//! Two rules keep a run fast and repeatable:
//!
//! - **No host synchronisation per step.** Losses and gradient norms stay on the device and
//!   are read back only when a line is logged or the losses are estimated, so the CPU never
//!   waits for a GPU in the middle of training.
//! - **Randomness is a function of `(seed, step)`.** Before optimizer step `s` the trainer
//!   reseeds libtorch's global generator from [`step_seed`]`(seed, s)` (batches and dropout
//!   masks draw from it), and before the estimate after `s` steps from [`eval_seed`]`(seed, s)`.
//!   So the random state of a run is just its seed and step count: a checkpoint stores those
//!   two numbers, and a resumed run draws exactly what an uninterrupted one would. (It also
//!   means an estimate never shifts the batches of the steps after it.)

mod adamw;
pub mod checkpoint;
mod clip;
mod config;
mod events;
mod history;
mod schedule;
mod seed;
mod trainer;

pub use adamw::{AdamW, AdamWConfig, ParamState};
pub use checkpoint::Checkpoint;
pub use clip::{clip_grad_norm, grad_norm};
pub use config::TrainConfig;
pub use events::{EarlyStop, Progress, Start, TrainEvent, PROGRESS_EVERY};
pub use history::{EvalPoint, History, LogPoint};
pub use schedule::{LrDecay, LrSchedule};
pub use seed::{eval_seed, step_seed};
pub use trainer::{backward_accumulated, estimate_loss, train, RunTimes, Trainer};
