//! Instruction data (chapter 10): Raschka's 1,100 records of an instruction, an optional input
//! and the response wanted, written in the Alpaca template and batched for finetuning so that
//! the model learns to write the response, not to repeat the prompt.
//!
//! ```text
//! Below is an instruction that describes a task. Write a response that appropriately
//! completes the request.
//!
//! ### Instruction:
//! {instruction}
//!
//! ### Input:             (only when the record has an input)
//! {input}
//!
//! ### Response:
//! {output}<|endoftext|>
//! ```
//!
//! [`InstructionData`] is a [`Batches`] source, so the trainer finetunes on it as it pretrains
//! on a text: each batch is a random draw of records, padded to its own longest (not to the
//! context), and the targets of the prompt and of the padding are [`IGNORE`]d, so only the
//! response's tokens (and the end-of-text that ends it) count in the loss.

use super::{Batches, Split};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use tch::{Device, Tensor};

/// The target id that `cross_entropy` skips (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;

/// One record: what to do, what to do it on (may be empty), the response wanted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Instruction {
    pub instruction: String,
    #[serde(default)]
    pub input: String,
    pub output: String,
}

impl Instruction {
    /// The prompt in the Alpaca template, up to and including `### Response:\n`.
    pub fn prompt(&self) -> String {
        let mut prompt = format!(
            "Below is an instruction that describes a task. Write a response that appropriately completes \
             the request.\n\n### Instruction:\n{}",
            self.instruction
        );
        if !self.input.is_empty() {
            prompt.push_str(&format!("\n\n### Input:\n{}", self.input));
        }
        prompt.push_str("\n\n### Response:\n");
        prompt
    }
}

/// Raschka's instruction data, downloaded on first use (`instruction-data` in the manifest).
pub fn instruction_data() -> Result<Vec<Instruction>> {
    let path = super::fetch("instruction-data")?;
    parse_instructions(&super::load_text(&path)?, &path.display().to_string())
}

/// The records of a JSON array of `{"instruction", "input", "output"}` objects (`source` names
/// it in errors): a record without an instruction or an output, or an empty list, is an error
/// naming the record.
pub fn parse_instructions(json: &str, source: &str) -> Result<Vec<Instruction>> {
    let values: Vec<serde_json::Value> = serde_json::from_str(json)
        .map_err(|e| Error::Config(format!("{source}: not a JSON list of records: {e}")))?;
    if values.is_empty() {
        return Err(Error::EmptyCorpus(format!("{source} holds no records")));
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let record: Instruction =
                serde_json::from_value(v).map_err(|e| Error::Config(format!("{source}, record {i}: {e}")))?;
            if record.instruction.trim().is_empty() || record.output.trim().is_empty() {
                return Err(Error::Config(format!("{source}, record {i}: an empty instruction or output")));
            }
            Ok(record)
        })
        .collect()
}

/// Records for training, validation and a final test.
#[derive(Debug, Clone, PartialEq)]
pub struct InstructionSplits {
    pub train: Vec<Instruction>,
    pub val: Vec<Instruction>,
    pub test: Vec<Instruction>,
}

/// Raschka's split, in file order (no shuffle): the first 85% to train on, the next 10% to
/// test on, the last 5% to validate on (935, 110 and 55 of his 1,100 records). Too few
/// records to leave each part one is an error.
pub fn instruction_splits(records: &[Instruction]) -> Result<InstructionSplits> {
    let n = records.len();
    let (train_end, test_end) = (n * 85 / 100, n * 85 / 100 + n / 10);
    if train_end == 0 || test_end == train_end || test_end == n {
        return Err(Error::Config(format!(
            "{n} instruction records are too few to split 85/10/5 into training, test and validation records"
        )));
    }
    Ok(InstructionSplits {
        train: records[..train_end].to_vec(),
        test: records[train_end..test_end].to_vec(),
        val: records[test_end..].to_vec(),
    })
}

