//! Rotary position embeddings (RoPE; Su et al., 2021; Llama's): no position table added to
//! the tokens. Instead each head's queries and keys are rotated, pair of channels by pair of
//! channels, by an angle proportional to their position, `pos · θ^(-2i/hs)` for pair `i`. The
//! score of a query at position `m` and a key at position `n` then depends on `m - n` only:
//! rotating both by the same extra angle changes no dot product.
//!
//! The pairs are Hugging Face's (GPT-NeoX's) convention: channel `i` goes with channel
//! `i + hs/2` (`rotate_half`), not with its neighbour; Llama's weights in that format expect it.
//!
//! Llama 3.1 and 3.2 stretch the slow pairs for contexts longer than they were pretrained on
//! ([`RopeScaling`]): the tables are built from scaled frequencies, and nothing else changes.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use tch::{Device, Kind, Tensor};

/// Llama 3's rotary scaling (Hugging Face's `rope_type: "llama3"`), by which a model pretrained
/// on `original_max_position_embeddings` positions reads `factor` times as many. Each pair's
/// frequency is judged by its wavelength, the positions one full turn takes: a pair that turns
/// within `original / high_freq_factor` positions (it sees short distances) is left alone; one
/// that takes over `original / low_freq_factor` (it sees the whole context) turns `factor`
/// times slower, so the longer context spans the angles it was trained on; those between are
/// interpolated. Llama 3.2 1B: `factor` 32, `low_freq_factor` 1, `high_freq_factor` 4, from 8,192.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

impl RopeScaling {
    /// An error unless `factor >= 1`, `0 < low_freq_factor < high_freq_factor` and the original
    /// context is at least one position.
    pub fn validate(&self) -> Result<()> {
        let valid = self.factor >= 1.0
            && self.low_freq_factor > 0.0
            && self.low_freq_factor < self.high_freq_factor
            && self.high_freq_factor.is_finite()
            && self.original_max_position_embeddings > 0;
        if !valid {
            return Err(Error::Config(format!(
                "rope_scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor and an original \
                 context of at least 1, got {self:?}"
            )));
        }
        Ok(())
    }

    /// The frequency (radians per position) of a pair that turns at `frequency` unscaled.
    pub fn scale(&self, frequency: f64) -> f64 {
        let original = self.original_max_position_embeddings as f64;
        let wavelength = 2.0 * PI / frequency;
        if wavelength < original / self.high_freq_factor {
            frequency
        } else if wavelength > original / self.low_freq_factor {
            frequency / self.factor
        } else {
            // 0 at the slow end of the band, 1 at the fast end.
            let smooth = (original / wavelength - self.low_freq_factor)
                / (self.high_freq_factor - self.low_freq_factor);
            (1.0 - smooth) * frequency / self.factor + smooth * frequency
        }
    }
}

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
        Self::scaled(positions, head_size, theta, None, device)
    }

    /// [`Rotary::new`] with the frequencies stretched by `scaling` when there is one.
    pub fn scaled(
        positions: usize,
        head_size: usize,
        theta: f64,
        scaling: Option<&RopeScaling>,
        device: Device,
    ) -> Result<Self> {
        let valid = head_size > 0 && head_size.is_multiple_of(2) && theta > 1.0;
        if !valid {
            return Err(Error::Config(format!(
                "rotary positions need an even head size and a base above 1, got {head_size} and {theta}"
            )));
        }
        if let Some(scaling) = scaling {
            scaling.validate()?;
        }
        // θ^(-2i/hs) for i in 0..hs/2, scaled, in float64; the tables then in float32.
        let step = -2.0 * theta.ln() / head_size as f64;
        let frequencies: Vec<f64> = (0..head_size / 2)
            .map(|i| (i as f64 * step).exp())
            .map(|f| scaling.map_or(f, |s| s.scale(f)))
            .collect();
        let inv_freq = Tensor::from_slice(&frequencies).f_to_device(device)?; // [hs/2]
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
