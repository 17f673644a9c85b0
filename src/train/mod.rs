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
mod history;
mod schedule;

pub use adamw::{AdamW, AdamWConfig, ParamState};
pub use checkpoint::Checkpoint;
pub use clip::{clip_grad_norm, grad_norm};
pub use history::{EvalPoint, History, LogPoint};
pub use schedule::{LrDecay, LrSchedule};

use crate::data::{Split, TokenData};
use crate::model::LanguageModel;
use crate::precision::Precision;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The knobs of a training run. The defaults are chapter 3's bigram run (constant learning
/// rate, no clipping, no accumulation); [`TrainConfig::cpu_small`] and
/// [`TrainConfig::shakespeare_char`] are nanoGPT's character-level Shakespeare runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Optimizer steps of the whole run (the schedule and the last estimate refer to it).
    pub steps: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Tokens of context per sequence.
    pub block_size: usize,
    /// Micro-batches per optimizer step: the gradient of `grad_accum × batch_size` sequences,
    /// with the memory of `batch_size`.
    pub grad_accum: usize,
    /// Peak learning rate (the constant one without warmup and decay).
    pub lr: f64,
    /// Steps of linear warmup from `lr / (warmup_steps + 1)` up to `lr`; 0 for none. Must
    /// be fewer than `steps`.
    pub warmup_steps: usize,
    /// After warmup: constant, or a cosine down to `min_lr` at the end of the run (so a
    /// shortened run still ends at `min_lr`), or at a step of its own (nanoGPT's
    /// `lr_decay_iters`).
    #[serde(alias = "lr_decay_steps")] // the name in checkpoints before LrDecay
    pub lr_decay: LrDecay,
    /// The learning rate at the end of the decay (nanoGPT: `lr / 10`).
    pub min_lr: f64,
    /// AdamW's decoupled weight decay, on 2-D tensors (matrices, embeddings) only.
    pub weight_decay: f64,
    /// AdamW's β1: how slowly the average gradient (momentum) moves.
    pub beta1: f64,
    /// AdamW's β2: how slowly the average squared gradient moves (0.99 for small batches).
    pub beta2: f64,
    /// Clip the global gradient norm to this value; `None` for no clipping.
    pub grad_clip: Option<f64>,
    /// Estimate the losses every this many steps (and after the last one).
    pub eval_interval: usize,
    /// Batches averaged per split per loss estimate.
    pub eval_iters: usize,
    /// Record (and report) the batch loss every this many steps; `None` for never.
    pub log_interval: Option<usize>,
    /// Seeds batches and dropout: the same seed repeats the run (on CPU, exactly).
    pub seed: u64,
    /// End the run early once this many loss estimates in a row bring no new best
    /// validation loss ([`Trainer::early_stop`]); `None` trains all `steps`.
    #[serde(default)]
    pub early_stop_patience: Option<usize>,
    /// The forward pass in float32, or its matmuls and attention in bfloat16 under autocast
    /// ([`crate::precision`]); the weights, gradients and optimizer state are float32 either
    /// way. A config saved before there was a choice trained in fp32.
    #[serde(default)]
    pub precision: Precision,
}

impl Default for TrainConfig {
    /// Chapter 3's bigram run: 3000 steps of 32 × 8 tokens at a constant lr of 1e-2, losses
    /// estimated every 300 steps over 200 batches. AdamW keeps PyTorch's defaults
    /// (β = 0.9, 0.999, weight decay 0.01, which is what `torch.optim.AdamW(params, lr)` in the
    /// lecture uses, and what tch's `nn::AdamW::default()` used before); the bigram's one
    /// tensor is an embedding, so it decays.
    fn default() -> Self {
        Self {
            steps: 3000,
            batch_size: 32,
            block_size: 8,
            grad_accum: 1,
            lr: 1e-2,
            warmup_steps: 0,
            lr_decay: LrDecay::None,
            min_lr: 1e-3,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            grad_clip: None,
            eval_interval: 300,
            eval_iters: 200,
            log_interval: None,
            seed: 1337,
            early_stop_patience: None,
            precision: Precision::Fp32,
        }
    }
}

