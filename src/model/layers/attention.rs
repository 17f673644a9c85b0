//! Causal self-attention as nanoGPT writes it: one fused projection for the queries, keys and
//! values of all heads, the heads as a batch dimension, and libtorch's fused kernel.
//!
//! Shapes: `B` batch, `T` time (context length), `C` channels (`n_embd`), `nh` heads,
//! `hs` head size (`C / nh`). Chapter 4's lecture forms of the same computation (one
//! [`crate::model::Head`], several side by side) are in [`crate::model::lecture`].

use super::kv_cache::KvCache;
use super::linear::{Linear, INIT_STD};
use crate::{Error, Result};
use tch::{nn, Kind, Tensor};

/// What a [`CausalSelfAttention`] is made of; a model's config says it (`GptConfig::attention`).
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionConfig {
    /// The width of the stream it reads and writes (`C`).
    pub n_embd: usize,
    /// Heads; each gets `n_embd / n_head` channels.
    pub n_head: usize,
    /// A bias on the fused query/key/value projection `c_attn`.
    pub qkv_bias: bool,
    /// A bias on the output projection `c_proj`.
    pub proj_bias: bool,
    /// The initial standard deviation of `c_proj` (`c_attn` starts at [`INIT_STD`]).
    pub proj_std: f64,
    /// Applied to the attention weights and to the output, in training only.
    pub dropout: f64,
}

/// Check that `x` is `[B, T, C]` with `C == n_embd`, `T >= 1` and (when given) `T <= max_t`;
/// return `(B, T, C)`.
pub(crate) fn check_input(x: &Tensor, n_embd: usize, max_t: Option<usize>) -> Result<(i64, i64, i64)> {
    match x.size()[..] {
        [b, t, c] if c == n_embd as i64 && t >= 1 && max_t.is_none_or(|m| t <= m as i64) => Ok((b, t, c)),
        [_, t, c] if c == n_embd as i64 && t >= 1 => Err(Error::Config(format!(
            "a context of {t} positions is longer than block_size {}",
            max_t.unwrap_or_default()
        ))),
        _ => Err(Error::Config(format!(
            "attention expects an input of shape [batch, time >= 1, n_embd = {n_embd}], got {:?}",
            x.size()
        ))),
    }
}

/// `n_embd / n_head`, or an error saying how to make it whole.
pub(crate) fn head_size(n_embd: usize, n_head: usize) -> Result<usize> {
    if n_head == 0 || n_embd == 0 || !n_embd.is_multiple_of(n_head) {
        return Err(Error::Config(format!(
            "n_embd ({n_embd}) must be a positive multiple of n_head ({n_head}): each head gets \
             n_embd / n_head channels"
        )));
    }
    Ok(n_embd / n_head)
}

/// A dropout probability must be in `[0, 1)`; the error calls the setting `name`.
pub(crate) fn check_dropout(name: &str, p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::Config(format!("{name} must be in [0, 1), got {p}")))
    }
}

/// nanoGPT's causal self-attention: all heads in one fused projection and one batched kernel.
#[derive(Debug)]
pub struct CausalSelfAttention {
    /// Query, key and value projections for all heads, fused: `C -> 3C`. The rows of its
    /// weight `[3C, C]` are `q` (heads `0..nh` in order), then `k`, then `v`.
    pub c_attn: Linear,
    /// Output projection `C -> C`.
    pub c_proj: Linear,
    pub n_embd: usize,
    pub n_head: usize,
    /// Applied to the attention weights and to the output, in training only.
    pub dropout: f64,
}

impl CausalSelfAttention {
    /// An attention of `config`'s sizes under `vs` (`c_attn`, `c_proj`), its weights
    /// `N(0, 0.02)` but `c_proj`'s `N(0, config.proj_std)`, its biases zero. A model's config
    /// converts into an [`AttentionConfig`] (`&GptConfig` does).
    pub fn new(vs: &nn::Path, config: impl Into<AttentionConfig>) -> Result<Self> {
        let config = config.into();
        let c = config.n_embd;
        head_size(c, config.n_head)?;
        check_dropout("dropout", config.dropout)?;
        Ok(Self {
            c_attn: Linear::new(&(vs / "c_attn"), c, 3 * c, config.qkv_bias, INIT_STD),
            c_proj: Linear::new(&(vs / "c_proj"), c, c, config.proj_bias, config.proj_std),
            n_embd: c,
            n_head: config.n_head,
            dropout: config.dropout,
        })
    }

