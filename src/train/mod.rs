//! Training: the loop of chapter 3, the loss estimate it reports, and the history it keeps.
//!
//! The loop is the five lines every PyTorch course writes — sample a batch, forward, zero
//! the gradients, backward, step — plus a periodic estimate of the train and validation
//! loss. The loss is read back from the device only at those evaluations, never per step, so
//! the CPU never waits for a GPU in the middle of training.

mod history;

pub use history::{EvalPoint, History};

use crate::data::{Split, TokenData};
use crate::model::LanguageModel;
use crate::{Error, Result};
use std::time::Instant;
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

/// The knobs of a training run. The defaults are the lecture's bigram run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    pub batch_size: usize,
    /// Tokens of context per example.
    pub block_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Estimate the losses every this many steps (and after the last one).
    pub eval_interval: usize,
    /// Batches averaged per loss estimate.
    pub eval_iters: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { steps: 3000, batch_size: 32, block_size: 8, lr: 1e-2, eval_interval: 300, eval_iters: 200 }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("block_size", self.block_size),
            ("eval_interval", self.eval_interval),
            ("eval_iters", self.eval_iters),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("{name} must be at least 1")));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::Config(format!("lr must be a positive number, got {}", self.lr)));
        }
        Ok(())
    }
}

/// The mean loss over `iters` random batches of each split, with gradients and dropout off.
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
        Ok(total.double_value(&[]) / iters as f64) // the one read-back per split
    };
    Ok((mean(Split::Train)?, mean(Split::Val)?))
}

/// Train `model` on `data` with AdamW for `config.steps` steps. `on_eval` sees every loss
/// estimate as it is made (the notebooks print it); the whole history is returned.
pub fn train(
    model: &dyn LanguageModel,
    data: &TokenData,
    config: &TrainConfig,
    mut on_eval: impl FnMut(&EvalPoint),
) -> Result<History> {
    config.validate()?;
    let device = model.var_store().device();
    let mut opt = nn::AdamW::default().build(model.var_store(), config.lr)?;
    let mut history = History::default();
    let tokens_per_step = (config.batch_size * config.block_size) as f64;
    let mut clock = Instant::now();
    let mut last_eval_step = 0;
    for step in 0..=config.steps {
        if step % config.eval_interval == 0 || step == config.steps {
            let elapsed = clock.elapsed().as_secs_f64();
            let tokens_per_sec =
                (step > last_eval_step).then(|| (step - last_eval_step) as f64 * tokens_per_step / elapsed);
            let (train_loss, val_loss) =
                estimate_loss(model, data, config.batch_size, config.block_size, config.eval_iters)?;
            let point = EvalPoint { step, train_loss, val_loss, lr: config.lr, tokens_per_sec };
            on_eval(&point);
            history.points.push(point);
            (clock, last_eval_step) = (Instant::now(), step);
        }
        if step == config.steps {
            break;
        }
        let (x, y) = data.get_batch(Split::Train, config.batch_size, config.block_size, device)?;
        let loss = model.loss(&x, &y, true)?;
        opt.zero_grad();
        loss.f_backward()?;
        opt.step();
    }
    Ok(history)
}
