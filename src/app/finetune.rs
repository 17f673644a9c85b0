//! Finetuning runs from the command line (chapter 10): `llm finetune classify` turns a
//! pretrained GPT into a spam classifier, `llm finetune instruct` into an instruction
//! follower. Each is a run folder as `llm train` keeps one ([`super::run`]: config, tokenizer,
//! checkpoints, metrics, plots, the lock, MLflow; resumed by giving the command the folder
//! again), its config saying the task ([`Task`]), and each measures what it set out to do on
//! records it never trains on, before and after ([`RESULTS_FILE`]).
//!
//! A pretrained model with a character vocabulary meets characters it never saw (Tiny
//! Shakespeare has no digits, the messages have plenty): the vocabulary grows by them
//! ([`CharTokenizer::extended`](crate::tokenizer::CharTokenizer::extended)), the embedding with
//! it ([`Gpt::with_vocab_size`]), and an instruction follower gets an end-of-text character
//! ([`END_OF_TEXT_CHAR`]). GPT-2's byte-level BPE encodes any text already, and has
//! `<|endoftext|>`.

use super::run::{self, DataSource, RunConfig, RunSpec, Task};
use crate::data::{self, Batches, Instruction, InstructionData, LabelledData, IGNORE};
use crate::generate::{self, Sampling};
use crate::model::{AnyModel, Classifier, ClassifierConfig, Gpt, LanguageModel, ModelConfig, Tune};
use crate::tokenizer::{AnyTokenizer, Tokenizer, ENDOFTEXT};
use crate::train::TrainConfig;
use crate::{Error, Result};
use std::path::Path;

/// What ends a response when the vocabulary is characters: ASCII's "end of text".
pub const END_OF_TEXT_CHAR: char = '\u{3}';

/// The measures of a finetuning run, before and after (in the run folder).
pub const RESULTS_FILE: &str = "results.json";

/// The responses of the finetuned model to the held-out instructions (in the run folder).
pub const RESPONSES_FILE: &str = "responses.json";

/// The seed of the messages' split, unless a run says otherwise.
pub const SPLIT_SEED: u64 = 123;

/// The classes of the messages, by label.
pub const CLASSES: [&str; 2] = ["ham", "spam"];

/// What a new finetuning run is for, as the command line asks it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// A spam classifier, trained as `tune` says, on messages split with `split_seed`.
    Classify { tune: Tune, split_seed: u64 },
    /// An instruction follower (every weight trains).
    Instruct,
}

/// A finetuning run's data, encoded: batches to train and validate on, and the held-out part
/// it is measured on.
pub enum FinetuneData {
    Classify {
        data: LabelledData,
        test: Vec<(Vec<u32>, usize)>,
    },
    /// `left_out`: records whose prompt alone fills the model's context (none of the response
    /// would be left to learn from or to measure), not used.
    Instruct {
        data: InstructionData,
        test: Vec<Instruction>,
        left_out: usize,
    },
}

impl FinetuneData {
    /// What the trainer draws its batches from.
    pub fn batches(&self) -> &dyn Batches {
        match self {
            FinetuneData::Classify { data, .. } => data,
            FinetuneData::Instruct { data, .. } => data,
        }
    }
}

/// Everything a finetuning run needs, checked, before anything is written.
pub struct FinetunePlan {
    pub config: RunConfig,
    pub tokenizer: AnyTokenizer,
    /// The model to train: the pretrained weights in it (a new run), or fresh weights for the
    /// latest checkpoint's (a resumed one).
    pub model: AnyModel,
    pub data: FinetuneData,
}

