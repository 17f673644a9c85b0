//! The settings of a training run, and their presets.

use super::adamw::AdamWConfig;
use super::schedule::{LrDecay, LrSchedule};
use crate::precision::Precision;
use crate::{Error, Result};

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
    /// validation loss ([`Trainer::early_stop`](crate::train::Trainer::early_stop)); `None` trains all `steps`.
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

    /// Raschka's finetuning runs (*LLMs from scratch*, chapters 6 and 7): batches of 8 at a
    /// constant learning rate of 5e-5, AdamW's weight decay 0.1, losses every 50 steps over 5
    /// batches; 500 steps (his classifier's 5 epochs of 130 batches are 650). The context is
    /// the pretrained model's.
    pub fn finetune() -> Self {
        Self {
            steps: 500,
            batch_size: 8,
            lr: 5e-5,
            weight_decay: 0.1,
            eval_interval: 50,
            eval_iters: 5,
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
