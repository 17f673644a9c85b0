//! Corpora and batches: where the text comes from (chapter 1) and how it is cut into
//! training examples (chapter 2).
//!
//! - [`fetch`] downloads a dataset of the manifest (`data/datasets.json`), checked by sha256,
//!   into the git-ignored `data/` folder; [`fetch_url`] any file on the web, its hash
//!   recorded on first download; [`load_text`] reads your own file or folder of `.txt` files.
//! - [`load_splits`] gives a corpus published with its own train / validation / test parts
//!   (WikiText-2 and -103, zip archives unpacked into the cache) as those three texts.
//! - [`TokenData`] holds a token stream split 90/10 into train and validation, and samples
//!   `(x, y)` batches from either, `y` being `x` shifted by one token.
//! - Chapter 10's labelled data: the SMS Spam Collection ([`sms_spam`]) and its balanced,
//!   seeded split ([`balanced_split`]); sequences of different lengths padded into one batch
//!   ([`pad`]) and batched for a classifier ([`LabelledData`]); instruction records in the Alpaca template, batched with the loss on the
//!   responses only ([`InstructionData`]).

mod download;
mod instruct;
mod labelled;
mod sms;

pub use download::{
    cache_dir, cached, dataset, datasets, download, download_with_progress, fetch, fetch_dataset,
    fetch_splits, fetch_splits_of, fetch_url, fetch_url_with_progress, fetch_with_progress, load_splits,
    Dataset, Splits, DATA_DIR_ENV, MANIFEST_ENV, MIRROR_ENV,
};

pub use instruct::{
    instruction_data, instruction_splits, parse_instructions, Instruction, InstructionData,
    InstructionSplits, IGNORE,
};
pub use labelled::LabelledData;
pub use sms::{balanced_split, parse_sms, shuffle, sms_spam, Sms, SmsSplits};

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Tiny Shakespeare as one string, downloaded on first use.
pub fn tinyshakespeare() -> Result<String> {
    load_text(fetch("tinyshakespeare")?)
}

/// Read a corpus: one UTF-8 text file, or every `.txt` file of a folder (in name order,
/// each ending with a newline). Missing paths, non-UTF-8 bytes and empty corpora are errors.
pub fn load_text(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let text = if meta.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|ext| ext == "txt"))
            .collect();
        if files.is_empty() {
            return Err(Error::EmptyCorpus(format!("no .txt files in {}", path.display())));
        }
        files.sort();
        let mut text = String::new();
        for file in &files {
            text.push_str(&read_utf8(file)?);
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
        text
    } else {
        read_utf8(path)?
    };
    if text.trim().is_empty() {
        return Err(Error::EmptyCorpus(format!("{} holds no text", path.display())));
    }
    Ok(text)
}

fn read_utf8(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes)
        .map_err(|e| Error::NotUtf8 { path: path.to_owned(), offset: e.utf8_error().valid_up_to() })
}

/// Token ids as the 1-D `int64` tensor that embeddings and `cross_entropy` expect.
pub fn to_tensor(ids: &[u32]) -> Tensor {
    let ids: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
    Tensor::from_slice(&ids)
}

/// Which part of the data a batch or a loss comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Split {
    Train,
    Val,
}

/// A token stream split into a training part and a validation part (the tail), both kept
/// as 1-D `int64` tensors on the CPU; batches move to the model's device.
#[derive(Debug)]
pub struct TokenData {
    pub train: Tensor,
    pub val: Tensor,
}

impl TokenData {
    /// The first `train_fraction` of the tokens train, the rest validate (0.9 in the course).
    pub fn new(ids: &[u32], train_fraction: f64) -> Result<Self> {
        if !(train_fraction > 0.0 && train_fraction < 1.0) {
            return Err(Error::Config(format!("train fraction must be in (0, 1), got {train_fraction}")));
        }
        let n = (train_fraction * ids.len() as f64) as usize;
        if n < 2 || ids.len() - n < 2 {
            return Err(Error::EmptyCorpus(format!(
                "{} tokens cannot be split {train_fraction}/{:.2} into two non-trivial parts",
                ids.len(),
                1.0 - train_fraction
            )));
        }
        Ok(Self { train: to_tensor(&ids[..n]), val: to_tensor(&ids[n..]) })
    }

    /// Token streams split beforehand: `train` and `val` as given. Chapter 6 splits the *text*
    /// and encodes each part, so that models with different tokenizers validate on exactly the
    /// same characters.
    pub fn from_parts(train: &[u32], val: &[u32]) -> Result<Self> {
        if train.len() < 2 || val.len() < 2 {
            return Err(Error::EmptyCorpus(format!(
                "{} training and {} validation tokens: each part needs at least 2",
                train.len(),
                val.len()
            )));
        }
        Ok(Self { train: to_tensor(train), val: to_tensor(val) })
    }