impl TrainConfig {
    /// nanoGPT's `train_shakespeare_char` run scaled for a laptop CPU (its README's CPU
    /// command): 2000 steps of 12 × 64 tokens, lr 1e-3 warmed up over 100 steps and decayed
    /// to 1e-4 at the last step, β2 0.99, weight decay 0.1, gradients clipped at norm 1, losses
    /// every 250 steps over 20 batches (the CPU command's `--eval_iters=20`: 200, the GPU
    /// config's, would make evaluation over a third of the run), a log line every 10 steps.
    pub fn cpu_small() -> Self {
        Self {
            steps: 2000,
            batch_size: 12,
            block_size: 64,
            lr: 1e-3,
            warmup_steps: 100,
            lr_decay: LrDecay::Cosine,
            min_lr: 1e-4,
            weight_decay: 0.1,
            beta2: 0.99,
            grad_clip: Some(1.0),
            eval_interval: 250,
            eval_iters: 20,
            log_interval: Some(10),
            ..Self::default()
        }
    }

    /// nanoGPT's `train_shakespeare_char` run as it is on a GPU: 5000 steps of 64 × 256
    /// tokens (val loss ≈ 1.47 with `GptConfig::shakespeare_char()`), losses over 200 batches,
    /// otherwise as [`TrainConfig::cpu_small`].
    pub fn shakespeare_char() -> Self {
        Self { steps: 5000, batch_size: 64, block_size: 256, eval_iters: 200, ..Self::cpu_small() }
    }

    /// The run at the end of "Let's build GPT" (`gpt.py`): 5000 steps of 64 × 256 tokens at a
    /// constant learning rate of 3e-4, losses every 500 steps over 200 batches.
    pub fn lecture() -> Self {
        Self {
            steps: 5000,
            batch_size: 64,
            block_size: 256,
            lr: 3e-4,
            eval_interval: 500,
            eval_iters: 200,
            log_interval: Some(10),
            ..Self::default()
        }
    }

    /// Check every field. The message starts with the field's name and says what to change.
    pub fn validate(&self) -> Result<()> {
        self.validate_named(&|field| field.to_owned())
    }

    /// [`TrainConfig::validate`], each setting called what `name` makes of its field's name
    /// (the command line passes its flags': `warmup_steps` is `--warmup` there). The one
    /// place these rules live.
    pub fn validate_named(&self, name: &dyn Fn(&str) -> String) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        let positive = [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("block_size", self.block_size),
            ("grad_accum", self.grad_accum),
            ("eval_interval", self.eval_interval),
            ("eval_iters", self.eval_iters),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return bad(format!("{} must be at least 1", name(field)));
        }
        self.adamw().validate_named(name)?; // lr, betas, weight decay: the optimizer's rules
        let (lr, min_lr, steps, warmup) = (name("lr"), name("min_lr"), name("steps"), name("warmup_steps"));
        if self.early_stop_patience == Some(0) {
            return bad(format!(
                "{} must be at least 1 (estimates without a new best; None: never)",
                name("early_stop_patience")
            ));
        }
        if !(self.min_lr >= 0.0 && self.min_lr.is_finite()) {
            return bad(format!("{min_lr} must be 0 or a positive number, got {}", self.min_lr));
        }
        if self.warmup_steps >= self.steps && self.warmup_steps > 0 {
            return bad(format!(
                "{warmup} ({}) must be fewer than {steps} ({}): lower {warmup} (0 for none) or train longer",
                self.warmup_steps, self.steps
            ));
        }
        if self.lr_decay != LrDecay::None {
            if let LrDecay::CosineUntil(decay) = self.lr_decay {
                if decay <= self.warmup_steps {
                    return bad(format!(
                        "lr_decay (CosineUntil({decay})) must end after {warmup} ({}): the cosine \
                         runs from the end of warmup to that step (LrDecay::Cosine ends with the run)",
                        self.warmup_steps
                    ));
                }
            }
            if self.min_lr > self.lr {
                return bad(format!(
                    "{min_lr} ({}) must not exceed {lr} ({}): the decay goes down to {min_lr}",
                    self.min_lr, self.lr
                ));
            }
        }
        if let Some(clip) = self.grad_clip {
            if !(clip > 0.0 && clip.is_finite()) {
                return bad(format!(
                    "{} must be a positive norm (1.0 is usual), or None for no clipping; got {clip}",
                    name("grad_clip")
                ));
            }
        }
        if self.log_interval == Some(0) {
            return bad(format!("{} must be at least 1, or None for no log lines", name("log_interval")));
        }
        Ok(())
    }

    /// The learning rate schedule these fields describe.
    pub fn schedule(&self) -> LrSchedule {
        let decay_steps = match self.lr_decay {
            LrDecay::None => None,
            LrDecay::Cosine => Some(self.steps),
            LrDecay::CosineUntil(step) => Some(step),
        };
        LrSchedule { lr: self.lr, warmup_steps: self.warmup_steps, decay_steps, min_lr: self.min_lr }
    }

    /// The learning rate of optimizer step `step` (from 0).
    pub fn lr_at(&self, step: usize) -> f64 {
        self.schedule().lr_at(step)
    }

    /// The optimizer's settings (the learning rate is the schedule's peak).
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            weight_decay: self.weight_decay,
            ..AdamWConfig::default()
        }
    }

    /// Tokens each optimizer step trains on: `grad_accum × batch_size × block_size`.
    pub fn tokens_per_step(&self) -> usize {
        self.grad_accum * self.batch_size * self.block_size
    }
}

