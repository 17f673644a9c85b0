//! The learning rate as a function of the step: linear warmup, then cosine decay.

use crate::plot::{self, Figure, Series};
use crate::Result;

/// What the learning rate does after warmup (the [`TrainConfig`](super::TrainConfig) setting;
/// [`LrSchedule`] is its resolved form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", from = "LrDecayRepr")]
pub enum LrDecay {
    /// It stays at `lr`.
    None,
    /// A half cosine down to `min_lr` at the run's last step: the decay follows the run's
    /// `steps`, shortened or lengthened.
    Cosine,
    /// A half cosine down to `min_lr` at this step, whatever the run's length; `min_lr`
    /// after it (nanoGPT's `lr_decay_iters`).
    CosineUntil(usize),
}

/// What a saved config may hold: today's form, or the `lr_decay_steps` of older checkpoints
/// (`null`: no decay; a step: the cosine's end).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum LrDecayRepr {
    Legacy(Option<usize>),
    Current(LrDecayTagged),
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum LrDecayTagged {
    None,
    Cosine,
    CosineUntil(usize),
}

impl From<LrDecayRepr> for LrDecay {
    fn from(repr: LrDecayRepr) -> Self {
        match repr {
            LrDecayRepr::Legacy(None) | LrDecayRepr::Current(LrDecayTagged::None) => LrDecay::None,
            LrDecayRepr::Legacy(Some(step)) | LrDecayRepr::Current(LrDecayTagged::CosineUntil(step)) => {
                LrDecay::CosineUntil(step)
            }
            LrDecayRepr::Current(LrDecayTagged::Cosine) => LrDecay::Cosine,
        }
    }
}

/// nanoGPT's `get_lr`: warm up linearly for `warmup_steps` steps, then follow a half cosine
/// from `lr` down to `min_lr` at step `decay_steps`, and stay at `min_lr` after that.
///
/// ```text
/// step < warmup:          lr · (step + 1) / (warmup + 1)
/// warmup ≤ step ≤ decay:  min_lr + ½ (1 + cos(π · (step − warmup) / (decay − warmup))) · (lr − min_lr)
/// step > decay:           min_lr
/// ```
///
/// Without `decay_steps` the rate stays at `lr` once warmed up (with no warmup either, it is
/// the constant rate of chapter 3). Warmup keeps the first updates small while Adam's moment
/// estimates are still noise; the decay lets the weights settle into a minimum instead of
/// bouncing around it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LrSchedule {
    /// Peak learning rate, reached at the end of warmup.
    pub lr: f64,
    pub warmup_steps: usize,
    /// The step where the cosine reaches `min_lr`; `None` keeps `lr` after warmup.
    pub decay_steps: Option<usize>,
    pub min_lr: f64,
}

impl LrSchedule {
    /// A constant learning rate.
    pub fn constant(lr: f64) -> Self {
        Self { lr, warmup_steps: 0, decay_steps: None, min_lr: lr }
    }

    /// The learning rate of optimizer step `step` (counted from 0).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / (self.warmup_steps + 1) as f64;
        }
        let Some(decay) = self.decay_steps else {
            return self.lr;
        };
        if step > decay || decay <= self.warmup_steps {
            return self.min_lr;
        }
        let ratio = (step - self.warmup_steps) as f64 / (decay - self.warmup_steps) as f64; // 0..=1
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos()); // 1..=0
        self.min_lr + coeff * (self.lr - self.min_lr)
    }

    /// The learning rate over steps `0..steps`, as a chart.
    pub fn plot(&self, steps: usize, title: &str) -> Result<Figure> {
        let points = (0..steps.max(1)).map(|s| (s as f64, self.lr_at(s))).collect();
        plot::line_chart(title, "step", "learning rate", &[Series { label: "lr".into(), points }])
    }
}
