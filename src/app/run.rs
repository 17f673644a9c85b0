//! Training runs as folders: what `llm train` writes, resumes and compares.
//!
//! A run folder holds everything needed to continue the run, sample from it, or look at it:
//!
//! ```text
//! runs/shakespeare/
//!   config.json           the resolved configuration (RunConfig): model, tokenizer, data, training
//!   tokenizer.json        the tokenizer, in the form AnyTokenizer::load reads
//!   checkpoints/latest/   the most recent checkpoint (saved at every evaluation, and on Ctrl-C)
//!   checkpoints/best/     the checkpoint with the lowest validation loss so far
//!   metrics.jsonl         one JSON line per log line and per loss estimate
//!   loss.png, lr.png      the loss and learning-rate curves, redrawn at every evaluation
//!   train.lock            the PID of the process training in it, locked while it does
//! ```
//!
//! With an MLflow server ([`crate::track`]; `llm train --mlflow URI` or `MLFLOW_TRACKING_URI`),
//! each training session of the folder is also an MLflow run, named after the folder: the
//! configuration as params and `config.json`, the curves as metrics, and the plots as files,
//! uploaded again at every evaluation ([`Run::start_tracking`]).
//!
//! The settings come as a [`RunSpec`]: every knob optional, named as the command line's flags
//! are (`n_layer` for `--n-layer`), read from a TOML or JSON file and/or the flags.
//! [`plan`] resolves a spec against a preset into a [`RunConfig`], reads the data and builds
//! the tokenizer, and checks everything, all before anything is written; [`Run::create`] then
//! writes the folder under a temporary name and renames it into place, so a rejected or
//! failed start never leaves a half-written run behind. [`Run::train`] trains in pieces of
//! `eval_interval` steps, saving `checkpoints/latest` (atomically, see
//! [`crate::train::checkpoint`]) after each, so a killed run loses at most the steps since
//! the last evaluation.

use crate::data::{self, Batches, TokenData};
use crate::model::{
    AnyModel, ClassifierConfig, GptConfig, LanguageModel, LlamaConfig, ModelConfig, Position,
};
use crate::plot::{self, Series};
use crate::precision::Precision;
use crate::tokenizer::{AnyTokenizer, BpeConfig, BpeTokenizer, CharTokenizer, Tokenizer, WordTokenizer};
use crate::track::{self, Tracker};
use crate::train::{Checkpoint, EvalPoint, History, TrainConfig, TrainEvent, Trainer};
use crate::{Error, Result};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use tch::Device;

/// Proof that this process alone trains in a run folder ([`Run::lock`]); dropping it (or
/// the process ending) lets another in.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// The resolved configuration.
pub const CONFIG_FILE: &str = "config.json";
/// The run's tokenizer.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// One JSON object per line: `{"kind":"log",...}` or `{"kind":"eval",...}`.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Train and validation loss against the step.
pub const LOSS_PLOT: &str = "loss.png";
/// The learning rate against the step.
pub const LR_PLOT: &str = "lr.png";
/// Held (an exclusive `flock`) by the process that trains in the folder; holds its PID.
pub const LOCK_FILE: &str = "train.lock";
/// The most recent checkpoint, relative to the run folder.
pub const LATEST: &str = "checkpoints/latest";
/// The checkpoint with the lowest validation loss.
pub const BEST: &str = "checkpoints/best";

/// The model presets, as `--preset` names them.
pub const PRESETS: &[&str] = &["cpu-small", "lecture", "shakespeare-char"];
/// The tokenizers `--tokenizer` can build.
pub const TOKENIZERS: &[&str] = &["char", "word", "bpe"];

/// The vocabulary of `--tokenizer bpe` when `--vocab-size` is not given (chapter 6's choice
/// for the small model).
pub const DEFAULT_BPE_VOCAB: usize = 512;

/// Every setting of `llm train`, each optional: `None` means "not given" (the preset's, the
/// config file's or the resumed run's value stays). This one struct is the command line's
/// flags (clap), the config file's keys (serde: a flag's name with underscores, `--n-layer`
/// is `n_layer`) and, with [`RunConfig::apply`], what each does, so a config file reads like
/// the command line:
///
/// ```toml
/// preset = "cpu-small"
/// dataset = "tinyshakespeare"
/// n_layer = 2
/// max_steps = 500
/// lr = 1e-3
/// ```
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The architecture: gpt (chapter 5's, GPT-2's), or llama (RMSNorm, rotary positions,
    /// SwiGLU, grouped-query attention, no biases: the preset's sizes made Llama). Default: gpt.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["gpt", "llama"]), help_heading = "Model")]
    pub arch: Option<String>,
    /// Key/value heads per block, a divisor of --n-head (--arch llama; default: half of them).
    #[arg(long, help_heading = "Model")]
    pub n_kv_head: Option<usize>,
    /// The base of the rotary angles (--arch llama; default 10000).
    #[arg(long, help_heading = "Model")]
    pub rope_theta: Option<f64>,
    /// Model and training settings to start from: cpu-small (0.8M parameters, minutes on a
    /// laptop), lecture or shakespeare-char (10.7M, for a GPU). Default: cpu-small.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(PRESETS), help_heading = "Model")]
    pub preset: Option<String>,
    /// Transformer blocks.
    #[arg(long, help_heading = "Model")]
    pub n_layer: Option<usize>,
    /// Attention heads per block (must divide --n-embd).
    #[arg(long, help_heading = "Model")]
    pub n_head: Option<usize>,
    /// Width of the model (channels of the residual stream).
    #[arg(long, help_heading = "Model")]
    pub n_embd: Option<usize>,
    /// Tokens of context the model sees (and trains on).
    #[arg(long, help_heading = "Model")]
    pub block_size: Option<usize>,
    /// Dropout probability during training, in [0, 1).
    #[arg(long, help_heading = "Model")]
    pub dropout: Option<f64>,
    /// Rows of the embedding table (default: the tokenizer's vocabulary size). With
    /// --tokenizer bpe and no --tokenizer-path: the size of the BPE vocabulary to learn (512).
    #[arg(long, help_heading = "Model")]
    pub vocab_size: Option<usize>,
    /// Hidden width of each block's MLP (default: 4 × --n-embd; a Llama's SwiGLU, of three
    /// matrices, 2/3 of that).
    #[arg(long, help_heading = "Model")]
    pub d_ff: Option<usize>,
    /// How the model knows where each token is: learned (a trained table of position
    /// embeddings, GPT-2's and the presets') or sinusoidal (the fixed sines and cosines of
    /// "Attention Is All You Need", no parameters).
    #[arg(long, value_enum, hide_possible_values = true, help_heading = "Model")]
    pub position: Option<Position>,

    /// How text becomes tokens: char (one per character), word, or bpe (byte-level BPE learned
    /// from the training text, --vocab-size tokens).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TOKENIZERS), help_heading = "Tokenizer")]
    pub tokenizer: Option<String>,
    /// A tokenizer file (JSON, any kind) to use instead of building one from the text.
    #[arg(long, value_name = "FILE", help_heading = "Tokenizer")]
    pub tokenizer_path: Option<PathBuf>,

    /// A dataset of `llm data list` (downloaded on first use; WikiText with its own splits).
    /// Default: tinyshakespeare.
    #[arg(long, value_name = "NAME", help_heading = "Data")]
    pub dataset: Option<String>,
    /// A folder: train on all its .txt files.
    #[arg(long, value_name = "DIR", help_heading = "Data")]
    pub text_files: Option<PathBuf>,
    /// A text file to train on.
    #[arg(long, value_name = "FILE", help_heading = "Data")]
    pub input: Option<PathBuf>,
    /// A text file on the web (downloaded once; its SHA-256 is recorded, and a resumed run
    /// must get the same bytes).
    #[arg(long, value_name = "URL", help_heading = "Data")]
    pub input_url: Option<String>,

    /// Sequences per batch.
    #[arg(long, help_heading = "Training")]
    pub batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long, help_heading = "Training")]
    pub lr: Option<f64>,
    /// Optimizer steps of the whole run (raise it on --resume to train longer).
    #[arg(long, help_heading = "Training")]
    pub max_steps: Option<usize>,
    /// Or: passes over the training text (converted to steps).
    #[arg(long, help_heading = "Training")]
    pub max_epochs: Option<f64>,
    /// Steps of learning-rate warmup.
    #[arg(long, help_heading = "Training")]
    pub warmup: Option<usize>,
    /// AdamW weight decay.
    #[arg(long, help_heading = "Training")]
    pub weight_decay: Option<f64>,
    /// Clip the gradient's global norm to this (0: no clipping).
    #[arg(long, help_heading = "Training")]
    pub grad_clip: Option<f64>,
    /// Micro-batches per step (a bigger batch in the same memory).
    #[arg(long, help_heading = "Training")]
    pub grad_accum: Option<usize>,
    /// Estimate the losses, save a checkpoint and redraw the plots every this many steps.
    #[arg(long, help_heading = "Training")]
    pub eval_interval: Option<usize>,
    /// Batches per loss estimate.
    #[arg(long, help_heading = "Training")]
    pub eval_iters: Option<usize>,
    /// A log line (loss, lr, tokens/s) every this many steps (0: none).
    #[arg(long, help_heading = "Training")]
    pub log_interval: Option<usize>,
    /// Seed of the initial weights, batches and dropout: the same seed repeats the run.
    #[arg(long, help_heading = "Training")]
    pub seed: Option<u64>,
    /// End the run once this many loss estimates in a row bring no new best validation loss
    /// (checkpoints/best keeps the best model).
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub early_stop_patience: Option<usize>,
    /// cpu, cuda, cuda:N, or auto (a GPU if there is one).
    #[arg(long, help_heading = "Training")]
    pub device: Option<String>,
    /// fp32, or bf16: the matmuls and attention in bfloat16, the weights and optimizer state
    /// in float32. Default: bf16 where the device has bfloat16 hardware, else fp32 (a resumed
    /// run keeps its own; either resumes in the other).
    #[arg(long, value_enum, help_heading = "Training")]
    pub precision: Option<Precision>,
}

