//! Sampling: turning a model's next-token logits into text, one token at a time.
//!
//! At each step the model reads the last `block_size` tokens (prompt and the tokens made so
//! far) and scores every possible next token; [`next_token`] picks one:
//!
//! - **greedy**: the highest score (argmax). Deterministic, and often repetitive.
//! - otherwise a draw from the softmax of the scores, reshaped first by
//!   - **temperature**: the scores are divided by it; below 1 sharpens the distribution
//!     (towards greedy), above 1 flattens it (towards uniform);
//!   - **top-k**: only the `k` highest scores stay in the running (ties with the k-th too);
//!   - **top-p** (nucleus): only the smallest set of most likely tokens whose probabilities
//!     add up to at least `p` stays in (never fewer than one).
//!
//! Draws come from libtorch's global generator, so [`crate::device::seed`] makes a sample
//! repeatable. There is no KV cache yet: every step runs the model on the whole cropped
//! context.

use crate::model::LanguageModel;
use crate::{Error, Result};
use tch::{Kind, Tensor};

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

/// Pick the next token from `logits` `[V]`, the scores of the last position.
pub fn next_token(logits: &Tensor, sampling: &Sampling) -> Result<u32> {
    sampling.validate()?;
    if logits.dim() != 1 || logits.size()[0] == 0 {
        return Err(Error::Config(format!(
            "next_token expects logits of shape [V], got {:?}",
            logits.size()
        )));
    }
    let logits = logits.to_kind(Kind::Float); // [V]
    if sampling.greedy {
        return to_id(&logits.argmax(0, false)); // []
    }
    let mut logits = logits / sampling.temperature; // [V]
    if let Some(k) = sampling.top_k {
        let k = (k as i64).min(logits.size()[0]);
        let (top, _) = logits.topk(k, 0, true, true); // [k], largest first
        let below = logits.lt_tensor(&top.get(k - 1)); // [V]: below the k-th largest
        logits = logits.masked_fill(&below, f64::NEG_INFINITY); // [V]
    }
    let (sorted, order) = logits.sort(0, true); // [V], [V]: most likely first
    let mut sorted = sorted;
    if let Some(p) = sampling.top_p {
        // Drop a token when the ones ahead of it already reach p; the first always stays.
        let probs = sorted.softmax(0, Kind::Float); // [V]
        let before = probs.cumsum(0, Kind::Float) - &probs; // [V]: probability of the tokens ahead
        sorted = sorted.masked_fill(&before.ge(p), f64::NEG_INFINITY); // [V]
    }
    let probs = sorted.softmax(0, Kind::Float); // [V]
    let pick = probs.f_multinomial(1, true)?; // [1]: a position in the sorted order
    to_id(&order.f_index_select(0, &pick)?) // [1]: the token id there
}

fn to_id(t: &Tensor) -> Result<u32> {
    let id = t.f_int64_value(&[])?;
    u32::try_from(id).map_err(|_| Error::Config(format!("sampled token id {id} does not fit in u32")))
}

/// Extend `prompt` by up to `max_new_tokens` tokens drawn from `model` with `sampling`, and
/// return the new tokens (the prompt is not repeated).
///
/// Each step feeds the model the last [`LanguageModel::block_size`] tokens (a longer prompt
/// is cropped, not an error), with gradients and dropout off. `on_token` sees each new token
/// as soon as it is picked, so a caller can print as the text grows; if it returns an error,
/// generation stops and that error is returned. An interrupt (■ in Jupyter, Ctrl-C; see
/// [`crate::interrupt`]) stops it after the current token: the tokens so far are returned.
pub fn generate(
    model: &dyn LanguageModel,
    prompt: &[u32],
    max_new_tokens: usize,
    sampling: &Sampling,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    sampling.validate()?;
    if prompt.is_empty() {
        return Err(Error::Config(
            "generate needs a prompt of at least one token (e.g. the id of a newline)".into(),
        ));
    }
    crate::interrupt::start()?;
    let _no_grad = tch::no_grad_guard();
    let device = model.var_store().device();
    let mut tokens: Vec<i64> = prompt.iter().map(|&id| id as i64).collect();
    let mut new = Vec::with_capacity(max_new_tokens);
    for _ in 0..max_new_tokens {
        if crate::interrupt::requested().is_some() {
            break;
        }
        let start = model.block_size().map_or(0, |block| tokens.len().saturating_sub(block.max(1)));
        let context = &tokens[start..];
        let idx = Tensor::from_slice(context).view([1, context.len() as i64]).to_device(device); // [1, T]
        let (logits, _) = model.forward(&idx, None, false)?; // [1, T, V]
        let last = logits.f_select(1, -1)?.f_select(0, 0)?; // [V]
        let id = next_token(&last, sampling)?;
        tokens.push(id as i64);
        new.push(id);
        on_token(id)?;
    }
    Ok(new)
}
