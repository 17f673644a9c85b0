//! Sampling: turning a model's next-token logits into text, one token at a time.
//!
//! At each step the model reads the last `block_size` tokens (prompt and the tokens made so
//! far) and scores every possible next token; [`next_tokens`] picks one per sample:
//!
//! - **greedy**: the highest score (argmax). Deterministic, and often repetitive.
//! - otherwise a draw from the softmax of the scores, reshaped first by
//!   - **temperature**: the scores are divided by it; below 1 sharpens the distribution
//!     (towards greedy), above 1 flattens it (towards uniform);
//!   - **top-k**: only the `k` highest scores stay in the running (ties with the k-th too);
//!   - **top-p** (nucleus): only the smallest set of most likely tokens whose probabilities
//!     add up to at least `p` stays in (never fewer than one).
//!
//!   [`distribution`] gives the probabilities that are left.
//!
//! **Random draws.** Every sample has its own generator, an [`Rng`] made from a seed, so a
//! sample does not depend on the others drawn beside it: sample `i` of [`generate_batch`]
//! with seeds `[s0, s1, ...]` is the sample a batch of one with seed `si` gives. [`generate`]
//! (one sample) takes its seed from libtorch's global generator, so [`crate::device::seed`]
//! makes it repeatable.
//!
//! **The KV cache** (chapter 7, [`crate::model::kv_cache`]). By default a model that has one
//! keeps the keys and values of the context between steps, and a step runs the model on the
//! new token only. The tokens are the same as without it ([`Cache::Off`]): while the context
//! fits in `block_size`, a step computes what the full pass computes for the last position
//! (up to float rounding). Once it is full, the window moves by one token per step, and since
//! positions are absolute (learned or sinusoidal), every key and value in it changes: from
//! then on each step runs the whole window, as the uncached sampler does. So the cache makes
//! tokens cheaper up to `block_size`, and changes nothing after.

use crate::model::LanguageModel;
use crate::{Error, Result};
use std::ops::ControlFlow;
use tch::{Device, Kind, Tensor};

/// How to pick each next token. The default is a plain draw from the model's distribution
/// (temperature 1, no top-k or top-p); change fields with struct update syntax:
/// `Sampling { temperature: 0.8, top_k: Some(200), ..Default::default() }`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sampling {
    /// Divides the logits before the softmax; must be positive.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (`k >= 1`).
    pub top_k: Option<usize>,
    /// Keep only the smallest set of most likely tokens with total probability `>= p`,
    /// `p` in `(0, 1]`. Applied after temperature and top-k.
    pub top_p: Option<f64>,
    /// Always take the most likely token; the other fields are then not used (but still
    /// validated).
    pub greedy: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Self { temperature: 1.0, top_k: None, top_p: None, greedy: false }
    }
}

impl Sampling {
    /// Argmax decoding.
    pub fn greedy() -> Self {
        Self { greedy: true, ..Self::default() }
    }

    /// Check the settings; the error says which one is off and what is allowed.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::Config(format!(
                "temperature must be a positive number (1.0 samples the model as it is, lower is \
                 more conservative), got {}",
                self.temperature
            )));
        }
        if self.top_k == Some(0) {
            return Err(Error::Config("top_k must be at least 1 (or None to keep every token)".into()));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::Config(format!(
                    "top_p must be in (0, 1] (or None to keep every token), got {p}"
                )));
            }
        }
        Ok(())
    }
}

/// A sample's own stream of random numbers: SplitMix64 (Steele, Lea and Flood, "Fast
/// splittable pseudorandom number generators", 2014), small, fast and fine for sampling. The
/// same seed gives the same stream on every machine.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`, from 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The probabilities `[.., V]` the next token is drawn from, for `logits` `[.., V]`: the
/// softmax after temperature, with the tokens top-k and top-p cut away at zero. Greedy puts
/// all of it on the argmax.
pub fn distribution(logits: &Tensor, sampling: &Sampling) -> Result<Tensor> {
    sampling.validate()?;
    let v = match logits.size().last() {
        Some(&v) if v > 0 => v,
        _ => return Err(Error::Config(format!("expected logits of shape [.., V], got {:?}", logits.size()))),
    };
    let logits = logits.to_kind(Kind::Float); // [.., V]
    if sampling.greedy {
        let best = logits.f_argmax(-1, true)?; // [.., 1]
        return Ok(logits.zeros_like().f_scatter_value(-1, &best, 1.0)?); // [.., V]
    }
    let mut logits = logits / sampling.temperature; // [.., V]
    if let Some(k) = sampling.top_k {
        let k = (k as i64).min(v);
        let (top, _) = logits.f_topk(k, -1, true, true)?; // [.., k], largest first
        let below = logits.lt_tensor(&top.narrow(-1, k - 1, 1)); // [.., V]: below the k-th largest
        logits = logits.masked_fill(&below, f64::NEG_INFINITY); // [.., V]
    }
    if let Some(p) = sampling.top_p {
        // Drop a token when the more likely ones already reach p; the most likely always stays.
        let (sorted, order) = logits.sort(-1, true); // [.., V], most likely first
        let probs = sorted.softmax(-1, Kind::Float); // [.., V]
        let before = probs.cumsum(-1, Kind::Float) - &probs; // [.., V]: probability of the tokens ahead
        let cut_sorted = before.ge(p); // [.., V], most likely first
        let cut = cut_sorted.zeros_like().f_scatter(-1, &order, &cut_sorted)?; // [.., V], back in token order
        logits = logits.masked_fill(&cut, f64::NEG_INFINITY); // [.., V]
    }
    Ok(logits.softmax(-1, Kind::Float)) // [.., V]
}

