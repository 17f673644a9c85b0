//! What every language model here has at both ends: the token embedding that turns ids into
//! vectors, the positions added to them, and the LM head that turns vectors back into one
//! score per token of the vocabulary.

use super::linear::INIT_STD;
use crate::{Error, Result};
use tch::{nn, Tensor};

/// An embedding table `[rows, C]` under `vs` (`weight`), `N(0, 0.02)`: the tokens' (`wte`,
/// a row per token of the vocabulary) or the learned positions' (`wpe`, a row per position).
pub fn embedding(vs: &nn::Path, rows: usize, n_embd: usize) -> Tensor {
    let init = nn::Init::Randn { mean: 0.0, stdev: INIT_STD };
    vs.var("weight", &[rows as i64, n_embd as i64], init)
}

/// The LM head under `vs` (`weight`, `bias`): its weight `[V, C]` is `wte` itself when `tied`
/// (the same storage, counted and trained once), else its own `N(0, 0.02)`; a zero bias `[V]`
/// if `bias`.
pub fn lm_head(vs: &nn::Path, wte: &Tensor, tied: bool, bias: bool) -> (Tensor, Option<Tensor>) {
    let [v, c] = wte.size()[..] else { unreachable!("a token embedding is [V, C]") };
    let weight = match tied {
        true => wte.shallow_clone(), // [V, C]: the same storage as wte
        false => vs.var("weight", &[v, c], nn::Init::Randn { mean: 0.0, stdev: INIT_STD }),
    };
    (weight, bias.then(|| vs.var("bias", &[v], nn::Init::Const(0.0))))
}

/// `(B, T)` of token ids `idx`, which must be `[batch, time >= 1]`: the one check of the
/// shape of a model's input.
pub fn token_ids_shape(idx: &Tensor) -> Result<(i64, i64)> {
    match idx.size()[..] {
        [b, t] if t >= 1 => Ok((b, t)),
        _ => Err(Error::Config(format!(
            "the model expects token ids of shape [batch, time >= 1], got {:?}",
            idx.size()
        ))),
    }
}

/// Check that positions `start..start + t` fit in a context of `block_size`.
fn check_positions(start: usize, t: i64, block_size: usize) -> Result<()> {
    let block = block_size as i64;
    if start as i64 + t <= block {
        Ok(())
    } else if start == 0 {
        Err(Error::Config(format!(
            "a context of {t} tokens is longer than block_size {block}: crop it to the last {block} tokens"
        )))
    } else {
        Err(Error::Config(format!("positions {start}..{} are beyond block_size {block}", start as i64 + t)))
    }
}

/// Token plus position embeddings `[B, T, C]` of `idx` `[B, T]` at positions
/// `start..start + T` (rows of `wpe` `[block_size, C]`), the tokens' first multiplied by
/// `token_scale`; then dropout `p` when `train`.
pub fn embed(
    wte: &Tensor,
    wpe: &Tensor,
    idx: &Tensor,
    start: usize,
    token_scale: f64,
    p: f64,
    train: bool,
) -> Result<Tensor> {
    let (_, t) = token_ids_shape(idx)?;
    check_positions(start, t, wpe.size()[0] as usize)?;
    // The fallible lookup: an id outside 0..V is an error from libtorch, not a crash.
    let tok_emb = Tensor::f_embedding(wte, idx, -1, false, false)?; // [B, T, C]
    let tok_emb = if token_scale == 1.0 { tok_emb } else { tok_emb * token_scale };
    let pos_emb = wpe.narrow(0, start as i64, t); // [T, C]: positions start..start + T
    Ok((tok_emb + pos_emb).dropout(p, train)) // [B, T, C]
}

/// Copy a model's variables `from` into a model with a larger vocabulary, `to` (a fresh one of
/// the same config but `vocab_size`, as [`crate::model::Gpt::with_vocab_size`] and
/// [`crate::model::Llama::with_vocab_size`] build it): every variable of the same name, the
/// vocabulary's (the token embedding, an untied head and its bias) into their first rows, so
/// that the old ids give the same logits and the new rows keep their fresh draw. `from_vocab`
/// and `to_vocab` are the two vocabularies' sizes: it can grow, not shrink.
pub fn copy_into_larger_vocab(
    from: &nn::VarStore,
    from_vocab: usize,
    to: &nn::VarStore,
    to_vocab: usize,
) -> Result<()> {
    if to_vocab < from_vocab {
        return Err(Error::Config(format!(
            "a vocabulary can grow, not shrink: {to_vocab} tokens asked, the model has {from_vocab}"
        )));
    }
    let _no_grad = tch::no_grad_guard();
    let old = from.variables();
    for (name, t) in to.variables() {
        let source = old.get(&name).ok_or_else(|| Error::Config(format!("{name} is not in the model")))?;
        let rows = source.size()[0];
        let mut target = if rows < t.size()[0] { t.f_narrow(0, 0, rows)? } else { t.shallow_clone() };
        target.f_copy_(source)?;
    }
    Ok(())
}
