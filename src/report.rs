//! Watching a run train, inside the notebook cell that trains it.
//!
//! [`LiveReport`] shows, from the first step on:
//!
//! - a progress line, redrawn in place after the first step, then at most every two
//!   seconds and after the last ([`TrainEvent::Progress`]):
//!   `step 120/2000 │ loss 2.5130 │ 17,412 tokens/s │ 1:48 left`;
//! - under it the loss plot, redrawn at every estimate, so the curve grows while the cell runs;
//! - under the plot, one compact line per loss estimate, ending in a sparkline of the
//!   validation loss so far:
//!
//! ```text
//! step  750 │ train 2.0113 │ val 2.0891 │ █▅▃▂ │ lr 9.02e-4 │ 17,412 tokens/s
//! ```
//!
//! The progress line and the plot need the course's kernel ([`LiveDisplay`]); elsewhere (a
//! terminal) the progress line is redrawn on stderr with a carriage return.
//!
//! With `MLFLOW_TRACKING_URI` set, the report also starts an MLflow run when its run starts
//! ([`Tracker::for_training`], the one place a run is attached from the environment)
//! and hands it every event: the chapters' curves appear in MLflow's UI with nothing to add
//! to a cell. This module sits above both the trainer and the tracker; neither knows it.

use crate::plot::{sparkline, thousands, LiveDisplay};
use crate::track::Tracker;
use crate::train::{EvalPoint, History, Progress, TrainEvent};

/// Prints (and, where the kernel can, plots) a run's events as they come: pass
/// `|e| live.show(e)` as a [`Trainer`](crate::train::Trainer)'s `on_event`.
#[derive(Debug)]
pub struct LiveReport {
    title: String,
    history: History,
    progress: LiveDisplay,
    figure: LiveDisplay,
    /// Whether the progress line and the plot are placed yet (both above every estimate line).
    placed: bool,
    /// The MLflow run the events also go to; `None` until the run starts, and without
    /// `MLFLOW_TRACKING_URI`.
    tracker: Option<Tracker>,
    /// Whether the environment was read for a tracker (once per report).
    tracker_looked_for: bool,
}

impl LiveReport {
    /// A report of a new run; `title` heads the plot.
    pub fn new(title: &str) -> Self {
        Self::resume(title, &History::default())
    }

    /// A report that continues a run with this history (a second training cell).
    pub fn resume(title: &str, history: &History) -> Self {
        Self {
            title: title.to_owned(),
            history: history.clone(),
            progress: LiveDisplay::new(),
            figure: LiveDisplay::new(),
            placed: false,
            tracker: None,
            tracker_looked_for: false,
        }
    }

    /// The MLflow run this report sends the events to, if `MLFLOW_TRACKING_URI` named a
    /// server when the run started.
    pub fn tracker(&self) -> Option<&Tracker> {
        self.tracker.as_ref()
    }

    /// Show one event: the start of a run in the progress line, then its progress there,
    /// redrawn in place; an estimate as a line (and the plot, redrawn); a stop as its message.
    /// Per-step log lines are left out: they would bury the estimates (MLflow gets them).
    pub fn show(&mut self, event: &TrainEvent) {
        if let TrainEvent::Started(start) = event {
            if !std::mem::replace(&mut self.tracker_looked_for, true) {
                self.tracker = Tracker::for_training(&start.config, start.num_params);
            }
        }
        if let Some(tracker) = &self.tracker {
            tracker.log_event(event);
        }
        let live = LiveDisplay::supported();
        if live && !self.placed {
            // The progress line first (what trains, if the run's start is the first event),
            // the plot under it, then the estimates' lines: in this order from the first
            // estimate on.
            let first = match event {
                TrainEvent::Started(_) => event.to_string(),
                _ => "starting…".to_owned(),
            };
            self.progress.show_text(&first);
            self.redraw_plot();
            self.placed = true;
        }
        match event {
            TrainEvent::Eval(point) => {
                self.history.points.push(point.clone());
                if live {
                    self.redraw_plot();
                }
                println!("{}", self.line(point));
            }
            TrainEvent::Started(_) => {} // in the progress line, until the first step replaces it
            TrainEvent::Progress(p) if live => self.progress.show_text(&progress_line(p)),
            TrainEvent::Progress(p) => eprint!("\r{}", progress_line(p)),
            TrainEvent::Log(_) => {}
            TrainEvent::Stopped { .. } => println!("{event} (train again with the same trainer to continue)"),
            TrainEvent::EarlyStopped(_) => println!("{event}"),
        }
    }

    /// The loss plot, in place of the previous one (nothing before the first estimate).
    fn redraw_plot(&mut self) {
        if self.history.points.is_empty() {
            return;
        }
        match self.history.plot(&self.title) {
            Ok(figure) => self.figure.show(&figure),
            Err(e) => eprintln!("live plot: {e}"),
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

/// `step 120/2000 │ loss 2.5130 │ 17,412 tokens/s │ 1:48 left`
fn progress_line(p: &Progress) -> String {
    let mut line = format!("step {}/{} │ loss {:.4}", p.step, p.until, p.loss);
    if let Some(tps) = p.tokens_per_sec {
        line += &format!(" │ {} tokens/s", thousands(tps.round() as u64));
    }
    if let Some(secs) = p.secs_left {
        let secs = secs.round() as u64;
        line += &format!(" │ {}:{:02} left", secs / 60, secs % 60);
    }
    line
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
        let progress = Progress {
            step: 120,
            until: 2000,
            loss: 2.513,
            tokens_per_sec: Some(17412.4),
            secs_left: Some(108.4),
        };
        assert_eq!(progress_line(&progress), "step 120/2000 │ loss 2.5130 │ 17,412 tokens/s │ 1:48 left");
        assert_eq!(
            progress_line(&Progress { tokens_per_sec: None, secs_left: None, ..progress }),
            "step 120/2000 │ loss 2.5130"
        );
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(sparkline(&[]), "");
        assert_eq!(sparkline(&[2.0, 2.0]), "▄▄");
    }
}