impl RunSpec {
    /// Read a config file: TOML if its name ends in `.toml`, else JSON. Unknown keys are
    /// errors (a typo would otherwise be silently ignored).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let is_toml = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        let parsed = if is_toml {
            toml::from_str(&text).map_err(|e| e.to_string())
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        };
        let mut spec: Self =
            parsed.map_err(|e| Error::Config(format!("config file {}: {}", path.display(), e.trim_end())))?;
        // Paths in a config file are relative to the file, not to where `llm` runs.
        let base = path.parent().unwrap_or(Path::new(""));
        for p in [&mut spec.tokenizer_path, &mut spec.text_files, &mut spec.input].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(spec)
    }

    /// `self`'s settings, with `base`'s where `self` has none (flags over a config file),
    /// setting by setting through their serde form (so no list of fields to keep in step).
    pub fn or(self, base: RunSpec) -> Result<RunSpec> {
        let json = |spec: &RunSpec| match serde_json::to_value(spec) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            Ok(_) => Ok(serde_json::Map::new()),
            Err(source) => Err(Error::Json { context: "run settings".into(), source }),
        };
        let mut merged = json(&self)?;
        for (key, value) in json(&base)? {
            if merged.get(&key).is_none_or(serde_json::Value::is_null) {
                merged.insert(key, value);
            }
        }
        serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|source| Error::Json { context: "run settings".into(), source })
    }
}

/// Where the training text comes from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// A dataset of the manifest (`llm data list`), downloaded on first use.
    Dataset(String),
    /// Every `.txt` file of a folder.
    TextFiles(PathBuf),
    /// One text file.
    Input(PathBuf),
    /// A text file on the web ([`data::fetch_url`]), with the SHA-256 of the copy the run
    /// trains on (recorded when the run starts; a resumed run gets the same bytes or an error).
    InputUrl { url: String, sha256: Option<String> },
}

impl std::fmt::Display for DataSource {
    /// The flag that names this source: `--dataset wikitext-2`, `--input /path/book.txt`, ...
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Dataset(name) => write!(f, "--dataset {name}"),
            DataSource::TextFiles(dir) => write!(f, "--text-files {}", dir.display()),
            DataSource::Input(file) => write!(f, "--input {}", file.display()),
            DataSource::InputUrl { url, .. } => write!(f, "--input-url {url}"),
        }
    }
}

impl DataSource {
    /// The same text source, whatever hash a URL source has pinned.
    pub fn same_source(&self, other: &DataSource) -> bool {
        match (self, other) {
            (DataSource::InputUrl { url: a, .. }, DataSource::InputUrl { url: b, .. }) => a == b,
            (a, b) => a == b,
        }
    }

    /// Check that the source exists (without downloading or reading it).
    pub fn check(&self) -> Result<()> {
        let missing = |flag: &str, p: &Path, what: &str| {
            Error::Config(format!("{flag} {}: no such {what}", p.display()))
        };
        match self {
            DataSource::Dataset(name) => data::dataset(name).map(|_| ()),
            DataSource::TextFiles(dir) if !dir.is_dir() => Err(missing("--text-files", dir, "folder")),
            DataSource::Input(file) if !file.is_file() => Err(missing("--input", file, "file")),
            DataSource::InputUrl { url, .. }
                if !(url.starts_with("http://") || url.starts_with("https://")) =>
            {
                Err(Error::Config(format!("--input-url {url}: give an http:// or https:// URL")))
            }
            _ => Ok(()),
        }
    }

    /// Download a URL source now and record the SHA-256 of what arrived, if not yet recorded.
    pub fn pin(&mut self) -> Result<()> {
        if let DataSource::InputUrl { url, sha256: sha256 @ None } = self {
            let path = data::fetch_url(url, None, false)?;
            *sha256 = Some(crate::io::sha256_file(&path)?);
        }
        Ok(())
    }

    /// The text (a dataset is downloaded first if it is not here yet): one text, or the
    /// training and validation parts of a dataset published with its splits (WikiText).
    pub fn load(&self) -> Result<Corpus> {
        match self {
            DataSource::Dataset(name) if data::dataset(name)?.splits.is_some() => {
                let parts = data::load_splits(name)?;
                Ok(Corpus::Parts { train: parts.train, valid: parts.valid })
            }
            _ => self.load_text().map(Corpus::Whole),
        }
    }

    /// The text, as one (a dataset is downloaded first if it is not here yet).
    pub fn load_text(&self) -> Result<String> {
        match self {
            DataSource::Dataset(name) => data::load_text(data::fetch(name)?),
            DataSource::TextFiles(path) | DataSource::Input(path) => data::load_text(path),
            DataSource::InputUrl { url, sha256 } => match data::fetch_url(url, sha256.as_deref(), false) {
                Err(Error::Checksum { expected, actual, .. }) => Err(Error::Config(format!(
                    "--input-url {url}: the file changed since this run first downloaded it (the run trains \
                     on sha256 {expected}, the URL now gives {actual}): start a new run to train on the new text"
                ))),
                path => data::load_text(path?),
            },
        }
    }
}