/// SplitMix64's output function: a good 64-bit mixer.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn derive_seed(seed: u64, stream: u64, index: usize) -> u64 {
    splitmix64(splitmix64(seed ^ splitmix64(stream)) ^ index as u64)
}

/// The seed of libtorch's generator for optimizer step `step` (from 0) of a run seeded `seed`.
pub fn step_seed(seed: u64, step: usize) -> u64 {
    derive_seed(seed, 0, step)
}

/// The seed of libtorch's generator for the loss estimate after `step` steps.
pub fn eval_seed(seed: u64, step: usize) -> u64 {
    derive_seed(seed, 1, step)
}

/// What [`Trainer::train_until`] reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// A training call begins (before its first estimate or step; not when it has nothing to
    /// do): what trains, where, how.
    Started(Start),
    /// A loss estimate (also recorded in the history's `points`).
    Eval(EvalPoint),
    /// A log line every `log_interval` steps (recorded in the history's `logs`).
    Log(LogPoint),
    /// Where a run is between estimates: after its first step, then at most every
    /// [`PROGRESS_EVERY`], and after its last (the live report's line that moves; not recorded
    /// in the history).
    Progress(Progress),
    /// The run stopped early, after `step` of its `steps`, because ■ (or Ctrl-C, or SIGTERM)
    /// asked it to ([`crate::interrupt`]). Everything is kept: another call continues from
    /// `step`.
    Stopped { step: usize, steps: usize },
    /// The run ended before its last step: `early_stop_patience` estimates in a row brought
    /// no new best validation loss.
    EarlyStopped(EarlyStop),
}

/// A [`TrainEvent::Started`]: a training call from `step` to `until`, of a run of `steps`.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub step: usize,
    pub until: usize,
    pub steps: usize,
    /// The model's trainable parameters.
    pub num_params: usize,
    pub device: Device,
    /// What the forward pass computes in there ([`Precision::describe`]): `bf16 (AVX512-BF16)`.
    pub precision: String,
    /// The run's settings (an observer may record them: MLflow's params).
    pub config: TrainConfig,
}

/// How often, at most, a training call reports [`TrainEvent::Progress`].
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// A [`TrainEvent::Progress`]: steps done of the call's `until`, the last step's batch loss,
/// and the speed since the previous report (estimates left out).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub step: usize,
    pub until: usize,
    pub loss: f64,
    pub tokens_per_sec: Option<f64>,
    /// Seconds until `until` at that speed (estimates left out).
    pub secs_left: Option<f64>,
}

/// Why a run ended early: see [`Trainer::early_stop`].
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStop {
    /// The step it ended at.
    pub step: usize,
    /// The estimate with the lowest validation loss, and its loss.
    pub best_step: usize,
    pub best_val_loss: f64,
    /// Estimates since that one (at least `early_stop_patience`).
    pub estimates_since: usize,
}