/// Plan a new run that finetunes `pretrained` (loaded from `source`, with its `tokenizer`) for
/// `goal`, with `spec`'s training and data settings over [`TrainConfig::finetune`]'s. The data
/// defaults to the SMS Spam Collection or Raschka's instructions; `--input FILE` reads a file of
/// the same kind. A flag that would change the model or its tokenizer is an error. Writes
/// nothing.
pub fn plan_new(
    spec: &RunSpec,
    source: &str,
    pretrained: Gpt,
    tokenizer: AnyTokenizer,
    goal: Goal,
) -> Result<FinetunePlan> {
    run::refuse_model_flags(spec, source, pretrained.config.block_size)?;
    if let Some(preset) = &spec.preset {
        return Err(Error::Config(format!(
            "--preset {preset} sets a model to pretrain; finetuning keeps --init-from's and starts from \
             Raschka's training settings (batches of 8, lr 5e-5): drop --preset"
        )));
    }
    let data = match run::data_source(spec)? {
        None => DataSource::Dataset(
            match goal {
                Goal::Classify { .. } => "sms-spam",
                Goal::Instruct => "instruction-data",
            }
            .into(),
        ),
        Some(d @ (DataSource::Dataset(_) | DataSource::Input(_))) => d,
        Some(other) => {
            return Err(Error::Config(format!(
                "{other}: a finetuning run reads a dataset (--dataset) or a file (--input)"
            )))
        }
    };
    data.check()?;
    let text = data.load_text()?;
    let device = crate::device::parse(spec.device.as_deref().unwrap_or("auto"))?;
    let mut train = TrainConfig::finetune();
    run::apply_training(&mut train, spec)?;
    if spec.precision.is_none() {
        train.precision = crate::precision::Precision::auto(device);
    }
    train.block_size = pretrained.config.block_size;

    // The vocabulary must cover the data (and say where a response ends).
    let (covered, task) = match goal {
        Goal::Classify { split_seed, .. } => {
            let messages = data::parse_sms(&text, &data.to_string())?;
            let all: String = messages.iter().map(|m| m.text.as_str()).collect();
            (with_text(tokenizer, &all)?, Task::Classify { split_seed })
        }
        Goal::Instruct => {
            let records = data::parse_instructions(&text, &data.to_string())?;
            let all: String = records.iter().map(|r| format!("{}{}", r.prompt(), r.output)).collect();
            let (tokenizer, end_id) = with_end_of_text(with_text(tokenizer, &all)?)?;
            (tokenizer, Task::Instruct { end_id })
        }
    };
    crate::device::seed(train.seed); // the new embedding rows, the head, the adapters
    let grown = match covered.vocab_size() {
        v if v > pretrained.config.vocab_size => pretrained.with_vocab_size(v)?,
        _ => pretrained, // a BPE's vocabulary covers the data already: no copy of the weights
    };
    let mut gpt = grown.config.clone();
    gpt.dropout = spec.dropout.unwrap_or(gpt.dropout);
    let model_config = match goal {
        Goal::Classify { tune, .. } => {
            ModelConfig::Classifier(ClassifierConfig { gpt, n_classes: CLASSES.len(), tune })
        }
        Goal::Instruct => ModelConfig::Gpt(gpt),
    };
    let config = RunConfig {
        preset: "finetune".into(),
        model: model_config,
        tokenizer: covered.kind().into(),
        tokenizer_path: None,
        data,
        train,
        device: spec.device.clone().unwrap_or_else(|| "auto".into()),
        init_from: Some(source.to_owned()),
        task,
    };
    config.check()?;
    run::check_memory(&config)?;
    let model = config.model.build(device)?;
    copy_weights(&grown.vs, model.var_store())?;
    let data = encode_data(&config, &text, &covered)?;
    Ok(FinetunePlan { config, tokenizer: covered, model, data })
}

/// Plan a resumed finetuning run: the saved configuration with `spec`'s training settings
/// ([`RunConfig::resumed_with`]: model and data flags may not change), its data read again
/// and encoded with the run's tokenizer, and a model of its config with fresh weights (load
/// the checkpoint's into it). Writes nothing.
pub fn plan_resumed(saved: &RunConfig, tokenizer: AnyTokenizer, spec: &RunSpec) -> Result<FinetunePlan> {
    let config = saved.resumed_with(spec)?;
    config.data.check()?;
    let model = config.model.build(crate::device::parse(&config.device)?)?;
    let data = load_data(&config, &tokenizer)?;
    Ok(FinetunePlan { config, tokenizer, model, data })
}

