//! Watching a run train, inside the notebook cell that trains it.
//!
//! Evcxr streams a cell's text as it is printed, so [`LiveReport`] prints one compact line per
//! loss estimate, ending in a sparkline of the validation loss so far:
//!
//! ```text
//! step  750 │ train 2.0113 │ val 2.0891 │ █▅▃▂ │ lr 9.02e-4 │ 17,412 tokens/s
//! ```
//!
//! In the course's kernel it also draws the loss plot under the lines and redraws it in place
//! at every estimate ([`LiveFigure`]), so the curve grows while the cell runs.

use super::{EvalPoint, History, TrainEvent};
use crate::plot::{sparkline, LiveFigure};

/// Prints (and, where the kernel can, plots) a run's events as they come: pass
/// `|e| live.show(e)` as a [`Trainer`](super::Trainer)'s `on_event`.
#[derive(Debug, Clone)]
pub struct LiveReport {
    title: String,
    history: History,
    figure: LiveFigure,
}

impl LiveReport {
    /// A report of a new run; `title` heads the plot.
    pub fn new(title: &str) -> Self {
        Self::resume(title, &History::default())
    }

    /// A report that continues a run with this history (a second training cell).
    pub fn resume(title: &str, history: &History) -> Self {
        Self { title: title.to_owned(), history: history.clone(), figure: LiveFigure::new() }
    }

    /// Show one event: an estimate as a line (and the plot, redrawn); an early stop as its
    /// message. Per-step log lines are left out: they would bury the estimates.
    pub fn show(&mut self, event: &TrainEvent) {
        match event {
            TrainEvent::Eval(point) => {
                self.history.points.push(point.clone());
                println!("{}", self.line(point));
                if LiveFigure::supported() {
                    match self.history.plot(&self.title) {
                        Ok(figure) => self.figure.show(&figure),
                        Err(e) => eprintln!("live plot: {e}"),
                    }
                }
            }
            TrainEvent::Log(_) => {}
            TrainEvent::Stopped { .. } | TrainEvent::EarlyStopped(_) => println!("{event}"),
        }
    }

    fn line(&self, p: &EvalPoint) -> String {
        let val: Vec<f64> = self.history.points.iter().map(|p| p.val_loss).collect();
        let mut line = format!(
            "step {:>5} │ train {:.4} │ val {:.4} │ {} │ lr {:.2e}",
            p.step,
            p.train_loss,
            p.val_loss,
            sparkline(&val),
            p.lr
        );
        if let Some(tps) = p.tokens_per_sec {
            line += &format!(" │ {} tokens/s", thousands(tps.round() as u64));
        }
        line
    }
}

/// `17412` as `17,412`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_per_estimate_with_the_curve_so_far() {
        let point = |step, val_loss| EvalPoint {
            step,
            train_loss: val_loss - 0.1,
            val_loss,
            lr: 1e-3,
            tokens_per_sec: (step > 0).then_some(17412.4),
            grad_norm: None,
        };
        let mut live = LiveReport::new("test");
        for (i, v) in [4.2, 3.1, 2.6, 2.4].into_iter().enumerate() {
            live.show(&TrainEvent::Eval(point(i * 250, v)));
        }
        assert_eq!(
            live.line(&point(750, 2.4)),
            "step   750 │ train 2.3000 │ val 2.4000 │ █▄▂▁ │ lr 1.00e-3 │ 17,412 tokens/s"
        );
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(sparkline(&[]), "");
        assert_eq!(sparkline(&[2.0, 2.0]), "▄▄");
    }
}
