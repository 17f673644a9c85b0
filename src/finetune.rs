//! Finetuning a pretrained GPT (chapter 10): the vocabulary a model needs for its new data,
//! and what a finetuned model is measured by on records it never trained on: a classifier's
//! accuracy, an instruction follower's response loss and whether its answers end and keep
//! to the template. The models are [`crate::model::Classifier`] and the GPT itself; the data,
//! padded and masked, is [`crate::data::LabelledData`] and [`crate::data::InstructionData`].
//!
//! A pretrained model with a character vocabulary meets characters it never saw (Tiny
//! Shakespeare has no digits, the messages have plenty): the vocabulary grows by them
//! ([`covering`]), the embedding with it ([`Gpt::with_vocab_size`](crate::model::Gpt::with_vocab_size)),
//! and an instruction follower gets an end-of-text character ([`END_OF_TEXT_CHAR`]). GPT-2's
//! byte-level BPE encodes any text already, and has `<|endoftext|>`.

use crate::data::{Instruction, InstructionData, LabelledData, IGNORE};
use crate::generate::{self, Sampling};
use crate::model::{Classifier, LanguageModel};
use crate::tokenizer::{AnyTokenizer, Tokenizer, ENDOFTEXT};
use crate::{Error, Result};

/// What ends a response when the vocabulary is characters: ASCII's "end of text".
pub const END_OF_TEXT_CHAR: char = '\u{3}';

/// The seed of the messages' split, unless a run says otherwise.
pub const SPLIT_SEED: u64 = 123;

/// The classes of the messages, by label.
pub const CLASSES: [&str; 2] = ["ham", "spam"];

/// `tokenizer`, grown (a character vocabulary) by the characters of `text` it lacks.
pub fn covering(tokenizer: AnyTokenizer, text: &str) -> Result<AnyTokenizer> {
    match tokenizer {
        AnyTokenizer::Char(chars) => Ok(chars.extended(text).into()),
        other => {
            other.encode(text).map_err(|e| {
                Error::Config(format!(
                    "the pretrained model's {} tokenizer cannot encode the data: {e}",
                    other.kind()
                ))
            })?;
            Ok(other)
        }
    }
}

/// `tokenizer` and the id that ends a response: GPT-2's `<|endoftext|>`, or for characters
/// [`END_OF_TEXT_CHAR`] (added).
pub fn with_end_of_text(tokenizer: AnyTokenizer) -> Result<(AnyTokenizer, u32)> {
    let end_id = match &tokenizer {
        AnyTokenizer::Char(chars) => {
            let chars = chars.extended(&END_OF_TEXT_CHAR.to_string());
            let end_id = chars.encode(&END_OF_TEXT_CHAR.to_string())?[0];
            return Ok((chars.into(), end_id));
        }
        AnyTokenizer::Bpe(bpe) => bpe.special_id(ENDOFTEXT),
        AnyTokenizer::Word(_) => None,
    };
    match end_id {
        Some(id) => Ok((tokenizer, id)),
        None => Err(Error::Config(format!(
            "the pretrained model's {} tokenizer has no {ENDOFTEXT} to end a response with: finetune a model \
             with a char tokenizer or a BPE one with that special token",
            tokenizer.kind()
        ))),
    }
}

/// A classifier's accuracy on each part of its data: the share of messages whose higher
/// score is their label.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassifyResults {
    pub train_accuracy: f64,
    pub val_accuracy: f64,
    pub test_accuracy: f64,
}

impl std::fmt::Display for ClassifyResults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "accuracy: train {:.2}%, validation {:.2}%, test {:.2}%",
            100.0 * self.train_accuracy,
            100.0 * self.val_accuracy,
            100.0 * self.test_accuracy
        )
    }
}

/// [`ClassifyResults`] of `model` on `data` and the held-out `test` messages.
pub fn classify_results(
    model: &Classifier,
    data: &LabelledData,
    test: &[(Vec<u32>, usize)],
) -> Result<ClassifyResults> {
    let accuracy = |rows: &[(Vec<u32>, usize)]| model.accuracy(rows, data.pad_id, 8);
    Ok(ClassifyResults {
        train_accuracy: accuracy(&data.train)?,
        val_accuracy: accuracy(&data.val)?,
        test_accuracy: accuracy(test)?,
    })
}