    pub fn get(&self, split: Split) -> &Tensor {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    /// `batch_size` random windows of `block_size + 1` tokens, returned as inputs `x` and
    /// targets `y`, both `[batch_size, block_size]` `int64`, where `y[b, t] = x[b, t + 1]`.
    ///
    /// The start offsets come from libtorch's global generator exactly as the lecture draws
    /// them (`torch.randint(len(data) - block_size, (batch_size,))`), and all windows are
    /// gathered in one indexing operation, not row by row.
    pub fn get_batch(
        &self,
        split: Split,
        batch_size: usize,
        block_size: usize,
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        let data = self.get(split);
        let n = data.size()[0] as usize;
        if batch_size == 0 || block_size == 0 {
            return Err(Error::Config("batch_size and block_size must be at least 1".into()));
        }
        if n <= block_size {
            return Err(Error::Config(format!(
                "the {split:?} split has {n} tokens, too few for a block of {block_size} (+1 target)"
            )));
        }
        let (b, t) = (batch_size as i64, block_size as i64);
        let starts = Tensor::f_randint(n as i64 - t, [b], (Kind::Int64, Device::Cpu))?; // [B]
        let offsets = starts.unsqueeze(1) + Tensor::arange(t + 1, (Kind::Int64, Device::Cpu)); // [B, T+1]
        let windows = data.f_take(&offsets)?; // [B, T+1]
        let x = windows.narrow(1, 0, t).to_device(device);
        let y = windows.narrow(1, 1, t).to_device(device);
        Ok((x, y))
    }
}

/// Where a trainer's batches come from: inputs and targets `[batch_size, block_size]` of a
/// split. [`TokenData`]'s random windows of a text are one source; the trainer and the loss
/// estimate take any (`&dyn Batches`), and draw from libtorch's global generator through it.
pub trait Batches {
    fn get_batch(
        &self,
        split: Split,
        batch_size: usize,
        block_size: usize,
        device: Device,
    ) -> Result<(Tensor, Tensor)>;
}

impl Batches for TokenData {
    fn get_batch(
        &self,
        split: Split,
        batch_size: usize,
        block_size: usize,
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        TokenData::get_batch(self, split, batch_size, block_size, device)
    }
}

/// `batch_size` of `rows`, drawn with replacement from libtorch's global generator (as
/// [`TokenData::get_batch`] draws its windows): how a [`Batches`] source of whole records
/// picks a batch.
fn draw<T>(rows: &[T], batch_size: usize) -> Result<Vec<&T>> {
    let picks = Tensor::f_randint(rows.len() as i64, [batch_size as i64], (Kind::Int64, Device::Cpu))?;
    Ok(Vec::<i64>::try_from(&picks)?.into_iter().map(|i| &rows[i as usize]).collect())
}

/// Token sequences of different lengths as one batch: `ids` `[B, T]` (`T` the longest
/// length), each row its sequence then `pad_id` to the end, and `lengths` `[B]`. `mask` `[B, T]`
/// is true at the real tokens. With causal attention and the padding on the right, no real
/// position ever reads a padded one: a model's output at positions `0..length` is the same,
/// whatever the padding (the classifier reads position `length - 1`).
#[derive(Debug)]
pub struct Padded {
    pub ids: Tensor,
    pub lengths: Tensor,
    pub mask: Tensor,
}

/// Pad `sequences` (each at least one token) with `pad_id` into a [`Padded`] batch on `device`.
pub fn pad(sequences: &[Vec<u32>], pad_id: u32, device: Device) -> Result<Padded> {
    let longest = sequences.iter().map(Vec::len).max().unwrap_or(0);
    if sequences.is_empty() || sequences.iter().any(Vec::is_empty) {
        return Err(Error::Config(
            "a padded batch needs at least one sequence, each of at least one token".into(),
        ));
    }
    let mut ids = Vec::with_capacity(sequences.len() * longest);
    for seq in sequences {
        ids.extend(seq.iter().map(|&id| id as i64));
        ids.extend(std::iter::repeat_n(pad_id as i64, longest - seq.len()));
    }
    let (b, t) = (sequences.len() as i64, longest as i64);
    let lengths: Vec<i64> = sequences.iter().map(|s| s.len() as i64).collect();
    let lengths = Tensor::from_slice(&lengths); // [B]
    let mask = Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0).lt_tensor(&lengths.unsqueeze(1)); // [B, T]
    Ok(Padded {
        ids: Tensor::from_slice(&ids).f_view([b, t])?.f_to_device(device)?,
        lengths: lengths.f_to_device(device)?,
        mask: mask.f_to_device(device)?,
    })
}