/// What a run trains and validates on.
#[derive(Debug, Clone, PartialEq)]
pub enum Corpus {
    /// One text: its tokens are split 90/10 into training and validation.
    Whole(String),
    /// A corpus published with its own parts (WikiText's train and valid files), used as given.
    Parts { train: String, valid: String },
}

impl Corpus {
    /// The training text (what a BPE tokenizer learns from).
    pub fn train_text(&self) -> String {
        match self {
            Corpus::Whole(text) => text.clone(),
            Corpus::Parts { train, .. } => train.clone(),
        }
    }

    /// All of it: what a character or word vocabulary is built from, so that validation
    /// holds no symbol the tokenizer never saw.
    pub fn all_text(&self) -> String {
        match self {
            Corpus::Whole(text) => text.clone(),
            Corpus::Parts { train, valid } => format!("{train}{valid}"),
        }
    }

    /// The token streams to train and validate on.
    pub fn token_data(&self, tokenizer: &AnyTokenizer) -> Result<TokenData> {
        match self {
            Corpus::Whole(text) => TokenData::new(&tokenizer.encode(text)?, 0.9),
            Corpus::Parts { train, valid } => {
                TokenData::from_parts(&tokenizer.encode(train)?, &tokenizer.encode(valid)?)
            }
        }
    }

    /// The validation tokens: the last 10% of one text, or the validation part.
    pub fn validation_ids(&self, tokenizer: &AnyTokenizer) -> Result<Vec<u32>> {
        match self {
            Corpus::Whole(text) => {
                let ids = tokenizer.encode(text)?;
                Ok(ids[(0.9 * ids.len() as f64) as usize..].to_vec())
            }
            Corpus::Parts { valid, .. } => tokenizer.encode(valid),
        }
    }
}

/// A run's resolved configuration: `config.json` in the run folder.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    /// The preset the model and training settings started from.
    pub preset: String,
    /// The model, tagged by its architecture (`"arch": "gpt"`; a folder from before the tag
    /// holds a GPT's).
    pub model: ModelConfig,
    /// How the tokenizer was made: `char`, `word` or `bpe` (built from the training text),
    /// or the kind of the file at `tokenizer_path`.
    pub tokenizer: String,
    pub tokenizer_path: Option<PathBuf>,
    pub data: DataSource,
    pub train: TrainConfig,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: String,
    /// The trained model the run started from (`llm train --init-from`, `llm finetune`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<String>,
    /// What the run trains the model for: the next token of a text, or a finetuning task.
    #[serde(default, skip_serializing_if = "Task::is_pretrain")]
    pub task: Task,
}

/// What a run trains its model for (`config.json`'s `task`; a run folder without one
/// pretrains, as every folder from before finetuning does).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Task {
    /// The next token of a text (`llm train`).
    #[default]
    Pretrain,
    /// Spam or ham (`llm finetune classify`): the model is a classifier, and the messages are
    /// split by [`data::balanced_split`] with this seed.
    Classify { split_seed: u64 },
    /// Responses to instructions (`llm finetune instruct`), each ended by the token `end_id`.
    Instruct { end_id: u32 },
}

impl Task {
    pub fn is_pretrain(&self) -> bool {
        *self == Task::Pretrain
    }

    /// The command that trains (and resumes) a run of this task.
    pub fn command(&self) -> &'static str {
        match self {
            Task::Pretrain => "llm train",
            Task::Classify { .. } => "llm finetune classify",
            Task::Instruct { .. } => "llm finetune instruct",
        }
    }
}

/// The model and training settings of a preset.
pub fn preset(name: &str) -> Result<(GptConfig, TrainConfig)> {
    match name {
        "cpu-small" => Ok((GptConfig::cpu_small(), TrainConfig::cpu_small())),
        "shakespeare-char" => Ok((GptConfig::shakespeare_char(), TrainConfig::shakespeare_char())),
        "lecture" => Ok((GptConfig::lecture(), TrainConfig::lecture())),
        other => Err(Error::Config(format!("unknown --preset '{other}' (known: {})", PRESETS.join(", ")))),
    }
}

/// The flag that sets a field of [`GptConfig`] or [`TrainConfig`] (or [`RunSpec`]): the
/// field's name with dashes, but for the training fields the command line names otherwise.
fn flag(field: &str) -> String {
    match field {
        "steps" => "--max-steps".into(),
        "warmup_steps" => "--warmup".into(),
        "min_lr" => "min_lr (a tenth of --lr)".into(),
        "lr_decay" | "beta1" | "beta2" => format!("the preset's {field}"),
        "intermediate_size" => "--d-ff".into(),
        _ => format!("--{}", field.replace('_', "-")),
    }
}

/// `gpt` with the sizes `spec` gives: blocks, heads, width, context, vocabulary.
fn sized(gpt: GptConfig, spec: &RunSpec) -> GptConfig {
    GptConfig {
        n_layer: spec.n_layer.unwrap_or(gpt.n_layer),
        n_head: spec.n_head.unwrap_or(gpt.n_head),
        n_embd: spec.n_embd.unwrap_or(gpt.n_embd),
        block_size: spec.block_size.unwrap_or(gpt.block_size),
        vocab_size: spec.vocab_size.unwrap_or(gpt.vocab_size),
        ..gpt
    }
}

/// An absolute path (relative to the current directory), so a run folder's config still
/// finds its data when `llm` runs from elsewhere.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

impl RunConfig {
    /// A fresh run's configuration: the preset's (`cpu-small` by default), then every
    /// setting of `spec` ([`RunConfig::apply`]). Checks what can be checked without the data;
    /// the vocabulary size and `--max-epochs` are settled by [`plan`].
    pub fn from_spec(spec: &RunSpec) -> Result<Self> {
        let preset_name = spec.preset.clone().unwrap_or_else(|| "cpu-small".into());
        let (gpt, train) = preset(&preset_name)?;
        let model = match spec.arch.as_deref() {
            None | Some("gpt") => ModelConfig::Gpt(gpt),
            // The preset's sizes with the flags', then made Llama (half as many key/value
            // heads, a SwiGLU as wide in weights as the GPT's MLP): --n-kv-head, --d-ff (the
            // SwiGLU's width) and --rope-theta, if given, are set by `apply` below.
            Some("llama") => ModelConfig::Llama(LlamaConfig::like_gpt(&sized(gpt, spec))),
            Some(other) => return Err(Error::Config(format!("unknown --arch {other} (known: gpt, llama)"))),
        };
        let mut config = RunConfig {
            preset: preset_name,
            model,
            tokenizer: "char".into(),
            tokenizer_path: None,
            data: DataSource::Dataset("tinyshakespeare".into()),
            train,
            device: "auto".into(),
            init_from: None,
            task: Task::Pretrain,
        };
        config.apply(spec)?;
        if spec.precision.is_none() {
            config.train.precision = Precision::auto(crate::device::parse(&config.device)?);
        }
        config.check()?;
        Ok(config)
    }