impl std::fmt::Display for TrainEvent {
    /// nanoGPT's lines: `step 250: train loss 1.9876, val loss 2.0543` and
    /// `iter 10: loss 3.2145, lr 1.00e-4, grad norm 1.234, 5432 tokens/s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tps = |t: Option<f64>| t.map(|t| format!(", {t:.0} tokens/s")).unwrap_or_default();
        match self {
            TrainEvent::Started(s) => write!(
                f,
                "training steps {}..{} of {}: {} parameters on {:?}, {}",
                s.step,
                s.until,
                s.steps,
                crate::plot::thousands(s.num_params as u64),
                s.device,
                s.precision
            ),
            TrainEvent::Eval(p) => {
                write!(
                    f,
                    "step {}: train loss {:.4}, val loss {:.4}, lr {:.2e}",
                    p.step, p.train_loss, p.val_loss, p.lr
                )?;
                if let Some(n) = p.grad_norm {
                    write!(f, ", grad norm {n:.3}")?;
                }
                write!(f, "{}", tps(p.tokens_per_sec))
            }
            TrainEvent::Log(l) => write!(
                f,
                "iter {}: loss {:.4}, lr {:.2e}, grad norm {:.3}{}",
                l.step,
                l.loss,
                l.lr,
                l.grad_norm,
                tps(l.tokens_per_sec)
            ),
            TrainEvent::Progress(p) => {
                write!(f, "step {}/{}: loss {:.4}", p.step, p.until, p.loss)?;
                write!(f, "{}", tps(p.tokens_per_sec))?;
                if let Some(secs) = p.secs_left {
                    let secs = secs.round() as u64;
                    write!(f, ", {}:{:02} left", secs / 60, secs % 60)?;
                }
                Ok(())
            }
            TrainEvent::Stopped { step, steps } => write!(
                f,
                "stopped at step {step} of {steps}: the model, the optimizer state and the history are kept"
            ),
            TrainEvent::EarlyStopped(e) => write!(
                f,
                "early stop at step {}: no new best val loss in {} estimates (the best, {:.4}, was at step {})",
                e.step, e.estimates_since, e.best_val_loss, e.best_step
            ),
        }
    }
}

/// The mean loss over `iters` random batches of each split, with gradients and dropout off.
/// The batches come from libtorch's global generator as it is (the [`Trainer`] seeds it first).
pub fn estimate_loss(
    model: &dyn LanguageModel,
    data: &TokenData,
    batch_size: usize,
    block_size: usize,
    iters: usize,
) -> Result<(f64, f64)> {
    let _no_grad = tch::no_grad_guard();
    let device = model.var_store().device();
    let mean = |split| -> Result<f64> {
        let mut total = Tensor::zeros([], (Kind::Float, device));
        for _ in 0..iters {
            let (x, y) = data.get_batch(split, batch_size, block_size, device)?;
            total += model.loss(&x, &y, false)?;
        }
        Ok(total.f_double_value(&[])? / iters as f64) // the one read-back per split
    };
    Ok((mean(Split::Train)?, mean(Split::Val)?))
}

/// Forward and backward over the batch `x`, `y` (`[B, T]`) cut into `micro_batches` equal
/// micro-batches along `B`, each loss divided by `micro_batches`: the gradients that
/// accumulate are those of the mean loss over the whole batch, with the activation memory of
/// one micro-batch. Returns that mean loss (detached, on the device). `B` must be a multiple
/// of `micro_batches`. `train` switches dropout on. Each forward pass runs in `precision`'s
/// autocast region, each backward pass outside it (as PyTorch advises).
pub fn backward_accumulated(
    model: &dyn LanguageModel,
    x: &Tensor,
    y: &Tensor,
    micro_batches: usize,
    train: bool,
    precision: Precision,
) -> Result<Tensor> {
    let b = x.size().first().copied().unwrap_or(0);
    if micro_batches == 0 || b % micro_batches as i64 != 0 || b == 0 {
        return Err(Error::Config(format!(
            "grad_accum: a batch of {b} sequences does not split into {micro_batches} equal micro-batches"
        )));
    }
    let k = micro_batches as i64;
    let (xs, ys) = (x.f_chunk(k, 0)?, y.f_chunk(k, 0)?);
    let mut total: Option<Tensor> = None;
    for (x, y) in xs.iter().zip(&ys) {
        let loss = {
            let _autocast = precision.autocast(x.device())?;
            model.loss(x, y, train)? / micro_batches as f64 // [] mean over its part, float32
        };
        loss.f_backward()?;
        let loss = loss.f_detach()?;
        total = Some(match total {
            Some(t) => t + loss,
            None => loss,
        });
    }
    total.ok_or_else(|| Error::Config("grad_accum must be at least 1".into()))
}

