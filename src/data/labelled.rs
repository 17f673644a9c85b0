//! Labelled sequences for a classifier (chapter 10), batched the way the trainer takes any
//! data: inputs `x` `[B, T]` padded on the right, and targets `y` `[B, T]` that are
//! [`IGNORE`] everywhere but at each row's last real token, which holds its label. A
//! classifier scoring every position then has its loss at exactly the position it reads
//! (see [`crate::model::Classifier`]), and the trainer, the loss estimates and checkpoints
//! work for it unchanged.

use super::{pad, Batches, Split, IGNORE};
use crate::{Error, Result};
use tch::{Device, Tensor};

/// Token sequences, each with a class label, in a training and a validation part.
#[derive(Debug)]
pub struct LabelledData {
    pub train: Vec<(Vec<u32>, usize)>,
    pub val: Vec<(Vec<u32>, usize)>,
    pub pad_id: u32,
}

impl LabelledData {
    /// Both parts must hold at least one sequence, each of at least one token.
    pub fn new(train: Vec<(Vec<u32>, usize)>, val: Vec<(Vec<u32>, usize)>, pad_id: u32) -> Result<Self> {
        for (part, rows) in [("training", &train), ("validation", &val)] {
            if rows.is_empty() || rows.iter().any(|(ids, _)| ids.is_empty()) {
                return Err(Error::Config(format!(
                    "the {part} part needs at least one sequence, each of at least one token"
                )));
            }
        }
        Ok(Self { train, val, pad_id })
    }

    /// `x` and `y` (see the module docs) of these rows, each cut to its first `max_len` tokens.
    pub fn collate(
        rows: &[&(Vec<u32>, usize)],
        pad_id: u32,
        max_len: usize,
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        let cut: Vec<Vec<u32>> = rows.iter().map(|(ids, _)| ids[..ids.len().min(max_len)].to_vec()).collect();
        let batch = pad(&cut, pad_id, device)?;
        let t = batch.ids.size()[1];
        let mut y = vec![IGNORE; rows.len() * t as usize];
        for (i, ((_, label), ids)) in rows.iter().zip(&cut).enumerate() {
            y[i * t as usize + ids.len() - 1] = *label as i64;
        }
        let y = Tensor::from_slice(&y).f_view([rows.len() as i64, t])?.f_to_device(device)?;
        Ok((batch.ids, y))
    }
}

impl Batches for LabelledData {
    /// `batch_size` rows of `split`, drawn with libtorch's global generator, cut to
    /// `block_size` tokens and collated.
    fn get_batch(
        &self,
        split: Split,
        batch_size: usize,
        block_size: usize,
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        let rows = match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        };
        Self::collate(&super::draw(rows, batch_size)?, self.pad_id, block_size, device)
    }
}
