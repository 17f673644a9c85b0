//! AdamW, written out on tch tensors so that its state can be read, saved and restored.
//!
//! Adam keeps two running averages per parameter: the *first moment* `m`, an average of the
//! gradients (momentum: it smooths the direction), and the *second moment* `v`, an average
//! of the squared gradients (it measures how large each coordinate's gradients usually are).
//! Each step moves a parameter by `lr · m̂ / (√v̂ + ε)`: every coordinate gets its own step
//! size, large where gradients are small and steady, small where they are large or noisy.
//! `m̂` and `v̂` are the averages divided by `1 − β^t` ("bias correction"): both start at
//! zero, so without it the first steps would be far too small.
//!
//! The "W" is *decoupled* weight decay (Loshchilov & Hutter): every step first shrinks each
//! decayed weight by the factor `1 − lr · weight_decay`, outside the adaptive part, instead of
//! adding `wd · θ` to the gradient (which Adam would then rescale per coordinate, weakening
//! the decay exactly where gradients are large). As in nanoGPT, only the tensors with two or
//! more dimensions decay — the matrices of linear layers and the embeddings — while biases
//! and LayerNorm gains (1-D) do not: pulling a gain towards 0 or a bias towards 0 has no
//! regularising meaning.
//!
//! The update of one parameter `θ` with gradient `g`, at step `t` (from 1), exactly as
//! `torch.optim.AdamW` computes it:
//!
//! ```text
//! θ ← θ · (1 − lr · wd)                       (decayed tensors only)
//! m ← β1 · m + (1 − β1) · g
//! v ← β2 · v + (1 − β2) · g²
//! θ ← θ − lr / (1 − β1^t) · m / (√v / √(1 − β2^t) + ε)
//! ```
//!
//! Everything happens in place on the device under `no_grad`; the per-step scalars
//! (`lr`, the bias corrections) are computed on the CPU from the step count, so a step never
//! waits for the device.

use crate::model::trainable_variables;
use crate::{Error, Result};
use std::collections::HashMap;
use tch::{nn, Tensor};

/// The hyperparameters of [`AdamW`]. The defaults are PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied to tensors of 2 or more dimensions only.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

impl AdamWConfig {
    /// Check every field; the message names the field and says what it must be.
    pub fn validate(&self) -> Result<()> {
        self.validate_named(&|field| field.to_owned())
    }

    /// [`AdamWConfig::validate`], each field called what `name` makes of its name (the
    /// training config's and the command line's): the one place the optimizer's rules live.
    pub fn validate_named(&self, name: &dyn Fn(&str) -> String) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        let (lr, weight_decay) = (name("lr"), name("weight_decay"));
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("{lr} must be a positive number (e.g. 1e-3), got {}", self.lr));
        }
        for (field, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(format!(
                    "{} must be in [0, 1) (typically 0.9 to 0.999), got {beta}",
                    name(field)
                ));
            }
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return bad(format!("{} must be a small positive number (1e-8), got {}", name("eps"), self.eps));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!("{weight_decay} must be 0 (off) or positive, got {}", self.weight_decay));
        }
        if self.lr * self.weight_decay >= 1.0 {
            return bad(format!(
                "{weight_decay} ({}) times {lr} ({}) is at least 1: each step would zero or flip the weights; \
                 lower {weight_decay}",
                self.weight_decay, self.lr
            ));
        }
        Ok(())
    }
}

/// One parameter and its optimizer state.
#[derive(Debug)]
pub struct ParamState {
    /// The parameter's name in the model's `VarStore` (e.g. `transformer.h.0.attn.c_attn.weight`).
    pub name: String,
    /// The parameter itself (sharing storage with the model's).
    pub param: Tensor,
    /// Whether weight decay applies: tensors of 2 or more dimensions.
    pub decay: bool,
    /// First moment `m`: the running average of the gradient. Same shape as the parameter.
    pub exp_avg: Tensor,
    /// Second moment `v`: the running average of the squared gradient.
    pub exp_avg_sq: Tensor,
}