/// An instruction follower measured on held-out records.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InstructResults {
    /// Records measured.
    pub records: usize,
    /// The mean cross-entropy of their responses (and the end-of-text after each), in nats per
    /// token, given the prompt: the masked loss of training, on records it never saw.
    pub response_loss: f64,
    pub perplexity: f64,
    /// The share of greedy responses that end with end-of-text within the token limit.
    pub ended: f64,
    /// The share that end and keep to the template: no `###` section of their own (a model
    /// that has not learnt where a response stops writes the next instruction).
    pub kept_template: f64,
}

impl std::fmt::Display for InstructResults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} held-out records: response loss {:.3} (perplexity {:.2}); {:.0}% of the responses end, \
             {:.0}% end and keep to the template",
            self.records,
            self.response_loss,
            self.perplexity,
            100.0 * self.ended,
            100.0 * self.kept_template
        )
    }
}

/// One held-out record and the model's response to it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Response {
    pub instruction: String,
    pub input: String,
    /// The response in the data.
    pub output: String,
    /// The model's (greedy, up to the token limit).
    pub response: String,
    /// Whether the model ended it with end-of-text.
    pub ended: bool,
}

/// `model`'s response to `record` (greedy unless `sampling` says otherwise), up to
/// `max_new_tokens`, and whether it ended with `end_id`.
pub fn respond(
    model: &dyn LanguageModel,
    tokenizer: &AnyTokenizer,
    record: &Instruction,
    end_id: u32,
    max_new_tokens: usize,
    sampling: &Sampling,
    seed: u64,
) -> Result<(String, bool)> {
    let prompt = tokenizer.encode(&record.prompt())?;
    let (ids, ended) = generate::generate_until(model, &prompt, max_new_tokens, sampling, seed, end_id)?;
    Ok((tokenizer.decode(&ids)?, ended))
}

/// [`InstructResults`] of `model` on the held-out `records`, with every greedy response.
pub fn instruct_results(
    model: &dyn LanguageModel,
    tokenizer: &AnyTokenizer,
    records: &[Instruction],
    end_id: u32,
    max_new_tokens: usize,
) -> Result<(InstructResults, Vec<Response>)> {
    if records.is_empty() {
        return Err(Error::Config("measuring needs at least one held-out record".into()));
    }
    let block = model.block_size().unwrap_or(usize::MAX);
    let device = model.var_store().device();
    let encoded: Vec<(Vec<u32>, usize)> =
        records.iter().map(|r| InstructionData::encode(r, tokenizer, end_id)).collect::<Result<_>>()?;
    let (mut total, mut count) = (0.0, 0i64);
    tch::no_grad(|| -> Result<()> {
        for chunk in encoded.chunks(8) {
            let rows: Vec<&(Vec<u32>, usize)> = chunk.iter().collect();
            let (x, y) = InstructionData::collate(&rows, end_id, block, device)?;
            let n = y.f_ne(IGNORE)?.f_sum(tch::Kind::Int64)?.f_int64_value(&[])?;
            total += model.loss(&x, &y, false)?.f_double_value(&[])? * n as f64;
            count += n;
        }
        Ok(())
    })?;
    let mut responses = Vec::with_capacity(records.len());
    for record in records {
        let (response, ended) =
            respond(model, tokenizer, record, end_id, max_new_tokens, &Sampling::greedy(), 0)?;
        responses.push(Response {
            instruction: record.instruction.clone(),
            input: record.input.clone(),
            output: record.output.clone(),
            response,
            ended,
        });
    }
    let share = |keep: &dyn Fn(&Response) -> bool| {
        responses.iter().filter(|r| keep(r)).count() as f64 / responses.len() as f64
    };
    let response_loss = total / count.max(1) as f64;
    let results = InstructResults {
        records: records.len(),
        response_loss,
        perplexity: response_loss.exp(),
        ended: share(&|r| r.ended),
        kept_template: share(&|r| r.ended && !r.response.contains("###")),
    };
    Ok((results, responses))
}
