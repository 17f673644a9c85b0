//! Rotary position embeddings (RoPE; Su et al., 2021; Llama's): no position table added to
//! the tokens. Instead each head's queries and keys are rotated, pair of channels by pair of
//! channels, by an angle proportional to their position, `pos · θ^(-2i/hs)` for pair `i`. The
//! score of a query at position `m` and a key at position `n` then depends on `m - n` only:
//! rotating both by the same extra angle changes no dot product.
//!
//! The pairs are Hugging Face's (GPT-NeoX's) convention: channel `i` goes with channel
//! `i + hs/2` (`rotate_half`), not with its neighbour; Llama's weights in that format expect it.

use crate::{Error, Result};
use tch::{Device, Kind, Tensor};

/// The cosines and sines of every position's angles, `[positions, hs]` each (the `hs/2`
/// angles twice: for channel `i` and for channel `i + hs/2`).
#[derive(Debug)]
pub struct Rotary {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl Rotary {
    /// The tables for positions `0..positions` of heads of `head_size` channels (even), with
    /// base `theta` (10,000 in the paper and Llama 2; 500,000 in Llama 3).
    pub fn new(positions: usize, head_size: usize, theta: f64, device: Device) -> Result<Self> {
        let valid = head_size > 0 && head_size.is_multiple_of(2) && theta > 1.0;
        if !valid {
            return Err(Error::Config(format!(
                "rotary positions need an even head size and a base above 1, got {head_size} and {theta}"
            )));
        }
        let half = (head_size / 2) as i64;
        // θ^(-2i/hs) for i in 0..hs/2, in float64 as Hugging Face computes them, then float32.
        let inv_freq = (Tensor::f_arange(half, (Kind::Double, device))?
            * (-2.0 * theta.ln() / head_size as f64))
            .f_exp()?; // [hs/2]
        let pos = Tensor::f_arange(positions as i64, (Kind::Double, device))?; // [P]
        let angles = pos.f_outer(&inv_freq)?; // [P, hs/2]
        let angles = Tensor::f_cat(&[&angles, &angles], -1)?; // [P, hs]
        Ok(Self {
            cos: angles.f_cos()?.f_to_kind(Kind::Float)?,
            sin: angles.f_sin()?.f_to_kind(Kind::Float)?,
        })
    }

    /// The positions it has tables for.
    pub fn positions(&self) -> usize {
        self.cos.size()[0] as usize
    }

    /// `x` `[B, nh, T, hs]` (queries or keys of positions `start..start + T`) rotated:
    /// `x · cos + rotate_half(x) · sin`, where `rotate_half` of `[x1, x2]` is `[-x2, x1]`.
    pub fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let t = x.size()[2];
        if start as i64 + t > self.positions() as i64 {
            return Err(Error::Config(format!(
                "rotary positions up to {} asked, the tables hold {}",
                start as i64 + t,
                self.positions()
            )));
        }
        let cos = self.cos.f_narrow(0, start as i64, t)?.f_to_kind(x.kind())?; // [T, hs]
        let sin = self.sin.f_narrow(0, start as i64, t)?.f_to_kind(x.kind())?;
        let half = x.size()[3] / 2;
        let (x1, x2) = (x.f_narrow(3, 0, half)?, x.f_narrow(3, half, half)?);
        let rotated = Tensor::f_cat(&[&x2.f_neg()?, &x1], -1)?; // [B, nh, T, hs]
        Ok(x.f_mul(&cos)?.f_add(&rotated.f_mul(&sin)?)?)
    }
}
