//! What a training run measured, kept for plots and saved as JSON or CSV.

use crate::plot::{self, Figure, Series};
use crate::{Error, Result};
use std::path::Path;

/// One loss estimate during training.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalPoint {
    pub step: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub lr: f64,
    /// Training throughput since the previous estimate (none at step 0).
    pub tokens_per_sec: Option<f64>,
}

/// Every loss estimate of a run, in step order.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct History {
    pub points: Vec<EvalPoint>,
}

impl History {
    /// The most recent estimate.
    pub fn last(&self) -> Option<&EvalPoint> {
        self.points.last()
    }

    /// Train and validation loss against the step.
    pub fn plot(&self, title: &str) -> Result<Figure> {
        let series = |label: &str, f: fn(&EvalPoint) -> f64| Series {
            label: label.into(),
            points: self.points.iter().map(|p| (p.step as f64, f(p))).collect(),
        };
        plot::line_chart(
            title,
            "step",
            "loss (cross-entropy, nats)",
            &[series("train", |p| p.train_loss), series("val", |p| p.val_loss)],
        )
    }

    /// One row per estimate: `step,train_loss,val_loss,lr,tokens_per_sec`.
    pub fn to_csv(&self) -> String {
        let mut csv = String::from("step,train_loss,val_loss,lr,tokens_per_sec\n");
        for p in &self.points {
            let tps = p.tokens_per_sec.map(|t| format!("{t:.1}")).unwrap_or_default();
            csv.push_str(&format!("{},{},{},{},{tps}\n", p.step, p.train_loss, p.val_loss, p.lr));
        }
        csv
    }

    /// Save as CSV if `path` ends in `.csv`, else as JSON.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = if path.extension().is_some_and(|e| e == "csv") {
            self.to_csv()
        } else {
            serde_json::to_string_pretty(self)
                .map_err(|source| Error::Json { context: "history".into(), source })?
        };
        crate::io::write_atomic(path, text.as_bytes())
    }

    /// Load a history saved as JSON.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        crate::io::read_json(path.as_ref())
    }
}