/// `tokenizer`, grown (a character vocabulary) by the characters of `text` it lacks.
fn with_text(tokenizer: AnyTokenizer, text: &str) -> Result<AnyTokenizer> {
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
fn with_end_of_text(tokenizer: AnyTokenizer) -> Result<(AnyTokenizer, u32)> {
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

/// Copy every variable of `from` into the variable of the same name in `to` (which may have
/// more: a classifier's head, LoRA adapters).
fn copy_weights(from: &tch::nn::VarStore, to: &tch::nn::VarStore) -> Result<()> {
    let _no_grad = tch::no_grad_guard();
    let mut targets = to.variables();
    for (name, source) in from.variables() {
        let target = targets
            .get_mut(&name)
            .ok_or_else(|| Error::Config(format!("the finetuning model has no {name} to copy into")))?;
        target.f_copy_(&source)?;
    }
    Ok(())
}

/// The run's data (`config.data`, of its task's kind), read, split and encoded with `tokenizer`.
pub fn load_data(config: &RunConfig, tokenizer: &AnyTokenizer) -> Result<FinetuneData> {
    encode_data(config, &config.data.load_text()?, tokenizer)
}

/// [`load_data`] of the data's `text`, already read.
fn encode_data(config: &RunConfig, text: &str, tokenizer: &AnyTokenizer) -> Result<FinetuneData> {
    let source = config.data.to_string();
    match config.task {
        Task::Classify { split_seed } => {
            let split = data::balanced_split(&data::parse_sms(text, &source)?, split_seed)?;
            let encode = |part: &[data::Sms]| -> Result<Vec<(Vec<u32>, usize)>> {
                part.iter().map(|m| Ok((tokenizer.encode(&m.text)?, usize::from(m.spam)))).collect()
            };
            // Any id pads: a classifier reads each message at its last real token.
            let data = LabelledData::new(encode(&split.train)?, encode(&split.val)?, 0)?;
            Ok(FinetuneData::Classify { data, test: encode(&split.test)? })
        }
        Task::Instruct { end_id } => {
            let split = data::instruction_splits(&data::parse_instructions(text, &source)?)?;
            let block = config.model.block_size();
            let mut left_out = 0;
            let mut fitting = |part: Vec<Instruction>| -> Result<Vec<Instruction>> {
                let mut kept = Vec::with_capacity(part.len());
                for record in part {
                    match tokenizer.encode(&record.prompt())?.len() <= block {
                        true => kept.push(record),
                        false => left_out += 1,
                    }
                }
                Ok(kept)
            };
            let (train, val, test) = (fitting(split.train)?, fitting(split.val)?, fitting(split.test)?);
            if train.is_empty() || val.is_empty() || test.is_empty() {
                return Err(Error::Config(format!(
                    "{source}: every training, validation or test record has a prompt longer than the model's \
                     context ({block} tokens): finetune a model with a longer one"
                )));
            }
            let data = InstructionData::new(&train, &val, tokenizer, end_id)?;
            Ok(FinetuneData::Instruct { data, test, left_out })
        }
        Task::Pretrain => Err(Error::Config("a pretraining run has no finetuning data".into())),
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

/// Record `results` as `when` ("before" or "after") in the run folder's `file`
/// ([`RESULTS_FILE`], [`RESPONSES_FILE`]), beside what it holds already.
pub fn save_results(dir: &Path, file: &str, when: &str, results: &impl serde::Serialize) -> Result<()> {
    let path = dir.join(file);
    let mut all: serde_json::Map<String, serde_json::Value> = match path.is_file() {
        true => crate::io::read_json(&path)?,
        false => serde_json::Map::new(),
    };
    let json = |source| Error::Json { context: path.display().to_string(), source };
    all.insert(when.into(), serde_json::to_value(results).map_err(json)?);
    let text = serde_json::to_string_pretty(&all).map_err(json)?;
    crate::io::write_atomic(&path, format!("{text}\n").as_bytes())
}