    /// Set what `spec` gives, each setting in the one place it lives: the model's sizes in
    /// `model` (the training windows follow `block_size`: one length for both), the
    /// tokenizer, the data, the training settings, the device.
    pub fn apply(&mut self, spec: &RunSpec) -> Result<()> {
        let set = |field: &mut usize, v: Option<usize>| *field = v.unwrap_or(*field);
        let arch = self.model.arch();
        if let Some(given) = spec.arch.as_ref().filter(|a| *a != arch) {
            return Err(Error::Config(format!("--arch {given} (the run has {arch})")));
        }
        let not_for = |flags: &[(&str, bool)]| match flags.iter().find(|(_, given)| *given) {
            Some((flag, _)) => Err(Error::Config(format!("{flag} is not a setting of a {arch}'s model"))),
            None => Ok(()),
        };
        match &mut self.model {
            ModelConfig::Llama(m) => {
                not_for(&[("--dropout", spec.dropout.is_some()), ("--position", spec.position.is_some())])?;
                set(&mut m.n_layer, spec.n_layer);
                set(&mut m.n_head, spec.n_head);
                set(&mut m.n_kv_head, spec.n_kv_head);
                set(&mut m.n_embd, spec.n_embd);
                set(&mut m.block_size, spec.block_size);
                set(&mut m.vocab_size, spec.vocab_size);
                set(&mut m.intermediate_size, spec.d_ff);
                m.rope_theta = spec.rope_theta.unwrap_or(m.rope_theta);
            }
            ModelConfig::Gpt(m) | ModelConfig::Classifier(ClassifierConfig { gpt: m, .. }) => {
                not_for(&[
                    ("--n-kv-head", spec.n_kv_head.is_some()),
                    ("--rope-theta", spec.rope_theta.is_some()),
                ])?;
                *m = sized(m.clone(), spec);
                m.dropout = spec.dropout.unwrap_or(m.dropout);
                m.d_ff = spec.d_ff.or(m.d_ff);
                m.position = spec.position.unwrap_or(m.position);
            }
        }
        self.train.block_size = self.model.block_size();

        match (&spec.tokenizer, &spec.tokenizer_path) {
            (Some(kind), _) => self.tokenizer = kind.clone(),
            (None, Some(_)) => self.tokenizer = "file".into(), // the file's kind, settled when it is read
            (None, None) => {}
        }
        if let Some(path) = &spec.tokenizer_path {
            self.tokenizer_path = Some(absolute(path));
        }
        if let Some(data) = data_source(spec)? {
            self.data = data;
        }
        apply_training(&mut self.train, spec)?;
        if let Some(device) = &spec.device {
            self.device = device.clone();
        }
        Ok(())
    }

    /// This (saved) run's configuration with `spec` applied for a resumed run. Training
    /// settings may change (more `--max-steps` extends the run, a new `--lr` applies from
    /// here on); a model, tokenizer or data setting that differs from the run's is an error
    /// naming the flag, since the checkpoint could not be continued with it.
    pub fn resumed_with(&self, spec: &RunSpec) -> Result<Self> {
        let mut config = self.clone();
        config.apply(spec)?;
        let mut conflicts = Vec::new();
        if let Some(preset) = spec.preset.as_ref().filter(|p| **p != self.preset) {
            conflicts.push(format!("--preset {preset} (the run has {})", self.preset));
        }
        // The model: every field that `spec` changed, by its serde name.
        let fields = |m: &ModelConfig| {
            let value = match (m, m.gpt()) {
                (ModelConfig::Llama(m), _) => serde_json::to_value(m),
                // `None` is 4 · n_embd
                (_, Some(m)) => serde_json::to_value(GptConfig { d_ff: Some(m.mlp_width()), ..m.clone() }),
                (_, None) => return serde_json::Map::new(),
            };
            match value {
                Ok(serde_json::Value::Object(map)) => map,
                _ => serde_json::Map::new(),
            }
        };
        let (saved, given) = (fields(&self.model), fields(&config.model));
        let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        for (field, value) in &given {
            if let Some(old) = saved.get(field).filter(|old| *old != value) {
                conflicts.push(format!("{} {} (the run has {})", flag(field), text(value), text(old)));
            }
        }
        if let Some(kind) = spec.tokenizer.as_ref().filter(|kind| **kind != self.tokenizer) {
            conflicts.push(format!("--tokenizer {kind} (the run has {})", self.tokenizer));
        }
        let given_path = spec.tokenizer_path.as_deref().map(absolute);
        if let Some(path) = given_path.filter(|p| Some(p) != self.tokenizer_path.as_ref()) {
            let saved = self.tokenizer_path.as_ref().map_or("none".into(), |p| p.display().to_string());
            conflicts.push(format!("--tokenizer-path {} (the run has {saved})", path.display()));
        }
        if !config.data.same_source(&self.data) {
            conflicts.push(format!("{} (the run trains on {})", config.data, self.data));
        }
        if !conflicts.is_empty() {
            return Err(Error::Config(format!(
                "a resumed run keeps its model, tokenizer and data, but these flags differ from it: {}. \
                 Drop them, or start a new run in another --run-dir",
                conflicts.join("; ")
            )));
        }
        // What may not change, as the run has it (its tokenizer's kind, the hash it pinned).
        (config.model, config.tokenizer, config.tokenizer_path, config.data) =
            (self.model.clone(), self.tokenizer.clone(), self.tokenizer_path.clone(), self.data.clone());
        config.check()?;
        Ok(config)
    }

    /// Check the model and training settings together, by the rules of
    /// [`GptConfig::validate`] and [`TrainConfig::validate`]; messages name the flags.
    pub fn check(&self) -> Result<()> {
        let mut model = self.model.clone();
        model.set_vocab_size(model.vocab_size().max(1)); // settled later, from the tokenizer
        model.validate_named(&flag)?;
        self.train.validate_named(&flag)?;
        self.train.precision.check(crate::device::parse(&self.device)?)?;
        Ok(())
    }
}

/// The data `spec` names, if it names one (at most one way).
pub(crate) fn data_source(spec: &RunSpec) -> Result<Option<DataSource>> {
    Ok(match (&spec.dataset, &spec.text_files, &spec.input, &spec.input_url) {
        (Some(name), None, None, None) => Some(DataSource::Dataset(name.clone())),
        (None, Some(dir), None, None) => Some(DataSource::TextFiles(absolute(dir))),
        (None, None, Some(file), None) => Some(DataSource::Input(absolute(file))),
        (None, None, None, Some(url)) => Some(DataSource::InputUrl { url: url.clone(), sha256: None }),
        (None, None, None, None) => None,
        _ => {
            return Err(Error::Config(
                "give the training text one way only: --dataset NAME, --text-files DIR, --input FILE or \
                 --input-url URL"
                    .into(),
            ))
        }
    })
}

/// The training settings of `spec` applied to `train` (checked with the rest by
/// [`RunConfig::check`]). A decaying schedule decays down to a tenth of `--lr` (and, with the
/// presets' `LrDecay::Cosine`, to the end of the run).
pub(crate) fn apply_training(train: &mut TrainConfig, spec: &RunSpec) -> Result<()> {
    if spec.max_steps.is_some() && spec.max_epochs.is_some() {
        return Err(Error::Config("give --max-steps or --max-epochs, not both".into()));
    }
    if let Some(lr) = spec.lr {
        if train.lr_decay != crate::train::LrDecay::None {
            train.min_lr = lr / 10.0;
        }
        train.lr = lr;
    }
    let set = |field: &mut usize, v: Option<usize>| *field = v.unwrap_or(*field);
    set(&mut train.batch_size, spec.batch_size);
    set(&mut train.steps, spec.max_steps);
    set(&mut train.warmup_steps, spec.warmup);
    set(&mut train.grad_accum, spec.grad_accum);
    set(&mut train.eval_interval, spec.eval_interval);
    set(&mut train.eval_iters, spec.eval_iters);
    train.weight_decay = spec.weight_decay.unwrap_or(train.weight_decay);
    if let Some(v) = spec.grad_clip {
        train.grad_clip = (v != 0.0).then_some(v); // 0 turns clipping off
    }
    if let Some(v) = spec.log_interval {
        train.log_interval = (v != 0).then_some(v); // 0: no log lines
    }
    train.seed = spec.seed.unwrap_or(train.seed);
    train.early_stop_patience = spec.early_stop_patience.or(train.early_stop_patience);
    train.precision = spec.precision.unwrap_or(train.precision);
    Ok(())
}

