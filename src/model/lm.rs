//! What makes a model a language model here: the [`LanguageModel`] trait that the training
//! loop, the sampler, checkpoints and the CLI work through, and the loss they share.

use super::layers::KvCache;
use crate::{Error, Result};
use tch::{nn, Tensor};

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

    /// A fresh, empty KV cache for `batch` sequences, if the model can use one (see
    /// [`super::kv_cache`]); `None` for a model without one (the bigram reads one token anyway).
    fn kv_cache(&self, _batch: usize) -> Result<Option<KvCache>> {
        Ok(None)
    }

    /// Logits `[B, T, V]` of `idx` `[B, T]`, the positions that follow those held in `cache`,
    /// in evaluation mode and without gradients; their keys and values are added to `cache`.
    /// An error when they do not fit in it.
    fn forward_cached(&self, _idx: &Tensor, _cache: &mut KvCache) -> Result<Tensor> {
        Err(Error::Config("this model has no KV cache: generate without one".into()))
    }

    /// The next-token logits `[B, V]` of `idx` `[B, T]` (its last position's), in evaluation
    /// mode and without gradients: through `cache` ([`LanguageModel::forward_cached`]) when
    /// given, else the whole of `idx`. The sampler's call; a model may skip work for the
    /// other positions.
    fn next_logits(&self, idx: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let logits = match cache {
            Some(cache) => self.forward_cached(idx, cache)?,
            None => {
                let _no_grad = tch::no_grad_guard();
                self.forward(idx, None, false)?.0
            }
        }; // [B, T, V]
        Ok(logits.f_select(1, -1)?)
    }

    /// Number of trainable parameters: those of [`trainable_variables`], the ones AdamW
    /// updates (a frozen variable, `requires_grad` off, is not counted).
    fn num_params(&self) -> usize {
        trainable_variables(self.var_store()).iter().map(|(_, t)| t.numel()).sum()
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

/// The variables of `vs` that train: those with `requires_grad` on, sorted by name, each
/// storage once (a tensor registered under two names counts under the first). AdamW updates
/// exactly these, and [`LanguageModel::num_params`] counts them: `VarStore::freeze` and a
/// variable's `set_requires_grad(false)` take a variable out of both.
pub fn trainable_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> =
        vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut seen = std::collections::HashSet::new();
    vars.retain(|(_, t)| t.numel() == 0 || seen.insert(t.data_ptr() as usize));
    vars
}