/// AdamW over the trainable variables of a `VarStore`, with state you can inspect and save.
///
/// ```no_run
/// # use llm_from_scratch::{model::{Bigram, LanguageModel}, train::{AdamW, AdamWConfig}};
/// # fn main() -> llm_from_scratch::Result<()> {
/// # let model = Bigram::new(65, tch::Device::Cpu);
/// # let (x, y) = (tch::Tensor::zeros([1, 1], (tch::Kind::Int64, tch::Device::Cpu)), tch::Tensor::zeros([1, 1], (tch::Kind::Int64, tch::Device::Cpu)));
/// let mut opt = AdamW::new(model.var_store(), AdamWConfig { lr: 1e-3, ..Default::default() })?;
/// opt.zero_grad();
/// model.loss(&x, &y, true)?.f_backward()?;
/// opt.step()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    step: usize,
    params: Vec<ParamState>,
}

impl AdamW {
    /// An optimizer for the trainable variables of `vs`, with zero moments and step 0.
    pub fn new(vs: &nn::VarStore, config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        let params = trainable_variables(vs)
            .into_iter()
            .map(|(name, param)| {
                let _no_grad = tch::no_grad_guard();
                Ok(ParamState {
                    decay: param.dim() >= 2,
                    exp_avg: param.f_zeros_like()?,
                    exp_avg_sq: param.f_zeros_like()?,
                    name,
                    param,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { config, step: 0, params })
    }

    /// How many steps have been taken (the `t` of the bias correction).
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The parameters and their moments, sorted by name.
    pub fn params(&self) -> &[ParamState] {
        &self.params
    }

    /// The parameter tensors, in the order of [`AdamW::params`].
    pub fn param_tensors(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.param.shallow_clone()).collect()
    }

    /// Follow the parameters of `vs` instead of the ones the optimizer was built with (a
    /// model rebuilt in another notebook cell, or loaded from a checkpoint), keeping the
    /// moments. The names and shapes must be the same.
    pub fn attach(&mut self, vs: &nn::VarStore) -> Result<()> {
        let vars = self.matching_vars(vs)?;
        for ((_, tensor), p) in vars.into_iter().zip(&mut self.params) {
            if p.exp_avg.device() != tensor.device() {
                p.exp_avg = p.exp_avg.f_to_device(tensor.device())?;
                p.exp_avg_sq = p.exp_avg_sq.f_to_device(tensor.device())?;
            }
            p.param = tensor;
        }
        Ok(())
    }

    /// Check that `vs` has the parameters this optimizer was built for (names and shapes).
    pub fn check_fits(&self, vs: &nn::VarStore) -> Result<()> {
        self.matching_vars(vs).map(|_| ())
    }

    fn matching_vars(&self, vs: &nn::VarStore) -> Result<Vec<(String, Tensor)>> {
        let vars = trainable_variables(vs);
        let same_names = vars.len() == self.params.len()
            && vars.iter().zip(&self.params).all(|((name, _), p)| *name == p.name);
        if !same_names {
            let theirs: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
            let ours: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::Config(format!(
                "the optimizer was built for other parameters: {}",
                describe_difference(&ours, &theirs, "the optimizer", "the model")
            )));
        }
        for ((name, tensor), p) in vars.iter().zip(&self.params) {
            if tensor.size() != p.exp_avg.size() {
                return Err(Error::Config(format!(
                    "parameter {name} has shape {:?} but the optimizer's state has {:?}",
                    tensor.size(),
                    p.exp_avg.size()
                )));
            }
        }
        Ok(vars)
    }

    /// Set every gradient to zero (before the next backward pass accumulates into them).
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.param.zero_grad();
        }
    }

    /// One update of every parameter that has a gradient, at `self.config.lr`.
    pub fn step(&mut self) -> Result<()> {
        let AdamWConfig { lr, beta1, beta2, eps, weight_decay } = self.config;
        self.step += 1;
        let t = self.step as f64;
        let bias_correction1 = 1.0 - beta1.powf(t);
        let bias_correction2_sqrt = (1.0 - beta2.powf(t)).sqrt();
        let step_size = lr / bias_correction1;
        let _no_grad = tch::no_grad_guard();
        for p in &mut self.params {
            let grad = p.param.grad();
            if !grad.defined() {
                continue; // not used by the forward pass: no update, as in PyTorch
            }
            if p.decay && weight_decay > 0.0 {
                let _ = p.param.f_mul_scalar_(1.0 - lr * weight_decay)?;
            }
            let _ = p.exp_avg.f_lerp_(&grad, 1.0 - beta1)?; // m ← m + (1 − β1)(g − m)
            let _ = p.exp_avg_sq.f_mul_scalar_(beta2)?; // v ← β2 v + (1 − β2) g²
            let _ = p.exp_avg_sq.f_addcmul_(&grad, &grad.f_mul_scalar(1.0 - beta2)?)?;
            let mut denom = p.exp_avg_sq.f_sqrt()?; // √v̂ + ε
            let _ = denom.f_div_scalar_(bias_correction2_sqrt)?;
            let _ = denom.f_add_scalar_(eps)?;
            let mut update = p.exp_avg.f_div(&denom)?;
            let _ = update.f_mul_scalar_(step_size)?;
            let _ = p.param.f_sub_(&update)?;
        }
        Ok(())
    }

    /// The moments as named tensors, `exp_avg.NAME` and `exp_avg_sq.NAME` for every
    /// parameter `NAME` (shallow clones: they share storage with the optimizer's).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .flat_map(|p| {
                [
                    (format!("exp_avg.{}", p.name), p.exp_avg.shallow_clone()),
                    (format!("exp_avg_sq.{}", p.name), p.exp_avg_sq.shallow_clone()),
                ]
            })
            .collect()
    }

    /// Restore the step count and the moments saved by [`AdamW::state_tensors`]. Every
    /// moment must be there, with its parameter's shape, and nothing else; otherwise this is
    /// an error and the optimizer is left as it was.
    pub fn load_state(&mut self, step: usize, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let expected: Vec<(String, Vec<i64>)> = self
            .params
            .iter()
            .flat_map(|p| {
                [
                    (format!("exp_avg.{}", p.name), p.param.size()),
                    (format!("exp_avg_sq.{}", p.name), p.param.size()),
                ]
            })
            .collect();
        let mut problems = Vec::new();
        for (name, shape) in &expected {
            match tensors.get(name) {
                None => problems.push(format!("{name} is missing")),
                Some(t) if t.size() != *shape => {
                    problems.push(format!("{name} has shape {:?}, the parameter {:?}", t.size(), shape))
                }
                Some(_) => {}
            }
        }
        let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        let mut extra: Vec<&String> = tensors.keys().filter(|n| !known.contains(n.as_str())).collect();
        extra.sort();
        problems.extend(extra.into_iter().map(|n| format!("{n} belongs to no parameter of the model")));
        if !problems.is_empty() {
            return Err(Error::Config(format!(
                "optimizer state does not fit the model: {}",
                summarize(&problems)
            )));
        }
        let _no_grad = tch::no_grad_guard();
        for p in &mut self.params {
            p.exp_avg.f_copy_(&tensors[&format!("exp_avg.{}", p.name)])?;
            p.exp_avg_sq.f_copy_(&tensors[&format!("exp_avg_sq.{}", p.name)])?;
        }
        self.step = step;
        Ok(())
    }
}

/// At most a handful of problems, then a count of the rest.
pub(crate) fn summarize(problems: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = problems.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; ");
    if problems.len() > SHOWN {
        text.push_str(&format!("; and {} more", problems.len() - SHOWN));
    }
    text
}

/// Which names one list has that the other lacks.
pub(crate) fn describe_difference(a: &[&str], b: &[&str], a_name: &str, b_name: &str) -> String {
    let mut problems = Vec::new();
    for n in a.iter().filter(|n| !b.contains(n)) {
        problems.push(format!("{n} is in {a_name} but not in {b_name}"));
    }
    for n in b.iter().filter(|n| !a.contains(n)) {
        problems.push(format!("{n} is in {b_name} but not in {a_name}"));
    }
    if problems.is_empty() {
        problems.push("same names, different tensors".into());
    }
    summarize(&problems)
}
