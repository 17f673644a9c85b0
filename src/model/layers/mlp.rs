//! The feed-forward part of a block: each position on its own, `C -> hidden -> C`.

use super::linear::{Linear, INIT_STD};
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// The non-linearity between the two layers of an [`Mlp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `max(0, x)`: the lecture's.
    Relu,
    /// The exact (erf) GELU: nanoGPT's.
    Gelu,
    /// GELU through its tanh approximation, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`:
    /// GPT-2's (Hugging Face's `gelu_new`). It differs from the exact one by up to ~1e-3 per
    /// value, enough to change GPT-2's logits visibly: loaded weights need the one they were
    /// trained with.
    #[serde(rename = "gelu_tanh")]
    GeluTanh,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu("none"),
            Activation::GeluTanh => x.gelu("tanh"),
        }
    }
}

/// What an [`Mlp`] is made of; a model's config says it (`GptConfig::mlp`).
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    /// The width of its input and output (`C`).
    pub n_embd: usize,
    /// The hidden width (GPT's `4C`).
    pub hidden: usize,
    /// Biases on both layers.
    pub bias: bool,
    pub activation: Activation,
    /// Applied to the output, in training only.
    pub dropout: f64,
    /// The initial standard deviation of `c_proj`, the layer that writes into the residual
    /// stream (`c_fc` starts at [`INIT_STD`]).
    pub proj_std: f64,
}

/// Two linear layers with an activation between: `c_fc` (`C -> hidden`), then `c_proj`
/// (`hidden -> C`), then dropout.
#[derive(Debug)]
pub struct Mlp {
    pub c_fc: Linear,   // C -> hidden
    pub c_proj: Linear, // hidden -> C, scaled init
    pub activation: Activation,
    pub dropout: f64,
}

impl Mlp {
    pub fn new(vs: &nn::Path, config: &MlpConfig) -> Self {
        let (c, hidden, bias) = (config.n_embd, config.hidden, config.bias);
        Self {
            c_fc: Linear::new(&(vs / "c_fc"), c, hidden, bias, INIT_STD),
            c_proj: Linear::new(&(vs / "c_proj"), hidden, c, bias, config.proj_std),
            activation: config.activation,
            dropout: config.dropout,
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.activation.apply(&self.c_fc.forward(x)); // [B, T, hidden]
        self.c_proj.forward(&h).dropout(self.dropout, train) // [B, T, C]
    }
}

/// Llama's feed-forward layer, SwiGLU (Shazeer, 2020): two projections up, one through SiLU
/// gating the other, and one down, `down(silu(gate(x)) · up(x))`, without biases. Three
/// matrices instead of two, so at an equal parameter count its hidden width is 2/3 of an
/// [`Mlp`]'s (Llama's `intermediate_size`: 8/3 · C, rounded).
#[derive(Debug)]
pub struct SwiGlu {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl SwiGlu {
    /// Its three projections under `vs`, `N(0, 0.02)` but `down_proj`'s `N(0, proj_std)`.
    pub fn new(vs: &nn::Path, n_embd: usize, hidden: usize, proj_std: f64) -> Self {
        Self {
            gate_proj: Linear::new(&(vs / "gate_proj"), n_embd, hidden, false, INIT_STD),
            up_proj: Linear::new(&(vs / "up_proj"), n_embd, hidden, false, INIT_STD),
            down_proj: Linear::new(&(vs / "down_proj"), hidden, n_embd, false, proj_std),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let gate = self.gate_proj.forward(x).silu(); // [B, T, hidden]
        self.down_proj.forward(&(gate * self.up_proj.forward(x))) // [B, T, C]
    }
}