/// One next token per row of `logits` `[B, V]` (the scores of each sample's last position),
/// row `i` drawn with `rngs[i]` (one number each; greedy draws none).
pub fn next_tokens(logits: &Tensor, sampling: &Sampling, rngs: &mut [Rng]) -> Result<Vec<u32>> {
    let (b, v) = match logits.size()[..] {
        [b, v] if b == rngs.len() as i64 && v > 0 => (b, v),
        _ => {
            return Err(Error::Config(format!(
                "next_tokens expects logits of shape [B, V] and one Rng per row, got {:?} and {} Rngs",
                logits.size(),
                rngs.len()
            )))
        }
    };
    let ids = if sampling.greedy {
        sampling.validate()?;
        logits.f_argmax(-1, false)? // [B]
    } else {
        // Inverse transform sampling: the first token whose cumulative probability passes u.
        let probs = distribution(logits, sampling)?; // [B, V]
        let cdf = probs.f_cumsum(-1, Kind::Double)?; // [B, V]
        let u: Vec<f64> = rngs.iter_mut().map(Rng::uniform).collect();
        let u = Tensor::from_slice(&u).view([b, 1]).to_device(logits.device()) * cdf.narrow(-1, v - 1, 1); // [B, 1]
        let passed = cdf.le_tensor(&u).sum_dim_intlist(-1, false, Kind::Int64); // [B]
                                                                                // Rounding can put u at the very end: take the last token that can be drawn.
        let positions = Tensor::arange(v, (Kind::Int64, logits.device())); // [V]
        let last = (probs.gt(0.0) * positions).amax(-1, false); // [B]
        passed.minimum(&last) // [B]
    };
    Vec::<i64>::try_from(ids.to_device(Device::Cpu))?.into_iter().map(to_id).collect()
}

/// [`next_tokens`] for a single row of logits `[V]`.
pub fn next_token(logits: &Tensor, sampling: &Sampling, rng: &mut Rng) -> Result<u32> {
    if logits.dim() != 1 {
        return Err(Error::Config(format!(
            "next_token expects logits of shape [V], got {:?}",
            logits.size()
        )));
    }
    Ok(next_tokens(&logits.unsqueeze(0), sampling, std::slice::from_mut(rng))?[0])
}

fn to_id(id: i64) -> Result<u32> {
    u32::try_from(id).map_err(|_| Error::Config(format!("sampled token id {id} does not fit in u32")))
}

/// Whether generation keeps a KV cache (when the model has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    On,
    /// Run the model on the whole window at every step, as nanoGPT's `sample.py` does.
    Off,
}

/// Extend `prompt` by up to `max_new_tokens` tokens drawn from `model` with `sampling`, and
/// return the new tokens (the prompt is not repeated). One sample, with the KV cache, its
/// seed drawn from libtorch's global generator: see [`generate_batch`] for the rest.
pub fn generate(
    model: &dyn LanguageModel,
    prompt: &[u32],
    max_new_tokens: usize,
    sampling: &Sampling,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    let seed = Tensor::f_randint(i64::MAX, [1], (Kind::Int64, Device::Cpu))?.f_int64_value(&[0])? as u64;
    let samples =
        generate_batch(model, prompt, max_new_tokens, sampling, &[seed], Cache::On, |ids| on_token(ids[0]))?;
    Ok(samples.into_iter().next().unwrap_or_default())
}

