//! The transformer block: communication (attention) then computation (the MLP), each reading
//! a normalised copy of the residual stream and adding its output to it (pre-norm).

use super::attention::{AttentionConfig, CausalSelfAttention};
use super::kv_cache::KvCache;
use super::linear::Linear;
use super::mlp::{Mlp, MlpConfig};
use super::norm::LayerNorm;
use crate::Result;
use tch::{nn, Tensor};

/// What a [`Block`] is made of; a model's config says it (`GptConfig::block`).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockConfig {
    pub attention: AttentionConfig,
    pub mlp: MlpConfig,
    /// Biases in the two LayerNorms.
    pub norm_bias: bool,
}

/// One pre-norm transformer block: `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`.
#[derive(Debug)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub attn: CausalSelfAttention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    /// A block under `vs` (`ln_1`, `attn`, `ln_2`, `mlp`, drawn in that order). A model's config
    /// converts into a [`BlockConfig`] (`&GptConfig` does).
    pub fn new(vs: &nn::Path, config: impl Into<BlockConfig>) -> Result<Self> {
        let config = config.into();
        let c = config.attention.n_embd;
        Ok(Self {
            ln_1: LayerNorm::new(&(vs / "ln_1"), c, config.norm_bias),
            attn: CausalSelfAttention::new(&(vs / "attn"), config.attention)?,
            ln_2: LayerNorm::new(&(vs / "ln_2"), c, config.norm_bias),
            mlp: Mlp::new(&(vs / "mlp"), &config.mlp),
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = x + self.attn.forward(&self.ln_1.forward(x), train)?; // [B, T, C]
        Ok(self.mlp_residual(&x, train)) // [B, T, C]
    }

    /// [`Block::forward`] in evaluation mode for the positions after those in `cache`
    /// (layer `layer`'s entry).
    pub fn forward_cached(&self, x: &Tensor, cache: &mut KvCache, layer: usize) -> Result<Tensor> {
        let x = x + self.attn.forward_cached(&self.ln_1.forward(x), cache, layer)?; // [B, T, C]
        Ok(self.mlp_residual(&x, false)) // [B, T, C]
    }

    /// The block's output, and the attention weights `[B, nh, T, T]` it used (evaluation: no
    /// dropout), through the attention written out instead of the fused kernel.
    pub fn forward_with_weights(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (att, weights) = self.attn.forward_with_weights(&self.ln_1.forward(x), false)?;
        Ok((self.mlp_residual(&(x + att), false), weights))
    }

    /// The block's four projections, each with its path under the block (`attn`, `c_attn`, …):
    /// where LoRA adapters go.
    pub fn projections_mut(&mut self) -> [(&'static str, &'static str, &mut Linear); 4] {
        [
            ("attn", "c_attn", &mut self.attn.c_attn),
            ("attn", "c_proj", &mut self.attn.c_proj),
            ("mlp", "c_fc", &mut self.mlp.c_fc),
            ("mlp", "c_proj", &mut self.mlp.c_proj),
        ]
    }

    /// The second residual addition: `x + mlp(ln_2(x))`.
    fn mlp_residual(&self, x: &Tensor, train: bool) -> Tensor {
        x + self.mlp.forward(&self.ln_2.forward(x), train) // [B, T, C]
    }
}
