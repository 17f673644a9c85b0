//! The training loop: [`Trainer`], resumable and usable piece by piece across notebook
//! cells, and chapter 3's [`train`] over it.

use super::adamw::AdamW;
use super::clip::{clip_grad_norm, grad_norm};
use super::config::TrainConfig;
use super::events::{EarlyStop, Progress, Start, TrainEvent, PROGRESS_EVERY};
use super::history::{EvalPoint, History, LogPoint};
use super::seed::{eval_seed, step_seed};
use crate::data::{Batches, Split};
use crate::model::LanguageModel;
use crate::precision::Precision;
use crate::{Error, Result};
use std::ops::ControlFlow;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The mean loss over `iters` random batches of each split, with gradients and dropout off.
/// The batches come from libtorch's global generator as it is (the [`Trainer`] seeds it first).
pub fn estimate_loss(
    model: &dyn LanguageModel,
    data: &dyn Batches,
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
/// and can save and resume it ([`Trainer::save_checkpoint`], [`Checkpoint::resume`](crate::train::Checkpoint::resume)).
#[derive(Debug)]
pub struct Trainer {
    pub(super) config: TrainConfig,
    pub(super) optimizer: AdamW,
    pub(super) step: usize,
    pub(super) history: History,
    /// Where this trainer's wall-clock time went.
    pub(super) times: RunTimes,
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
        data: &dyn Batches,
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
        data: &dyn Batches,
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
        data: &dyn Batches,
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
        data: &dyn Batches,
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
    pub fn evaluate(&mut self, model: &dyn LanguageModel, data: &dyn Batches) -> Result<EvalPoint> {
        check_block_size(model, &self.config)?;
        let recorded = self.history.last().filter(|p| p.step == self.step).cloned();
        let point = self.estimate(model, data, None, None)?;
        let Some(recorded) = recorded else { return Ok(point) };
        self.history.points.pop(); // the step's point is the one training recorded
        let same = recorded.train_loss == point.train_loss && recorded.val_loss == point.val_loss;
        Ok(if same { recorded } else { point })
    }

    fn eval_due(&self, step: usize) -> bool {
        (step % self.config.eval_interval == 0 || step == self.config.steps)
            && self.history.last().is_none_or(|p| p.step != step)
    }

    fn estimate(
        &mut self,
        model: &dyn LanguageModel,
        data: &dyn Batches,
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
    data: &dyn Batches,
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
