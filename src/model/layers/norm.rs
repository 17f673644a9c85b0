//! Normalisation layers: GPT-2's LayerNorm and Llama's RMSNorm.

use crate::Result;
use tch::{nn, Kind, Tensor};

/// The epsilon of GPT-2's layer norms (PyTorch's default).
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// LayerNorm over the last dimension: each position's channels to mean 0 and variance 1
/// (`eps` added to the variance), then scaled by `weight` and, if there is one, shifted by
/// `bias` (PyTorch's before 2.1 always had one; nanoGPT's `bias=False` has none).
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,       // [C], starts at 1
    pub bias: Option<Tensor>, // [C], starts at 0
    pub eps: f64,
}

impl LayerNorm {
    /// A LayerNorm of `n_embd` channels with GPT-2's epsilon.
    pub fn new(vs: &nn::Path, n_embd: usize, bias: bool) -> Self {
        let n = n_embd as i64;
        let weight = vs.var("weight", &[n], nn::Init::Const(1.0));
        let bias = bias.then(|| vs.var("bias", &[n], nn::Init::Const(0.0)));
        Self { weight, bias, eps: LAYER_NORM_EPS }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let n = self.weight.size(); // [C]
        x.layer_norm(n, Some(&self.weight), self.bias.as_ref(), self.eps, true) // [B, T, C]
    }
}

/// RMSNorm (Zhang & Sennrich, 2019; Llama's): each position's channels divided by their root
/// mean square (`eps` added to the mean square), then scaled by `weight`. LayerNorm without
/// taking the mean away and without a bias: one reduction instead of two, and the same
/// training in practice. Computed in float32 whatever the input's kind, as Hugging Face's
/// `LlamaRMSNorm` does, and returned in the input's kind.
#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor, // [C], starts at 1
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(vs: &nn::Path, n_embd: usize, eps: f64) -> Self {
        Self { weight: vs.var("weight", &[n_embd as i64], nn::Init::Const(1.0)), eps }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x32 = x.f_to_kind(Kind::Float)?; // [B, T, C]
        let mean_square = x32.f_pow_tensor_scalar(2)?.f_mean_dim(-1, true, Kind::Float)?; // [B, T, 1]
        let normed = x32.f_mul(&(mean_square + self.eps).f_rsqrt()?)?.f_to_kind(x.kind())?;
        Ok(normed.f_mul(&self.weight)?) // [B, T, C]
    }
}