/// Instruction records encoded for finetuning, split into train and validation records, drawn
/// into padded, masked batches (see the module docs).
#[derive(Debug)]
pub struct InstructionData {
    /// Each record's tokens (prompt, response, end-of-text), and how many are the prompt's.
    train: Vec<(Vec<u32>, usize)>,
    val: Vec<(Vec<u32>, usize)>,
    pad_id: u32,
}

impl InstructionData {
    /// `train` and `val` records encoded with `tokenizer`, each ending with `end_id` (the
    /// end-of-text token, which also pads). A record the tokenizer cannot encode is an error.
    pub fn new(
        train: &[Instruction],
        val: &[Instruction],
        tokenizer: &dyn Tokenizer,
        end_id: u32,
    ) -> Result<Self> {
        let encode = |records: &[Instruction]| -> Result<Vec<(Vec<u32>, usize)>> {
            records.iter().map(|r| Self::encode(r, tokenizer, end_id)).collect()
        };
        let (train, val) = (encode(train)?, encode(val)?);
        if train.is_empty() || val.is_empty() {
            return Err(Error::Config("instruction finetuning needs training and validation records".into()));
        }
        Ok(Self { train, val, pad_id: end_id })
    }

    /// A record's tokens (prompt, response, `end_id`) and how many are the prompt's.
    pub fn encode(record: &Instruction, tokenizer: &dyn Tokenizer, end_id: u32) -> Result<(Vec<u32>, usize)> {
        let mut ids = tokenizer.encode(&record.prompt())?;
        let prompt_len = ids.len();
        ids.extend(tokenizer.encode(&record.output)?);
        ids.push(end_id);
        Ok((ids, prompt_len))
    }

    /// Inputs `x` and targets `y`, `[B, T]`, of these records (tokens and prompt lengths): `y`
    /// is `x` shifted by one, with the prompt's targets and the padding's set to [`IGNORE`]. `T`
    /// is the longest record's length less one, each cut to `max_len` inputs; a record whose prompt
    /// alone fills them is an error.
    pub fn collate(
        records: &[&(Vec<u32>, usize)],
        pad_id: u32,
        max_len: usize,
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        let t = records.iter().map(|(ids, _)| ids.len().min(max_len + 1) - 1).max().unwrap_or(0);
        if t == 0 {
            return Err(Error::Config(
                "a batch of instruction records needs a record of 2 tokens or more".into(),
            ));
        }
        if let Some((_, prompt_len)) = records.iter().find(|(_, prompt_len)| *prompt_len > max_len) {
            // Nothing of its response would be left to learn from (a batch of only such
            // records would have a loss over no tokens at all: NaN).
            return Err(Error::Config(format!(
                "a record's prompt has {prompt_len} tokens, and the context {max_len}: none of its response \
                 fits; train with a longer block_size or leave out the records that long"
            )));
        }
        let (mut x, mut y) = (Vec::with_capacity(records.len() * t), Vec::with_capacity(records.len() * t));
        for (ids, prompt_len) in records {
            let ids = &ids[..ids.len().min(max_len + 1)];
            for pos in 0..t {
                x.push(ids.get(pos).map_or(pad_id as i64, |&id| id as i64));
                // Position pos predicts token pos + 1: a response token, or ignored.
                let target = ids.get(pos + 1).filter(|_| pos + 1 >= *prompt_len);
                y.push(target.map_or(IGNORE, |&id| id as i64));
            }
        }
        let shape = [records.len() as i64, t as i64];
        Ok((
            Tensor::from_slice(&x).f_view(shape)?.f_to_device(device)?,
            Tensor::from_slice(&y).f_view(shape)?.f_to_device(device)?,
        ))
    }
}

impl Batches for InstructionData {
    /// `batch_size` records of `split`, drawn with libtorch's global generator (as
    /// [`super::TokenData`] draws its windows), cut to `block_size + 1` tokens and collated.
    fn get_batch(
        &self,
        split: Split,
        batch_size: usize,
        block_size: usize,
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        let records = match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        };
        Self::collate(&super::draw(records, batch_size)?, self.pad_id, block_size, device)
    }
}
