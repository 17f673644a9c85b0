//! Causal self-attention, the idea of chapter 4, in the three forms the course meets it.
//!
//! - [`Head`]: one head, as the lecture writes it: separate `key`, `query` and `value`
//!   projections (no bias), the scores `q · kᵀ / √head_size`, the causal mask from a
//!   lower-triangular `tril` buffer, softmax, dropout, and the weighted sum of the values.
//! - [`MultiHeadAttention`]: `n_head` such heads side by side, their outputs concatenated and
//!   mixed by an output projection `proj` (with bias), then dropout.
//! - [`CausalSelfAttention`]: nanoGPT's form of the same computation: one fused `c_attn`
//!   projection gives q, k and v for all heads at once, the heads become a batch dimension
//!   (`[B, nh, T, hs]`), and libtorch's fused `scaled_dot_product_attention` does the masked
//!   softmax in one kernel (flash attention on a GPU). [`CausalSelfAttention::forward_manual`]
//!   spells the same steps out, and [`CausalSelfAttention::from_multi_head`] builds one with
//!   the weights of a [`MultiHeadAttention`], so a test (or chapter 4) can check that all
//!   three agree.
//!
//! Shapes: `B` batch, `T` time (context length), `C` channels (`n_embd`), `nh` heads,
//! `hs` head size (`C / nh`).
//!
//! Initial weights follow nanoGPT: projections `N(0, 0.02)`, biases zero; `c_proj` of
//! [`CausalSelfAttention`] built for a [`GptConfig`] gets `N(0, 0.02/√(2·n_layer))` (see
//! [`crate::model::gpt`]).

use super::gpt::GptConfig;
use super::kv_cache::KvCache;
use crate::{Error, Result};
use tch::{nn, Kind, Tensor};

/// nanoGPT's initial standard deviation for projection and embedding weights.
pub(crate) const INIT_STD: f64 = 0.02;

/// A linear layer `in_dim -> out_dim` with weights `N(0, std)` and, if `bias`, a zero bias.
pub(crate) fn linear(vs: nn::Path, in_dim: usize, out_dim: usize, bias: bool, std: f64) -> nn::Linear {
    let config = nn::LinearConfig {
        ws_init: nn::Init::Randn { mean: 0.0, stdev: std },
        bs_init: Some(nn::Init::Const(0.0)),
        bias,
    };
    nn::linear(vs, in_dim as i64, out_dim as i64, config)
}

/// Check that `x` is `[B, T, C]` with `C == n_embd`, `T >= 1` and (when given) `T <= max_t`;
/// return `(B, T, C)`.
fn check_input(x: &Tensor, n_embd: usize, max_t: Option<usize>) -> Result<(i64, i64, i64)> {
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

/// One head of causal self-attention, as in the lecture.
#[derive(Debug)]
pub struct Head {
    pub key: nn::Linear,   // C -> hs, no bias
    pub query: nn::Linear, // C -> hs, no bias
    pub value: nn::Linear, // C -> hs, no bias
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
        check_dropout(dropout)?;
        let b = block_size as i64;
        Ok(Self {
            key: linear(vs / "key", n_embd, head_size, false, INIT_STD),
            query: linear(vs / "query", n_embd, head_size, false, INIT_STD),
            value: linear(vs / "value", n_embd, head_size, false, INIT_STD),
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
        let k = x.apply(&self.key); // [B, T, hs]
        let q = x.apply(&self.query); // [B, T, hs]
        let scale = (self.head_size as f64).powf(-0.5); // keeps the scores' variance ~1 at init
        let wei = q.matmul(&k.transpose(-2, -1)) * scale; // [B, T, hs] @ [B, hs, T] -> [B, T, T]
        let mask = self.tril.narrow(0, 0, t).narrow(1, 0, t).eq(0.0); // [T, T], true above the diagonal
        let wei = wei.masked_fill(&mask, f64::NEG_INFINITY); // [B, T, T]: no peeking at the future
        let wei = wei.softmax(-1, Kind::Float); // [B, T, T], rows sum to 1
        let wei = wei.dropout(self.dropout, train); // [B, T, T]
        let v = x.apply(&self.value); // [B, T, hs]
        Ok(wei.matmul(&v)) // [B, T, T] @ [B, T, hs] -> [B, T, hs]
    }
}

/// Several heads in parallel, concatenated and projected back to `n_embd`, as in the lecture.
#[derive(Debug)]
pub struct MultiHeadAttention {
    pub heads: Vec<Head>,
    pub proj: nn::Linear, // C -> C, with bias
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
        let proj = linear(vs / "proj", n_embd, n_embd, true, INIT_STD);
        Ok(Self { heads, proj, n_embd, n_head, dropout })
    }

    /// `x` `[B, T, C]` to `[B, T, C]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let outs = self.heads.iter().map(|h| h.forward(x, train)); // nh × [B, T, hs]
        let out = Tensor::cat(&outs.collect::<Result<Vec<_>>>()?, -1); // [B, T, nh*hs] = [B, T, C]
        Ok(out.apply(&self.proj).dropout(self.dropout, train)) // [B, T, C]
    }
}