/// A training run in progress: the configuration, AdamW's state, the step count and the
/// history. It does not own the model, so a notebook keeps both in variables, trains in
/// pieces (`train_until(&model, &data, 500, ..)`, look at samples, `train_until(.., 1000, ..)`),
/// and can save and resume it ([`Trainer::save_checkpoint`], [`Checkpoint::resume`]).
#[derive(Debug)]
pub struct Trainer {
    config: TrainConfig,
    optimizer: AdamW,
    step: usize,
    history: History,
    /// Where this trainer's wall-clock time went.
    times: RunTimes,
}

/// Where a trainer's wall-clock time went, over every training call so far (not saved in
/// checkpoints): the optimizer steps, and the loss estimates between them. Chapter 5,
/// `llm train` and `make bench` all print it, so their ms/step count the same work.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunTimes {
    /// Optimizer steps taken.
    pub steps: usize,
    /// Seconds in training calls, estimates included.
    pub total_secs: f64,
    /// Seconds of those spent estimating the losses.
    pub eval_secs: f64,
}

impl RunTimes {
    /// Milliseconds per optimizer step, the estimates' time included.
    pub fn ms_per_step(&self) -> f64 {
        1e3 * self.total_secs / self.steps.max(1) as f64
    }

    /// Milliseconds per optimizer step, the estimates' time left out.
    pub fn ms_per_step_without_estimates(&self) -> f64 {
        1e3 * (self.total_secs - self.eval_secs) / self.steps.max(1) as f64
    }
}

impl std::fmt::Display for RunTimes {
    /// `2000 steps in 88.8 s: 44.4 ms/step with the loss estimates, 40.1 ms/step without`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} steps in {:.1} s: {:.1} ms/step with the loss estimates, {:.1} ms/step without",
            self.steps,
            self.total_secs,
            self.ms_per_step(),
            self.ms_per_step_without_estimates()
        )
    }
}

impl Trainer {
    /// A fresh run of `model` (step 0, zero moments, empty history).
    pub fn new(model: &dyn LanguageModel, config: TrainConfig) -> Result<Self> {
        config.validate()?;
        check_block_size(model, &config)?;
        config.precision.check(model.var_store().device())?;
        let optimizer = AdamW::new(model.var_store(), config.adamw())?;
        Ok(Self { config, optimizer, step: 0, history: History::default(), times: RunTimes::default() })
    }