/// Everything `llm train` needs, checked, before anything is written.
pub struct Plan {
    pub config: RunConfig,
    pub tokenizer: AnyTokenizer,
    pub data: TokenData,
}

/// Resolve and check a fresh run: the configuration ([`RunConfig::from_spec`]), the data
/// (read, downloaded if needed), the tokenizer (read from `--tokenizer-path`, or built from
/// the text), the vocabulary size and `--max-epochs` in steps. Writes nothing.
pub fn plan(spec: &RunSpec) -> Result<Plan> {
    let mut config = RunConfig::from_spec(spec)?;
    if let Some(path) = &config.tokenizer_path {
        if !path.is_file() {
            return Err(Error::Config(format!("--tokenizer-path {}: no such file", path.display())));
        }
    }
    config.data.check()?;
    config.data.pin()?;
    let corpus = config.data.load()?;
    let tokenizer = match (config.tokenizer.as_str(), &config.tokenizer_path) {
        (kind, Some(path)) => {
            let tokenizer = AnyTokenizer::load(path)?;
            if kind != "file" && kind != tokenizer.kind() {
                return Err(Error::Config(format!(
                    "--tokenizer {kind} but --tokenizer-path {} holds a '{}' tokenizer: drop --tokenizer",
                    path.display(),
                    tokenizer.kind()
                )));
            }
            config.tokenizer = tokenizer.kind().into();
            tokenizer
        }
        ("char", None) => CharTokenizer::from_text(&corpus.all_text()).into(),
        ("word", None) => WordTokenizer::from_text(&corpus.all_text()).into(),
        // Byte-level BPE learned from the text, with --vocab-size tokens (chapter 6).
        ("bpe", None) => {
            let vocab_size = spec.vocab_size.unwrap_or(DEFAULT_BPE_VOCAB);
            BpeTokenizer::train(&corpus.train_text(), &BpeConfig::new(vocab_size))
                .map_err(|e| Error::Config(format!("--tokenizer bpe --vocab-size {vocab_size}: {e}")))?
                .into()
        }
        (other, None) => {
            return Err(Error::Config(format!(
                "unknown --tokenizer '{other}' (known: {}; or --tokenizer-path FILE)",
                TOKENIZERS.join(", ")
            )))
        }
    };
    let vocab_size = match spec.vocab_size {
        Some(v) if v < tokenizer.vocab_size() => {
            return Err(Error::Config(format!(
                "--vocab-size {v} is smaller than the tokenizer's {} tokens: raise it or leave it out",
                tokenizer.vocab_size()
            )))
        }
        Some(v) => v, // extra rows are fine (GPT-2 pads 50,257 to 50,304)
        None => tokenizer.vocab_size(),
    };
    config.model.set_vocab_size(vocab_size);
    let data = corpus.token_data(&tokenizer)?;
    finish_plan(config, tokenizer, data, spec.max_epochs)
}

/// Resolve and check a fresh run that starts from a trained model, a GPT-2 or a Llama (`llm
/// train --init-from SOURCE`): its `model` sizes and its `tokenizer`, with `spec`'s training
/// and data settings (and a GPT's `--dropout`, for finetuning). A flag that would change the
/// model's sizes or its tokenizer is an error naming it. Writes nothing.
pub fn plan_init(spec: &RunSpec, source: &str, model: &ModelConfig, tokenizer: AnyTokenizer) -> Result<Plan> {
    refuse_model_flags(spec, source, model.block_size())?;
    let mut config = RunConfig::from_spec(spec)?;
    config.model = with_dropout_flag(spec, source, model)?;
    config.train.block_size = model.block_size();
    config.tokenizer = tokenizer.kind().into();
    config.init_from = Some(source.to_owned());
    config.data.check()?;
    config.data.pin()?;
    let data = config.data.load()?.token_data(&tokenizer)?;
    finish_plan(config, tokenizer, data, spec.max_epochs)
}

/// `model` (trained, from `source`) with `spec`'s `--dropout` when given: a GPT's setting, an
/// error for another model.
pub(crate) fn with_dropout_flag(spec: &RunSpec, source: &str, model: &ModelConfig) -> Result<ModelConfig> {
    match spec.dropout {
        Some(_) if model.gpt().is_none() => Err(Error::Config(format!(
            "--dropout is not a setting of a {}'s model ({source} holds one)",
            model.arch()
        ))),
        Some(p) => Ok(model.with_dropout(p)),
        None => Ok(model.clone()),
    }
}

/// A run that starts from the trained model `source` takes its sizes and tokenizer from it:
/// a flag that would change them is an error naming it (`--block-size` only if it differs).
pub(crate) fn refuse_model_flags(spec: &RunSpec, source: &str, block_size: usize) -> Result<()> {
    let fixed = [
        ("--arch", spec.arch.is_some()),
        ("--n-kv-head", spec.n_kv_head.is_some()),
        ("--rope-theta", spec.rope_theta.is_some()),
        ("--n-layer", spec.n_layer.is_some()),
        ("--n-head", spec.n_head.is_some()),
        ("--n-embd", spec.n_embd.is_some()),
        ("--block-size", spec.block_size.is_some_and(|b| b != block_size)),
        ("--vocab-size", spec.vocab_size.is_some()),
        ("--d-ff", spec.d_ff.is_some()),
        ("--position", spec.position.is_some()),
        ("--tokenizer", spec.tokenizer.is_some()),
        ("--tokenizer-path", spec.tokenizer_path.is_some()),
    ];
    let given: Vec<&str> = fixed.iter().filter(|(_, given)| *given).map(|(flag, _)| *flag).collect();
    if !given.is_empty() {
        return Err(Error::Config(format!(
            "--init-from {source} takes the model's sizes and tokenizer from there: drop {}",
            given.join(", ")
        )));
    }
    Ok(())
}

/// Resolve and check a resumed run: the saved configuration with `spec`'s training settings
/// ([`RunConfig::resumed_with`]), its data read again and encoded with the run's tokenizer.
/// Writes nothing.
pub fn plan_resumed(saved: &RunConfig, tokenizer: AnyTokenizer, spec: &RunSpec) -> Result<Plan> {
    let config = saved.resumed_with(spec)?;
    config.data.check()?;
    let data = config.data.load()?.token_data(&tokenizer)?;
    finish_plan(config, tokenizer, data, spec.max_epochs)
}

/// The last part of planning, new run or resumed: turn `--max-epochs` into steps, and check
/// that the config and the data fit together.
fn finish_plan(
    mut config: RunConfig,
    tokenizer: AnyTokenizer,
    data: TokenData,
    max_epochs: Option<f64>,
) -> Result<Plan> {
    if let Some(epochs) = max_epochs {
        if !(epochs > 0.0 && epochs.is_finite()) {
            return Err(Error::Config(format!("--max-epochs must be a positive number, got {epochs}")));
        }
        let train_tokens = data.train.size()[0] as f64;
        let steps = (epochs * train_tokens / config.train.tokens_per_step() as f64).ceil().max(1.0);
        config.train.steps = steps as usize;
    }
    config.check()?;
    check_fits(&config, &data)?;
    check_memory(&config)?;
    Ok(Plan { config, tokenizer, data })
}

