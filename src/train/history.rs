//! What a training run measured, kept for plots and saved as JSON or CSV.

use crate::plot::{self, Figure, Series};
use crate::{Error, Result};
use std::path::Path;

/// One loss estimate during training, made after `step` optimizer steps.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalPoint {
    pub step: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub val_loss: f64,
    /// The learning rate of the next optimizer step (step number `step`, counted from 0).
    pub lr: f64,
    /// Training throughput since the previous estimate (none at step 0).
    pub tokens_per_sec: Option<f64>,
    /// The global gradient norm, before clipping, of the last optimizer step before this
    /// estimate (none at step 0). A norm that keeps growing, or spikes, is worth a look.
    #[serde(default)]
    pub grad_norm: Option<f64>,
}

/// The loss of one optimizer step, recorded every `log_interval` steps: the batch loss is
/// noisy, but it is free (no extra forward passes), unlike an [`EvalPoint`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogPoint {
    /// The optimizer step measured, counted from 0 (nanoGPT's `iter_num`).
    pub step: usize,
    /// Its training loss: the mean over its micro-batches, with dropout on.
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// Its learning rate.
    pub lr: f64,
    /// Its global gradient norm, before clipping.
    #[serde(deserialize_with = "nan_if_null")]
    pub grad_norm: f64,
    /// Training throughput since the previous log line (none for the first of a run).
    pub tokens_per_sec: Option<f64>,
}

/// Every loss estimate of a run, in step order, and the per-step log lines.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct History {
    pub points: Vec<EvalPoint>,
    /// Per-step losses, when the run had a `log_interval`.
    #[serde(default)]
    pub logs: Vec<LogPoint>,
}

/// A loss or norm read back from JSON: JSON has no NaN, and `serde_json` writes a diverged
/// run's NaN as `null`, so `null` reads back as NaN (a checkpoint of such a run still loads).
fn nan_if_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

const CSV_HEADER: &str = "step,train_loss,val_loss,lr,tokens_per_sec,grad_norm";

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

    /// The learning rate against the step, from the log lines and the estimates together
    /// (log with a `log_interval` to see the warmup in detail).
    pub fn plot_lr(&self, title: &str) -> Result<Figure> {
        let mut points: Vec<(f64, f64)> = self
            .logs
            .iter()
            .map(|l| (l.step as f64, l.lr))
            .chain(self.points.iter().map(|p| (p.step as f64, p.lr)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points.dedup_by(|a, b| a.0 == b.0);
        plot::line_chart(title, "step", "learning rate", &[Series { label: "lr".into(), points }])
    }

    /// One row per estimate: `step,train_loss,val_loss,lr,tokens_per_sec,grad_norm` (an
    /// empty field where a value is absent). Numbers are written in full, so
    /// [`History::from_csv`] reads back the same values, except the throughput, which is
    /// rounded to 0.1 tokens/s. The log lines are not included (JSON keeps them).
    pub fn to_csv(&self) -> String {
        let mut csv = format!("{CSV_HEADER}\n");
        for p in &self.points {
            let tps = p.tokens_per_sec.map(|t| format!("{t:.1}")).unwrap_or_default();
            let norm = p.grad_norm.map(|n| n.to_string()).unwrap_or_default();
            csv.push_str(&format!("{},{},{},{},{tps},{norm}\n", p.step, p.train_loss, p.val_loss, p.lr));
        }
        csv
    }

    /// The log lines as CSV: `step,loss,lr,grad_norm,tokens_per_sec`.
    pub fn logs_to_csv(&self) -> String {
        let mut csv = String::from("step,loss,lr,grad_norm,tokens_per_sec\n");
        for l in &self.logs {
            let tps = l.tokens_per_sec.map(|t| format!("{t:.1}")).unwrap_or_default();
            csv.push_str(&format!("{},{},{},{},{tps}\n", l.step, l.loss, l.lr, l.grad_norm));
        }
        csv
    }

    /// Parse the estimates back from [`History::to_csv`]'s format. Columns are found by
    /// their header name, so a file without the newer `grad_norm` column still reads.
    pub fn from_csv(text: &str) -> Result<Self> {
        let bad = |line: usize, msg: String| Error::Config(format!("history CSV, line {line}: {msg}"));
        let mut lines =
            text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or_else(|| bad(1, "empty file, expected a header".into()))?;
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        let column = |name: &str| columns.iter().position(|c| *c == name);
        let required = |name: &str| {
            column(name).ok_or_else(|| bad(1, format!("no '{name}' column in the header {header:?}")))
        };
        let (step, train, val, lr) =
            (required("step")?, required("train_loss")?, required("val_loss")?, required("lr")?);
        let (tps, norm) = (column("tokens_per_sec"), column("grad_norm"));
        let mut points = Vec::new();
        for (n, line) in lines {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != columns.len() {
                return Err(bad(n, format!("{} fields, the header has {}", fields.len(), columns.len())));
            }
            let number = |i: usize| {
                fields[i]
                    .parse::<f64>()
                    .map_err(|_| bad(n, format!("{}: {:?} is not a number", columns[i], fields[i])))
            };
            let optional = |i: Option<usize>| match i {
                Some(i) if !fields[i].is_empty() => number(i).map(Some),
                _ => Ok(None),
            };
            points.push(EvalPoint {
                step: fields[step]
                    .parse()
                    .map_err(|_| bad(n, format!("step: {:?} is not a step number", fields[step])))?,
                train_loss: number(train)?,
                val_loss: number(val)?,
                lr: number(lr)?,
                tokens_per_sec: optional(tps)?,
                grad_norm: optional(norm)?,
            });
        }
        Ok(Self { points, logs: Vec::new() })
    }

    /// Save as CSV if `path` ends in `.csv` (the estimates only), else as JSON (everything).
    /// Written atomically: a temporary file renamed into place.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = if is_csv(path) {
            self.to_csv()
        } else {
            serde_json::to_string_pretty(self)
                .map_err(|source| Error::Json { context: "history".into(), source })?
        };
        crate::io::write_atomic(path, text.as_bytes())
    }

    /// Load a history saved by [`History::save`]: CSV if `path` ends in `.csv`, else JSON.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if is_csv(path) {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            Self::from_csv(&text).map_err(|e| match e {
                Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
                other => other,
            })
        } else {
            crate::io::read_json(path)
        }
    }
}

fn is_csv(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}
