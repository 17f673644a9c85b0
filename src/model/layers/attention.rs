//! Causal self-attention as nanoGPT writes it: one fused projection for the queries, keys and
//! values of all heads, the heads as a batch dimension, and libtorch's fused kernel.
//!
//! Shapes: `B` batch, `T` time (context length), `C` channels (`n_embd`), `nh` heads,
//! `hs` head size (`C / nh`). Chapter 4's lecture forms of the same computation (one
//! [`crate::model::Head`], several side by side) are in [`crate::model::lecture`].

use super::kv_cache::KvCache;
use super::linear::{Linear, INIT_STD};
use super::rotary::Rotary;
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
        let y = attend_cached(&q, &k, &v, past, false)?; // [B, nh, T, hs]
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

/// Queries `q` `[B, nh, T, hs]` of the `T` positions after the `past` ones, reading the keys
/// and values `k`, `v` `[B, nkv, past + T, hs]` of every position so far, causally. With
/// `gqa`, `nkv` may be a divisor of `nh` (grouped-query attention; else `nkv == nh`).
fn attend_cached(q: &Tensor, k: &Tensor, v: &Tensor, past: i64, gqa: bool) -> Result<Tensor> {
    let t = q.size()[2];
    Ok(match (past, t) {
        // The prefill: exactly the uncached causal attention.
        (0, _) => Tensor::f_scaled_dot_product_attention::<Tensor>(q, k, v, None, 0.0, true, None, gqa)?,
        // One new position reads every key: nothing to mask.
        (_, 1) => Tensor::f_scaled_dot_product_attention::<Tensor>(q, k, v, None, 0.0, false, None, gqa)?,
        // Query i is position past + i: it may read keys 0..=past + i.
        _ => {
            let allowed = Tensor::f_ones([t, past + t], (Kind::Bool, q.device()))?.f_tril(past)?; // [T, past + T]
            Tensor::f_scaled_dot_product_attention(q, k, v, Some(allowed), 0.0, false, None, gqa)?
        }
    }) // [B, nh, T, hs]
}

/// Llama's attention: separate projections for the queries (`n_head` heads) and for the keys
/// and values (`n_kv_head` heads, a divisor of `n_head`: each key/value head serves a group of
/// `n_head / n_kv_head` query heads; `n_kv_head == n_head` is ordinary multi-head attention,
/// 1 is multi-query attention), rotary positions on the queries and keys, no biases, no
/// dropout. The KV cache holds only the `n_kv_head` heads: that is what grouping saves.
#[derive(Debug)]
pub struct GroupedQueryAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_size: usize,
}

impl GroupedQueryAttention {
    /// Its projections under `vs` (`q_proj`, `k_proj`, `v_proj`, `o_proj`), `N(0, 0.02)` but
    /// `o_proj`'s `N(0, proj_std)`.
    pub fn new(vs: &nn::Path, n_embd: usize, n_head: usize, n_kv_head: usize, proj_std: f64) -> Result<Self> {
        let hs = head_size(n_embd, n_head)?;
        if n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) {
            return Err(Error::Config(format!(
                "n_head ({n_head}) must be a multiple of n_kv_head ({n_kv_head}): each key/value head serves \
                 n_head / n_kv_head query heads"
            )));
        }
        let kv = n_kv_head * hs;
        Ok(Self {
            q_proj: Linear::new(&(vs / "q_proj"), n_embd, n_embd, false, INIT_STD),
            k_proj: Linear::new(&(vs / "k_proj"), n_embd, kv, false, INIT_STD),
            v_proj: Linear::new(&(vs / "v_proj"), n_embd, kv, false, INIT_STD),
            o_proj: Linear::new(&(vs / "o_proj"), n_embd, n_embd, false, proj_std),
            n_head,
            n_kv_head,
            head_size: hs,
        })
    }

    /// `x` `[B, T, C]` of positions `0..T` to `[B, T, C]`, causally.
    pub fn forward(&self, x: &Tensor, rotary: &Rotary) -> Result<Tensor> {
        let (b, t, c) = check_input(x, self.n_head * self.head_size, None)?;
        let (q, k, v) = self.qkv(x, rotary, 0)?; // [B, nh, T, hs], [B, nkv, T, hs] twice
        let gqa = self.n_kv_head != self.n_head;
        let y = Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, true, None, gqa)?;
        self.out(&y, b, t, c)
    }

    /// [`GroupedQueryAttention::forward`] for the positions after those in `cache`, adding
    /// their keys and values to layer `layer`'s entry (see [`CausalSelfAttention::forward_cached`]).
    pub fn forward_cached(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor> {
        let (b, t, c) = check_input(x, self.n_head * self.head_size, None)?;
        let past = cache.len();
        let (q, k, v) = self.qkv(x, rotary, past)?;
        let (k, v) = cache.append(layer, &k, &v)?; // each [B, nkv, past + T, hs]
        let y = attend_cached(&q, &k, &v, past as i64, self.n_kv_head != self.n_head)?; // [B, nh, T, hs]
        self.out(&y, b, t, c)
    }

    /// The queries `[B, nh, T, hs]` and the keys and values `[B, nkv, T, hs]` of positions
    /// `start..start + T`, the queries and keys rotated.
    fn qkv(&self, x: &Tensor, rotary: &Rotary, start: usize) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t) = (x.size()[0], x.size()[1]);
        let heads =
            |z: Tensor, n: usize| z.f_view([b, t, n as i64, self.head_size as i64])?.f_transpose(1, 2);
        let q = rotary.apply(&heads(self.q_proj.forward(x), self.n_head)?, start)?;
        let k = rotary.apply(&heads(self.k_proj.forward(x), self.n_kv_head)?, start)?;
        let v = heads(self.v_proj.forward(x), self.n_kv_head)?;
        Ok((q, k, v))
    }

    fn out(&self, y: &Tensor, b: i64, t: i64, c: i64) -> Result<Tensor> {
        Ok(self.o_proj.forward(&y.f_transpose(1, 2)?.f_contiguous()?.f_view([b, t, c])?))
        // [B, T, C]
    }
}

/// `softmax(q kᵀ / √hs)` with the future masked out: `q`, `k` `[B, nh, T, hs]` to `[B, nh, T, T]`.
fn causal_softmax(q: &Tensor, k: &Tensor) -> Tensor {
    let (t, hs) = (q.size()[2], q.size()[3]);
    let att = q.matmul(&k.transpose(-2, -1)) * (1.0 / (hs as f64).sqrt()); // [B, nh, T, T]
    let future = Tensor::ones([t, t], (Kind::Bool, q.device())).tril(0).logical_not(); // [T, T]
    att.masked_fill(&future, f64::NEG_INFINITY).softmax(-1, Kind::Float) // [B, nh, T, T]
}