/// Training must fit in memory ([`ModelConfig::training_bytes`]), or libtorch aborts midway.
pub(crate) fn check_memory(config: &RunConfig) -> Result<()> {
    let (m, t) = (&config.model, &config.train);
    let needed = m.training_bytes(t.batch_size, t.block_size);
    let device = crate::device::parse(&config.device)?;
    match crate::device::available_memory(device) {
        Some(available) if needed > available => {
            let weights = 4 * m.num_params() as u64;
            let format = crate::device::format_bytes;
            Err(Error::Config(format!(
                "training this model needs about {} ({} parameters: {} of weights, as much again for \
                 their gradients and twice that for AdamW's moments; {} of activations for batches of \
                 {} × {} tokens), and this machine has {} available: lower --batch-size or --block-size, \
                 or choose a smaller model (--n-layer, --n-embd)",
                format(needed),
                m.num_params(),
                format(weights),
                format(needed - 4 * weights),
                t.batch_size,
                t.block_size,
                format(available)
            )))
        }
        _ => Ok(()),
    }
}

/// Both splits must hold more than one block of tokens.
fn check_fits(config: &RunConfig, data: &TokenData) -> Result<()> {
    let block = config.train.block_size;
    let val = data.val.size()[0] as usize;
    if val <= block {
        return Err(Error::Config(format!(
            "the validation split has {val} tokens, too few for --block-size {block}: use more text or a \
             smaller --block-size"
        )));
    }
    Ok(())
}

/// A run folder (see the module docs).
#[derive(Debug)]
pub struct Run {
    dir: PathBuf,
    pub config: RunConfig,
}

impl Run {
    /// Whether `dir` holds a run (its `config.json`).
    pub fn exists(dir: impl AsRef<Path>) -> bool {
        dir.as_ref().join(CONFIG_FILE).is_file()
    }

