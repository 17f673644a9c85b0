//! What a training call reports as it goes, to the observer it is given.

use super::config::TrainConfig;
use super::history::{EvalPoint, LogPoint};
use tch::Device;

/// What [`Trainer::train_until`](crate::train::Trainer::train_until) reports as it goes.
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
    /// What the forward pass computes in there ([`Precision::describe`](crate::precision::Precision::describe)): `bf16 (AVX512-BF16)`.
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

/// Why a run ended early: see [`Trainer::early_stop`](crate::train::Trainer::early_stop).
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
