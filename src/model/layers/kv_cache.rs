//! The KV cache: what a GPT keeps between generation steps so that it does not recompute the past.
//!
//! In a causal model, position `t`'s keys and values depend on tokens `0..=t` only, so they do
//! not change when a token is appended. Without a cache, each new token reruns the model on
//! the whole context: the cost of one token grows with the context. With one, a step runs
//! the model on the new position only: its query reads the keys and values of every earlier
//! position from the cache, and its own are added to it. The first step (the *prefill*) runs
//! the prompt through in one pass and fills the cache with it.
//!
//! [`KvCache`] holds, for every layer, the keys and values `[B, nh, block_size, hs]` of the
//! positions seen so far (the first [`KvCache::len`] of them), allocated once. It holds at most
//! `block_size` positions, the model's context; a step that would go beyond is an error, not a
//! silently wrong answer. Past `block_size`, [`crate::generate`] crops the context, which moves
//! every position, so it stops using the cache there (see there).

use crate::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Keys and values of the positions `0..len` a model has seen, per layer.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer: keys and values, each `[B, nh, capacity, hs]`; positions `0..len` are filled.
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for `n_layer` layers of `n_head` heads of `head_size` channels, for
    /// `batch` sequences of up to `capacity` positions.
    pub fn new(
        n_layer: usize,
        batch: usize,
        n_head: usize,
        head_size: usize,
        capacity: usize,
        (kind, device): (Kind, Device),
    ) -> Result<Self> {
        let shape = [batch as i64, n_head as i64, capacity as i64, head_size as i64];
        let layers = (0..n_layer)
            .map(|_| Ok((Tensor::f_zeros(shape, (kind, device))?, Tensor::f_zeros(shape, (kind, device))?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, len: 0, capacity })
    }

    /// How many positions the cache holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most positions it can hold: the model's `block_size`.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The number of sequences it holds.
    pub fn batch_size(&self) -> usize {
        self.layers.first().map_or(0, |(k, _)| k.size()[0] as usize)
    }

    /// The memory its buffers take, in bytes (allocated once, whatever `len`).
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|(k, v)| (k.numel() + v.numel()) * k.kind().elt_size_in_bytes()).sum()
    }

    /// Forget every position (the buffers stay allocated).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Check that `t` more positions of `batch` sequences fit, for a model of `n_layer` layers.
    pub(crate) fn check(&self, n_layer: usize, batch: usize, t: usize) -> Result<()> {
        if n_layer != self.layers.len() || batch != self.batch_size() {
            return Err(Error::Config(format!(
                "this KV cache is for {} layers and a batch of {}, not {n_layer} layers and a batch of {batch}: \
                 make one with the model's kv_cache(batch)",
                self.layers.len(),
                self.batch_size()
            )));
        }
        if self.len + t > self.capacity {
            return Err(Error::Config(format!(
                "the KV cache holds positions 0..{} of at most {}: {t} more would reach position {}, \
                 beyond the model's context; clear it and start again from the last {} tokens",
                self.len,
                self.capacity,
                self.len + t - 1,
                self.capacity
            )));
        }
        Ok(())
    }

    /// Write layer `layer`'s keys and values `[B, nh, T, hs]` of the next `T` positions, and
    /// return all of that layer's keys and values so far, `[B, nh, len + T, hs]`. The positions
    /// count as held once every layer has written them ([`KvCache::advance`]).
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.size()[2];
        let (len, end) = (self.len as i64, self.len as i64 + t);
        let (keys, values) = &mut self.layers[layer];
        keys.f_narrow(2, len, t)?.f_copy_(k)?;
        values.f_narrow(2, len, t)?.f_copy_(v)?;
        Ok((keys.f_narrow(2, 0, end)?, values.f_narrow(2, 0, end)?))
    }

    /// Count `t` more positions as held.
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