    /// Continue the run saved in `checkpoint` with `model`, whose weights must already be
    /// loaded ([`Checkpoint::resume`] does both).
    pub fn from_checkpoint(model: &dyn LanguageModel, checkpoint: &Checkpoint) -> Result<Self> {
        let fail = |e: Error| Error::Checkpoint { path: checkpoint.path.clone(), reason: e.to_string() };
        let mut trainer = Self::new(model, checkpoint.train_config.clone()).map_err(fail)?;
        trainer.optimizer.load_state(checkpoint.step, &checkpoint.optimizer).map_err(fail)?;
        trainer.step = checkpoint.step;
        trainer.history = checkpoint.history.clone();
        Ok(trainer)
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Change the configuration mid-run (e.g. more `steps`, another `eval_interval`). The
    /// optimizer's state and the step count are kept.
    pub fn set_config(&mut self, config: TrainConfig) -> Result<()> {
        config.validate()?;
        self.optimizer.config = config.adamw();
        self.config = config;
        Ok(())
    }

    /// Optimizer steps taken so far.
    pub fn step(&self) -> usize {
        self.step
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn into_history(self) -> History {
        self.history
    }

    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    /// Where the training calls' time went: steps and loss estimates.
    pub fn times(&self) -> RunTimes {
        self.times
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.config.lr_at(self.step)
    }

    /// Train until `config.steps` steps are done.
    pub fn run(
        &mut self,
        model: &dyn LanguageModel,
        data: &TokenData,
        on_event: impl FnMut(&TrainEvent),
    ) -> Result<()> {
        self.train_until(model, data, self.config.steps, on_event)
    }

    /// Train until `until` optimizer steps are done in total (nothing if already there).
    /// Losses are estimated after every `eval_interval`-th step and after step
    /// `config.steps` (not twice at the same step: a run cut in pieces records what an
    /// uninterrupted one does); a log line is recorded every `log_interval` steps. `on_event`
    /// sees each as it happens (`|e| println!("{e}")` prints them nanoGPT's way).
    pub fn train_until(
        &mut self,
        model: &dyn LanguageModel,
        data: &TokenData,
        until: usize,
        on_event: impl FnMut(&TrainEvent),
    ) -> Result<()> {
        self.train_until_with(model, data, until, on_event, |_| ControlFlow::Continue(()))
    }

    /// [`Trainer::train_until`], with `after_step` called after every optimizer step with the
    /// number of steps done: returning `ControlFlow::Break(())` stops the run there, between
    /// two steps. The run also stops there, with a [`TrainEvent::Stopped`], when an interrupt
    /// (■ in Jupyter, Ctrl-C) arrives ([`crate::interrupt`]). Stopped early, [`Trainer::step`]
    /// is below `until`; the run continues from there with another call.
    pub fn train_until_with(
        &mut self,
        model: &dyn LanguageModel,
        data: &TokenData,
        until: usize,
        on_event: impl FnMut(&TrainEvent),
        after_step: impl FnMut(usize) -> ControlFlow<()>,
    ) -> Result<()> {
        let (t0, steps0) = (Instant::now(), self.step);
        let result = self.training_loop(model, data, until, on_event, after_step);
        if let Device::Cuda(i) = model.var_store().device() {
            tch::Cuda::synchronize(i as i64);
        }
        self.times.total_secs += t0.elapsed().as_secs_f64();
        self.times.steps += self.step - steps0;
        result
    }

    fn training_loop(
        &mut self,
        model: &dyn LanguageModel,
        data: &TokenData,
        until: usize,
        mut on_event: impl FnMut(&TrainEvent),
        mut after_step: impl FnMut(usize) -> ControlFlow<()>,
    ) -> Result<()> {
        check_block_size(model, &self.config)?;
        let device = model.var_store().device();
        self.config.precision.check(device)?;
        self.optimizer.attach(model.var_store())?;
        crate::interrupt::start()?;
        if self.step < until || self.eval_due(self.step) {
            // (A call with nothing to do starts nothing.)
            on_event(&TrainEvent::Started(Start {
                step: self.step,
                until,
                steps: self.config.steps,
                num_params: model.num_params(),
                device,
                precision: self.config.precision.describe(device),
                config: self.config.clone(),
            }));
        }
        let params = self.optimizer.param_tensors();
        let c = self.config.clone();
        let mut eval_clock = (self.step, Instant::now());
        let mut log_clock = (self.step, Instant::now());
        let mut progress_clock: Option<(usize, Instant)> = None; // None: report after the next step
        let mut last_norm: Option<Tensor> = None;
        loop {
            let s = self.step;
            if self.eval_due(s) {
                let tokens_per_sec = throughput(device, eval_clock, s, c.tokens_per_step());
                let grad_norm = last_norm.take().map(|n| n.f_double_value(&[])).transpose()?;
                let t_eval = Instant::now();
                let point = self.estimate(model, data, tokens_per_sec, grad_norm)?;
                self.times.eval_secs += t_eval.elapsed().as_secs_f64();
                on_event(&TrainEvent::Eval(point));
                (eval_clock, log_clock) = ((s, Instant::now()), (s, Instant::now()));
                progress_clock = progress_clock.map(|_| (s, Instant::now()));
                // estimates are not training time
            }
            if self.history.last().is_some_and(|p| p.step == s) {
                if let Some(stop) = self.early_stop() {
                    on_event(&TrainEvent::EarlyStopped(stop));
                    return Ok(());
                }
            }
            if s >= until {
                return Ok(());
            }

            // One optimizer step, its randomness a function of (seed, step).
            tch::manual_seed(step_seed(c.seed, s) as i64);
            let lr = c.lr_at(s);
            self.optimizer.config.lr = lr;
            let (x, y) = data.get_batch(Split::Train, c.batch_size * c.grad_accum, c.block_size, device)?;
            self.optimizer.zero_grad();
            let loss = backward_accumulated(model, &x, &y, c.grad_accum, true, c.precision)?; // [] on the device
            let log_now = c.log_interval.is_some_and(|k| s % k == 0);
            let norm = match c.grad_clip {
                Some(max_norm) => Some(clip_grad_norm(&params, max_norm)?),
                None if log_now || self.eval_due(s + 1) => Some(grad_norm(&params)?),
                None => None,
            };
            self.optimizer.step()?;
            self.step += 1;

            if log_now {
                let (loss, grad_norm) =
                    (loss.f_double_value(&[])?, norm.as_ref().map_or(Ok(0.0), |n| n.f_double_value(&[]))?);
                let tokens_per_sec = throughput(device, log_clock, self.step, c.tokens_per_step());
                let line = LogPoint { step: s, loss, lr, grad_norm, tokens_per_sec };
                self.history.logs.push(line.clone());
                on_event(&TrainEvent::Log(line));
                log_clock = (self.step, Instant::now());
            }
            last_norm = norm;
            // Progress after the first step, at most every PROGRESS_EVERY, and after the last
            // (the line ends at `until`, not at the last 2-second report).
            if progress_clock.is_none_or(|(_, t)| t.elapsed() >= PROGRESS_EVERY) || self.step == until {
                let tokens_per_sec = progress_clock
                    .and_then(|clock| throughput(device, clock, self.step, c.tokens_per_step()));
                let secs_left =
                    tokens_per_sec.map(|tps| (until - self.step) as f64 * c.tokens_per_step() as f64 / tps);
                let loss = loss.f_double_value(&[])?;
                let progress = Progress { step: self.step, until, loss, tokens_per_sec, secs_left };
                on_event(&TrainEvent::Progress(progress));
                progress_clock = Some((self.step, Instant::now()));
            }
            if crate::interrupt::requested().is_some() {
                on_event(&TrainEvent::Stopped { step: self.step, steps: c.steps });
                return Ok(());
            }
            if after_step(self.step).is_break() {
                return Ok(());
            }
        }
    }

    /// Whether the run is over before its last step: with `early_stop_patience` set, when that
    /// many estimates have followed the best validation loss so far without beating it. The
    /// training loop stops there (a [`TrainEvent::EarlyStopped`]), and so does every later
    /// call, a resumed run's too; the best model is the one of `best_step` (`llm train`
    /// keeps it as `checkpoints/best`).
    pub fn early_stop(&self) -> Option<EarlyStop> {
        let patience = self.config.early_stop_patience?;
        let points = &self.history.points;
        let mut best = 0;
        for (i, p) in points.iter().enumerate() {
            if p.val_loss < points[best].val_loss {
                best = i;
            }
        }
        let estimates_since = points.len().checked_sub(best + 1)?;
        (estimates_since >= patience).then(|| EarlyStop {
            step: self.step,
            best_step: points[best].step,
            best_val_loss: points[best].val_loss,
            estimates_since,
        })
    }

    /// Estimate the losses of `model` now (seeded from `(seed, step)`, so it is repeatable)
    /// and return the point. It is recorded in the history unless the history has one for
    /// this step already: then that one is returned if it has the same losses (the same
    /// weights: with its throughput and gradient norm), and otherwise — the weights changed
    /// since training recorded it, e.g. other weights were loaded — the new estimate, which
    /// describes `model` as it is now, unrecorded.
    pub fn evaluate(&mut self, model: &dyn LanguageModel, data: &TokenData) -> Result<EvalPoint> {
        check_block_size(model, &self.config)?;
        let recorded = self.history.last().filter(|p| p.step == self.step).cloned();
        let point = self.estimate(model, data, None, None)?;
        let Some(recorded) = recorded else { return Ok(point) };
        self.history.points.pop(); // the step's point is the one training recorded
        let same = recorded.train_loss == point.train_loss && recorded.val_loss == point.val_loss;
        Ok(if same { recorded } else { point })
    }

    /// Save the run and `model` as a checkpoint directory (see [`checkpoint`]).
    /// `model_config` rebuilds the model: its `GptConfig`, or `json!({"vocab_size": 65})`.
    pub fn save_checkpoint(
        &self,
        path: impl AsRef<Path>,
        model: &dyn LanguageModel,
        model_config: &impl serde::Serialize,
        tokenizer: &dyn Tokenizer,
    ) -> Result<()> {
        checkpoint::save(path, self, model, model_config, tokenizer)
    }

    fn eval_due(&self, step: usize) -> bool {
        (step % self.config.eval_interval == 0 || step == self.config.steps)
            && self.history.last().is_none_or(|p| p.step != step)
    }

    fn estimate(
        &mut self,
        model: &dyn LanguageModel,
        data: &TokenData,
        tokens_per_sec: Option<f64>,
        grad_norm: Option<f64>,
    ) -> Result<EvalPoint> {
        let c = &self.config;
        tch::manual_seed(eval_seed(c.seed, self.step) as i64);
        let (train_loss, val_loss) = {
            let _autocast = c.precision.autocast(model.var_store().device())?; // the model as it trains
            estimate_loss(model, data, c.batch_size, c.block_size, c.eval_iters)?
        };
        let point =
            EvalPoint { step: self.step, train_loss, val_loss, lr: self.lr(), tokens_per_sec, grad_norm };
        self.history.points.push(point.clone());
        Ok(point)
    }
}

/// The training windows and the model's context are one length: longer windows do not fit
/// the model, and shorter ones would leave the positions past them untrained (read as soon as
/// a sample grows past them).
fn check_block_size(model: &dyn LanguageModel, config: &TrainConfig) -> Result<()> {
    let b = config.block_size;
    match model.block_size() {
        Some(max) if b > max => Err(Error::Config(format!(
            "the TrainConfig's block_size {b} is longer than the model's context of {max} tokens: set it to {max}"
        ))),
        Some(max) if b < max => Err(Error::Config(format!(
            "the TrainConfig's block_size {b} is shorter than the model's context of {max} tokens: positions \
             {b}..{max} would never be trained, yet sampling reads them once a text is longer than {b}; set \
             the TrainConfig's block_size to {max}, or the model's (GptConfig::block_size) to {b}"
        ))),
        _ => Ok(()),
    }
}

/// Tokens per second since `(step0, t0)`, waiting for the GPU first so the time is real
/// (only called when a line is reported, never per step).
fn throughput(
    device: Device,
    (step0, t0): (usize, Instant),
    step: usize,
    tokens_per_step: usize,
) -> Option<f64> {
    if step <= step0 {
        return None;
    }
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    let secs = t0.elapsed().as_secs_f64();
    (secs > 0.0).then(|| (step - step0) as f64 * tokens_per_step as f64 / secs)
}

/// Train `model` on `data` for `config.steps` steps with AdamW (chapter 3's entry point,
/// now a [`Trainer`] run from step 0). `on_eval` sees every loss estimate as it is made (the
/// notebooks print it); the whole history is returned. An interrupt (■) ends it early, with
/// the [`TrainEvent::Stopped`] message printed.
pub fn train(
    model: &dyn LanguageModel,
    data: &TokenData,
    config: &TrainConfig,
    mut on_eval: impl FnMut(&EvalPoint),
) -> Result<History> {
    let mut trainer = Trainer::new(model, config.clone())?;
    trainer.run(model, data, |event| match event {
        TrainEvent::Eval(point) => on_eval(point),
        TrainEvent::Started(_) | TrainEvent::Log(_) | TrainEvent::Progress(_) => {}
        TrainEvent::Stopped { .. } | TrainEvent::EarlyStopped(_) => println!("{event}"),
    })?;
    Ok(trainer.into_history())
}
