//! Finetuning runs from the command line (chapter 10): `llm finetune classify` turns a
//! pretrained GPT into a spam classifier, `llm finetune instruct` a GPT or a Llama into an
//! instruction follower. Each is a run folder as `llm train` keeps one ([`super::run`]:
//! config, tokenizer, checkpoints, metrics, plots, the lock, MLflow; resumed by giving the
//! command the folder again), its config saying the task ([`Task`]), and each measures what
//! it set out to do on records it never trains on, before and after ([`RESULTS_FILE`]), with
//! the library's [`crate::finetune`] measures.

use super::run::{self, DataSource, RunConfig, RunSpec, Task};
use crate::data::{self, Batches, Instruction, InstructionData, LabelledData};
use crate::finetune::{covering, with_end_of_text, CLASSES};
use crate::model::{AnyModel, ClassifierConfig, LanguageModel, ModelConfig, Tune};
use crate::tokenizer::{AnyTokenizer, Tokenizer};
use crate::train::TrainConfig;
use crate::{Error, Result};
use std::path::Path;

/// The measures of a finetuning run, before and after (in the run folder).
pub const RESULTS_FILE: &str = "results.json";

/// The responses of the finetuned model to the held-out instructions (in the run folder).
pub const RESPONSES_FILE: &str = "responses.json";

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
/// the same kind. A classifier is built on a GPT; an instruction follower on a GPT or a Llama.
/// A flag that would change the model or its tokenizer is an error. Writes nothing.
pub fn plan_new(
    spec: &RunSpec,
    source: &str,
    pretrained: AnyModel,
    tokenizer: AnyTokenizer,
    goal: Goal,
) -> Result<FinetunePlan> {
    let block_size = pretrained.config().block_size();
    run::refuse_model_flags(spec, source, block_size)?;
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
    train.block_size = block_size;

    // The vocabulary must cover the data (and say where a response ends).
    let (covered, task) = match goal {
        Goal::Classify { split_seed, .. } => {
            let messages = data::parse_sms(&text, &data.to_string())?;
            let all: String = messages.iter().map(|m| m.text.as_str()).collect();
            (covering(tokenizer, &all)?, Task::Classify { split_seed })
        }
        Goal::Instruct => {
            let records = data::parse_instructions(&text, &data.to_string())?;
            let all: String = records.iter().map(|r| format!("{}{}", r.prompt(), r.output)).collect();
            let (tokenizer, end_id) = with_end_of_text(covering(tokenizer, &all)?)?;
            (tokenizer, Task::Instruct { end_id })
        }
    };
    crate::device::seed(train.seed); // the new embedding rows, the head, the adapters

    // A BPE's vocabulary covers the data already: then no copy of the weights.
    let v = covered.vocab_size();
    let grown: AnyModel = match pretrained {
        AnyModel::Gpt(gpt) if v > gpt.config.vocab_size => gpt.with_vocab_size(v)?.into(),
        AnyModel::Llama(llama) if v > llama.config.vocab_size => llama.with_vocab_size(v)?.into(),
        AnyModel::Classifier(_) => {
            return Err(Error::Config(format!(
                "{source} holds a classifier: finetune the model it was made from"
            )))
        }
        model => model,
    };
    let model_config = match (goal, run::with_dropout_flag(spec, source, &grown.config())?) {
        (Goal::Classify { tune, .. }, ModelConfig::Gpt(gpt)) => {
            ModelConfig::Classifier(ClassifierConfig { gpt, n_classes: CLASSES.len(), tune })
        }
        (Goal::Classify { .. }, other) => {
            return Err(Error::Config(format!(
            "{source} holds a {}: a classifier is built on a GPT here (`llm finetune instruct` takes a {0})",
            other.arch()
        )))
        }
        (Goal::Instruct, model) => model,
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
    copy_weights(grown.var_store(), model.var_store())?;
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