    /// `x` `[B, T, C]` to `[B, T, C]`, with libtorch's fused `scaled_dot_product_attention`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, t, c) = check_input(x, self.n_embd, None)?;
        let (q, k, v) = self.qkv(x, b, t, c); // each [B, nh, T, hs]
        let p = if train { self.dropout } else { 0.0 };
        // y [B, nh, T, hs]: the causal mask, softmax(q kᵀ / √hs), dropout p and the weighted sum
        // of v, in one kernel (no extra mask, the default scale 1/√hs, no grouped-query attention).
        let y = Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, p, true, None, false)?;
        Ok(self.out(&y, b, t, c, train)) // [B, T, C]
    }

    /// [`CausalSelfAttention::forward`] for the `T` positions `x` `[B, T, C]` that follow
    /// those in `cache`, in evaluation mode: their keys and values are added to layer
    /// `layer`'s entry, and each of their queries reads every cached position and the new
    /// ones up to itself.
    pub fn forward_cached(&self, x: &Tensor, cache: &mut KvCache, layer: usize) -> Result<Tensor> {
        let (b, t, c) = check_input(x, self.n_embd, None)?;
        let (q, k, v) = self.qkv(x, b, t, c); // each [B, nh, T, hs]
        let past = cache.len() as i64;
        let (k, v) = cache.append(layer, &k, &v)?; // each [B, nh, past + T, hs]
        let y = match (past, t) {
            // The prefill: exactly `forward`'s causal attention.
            (0, _) => {
                Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, true, None, false)?
            }
            // One new position reads every key: nothing to mask.
            (_, 1) => {
                Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false)?
            }
            // Query i is position past + i: it may read keys 0..=past + i.
            _ => {
                let allowed = Tensor::f_ones([t, past + t], (Kind::Bool, x.device()))?.f_tril(past)?; // [T, past + T]
                Tensor::f_scaled_dot_product_attention(&q, &k, &v, Some(allowed), 0.0, false, None, false)?
            }
        }; // [B, nh, T, hs]
        Ok(self.out(&y, b, t, c, false)) // [B, T, C]
    }

    /// The same as [`CausalSelfAttention::forward`], written out step by step.
    pub fn forward_manual(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.forward_with_weights(x, train)?.0)
    }

    /// [`CausalSelfAttention::forward_manual`]'s output `[B, T, C]`, and the attention weights
    /// `[B, nh, T, T]` it used (before dropout): row `t` of head `h` is how much position `t`
    /// reads each position `0..=t` (it sums to 1).
    pub fn forward_with_weights(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let (b, t, c) = check_input(x, self.n_embd, None)?;
        let (q, k, v) = self.qkv(x, b, t, c); // each [B, nh, T, hs]
        let att = causal_softmax(&q, &k); // [B, nh, T, T]
        let y = att.dropout(self.dropout, train).matmul(&v); // [B, nh, T, T] @ [B, nh, T, hs] -> [B, nh, T, hs]
        Ok((self.out(&y, b, t, c, train), att)) // [B, T, C], [B, nh, T, T]
    }

    /// The fused projection, split into q, k, v and each reshaped so heads are a batch dim.
    fn qkv(&self, x: &Tensor, b: i64, t: i64, c: i64) -> (Tensor, Tensor, Tensor) {
        let nh = self.n_head as i64;
        let qkv = self.c_attn.forward(x).split(c, 2); // 3 × [B, T, C]
        let heads = |z: &Tensor| z.view([b, t, nh, c / nh]).transpose(1, 2); // [B, nh, T, hs]
        (heads(&qkv[0]), heads(&qkv[1]), heads(&qkv[2]))
    }

    /// Heads side by side again, then the output projection and the residual dropout.
    fn out(&self, y: &Tensor, b: i64, t: i64, c: i64, train: bool) -> Tensor {
        let y = y.transpose(1, 2).contiguous().view([b, t, c]); // [B, T, nh, hs] -> [B, T, C]
        self.c_proj.forward(&y).dropout(self.dropout, train) // [B, T, C]
    }
}

/// `softmax(q kᵀ / √hs)` with the future masked out: `q`, `k` `[B, nh, T, hs]` to `[B, nh, T, T]`.
fn causal_softmax(q: &Tensor, k: &Tensor) -> Tensor {
    let (t, hs) = (q.size()[2], q.size()[3]);
    let att = q.matmul(&k.transpose(-2, -1)) * (1.0 / (hs as f64).sqrt()); // [B, nh, T, T]
    let future = Tensor::ones([t, t], (Kind::Bool, q.device())).tril(0).logical_not(); // [T, T]
    att.masked_fill(&future, f64::NEG_INFINITY).softmax(-1, Kind::Float) // [B, nh, T, T]
}
