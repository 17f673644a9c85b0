//! The linear layer every projection of every model is: `y = x Wᵀ + b`, PyTorch's `nn.Linear`,
//! with a slot for a LoRA adapter (chapter 10 trains those).
//!
//! **LoRA** (Hu et al., 2021) leaves `W` frozen and learns a low-rank change to it instead:
//! `y = x Wᵀ + b + (α / r) · x Aᵀ Bᵀ`, with `A` `[r, in]` and `B` `[out, r]` for a rank `r`
//! far below `in` and `out`. `B` starts at zero, so an adapter added to a trained model changes
//! nothing until it trains. [`Linear::merge`] folds it into the weight, `W ← W + (α / r) · B A`:
//! the merged layer computes the same, and is an ordinary linear layer again.

use crate::{Error, Result};
use tch::{nn, Tensor};

/// nanoGPT's initial standard deviation for projection and embedding weights.
pub const INIT_STD: f64 = 0.02;

/// A linear layer `in -> out`: weight `ws` `[out, in]`, an optional bias `bs` `[out]` (the
/// names of tch's `nn::Linear`), and an optional LoRA adapter. It is an `nn::Module`, so
/// `x.apply(&layer)` works as with tch's.
#[derive(Debug)]
pub struct Linear {
    pub ws: Tensor,
    pub bs: Option<Tensor>,
    pub lora: Option<Lora>,
}

/// A LoRA adapter: the low-rank update `scale · B A` of a [`Linear`]'s weight.
#[derive(Debug)]
pub struct Lora {
    /// `[r, in]`, drawn as PyTorch draws a Linear's weight (uniform in `±1/√in`).
    pub a: Tensor,
    /// `[out, r]`, zero at the start.
    pub b: Tensor,
    /// `α / r`.
    pub scale: f64,
}

impl Linear {
    /// A layer `in_dim -> out_dim` under `vs` (`weight`, and `bias` if `bias`), the weight
    /// `N(0, std)` and the bias zero (nanoGPT's initial weights).
    pub fn new(vs: &nn::Path, in_dim: usize, out_dim: usize, bias: bool, std: f64) -> Self {
        let (i, o) = (in_dim as i64, out_dim as i64);
        let bs = bias.then(|| vs.var("bias", &[o], nn::Init::Const(0.0)));
        let ws = vs.var("weight", &[o, i], nn::Init::Randn { mean: 0.0, stdev: std });
        Self { ws, bs, lora: None }
    }

    /// `x` `[..., in]` to `[..., out]`, through the adapter too when there is one.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.linear(&self.ws, self.bs.as_ref());
        match &self.lora {
            None => y,
            Some(lora) => {
                y + x.linear(&lora.a, None::<&Tensor>).linear(&lora.b, None::<&Tensor>) * lora.scale
            }
        }
    }

    /// Give the layer a LoRA adapter of rank `rank` and scale `alpha / rank`, its variables
    /// `lora_a` and `lora_b` under `vs` (the layer's own path). The layer's output does not
    /// change until the adapter trains (`B` is zero).
    pub fn add_lora(&mut self, vs: &nn::Path, rank: usize, alpha: f64) -> Result<()> {
        let (out_dim, in_dim) = match self.ws.size()[..] {
            [o, i] => (o, i),
            _ => {
                return Err(Error::Config(format!("a linear weight is [out, in], got {:?}", self.ws.size())))
            }
        };
        if rank == 0 || rank as i64 > in_dim.min(out_dim) {
            return Err(Error::Config(format!(
                "a LoRA rank must be between 1 and the smaller side of the weight ({}), got {rank}",
                in_dim.min(out_dim)
            )));
        }
        if !(alpha > 0.0 && alpha.is_finite()) {
            return Err(Error::Config(format!("a LoRA alpha must be a positive number, got {alpha}")));
        }
        if self.lora.is_some() {
            return Err(Error::Config("this layer already has a LoRA adapter".into()));
        }
        let bound = 1.0 / (in_dim as f64).sqrt();
        let r = rank as i64;
        let a = vs.var("lora_a", &[r, in_dim], nn::Init::Uniform { lo: -bound, up: bound });
        let b = vs.var("lora_b", &[out_dim, r], nn::Init::Const(0.0));
        self.lora = Some(Lora { a, b, scale: alpha / rank as f64 });
        Ok(())
    }

    /// Fold the adapter into the weight (`W ← W + scale · B A`) and drop it: the layer computes
    /// what it computed with the adapter. (Its variables stay in the var store, unused.)
    pub fn merge(&mut self) -> Result<()> {
        if let Some(lora) = self.lora.take() {
            let _no_grad = tch::no_grad_guard();
            let delta = lora.b.f_matmul(&lora.a)?.f_mul_scalar(lora.scale)?; // [out, in]
            let _ = self.ws.f_add_(&delta)?;
        }
        Ok(())
    }
}

impl nn::Module for Linear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        Linear::forward(self, xs)
    }
}