    /// Create the run folder `dir` with its config and tokenizer. It is written under a
    /// temporary name beside `dir` and renamed into place, so it appears whole or not at all.
    /// `dir` must not exist yet, or be an empty folder.
    pub fn create(dir: impl AsRef<Path>, config: &RunConfig, tokenizer: &AnyTokenizer) -> Result<Run> {
        let dir = dir.as_ref();
        let fail = |reason: String| Error::Run { path: dir.to_owned(), reason };
        if dir.file_name().is_none() {
            return Err(fail("needs a folder name".into()));
        }
        if dir.exists() && std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.next().is_some() {
            return Err(fail("exists and is not empty (and is not a run folder to resume)".into()));
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let tmp = crate::io::temp_path_for(dir);
        let result = (|| {
            std::fs::create_dir_all(tmp.join("checkpoints")).map_err(|e| Error::io(&tmp, e))?;
            write_json(&tmp.join(CONFIG_FILE), config)?;
            tokenizer.save(&tmp.join(TOKENIZER_FILE))?;
            std::fs::File::create(tmp.join(METRICS_FILE)).map_err(|e| Error::io(&tmp, e))?;
            // Renaming onto an empty folder replaces it (POSIX).
            std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result?;
        Ok(Run { dir: dir.to_owned(), config: config.clone() })
    }

    /// Open the run folder `dir`: its config and tokenizer.
    pub fn open(dir: impl AsRef<Path>) -> Result<(Run, AnyTokenizer)> {
        let dir = dir.as_ref();
        if !Run::exists(dir) {
            let reason = if dir.exists() {
                format!("has no {CONFIG_FILE}: not a run folder made by `llm train`")
            } else {
                "does not exist".into()
            };
            return Err(Error::Run { path: dir.to_owned(), reason });
        }
        let config: RunConfig = crate::io::read_json(&dir.join(CONFIG_FILE))?;
        let tokenizer = AnyTokenizer::load(dir.join(TOKENIZER_FILE))?;
        Ok((Run { dir: dir.to_owned(), config }, tokenizer))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Make this process the only one training in the folder, for as long as the returned
    /// lock lives: an exclusive `flock` on `train.lock`, which the system releases when the
    /// process ends in any way (also `kill -9`). If another process holds it, the error names
    /// its PID.
    pub fn lock(&self) -> Result<RunLock> {
        use std::io::{Read, Seek};
        use std::os::fd::AsRawFd;
        let path = self.dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // SAFETY: flock on a descriptor this function owns; it touches no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(Error::io(&path, err));
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(Error::Run {
                path: self.dir.clone(),
                reason: format!(
                    "another process (PID {}) is training in it: wait for it to finish, or stop it first",
                    pid.trim()
                ),
            });
        }
        let write_pid = |file: &mut std::fs::File| {
            file.set_len(0)?;
            file.rewind()?;
            write!(file, "{}", std::process::id())?;
            file.flush()
        };
        write_pid(&mut file).map_err(|e| Error::io(&path, e))?;
        Ok(RunLock { _file: file })
    }

    /// `checkpoints/latest`, whether or not it exists yet.
    pub fn latest(&self) -> PathBuf {
        self.dir.join(LATEST)
    }

    /// `checkpoints/best`, whether or not it exists yet.
    pub fn best(&self) -> PathBuf {
        self.dir.join(BEST)
    }

    /// The checkpoint to sample from: the best one, else the latest, if there is one.
    pub fn checkpoint_for_sampling(&self) -> Option<PathBuf> {
        [self.best(), self.latest()]
            .into_iter()
            .find(|p| p.join(crate::train::checkpoint::META_FILE).is_file())
    }

    /// Write the (possibly changed) configuration back, atomically.
    pub fn save_config(&self) -> Result<()> {
        write_json(&self.dir.join(CONFIG_FILE), &self.config)
    }

    /// Add one line to `metrics.jsonl`.
    pub fn append_metrics(&self, event: &TrainEvent) -> Result<()> {
        let path = self.dir.join(METRICS_FILE);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        file.write_all(metrics_line(event).as_bytes()).map_err(|e| Error::io(&path, e))
    }

    /// Rewrite `metrics.jsonl` from a history (a resumed run: the lines a killed run wrote
    /// after its last checkpoint go, the checkpoint's history is the truth).
    pub fn rewrite_metrics(&self, history: &History) -> Result<()> {
        let text: String = history_events(history).iter().map(metrics_line).collect();
        crate::io::write_atomic(&self.dir.join(METRICS_FILE), text.as_bytes())
    }

    /// An MLflow run for this training session: of the server at `uri`, else of the one
    /// `MLFLOW_TRACKING_URI` names; `None` if neither is set, or if the server cannot start a
    /// run (a warning on stderr; training goes on without). The MLflow run is named after the
    /// folder and gets the configuration (plus `run_dir` and `num_params`) as params,
    /// `config.json` as a file, and `history`'s events (a resumed run's curves so far).
    /// Hand it to [`Run::train`]: it gets the events and the plots.
    pub fn start_tracking(&self, uri: Option<&str>, num_params: usize, history: &History) -> Option<Tracker> {
        let name = self.dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let tracker = match uri {
            Some(uri) => Tracker::start_or_warn(uri, track::DEFAULT_EXPERIMENT, name.as_deref()),
            None => Tracker::from_env(track::DEFAULT_EXPERIMENT, name.as_deref()),
        }?;
        let mut params = track::params_of(&self.config);
        params.push(("run_dir".into(), absolute(&self.dir).display().to_string()));
        params.push(("num_params".into(), num_params.to_string()));
        tracker.log_params(&params);
        tracker.rates_with_estimates(self.config.train.log_interval.is_none());
        if let Ok(bytes) = std::fs::read(self.dir.join(CONFIG_FILE)) {
            tracker.log_artifact(CONFIG_FILE, bytes);
        }
        history_events(history).iter().for_each(|event| tracker.log_event(event));
        self.upload_plots(&tracker);
        Some(tracker)
    }

    /// Upload `loss.png` and `lr.png`, as they are now, to the MLflow run.
    fn upload_plots(&self, tracker: &Tracker) {
        for name in [LOSS_PLOT, LR_PLOT] {
            if let Ok(bytes) = std::fs::read(self.dir.join(name)) {
                tracker.log_artifact(name, bytes);
            }
        }
    }

    /// Redraw `loss.png` and `lr.png` from the history.
    pub fn plot(&self, history: &History) -> Result<()> {
        if history.points.is_empty() {
            return Ok(());
        }
        let name = self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        history.plot(&format!("{name}: loss")).and_then(|f| f.save(self.dir.join(LOSS_PLOT)))?;
        history.plot_lr(&format!("{name}: learning rate")).and_then(|f| f.save(self.dir.join(LR_PLOT)))
    }

    /// Train `model` with `trainer` until its configured steps are done, in pieces of
    /// `eval_interval` steps. After each piece: `checkpoints/latest` is saved (atomically),
    /// `checkpoints/best` too when the validation loss is the lowest so far, and the plots
    /// are redrawn (and uploaded to `tracker`'s MLflow run, if there is one); every log line
    /// and estimate goes to `metrics.jsonl`, and every event to `tracker`, as it happens.
    ///
    /// `on_event` sees the trainer's events too; `after_step` is called after every optimizer
    /// step and may stop the run there with `ControlFlow::Break(())`. An interrupt (Ctrl-C,
    /// SIGTERM: [`crate::interrupt`]) stops it too. Stopped, the latest checkpoint is saved at
    /// that step. Returns whether the run finished.
    pub fn train(
        &self,
        model: &dyn LanguageModel,
        trainer: &mut Trainer,
        data: &dyn Batches,
        tokenizer: &AnyTokenizer,
        tracker: Option<&Tracker>,
        mut on_event: impl FnMut(&TrainEvent),
        mut after_step: impl FnMut(usize) -> ControlFlow<()>,
    ) -> Result<bool> {
        let mut best = best_val_loss(trainer.history());
        loop {
            let (start, c) = (trainer.step(), trainer.config().clone());
            // The first estimate of a fresh run (step 0) is a piece of its own, so that the
            // initial weights can be kept as `best` too: `best` is always the lowest estimate.
            let unestimated = trainer.history().last().is_none_or(|p| p.step != start);
            let target = match start % c.eval_interval == 0 && unestimated {
                true => start,
                false => ((start / c.eval_interval + 1) * c.eval_interval).min(c.steps).max(start),
            };
            let mut evals: Vec<EvalPoint> = Vec::new();
            let mut metrics_error = None;
            trainer.train_until_with(
                model,
                data,
                target,
                |event| {
                    if let Err(e) = self.append_metrics(event) {
                        metrics_error.get_or_insert(e);
                    }
                    if let Some(tracker) = tracker {
                        tracker.log_event(event);
                    }
                    if let TrainEvent::Eval(p) = event {
                        evals.push(p.clone());
                    }
                    on_event(event)
                },
                &mut after_step,
            )?;
            let stopped = trainer.step() < target;
            if let Some(e) = metrics_error {
                return Err(e);
            }
            if trainer.step() > start || !self.latest().exists() {
                trainer.save_checkpoint(self.latest(), model, &self.config.model, tokenizer)?;
            }
            for p in &evals {
                if p.step == trainer.step() && best.is_none_or(|b| p.val_loss < b) {
                    trainer.save_checkpoint(self.best(), model, &self.config.model, tokenizer)?;
                    best = Some(p.val_loss);
                }
            }
            if !evals.is_empty() {
                self.plot(trainer.history())?;
                if let Some(tracker) = tracker {
                    self.upload_plots(tracker);
                }
            }
            if trainer.step() >= c.steps || trainer.early_stop().is_some() {
                return Ok(true);
            }
            // Stopped, or interrupted while the checkpoint was saved (the next piece would
            // forget that: a run clears the flag when it starts).
            if stopped || crate::interrupt::requested().is_some() {
                return Ok(false);
            }
        }
    }
}

/// A history's log lines and estimates in the order they happened: a log line of step `s`
/// (from 0) comes after `s + 1` steps, an estimate at step `s` after `s` steps.
fn history_events(history: &History) -> Vec<TrainEvent> {
    let mut events: Vec<TrainEvent> = history
        .logs
        .iter()
        .map(|l| TrainEvent::Log(l.clone()))
        .chain(history.points.iter().map(|p| TrainEvent::Eval(p.clone())))
        .collect();
    events.sort_by_key(|e| match e {
        TrainEvent::Log(l) => (l.step + 1, 0),
        TrainEvent::Eval(p) => (p.step, 1),
        TrainEvent::Started(s) => (s.step, 0),
        TrainEvent::Stopped { step, .. } => (*step, 2),
        TrainEvent::EarlyStopped(e) => (e.step, 2),
        TrainEvent::Progress(p) => (p.step, 2),
    });
    events
}

/// The lowest validation loss of a history, if it has any estimate.
fn best_val_loss(history: &History) -> Option<f64> {
    history.points.iter().map(|p| p.val_loss).min_by(|a, b| a.total_cmp(b))
}

fn metrics_line(event: &TrainEvent) -> String {
    let value = match event {
        TrainEvent::Log(l) => serde_json::json!({"kind": "log", "step": l.step, "loss": l.loss, "lr": l.lr,
            "grad_norm": l.grad_norm, "tokens_per_sec": l.tokens_per_sec}),
        TrainEvent::Eval(p) => serde_json::json!({"kind": "eval", "step": p.step, "train_loss": p.train_loss,
            "val_loss": p.val_loss, "lr": p.lr, "grad_norm": p.grad_norm, "tokens_per_sec": p.tokens_per_sec}),
        TrainEvent::Started(_) => return String::new(), // config.json says it
        TrainEvent::Stopped { .. } => return String::new(), // not a measurement: the checkpoint says it
        TrainEvent::Progress(_) => return String::new(), // the estimates and log lines are the record
        TrainEvent::EarlyStopped(e) => serde_json::json!({"kind": "early_stop", "step": e.step,
            "best_step": e.best_step, "best_val_loss": e.best_val_loss, "estimates_since": e.estimates_since}),
    };
    format!("{value}\n")
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|source| Error::Json { context: path.display().to_string(), source })?;
    crate::io::write_atomic(path, format!("{text}\n").as_bytes())
}

/// Build the model a checkpoint describes (a checkpoint from before the `arch` tag holds a
/// GPT), on `device`, with its weights.
pub fn load_model(checkpoint: &Checkpoint, device: Device) -> Result<AnyModel> {
    let config: ModelConfig = checkpoint.model_config()?;
    let mut model = config.build(device)?;
    checkpoint.load_weights(&mut model)?;
    Ok(model)
}

/// The validation loss curves of several runs, from their `metrics.jsonl` (the run folder's
/// name labels each line), in one chart.
pub fn compare(dirs: &[PathBuf]) -> Result<plot::Figure> {
    let mut series = Vec::new();
    for dir in dirs {
        let path = dir.join(METRICS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut points = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let value: serde_json::Value = serde_json::from_str(line).map_err(|source| Error::Json {
                context: format!("{}, line {}", path.display(), i + 1),
                source,
            })?;
            if value["kind"] == "eval" {
                if let (Some(step), Some(loss)) = (value["step"].as_f64(), value["val_loss"].as_f64()) {
                    points.push((step, loss));
                }
            }
        }
        if points.is_empty() {
            return Err(Error::Run {
                path: dir.clone(),
                reason: format!("{METRICS_FILE} has no loss estimate yet"),
            });
        }
        let label = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into());
        series.push(Series { label, points });
    }
    plot::line_chart("validation loss", "step", "val loss (nats)", &series)
}

/// What `llm eval` measures over a text.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EvalReport {
    /// Mean cross-entropy per predicted token, in nats.
    pub loss: f64,
    /// `exp(loss)`: how many tokens the model hesitates between, on average.
    pub perplexity: f64,
    /// The same loss per character of text, in bits: comparable across tokenizers.
    pub bits_per_char: f64,
    /// Tokens predicted.
    pub tokens: usize,
    /// Characters of text those tokens cover.
    pub chars: usize,
}