/// One sample per seed, all continuing `prompt`, generated side by side in one batch: up to
/// `max_new_tokens` new tokens each (the prompt is not repeated).
///
/// Each step feeds the model the last [`LanguageModel::block_size`] tokens (a longer prompt
/// is cropped, not an error), or with the cache only what it does not hold yet, with
/// gradients and dropout off. `on_step` sees the new token of every sample as soon as they
/// are picked, so a caller can print as the text grows; if it returns an error, generation
/// stops and that error is returned. An interrupt (■ in Jupyter, Ctrl-C; see
/// [`crate::interrupt`]) stops it after the current token: the tokens so far are returned.
pub fn generate_batch(
    model: &dyn LanguageModel,
    prompt: &[u32],
    max_new_tokens: usize,
    sampling: &Sampling,
    seeds: &[u64],
    cache: Cache,
    mut on_step: impl FnMut(&[u32]) -> Result<()>,
) -> Result<Vec<Vec<u32>>> {
    generate_while(model, prompt, max_new_tokens, sampling, seeds, cache, |ids| {
        on_step(ids).map(|()| ControlFlow::Continue(()))
    })
}

/// One sample that ends where the model writes `end_id` (an end-of-text token), or after
/// `max_new_tokens`: the new tokens before `end_id`, and whether it came. Chapter 10's
/// instruction follower answers this way: its response ends with end-of-text.
pub fn generate_until(
    model: &dyn LanguageModel,
    prompt: &[u32],
    max_new_tokens: usize,
    sampling: &Sampling,
    seed: u64,
    end_id: u32,
) -> Result<(Vec<u32>, bool)> {
    let stop =
        |ids: &[u32]| if ids[0] == end_id { ControlFlow::Break(()) } else { ControlFlow::Continue(()) };
    let mut sample =
        generate_while(model, prompt, max_new_tokens, sampling, &[seed], Cache::On, |ids| Ok(stop(ids)))?
            .into_iter()
            .next()
            .unwrap_or_default();
    let ended = sample.last() == Some(&end_id);
    if ended {
        sample.pop();
    }
    Ok((sample, ended))
}

/// [`generate_batch`], stopping after the step where `on_step` answers `Break`.
fn generate_while(
    model: &dyn LanguageModel,
    prompt: &[u32],
    max_new_tokens: usize,
    sampling: &Sampling,
    seeds: &[u64],
    cache: Cache,
    mut on_step: impl FnMut(&[u32]) -> Result<ControlFlow<()>>,
) -> Result<Vec<Vec<u32>>> {
    sampling.validate()?;
    if prompt.is_empty() {
        return Err(Error::Config(
            "generate needs a prompt of at least one token (e.g. the id of a newline)".into(),
        ));
    }
    if seeds.is_empty() {
        return Err(Error::Config("generate_batch needs one seed per sample, got none".into()));
    }
    crate::interrupt::start()?;
    let _no_grad = tch::no_grad_guard();
    let device = model.var_store().device();
    let mut rngs: Vec<Rng> = seeds.iter().map(|&seed| Rng::new(seed)).collect();
    // Every sample continues the same prompt, so their contexts are equally long: one batch.
    let mut rows: Vec<Vec<i64>> = vec![prompt.iter().map(|&id| id as i64).collect(); seeds.len()];
    let mut new = vec![Vec::with_capacity(max_new_tokens); seeds.len()];
    let mut kv = match cache {
        Cache::On => model.kv_cache(seeds.len())?,
        Cache::Off => None,
    };
    for _ in 0..max_new_tokens {
        if crate::interrupt::requested().is_some() {
            break;
        }
        let len = rows[0].len();
        let window = model.block_size().map_or(0, |block| len.saturating_sub(block.max(1)));
        let logits = match kv.as_mut() {
            // While the context fits, the cache holds every position but the newest (none
            // at first): run the model on what it does not hold (the prompt, then one token).
            Some(kv) if len <= kv.capacity() => {
                model.next_logits(&columns(&rows, kv.len(), device)?, Some(kv))?
            }
            // Without a cache, or once the window has moved (every position in it shifted, so
            // nothing cached is valid): the whole window.
            _ => model.next_logits(&columns(&rows, window, device)?, None)?,
        }; // [B, V]: the last position's
        let ids = next_tokens(&logits, sampling, &mut rngs)?;
        for ((row, new), &id) in rows.iter_mut().zip(&mut new).zip(&ids) {
            row.push(id as i64);
            new.push(id);
        }
        if on_step(&ids)?.is_break() {
            break;
        }
    }
    Ok(new)
}

/// Positions `from..` of every row, as token ids `[B, T]` on `device`.
fn columns(rows: &[Vec<i64>], from: usize, device: Device) -> Result<Tensor> {
    let flat: Vec<i64> = rows.iter().flat_map(|row| row[from..].iter().copied()).collect();
    let t = (rows[0].len() - from) as i64;
    Ok(Tensor::from_slice(&flat).f_view([rows.len() as i64, t])?.f_to_device(device)?)
}
