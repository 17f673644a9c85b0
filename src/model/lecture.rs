//! Chapter 4's attention as the lecture writes it, before nanoGPT fuses it into
//! [`CausalSelfAttention`].
//!
//! - [`Head`]: one head: separate `key`, `query` and `value` projections (no bias), the scores
//!   `q · kᵀ / √head_size`, the causal mask from a lower-triangular `tril` buffer, softmax,
//!   dropout, and the weighted sum of the values.
//! - [`MultiHeadAttention`]: `n_head` such heads side by side, their outputs concatenated and
//!   mixed by an output projection `proj` (with bias), then dropout.
//!
//! [`CausalSelfAttention::from_multi_head`] builds the fused form with the weights of a
//! [`MultiHeadAttention`], so a test (or chapter 4) can check that all three agree.
//!
//! Shapes: `B` batch, `T` time (context length), `C` channels (`n_embd`), `nh` heads,
//! `hs` head size (`C / nh`).

use super::layers::attention::{check_dropout, check_input, head_size, AttentionConfig};
use super::layers::{CausalSelfAttention, Linear, INIT_STD};
use crate::{Error, Result};
use tch::{nn, Kind, Tensor};

/// One head of causal self-attention, as in the lecture.
#[derive(Debug)]
pub struct Head {
    pub key: Linear,   // C -> hs, no bias
    pub query: Linear, // C -> hs, no bias
    pub value: Linear, // C -> hs, no bias
    /// Lower-triangular ones `[block_size, block_size]`: position `t` may look at `0..=t`.
    /// A buffer, not a parameter: it is not in the var store and is never trained.
    pub tril: Tensor,
    pub n_embd: usize,
    pub head_size: usize,
    pub block_size: usize,
    pub dropout: f64,
}

impl Head {
    /// A head reading `n_embd` channels and producing `head_size`, for contexts of up to
    /// `block_size` positions; `dropout` applies to the attention weights in training.
    pub fn new(
        vs: &nn::Path,
        n_embd: usize,
        head_size: usize,
        block_size: usize,
        dropout: f64,
    ) -> Result<Self> {
        if n_embd == 0 || head_size == 0 || block_size == 0 {
            return Err(Error::Config(format!(
                "a head needs n_embd, head_size and block_size >= 1, got {n_embd}, {head_size}, {block_size}"
            )));
        }
        check_dropout("dropout", dropout)?;
        let b = block_size as i64;
        Ok(Self {
            key: Linear::new(&(vs / "key"), n_embd, head_size, false, INIT_STD),
            query: Linear::new(&(vs / "query"), n_embd, head_size, false, INIT_STD),
            value: Linear::new(&(vs / "value"), n_embd, head_size, false, INIT_STD),
            tril: Tensor::ones([b, b], (Kind::Float, vs.device())).tril(0), // [block, block]
            n_embd,
            head_size,
            block_size,
            dropout,
        })
    }

    /// `x` `[B, T, C]` to `[B, T, hs]`; dropout on the attention weights when `train`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_b, t, _c) = check_input(x, self.n_embd, Some(self.block_size))?;
        let k = self.key.forward(x); // [B, T, hs]
        let q = self.query.forward(x); // [B, T, hs]
        let scale = (self.head_size as f64).powf(-0.5); // keeps the scores' variance ~1 at init
        let wei = q.matmul(&k.transpose(-2, -1)) * scale; // [B, T, hs] @ [B, hs, T] -> [B, T, T]
        let mask = self.tril.narrow(0, 0, t).narrow(1, 0, t).eq(0.0); // [T, T], true above the diagonal
        let wei = wei.masked_fill(&mask, f64::NEG_INFINITY); // [B, T, T]: no peeking at the future
        let wei = wei.softmax(-1, Kind::Float); // [B, T, T], rows sum to 1
        let wei = wei.dropout(self.dropout, train); // [B, T, T]
        let v = self.value.forward(x); // [B, T, hs]
        Ok(wei.matmul(&v)) // [B, T, T] @ [B, T, hs] -> [B, T, hs]
    }
}

/// Several heads in parallel, concatenated and projected back to `n_embd`, as in the lecture.
#[derive(Debug)]
pub struct MultiHeadAttention {
    pub heads: Vec<Head>,
    pub proj: Linear, // C -> C, with bias
    pub n_embd: usize,
    pub n_head: usize,
    pub dropout: f64,
}

impl MultiHeadAttention {
    /// `n_head` heads of `n_embd / n_head` channels each (so `n_head` must divide `n_embd`).
    pub fn new(vs: &nn::Path, n_embd: usize, n_head: usize, block_size: usize, dropout: f64) -> Result<Self> {
        let head_size = head_size(n_embd, n_head)?;
        let heads = (0..n_head)
            .map(|h| Head::new(&(vs / "heads" / h), n_embd, head_size, block_size, dropout))
            .collect::<Result<Vec<_>>>()?;
        let proj = Linear::new(&(vs / "proj"), n_embd, n_embd, true, INIT_STD);
        Ok(Self { heads, proj, n_embd, n_head, dropout })
    }

    /// `x` `[B, T, C]` to `[B, T, C]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let outs = self.heads.iter().map(|h| h.forward(x, train)); // nh × [B, T, hs]
        let out = Tensor::cat(&outs.collect::<Result<Vec<_>>>()?, -1); // [B, T, nh*hs] = [B, T, C]
        Ok(self.proj.forward(&out).dropout(self.dropout, train)) // [B, T, C]
    }
}

impl CausalSelfAttention {
    /// A fused attention computing exactly what `mha` computes: its heads' query, key and
    /// value weights are stacked into `c_attn` (no bias), its `proj` copied into `c_proj`.
    /// The new variables live under `vs`; `mha` is left as it is.
    pub fn from_multi_head(vs: &nn::Path, mha: &MultiHeadAttention) -> Result<Self> {
        let config = AttentionConfig {
            n_embd: mha.n_embd,
            n_head: mha.n_head,
            qkv_bias: false,
            proj_bias: true,
            proj_std: INIT_STD,
            dropout: mha.dropout,
        };
        let mut attn = Self::new(vs, config)?;
        let _no_grad = tch::no_grad_guard();
        let rows = |f: fn(&Head) -> &Linear| -> Vec<&Tensor> { mha.heads.iter().map(|h| &f(h).ws).collect() };
        let q = Tensor::f_cat(&rows(|h| &h.query), 0)?; // nh × [hs, C] -> [C, C]
        let k = Tensor::f_cat(&rows(|h| &h.key), 0)?; // [C, C]
        let v = Tensor::f_cat(&rows(|h| &h.value), 0)?; // [C, C]
        attn.c_attn.ws.f_copy_(&Tensor::f_cat(&[q, k, v], 0)?)?; // [3C, C]
        attn.c_proj.ws.f_copy_(&mha.proj.ws)?; // [C, C]
        if let (Some(dst), Some(src)) = (attn.c_proj.bs.as_mut(), mha.proj.bs.as_ref()) {
            dst.f_copy_(src)?; // [C]
        }
        Ok(attn)
    }
}