/// The loss of `model` on the whole of `ids`, cut into consecutive windows of its block size
/// (each token predicted once, from the tokens before it in its window), with no sampling:
/// the same text gives the same numbers.
pub fn evaluate(model: &dyn LanguageModel, tokenizer: &dyn Tokenizer, ids: &[u32]) -> Result<EvalReport> {
    if ids.len() < 2 {
        return Err(Error::Config(format!(
            "the text is {} token(s) long: evaluation needs at least 2 (one to predict from)",
            ids.len()
        )));
    }
    let _no_grad = tch::no_grad_guard();
    let device = model.var_store().device();
    let block = model.block_size().unwrap_or(256).max(1);
    let (mut total, mut count) = (0.0, 0usize);
    let mut start = 0;
    while start + 1 < ids.len() {
        let len = block.min(ids.len() - 1 - start);
        let x = data::to_tensor(&ids[start..start + len]).view([1, len as i64]).to_device(device); // [1, T]
        let y = data::to_tensor(&ids[start + 1..start + len + 1]).view([1, len as i64]).to_device(device); // [1, T]
        let loss = model.loss(&x, &y, false)?.f_double_value(&[])?; // mean over the window
        total += loss * len as f64;
        count += len;
        start += len;
    }
    let loss = total / count as f64;
    let chars = tokenizer.decode(&ids[1..])?.chars().count().max(1);
    Ok(EvalReport {
        loss,
        perplexity: loss.exp(),
        bits_per_char: loss * count as f64 / (chars as f64 * std::f64::consts::LN_2),
        tokens: count,
        chars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run's model config, a GPT's.
    fn gpt(config: &RunConfig) -> &GptConfig {
        config.model.gpt().expect("a GPT run")
    }

    fn spec() -> RunSpec {
        RunSpec { dataset: Some("tinyshakespeare".into()), ..RunSpec::default() }
    }

    #[test]
    fn flags_override_the_config_file_and_the_preset() {
        let file = RunSpec { n_layer: Some(3), lr: Some(1e-2), ..spec() };
        let flags = RunSpec { n_layer: Some(2), max_steps: Some(500), ..RunSpec::default() };
        let config = RunConfig::from_spec(&flags.or(file).unwrap()).unwrap();
        assert_eq!((gpt(&config).n_layer, config.train.lr, config.train.steps), (2, 1e-2, 500));
        assert_eq!(gpt(&config).n_embd, GptConfig::cpu_small().n_embd);
        // The decay follows the run's length, down to lr / 10.
        assert_eq!((config.train.lr_decay, config.train.min_lr), (crate::train::LrDecay::Cosine, 1e-3));
        assert_eq!(config.train.lr_at(500), config.train.min_lr); // the cosine ends with the run
    }

    #[test]
    fn position_and_d_ff_come_from_the_flags_and_a_config_file() {
        let config = RunConfig::from_spec(&spec()).unwrap();
        assert_eq!((gpt(&config).position, gpt(&config).d_ff), (Position::Learned, None));
        let flags = RunSpec { position: Some(Position::Sinusoidal), d_ff: Some(256), ..spec() };
        let config = RunConfig::from_spec(&flags).unwrap();
        assert_eq!((gpt(&config).position, gpt(&config).mlp_width()), (Position::Sinusoidal, 256));
        let file: RunSpec = toml::from_str("position = \"sinusoidal\"\nd_ff = 64").unwrap();
        assert_eq!((file.position, file.d_ff), (Some(Position::Sinusoidal), Some(64)));
        assert!(toml::from_str::<RunSpec>("position = \"rotary\"").is_err());
        let err = RunConfig::from_spec(&RunSpec { d_ff: Some(0), ..spec() }).unwrap_err().to_string();
        assert!(err.contains("--d-ff must be at least 1"), "{err}");
    }

    #[test]
    fn bad_settings_name_the_flag() {
        let err = |s: RunSpec| RunConfig::from_spec(&s).unwrap_err().to_string();
        assert!(
            err(RunSpec { n_embd: Some(30), n_head: Some(4), ..spec() }).contains("divisible by --n-head")
        );
        assert!(err(RunSpec { block_size: Some(0), ..spec() }).contains("--block-size"));
        assert!(err(RunSpec { lr: Some(0.0), ..spec() }).contains("--lr"));
        assert!(err(RunSpec { preset: Some("huge".into()), ..spec() }).contains("unknown --preset"));
        assert!(
            err(RunSpec { dataset: Some("x".into()), input: Some("y".into()), ..spec() }).contains("one way")
        );
        assert!(err(RunSpec { max_steps: Some(50), warmup: Some(50), ..spec() }).contains("--warmup"));
        // A run shorter than the preset's warmup is refused, not silently left without warmup.
        assert!(err(RunSpec { max_steps: Some(6), ..spec() }).contains("--warmup (100) must be fewer"));
    }

    #[test]
    fn a_resumed_run_may_change_training_but_not_the_model() {
        let saved = RunConfig::from_spec(&spec()).unwrap();
        let longer = saved.resumed_with(&RunSpec { max_steps: Some(4000), ..RunSpec::default() }).unwrap();
        assert_eq!((longer.train.steps, longer.train.schedule().decay_steps), (4000, Some(4000)));
        let same = RunSpec { n_layer: Some(gpt(&saved).n_layer), ..spec() };
        assert_eq!(saved.resumed_with(&same).unwrap(), saved);
        let e =
            saved.resumed_with(&RunSpec { n_layer: Some(7), ..RunSpec::default() }).unwrap_err().to_string();
        assert!(e.contains("--n-layer 7 (the run has 4)"), "{e}");
        let other = RunSpec { position: Some(Position::Sinusoidal), d_ff: Some(100), ..RunSpec::default() };
        let e = saved.resumed_with(&other).unwrap_err().to_string();
        assert!(e.contains("--position sinusoidal (the run has learned)"), "{e}");
        assert!(e.contains("--d-ff 100 (the run has 512)"), "{e}");
        let same = RunSpec { position: Some(Position::Learned), d_ff: Some(512), ..RunSpec::default() };
        assert_eq!(saved.resumed_with(&same).unwrap(), saved);
        let e =
            saved.resumed_with(&RunSpec { input: Some("a.txt".into()), ..RunSpec::default() }).unwrap_err();
        assert!(e.to_string().contains("--input"), "{e}");
    }
}
