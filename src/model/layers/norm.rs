//! Normalisation layers.

use tch::{nn, Tensor};

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
