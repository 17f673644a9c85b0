//! Language models: given a context of token ids, scores for the next token.
//!
//! Chapter 3's [`Bigram`] is the first; the [`Gpt`] of chapter 5 implements the same
//! [`LanguageModel`] trait, so the training loop and the sampler work for both. Chapter 4's
//! self-attention lives in [`attention`].

pub mod attention;
mod bigram;
pub mod gpt;

pub use attention::{CausalSelfAttention, Head, MultiHeadAttention};
pub use bigram::Bigram;
pub use gpt::{Activation, Block, Gpt, GptConfig};

use crate::{Error, Result};
use tch::{nn, Kind, Tensor};

/// A model that maps token ids `[B, T]` to next-token logits `[B, T, V]`.
pub trait LanguageModel {
    /// Logits `[B, T, V]` for inputs `idx` `[B, T]`, and, when `targets` `[B, T]` are given,
    /// the mean cross-entropy of the logits against them. `train` switches dropout on.
    fn forward(
        &self,
        idx: &Tensor,
        targets: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)>;

    /// Just the mean cross-entropy loss of `idx` against `targets` (both `[B, T]`).
    fn loss(&self, idx: &Tensor, targets: &Tensor, train: bool) -> Result<Tensor> {
        let (_, loss) = self.forward(idx, Some(targets), train)?;
        loss.ok_or_else(|| Error::Config("the model returned no loss for the given targets".into()))
    }

    /// The model's parameters (and the device they live on).
    fn var_store(&self) -> &nn::VarStore;

    /// The same, mutable: loading weights into the model needs it.
    fn var_store_mut(&mut self) -> &mut nn::VarStore;

    /// The longest context the model accepts, if it has a limit.
    fn block_size(&self) -> Option<usize> {
        None
    }

    /// Number of trainable parameters.
    fn num_params(&self) -> usize {
        self.var_store().trainable_variables().iter().map(|t| t.numel()).sum()
    }

    /// Extend each row of `idx` `[B, T]` by `max_new_tokens` tokens, each drawn from the
    /// softmax of the model's logits for the last position (the context is cropped to
    /// [`LanguageModel::block_size`]). Returns `[B, T + max_new_tokens]`.
    fn generate(&self, idx: &Tensor, max_new_tokens: usize) -> Result<Tensor> {
        if idx.dim() != 2 || idx.size()[1] == 0 {
            return Err(Error::Config(format!(
                "generate needs a non-empty [batch, time] context, got shape {:?}",
                idx.size()
            )));
        }
        let _no_grad = tch::no_grad_guard();
        let mut idx = idx.to_device(self.var_store().device());
        for _ in 0..max_new_tokens {
            let t = idx.size()[1];
            let context = match self.block_size() {
                Some(block) if t > block as i64 => idx.narrow(1, t - block as i64, block as i64),
                _ => idx.shallow_clone(),
            };
            let (logits, _) = self.forward(&context, None, false)?; // [B, T, V]
            let probs = logits.select(1, -1).softmax(-1, Kind::Float); // [B, V]
            let next = probs.f_multinomial(1, true)?; // [B, 1]
            idx = Tensor::cat(&[idx, next], 1);
        }
        Ok(idx)
    }
}

/// Mean cross-entropy of `logits` `[B, T, V]` against `targets` `[B, T]`: the two are
/// flattened to `[B*T, V]` and `[B*T]`, as `F.cross_entropy` wants them.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let v = *logits.size().last().unwrap_or(&0);
    Ok(logits.f_reshape([-1, v])?.f_cross_entropy_loss::<Tensor>(
        &targets.f_reshape([-1])?,
        None,
        tch::Reduction::Mean,
        -100,
        0.0,
    )?)
}