/// nanoGPT's causal self-attention: all heads in one fused projection and one batched kernel.
#[derive(Debug)]
pub struct CausalSelfAttention {
    /// Query, key and value projections for all heads, fused: `C -> 3C`. The rows of its
    /// weight `[3C, C]` are `q` (heads `0..nh` in order), then `k`, then `v`.
    pub c_attn: nn::Linear,
    /// Output projection `C -> C`.
    pub c_proj: nn::Linear,
    pub n_embd: usize,
    pub n_head: usize,
    /// Applied to the attention weights and to the output, in training only.
    pub dropout: f64,
}

impl CausalSelfAttention {
    /// The attention of a GPT block: `c_attn` has a bias if `config.qkv_bias`, `c_proj` if
    /// `config.bias`; `c_proj` starts with nanoGPT's scaled init `N(0, 0.02/√(2·n_layer))`.
    pub fn new(vs: &nn::Path, config: &GptConfig) -> Result<Self> {
        let proj_std = INIT_STD / (2.0 * config.n_layer as f64).sqrt();
        Self::build(vs, config.n_embd, config.n_head, config.dropout, config.qkv_bias, config.bias, proj_std)
    }

    fn build(
        vs: &nn::Path,
        n_embd: usize,
        n_head: usize,
        dropout: f64,
        qkv_bias: bool,
        proj_bias: bool,
        proj_std: f64,
    ) -> Result<Self> {
        head_size(n_embd, n_head)?;
        check_dropout(dropout)?;
        Ok(Self {
            c_attn: linear(vs / "c_attn", n_embd, 3 * n_embd, qkv_bias, INIT_STD),
            c_proj: linear(vs / "c_proj", n_embd, n_embd, proj_bias, proj_std),
            n_embd,
            n_head,
            dropout,
        })
    }

    /// A fused attention computing exactly what `mha` computes: its heads' query, key and
    /// value weights are stacked into `c_attn` (no bias), its `proj` copied into `c_proj`.
    /// The new variables live under `vs`; `mha` is left as it is.
    pub fn from_multi_head(vs: &nn::Path, mha: &MultiHeadAttention) -> Result<Self> {
        let mut attn = Self::build(vs, mha.n_embd, mha.n_head, mha.dropout, false, true, INIT_STD)?;
        let _no_grad = tch::no_grad_guard();
        let rows =
            |f: fn(&Head) -> &nn::Linear| -> Vec<&Tensor> { mha.heads.iter().map(|h| &f(h).ws).collect() };
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
        let qkv = x.apply(&self.c_attn).split(c, 2); // 3 × [B, T, C]
        let heads = |z: &Tensor| z.view([b, t, nh, c / nh]).transpose(1, 2); // [B, nh, T, hs]
        (heads(&qkv[0]), heads(&qkv[1]), heads(&qkv[2]))
    }

    /// Heads side by side again, then the output projection and the residual dropout.
    fn out(&self, y: &Tensor, b: i64, t: i64, c: i64, train: bool) -> Tensor {
        let y = y.transpose(1, 2).contiguous().view([b, t, c]); // [B, T, nh, hs] -> [B, T, C]
        y.apply(&self.c_proj).dropout(self.dropout, train) // [B, T, C]
    }
}

/// `softmax(q kᵀ / √hs)` with the future masked out: `q`, `k` `[B, nh, T, hs]` to `[B, nh, T, T]`.
fn causal_softmax(q: &Tensor, k: &Tensor) -> Tensor {
    let (t, hs) = (q.size()[2], q.size()[3]);
    let att = q.matmul(&k.transpose(-2, -1)) * (1.0 / (hs as f64).sqrt()); // [B, nh, T, T]
    let future = Tensor::ones([t, t], (Kind::Bool, q.device())).tril(0).logical_not(); // [T, T]
    att.masked_fill(&future, f64::NEG_INFINITY).softmax(-1, Kind::Float) // [B, nh, T, T]
}

/// `n_embd / n_head`, or an error saying how to make it whole.
fn head_size(n_embd: usize, n_head: usize) -> Result<usize> {
    if n_head == 0 || n_embd == 0 || n_embd % n_head != 0 {
        return Err(Error::Config(format!(
            "n_embd ({n_embd}) must be a positive multiple of n_head ({n_head}): each head gets \
             n_embd / n_head channels"
        )));
    }
    Ok(n_embd / n_head)
}

fn check_dropout(p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::Config(format!("dropout must be in [0, 1), got {p}")))
    }
}
