//! Checkpoints: everything needed to continue a run exactly where it stopped, or to sample
//! from the model later.
//!
//! # On disk
//!
//! A checkpoint is a directory:
//!
//! ```text
//! ckpt/
//!   checkpoint.json        what the run was: format and version, step, seed, TrainConfig,
//!                          model config, tokenizer, history, and the size and SHA-256 of
//!                          the two tensor files
//!   model.safetensors      every variable of the model, under its VarStore name
//!                          (e.g. transformer.h.0.attn.c_attn.weight)
//!   optimizer.safetensors  AdamW's moments: exp_avg.NAME and exp_avg_sq.NAME for every
//!                          trainable parameter NAME
//! ```
//!
//! The tensor files are plain [safetensors](https://github.com/huggingface/safetensors), so
//! Python reads them too: `safetensors.torch.load_file("ckpt/model.safetensors")` is a
//! PyTorch `state_dict`. `checkpoint.json` is
//!
//! ```json
//! { "format": "llm_from_scratch checkpoint", "version": 1, "step": 2000, "seed": 1337,
//!   "train_config": { "steps": 2000, "batch_size": 12, ... },
//!   "model_config": { "vocab_size": 65, "n_layer": 4, ... },
//!   "tokenizer": { "kind": "char", "version": 1, "chars": "\n !$&',-.3:;?AB..." },
//!   "history": { "points": [...], "logs": [...] },
//!   "files": { "model.safetensors": { "bytes": 3210880, "sha256": "9f2c..." },
//!              "optimizer.safetensors": { ... } } }
//! ```
//!
//! The model config is any JSON value (a `GptConfig`, or `{"vocab_size": 65}` for the
//! bigram): read it back with [`Checkpoint::model_config`]. The random state needs no file:
//! the trainer reseeds libtorch's generator from `(seed, step)` at every step, so `seed` and
//! `step` *are* the RNG state, and a resumed run draws the same batches and dropout masks as
//! one that never stopped.
//!
//! # Atomic saves
//!
//! [`save`] writes the whole directory under a hidden temporary name beside the target
//! (`.ckpt.PID-N.tmp`), syncs it to disk, and only then swaps it into place. On Linux and
//! macOS the swap is a single atomic exchange of the two directories (`renameat2` with
//! `RENAME_EXCHANGE`, `renamex_np` with `RENAME_SWAP`), after which the old one is deleted:
//! at every instant the real name holds either the complete old checkpoint or the complete
//! new one. A save that fails or is interrupted before the swap leaves the previous
//! checkpoint untouched (at worst a hidden temporary directory is left beside it). Where no
//! exchange exists, the old directory is renamed aside first, so for a moment the name is
//! empty, but the old checkpoint is never deleted before the new one is in place.
//!
//! # Loading
//!
//! [`Checkpoint::load`] checks everything it can before handing anything out: the format
//! and version, every field of `checkpoint.json`, each tensor file's size (truncation) and
//! SHA-256 (corruption), that the tokenizer parses and fits the model config's `vocab_size`,
//! and that the training configuration is valid. [`Checkpoint::load_weights`] then checks the
//! model's variables against the file — missing, extra and mis-shaped tensors are listed in
//! one error — before copying anything. Every problem is an [`Error::Checkpoint`] naming the
//! directory, never a panic.

use super::config::TrainConfig;
use super::history::History;
use super::trainer::Trainer;
use crate::io::Mismatch;
use crate::model::LanguageModel;
use crate::tokenizer::{AnyTokenizer, Tokenizer};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// The description of the run, in the checkpoint directory.
pub const META_FILE: &str = "checkpoint.json";
/// The model's variables.
pub const MODEL_FILE: &str = "model.safetensors";
/// The optimizer's moments.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

const FORMAT: &str = "llm_from_scratch checkpoint";
const VERSION: u32 = 1;

/// The size and digest of a file of the checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct FileInfo {
    bytes: u64,
    sha256: String,
}

/// `checkpoint.json`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format: String,
    version: u32,
    step: usize,
    seed: u64,
    train_config: TrainConfig,
    model_config: serde_json::Value,
    tokenizer: serde_json::Value,
    history: History,
    files: BTreeMap<String, FileInfo>,
}

/// A checkpoint read from disk: the run's description and its tensors (on the CPU).
#[derive(Debug)]
pub struct Checkpoint {
    /// The directory it was read from.
    pub path: PathBuf,
    /// Optimizer steps taken.
    pub step: usize,
    /// The run's seed (with `step`, the whole random state).
    pub seed: u64,
    pub train_config: TrainConfig,
    /// The model's configuration, as saved; see [`Checkpoint::model_config`].
    pub model_config: serde_json::Value,
    pub tokenizer: AnyTokenizer,
    pub history: History,
    /// The model's variables by name.
    pub weights: HashMap<String, Tensor>,
    /// AdamW's moments by name (`exp_avg.NAME`, `exp_avg_sq.NAME`).
    pub optimizer: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Read and check the checkpoint directory `path` (see the module docs for what is
    /// checked).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let fail = |reason: String| Error::Checkpoint { path: path.to_owned(), reason };
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if !meta.is_dir() {
            return Err(fail("is a file; a checkpoint is a directory (holding checkpoint.json)".into()));
        }
        let meta_path = path.join(META_FILE);
        let text = match std::fs::read(&meta_path) {
            Ok(bytes) => {
                String::from_utf8(bytes).map_err(|_| fail(format!("{META_FILE} is not UTF-8 text")))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(fail(format!(
                    "{META_FILE} is missing: not a checkpoint, or an incomplete copy of one"
                )))
            }
            Err(e) => return Err(Error::io(meta_path, e)),
        };
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| fail(format!("{META_FILE} is not valid JSON (truncated?): {e}")))?;
        match (value.get("format").and_then(|f| f.as_str()), value.get("version").and_then(|v| v.as_u64())) {
            (Some(FORMAT), Some(v)) if v == VERSION as u64 => {}
            (Some(FORMAT), Some(v)) => {
                return Err(fail(format!(
                    "{META_FILE} is format version {v}; this library reads version {VERSION} (a newer library wrote it?)"
                )))
            }
            (Some(FORMAT), None) => return Err(fail(format!("{META_FILE} has no format version"))),
            _ => return Err(fail(format!("{META_FILE} is not an llm_from_scratch checkpoint description"))),
        }
        let meta: Meta = serde_json::from_value(value).map_err(|e| fail(format!("{META_FILE}: {e}")))?;
        if meta.seed != meta.train_config.seed {
            return Err(fail(format!(
                "{META_FILE}: seed {} differs from train_config.seed {}",
                meta.seed, meta.train_config.seed
            )));
        }
        meta.train_config.validate().map_err(|e| fail(format!("{META_FILE}: train_config: {e}")))?;
        let tokenizer = AnyTokenizer::from_value(meta.tokenizer.clone())
            .map_err(|e| fail(format!("{META_FILE}: tokenizer: {}", json_reason(&e))))?;
        check_vocab(&meta.model_config, &tokenizer).map_err(fail)?;

        let read = |name: &str| -> Result<HashMap<String, Tensor>> {
            let info =
                meta.files.get(name).ok_or_else(|| fail(format!("{META_FILE} does not list {name}")))?;
            let file = path.join(name);
            let bytes = match std::fs::metadata(&file) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(fail(format!("{name} is missing")))
                }
                Err(e) => return Err(Error::io(file, e)),
            };
            if bytes != info.bytes {
                return Err(fail(format!(
                    "{name} has {bytes} bytes, {} were written: truncated or replaced",
                    info.bytes
                )));
            }
            if crate::io::sha256_file(&file)? != info.sha256 {
                return Err(fail(format!(
                    "{name} is corrupt: its SHA-256 differs from the one recorded at save"
                )));
            }
            let tensors = Tensor::read_safetensors(&file).map_err(|e| fail(format!("{name}: {e}")))?;
            Ok(tensors.into_iter().collect())
        };
        let weights = read(MODEL_FILE)?;
        let optimizer = read(OPTIMIZER_FILE)?;
        Ok(Self {
            path: path.to_owned(),
            step: meta.step,
            seed: meta.seed,
            train_config: meta.train_config,
            model_config: meta.model_config,
            tokenizer,
            history: meta.history,
            weights,
            optimizer,
        })
    }

    /// The model configuration as type `T` (e.g. `GptConfig`); a mismatch (missing or
    /// mistyped fields) is an error that names them.
    pub fn model_config<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.model_config.clone()).map_err(|e| Error::Checkpoint {
            path: self.path.clone(),
            reason: format!("model_config does not fit {}: {e}", std::any::type_name::<T>()),
        })
    }

    /// Copy the saved weights into `model`, whose variables must match the checkpoint's
    /// exactly (same names, same shapes). Checked before anything is copied: on error the
    /// model is unchanged.
    pub fn load_weights(&self, model: &mut dyn LanguageModel) -> Result<()> {
        let fail = |reason: String| Error::Checkpoint { path: self.path.clone(), reason };
        let vars = model.var_store().variables();
        let mut want: Vec<(String, Vec<i64>)> = vars.iter().map(|(n, t)| (n.clone(), t.size())).collect();
        want.sort();
        let found = self.weights.iter().map(|(n, t)| (n.clone(), t.size())).collect();
        let problems: Vec<String> = crate::io::shape_mismatches(&want, &found)
            .into_iter()
            .map(|m| match m {
                Mismatch::Missing(name, _) => format!("{name} is missing from {MODEL_FILE}"),
                Mismatch::Shape(name, model, saved) => {
                    format!("{name} has shape {saved:?} in the checkpoint but {model:?} in the model")
                }
                Mismatch::Unexpected(name) => format!("{name} is in the checkpoint but not in the model"),
            })
            .collect();
        if !problems.is_empty() {
            return Err(fail(format!(
                "the weights do not fit the model (build it from the checkpoint's model_config): {}",
                super::adamw::summarize(&problems)
            )));
        }
        let _no_grad = tch::no_grad_guard();
        for (name, mut var) in vars {
            var.f_copy_(&self.weights[&name]).map_err(|e| fail(format!("copying {name}: {e}")))?;
        }
        Ok(())
    }

    /// Load the weights into `model` and rebuild the trainer (optimizer state, step, seed,
    /// configuration and history): the run continues as if it had never stopped.
    pub fn resume(&self, model: &mut dyn LanguageModel) -> Result<Trainer> {
        self.load_weights(model)?;
        Trainer::from_checkpoint(model, self)
    }
}

/// The trainer's side of a checkpoint: this module depends on the trainer, not the other way.
impl Trainer {
    /// Continue the run saved in `checkpoint` with `model`, whose weights must already be
    /// loaded ([`Checkpoint::resume`] does both).
    pub fn from_checkpoint(model: &dyn LanguageModel, checkpoint: &Checkpoint) -> Result<Self> {
        let fail = |e: Error| Error::Checkpoint { path: checkpoint.path.clone(), reason: e.to_string() };
        let mut trainer = Self::new(model, checkpoint.train_config.clone()).map_err(fail)?;
        trainer.optimizer.load_state(checkpoint.step, &checkpoint.optimizer).map_err(fail)?;
        trainer.step = checkpoint.step;
        trainer.history = checkpoint.history.clone();
        Ok(trainer)
    }

    /// Save the run and `model` as a checkpoint directory (see [`crate::train::checkpoint`]).
    /// `model_config` rebuilds the model: its `GptConfig`, or `json!({"vocab_size": 65})`.
    pub fn save_checkpoint(
        &self,
        path: impl AsRef<Path>,
        model: &dyn LanguageModel,
        model_config: &impl serde::Serialize,
        tokenizer: &dyn Tokenizer,
    ) -> Result<()> {
        save(path, self, model, model_config, tokenizer)
    }
}

/// The message of a JSON error, without our own context prefix.
fn json_reason(e: &Error) -> String {
    match e {
        Error::Json { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// A tokenizer with more ids than the model has embedding rows cannot work with it. (Fewer is
/// fine: GPT-2 pads its 50,257 tokens to 50,304 rows.)
fn check_vocab(
    model_config: &serde_json::Value,
    tokenizer: &dyn Tokenizer,
) -> std::result::Result<(), String> {
    match model_config.get("vocab_size").and_then(|v| v.as_u64()) {
        Some(v) if (tokenizer.vocab_size() as u64) > v => Err(format!(
            "the tokenizer has {} tokens but the model config's vocab_size is {v}: they are from different runs",
            tokenizer.vocab_size()
        )),
        _ => Ok(()),
    }
}

/// Write `tensors` as a safetensors file (from the CPU, contiguous), synced to disk, and
/// return its size and digest.
fn write_tensors(path: &Path, mut tensors: Vec<(String, Tensor)>) -> Result<FileInfo> {
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let tensors = tensors
        .into_iter()
        .map(|(name, t)| Ok((name, t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    Tensor::write_safetensors(&tensors, path)?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))?;
    let bytes = file.metadata().map_err(|e| Error::io(path, e))?.len();
    Ok(FileInfo { bytes, sha256: crate::io::sha256_file(path)? })
}

/// Save `trainer`'s state and `model` as a checkpoint directory at `path`, atomically (see
/// the module docs). `model_config` is whatever rebuilds the model (a `GptConfig`, or
/// `serde_json::json!({"vocab_size": 65})` for the bigram). An existing checkpoint at `path`
/// is replaced; anything else there is an error, never deleted.
pub fn save(
    path: impl AsRef<Path>,
    trainer: &Trainer,
    model: &dyn LanguageModel,
    model_config: &impl serde::Serialize,
    tokenizer: &dyn Tokenizer,
) -> Result<()> {
    let path = path.as_ref();
    let fail = |reason: String| Error::Checkpoint { path: path.to_owned(), reason };
    if path.file_name().is_none() {
        return Err(fail("needs a directory name to save to".into()));
    }
    match std::fs::metadata(path) {
        Ok(m) if !(m.is_dir() && path.join(META_FILE).is_file()) => {
            return Err(fail(format!(
                "exists and is not a checkpoint (no {META_FILE}); choose another path or remove it"
            )))
        }
        _ => {}
    }
    trainer.optimizer().check_fits(model.var_store()).map_err(|e| fail(e.to_string()))?;
    let model_config = serde_json::to_value(model_config)
        .map_err(|source| Error::Json { context: "model config".into(), source })?;
    let tokenizer_json: serde_json::Value = serde_json::from_str(&tokenizer.to_json()?)
        .map_err(|source| Error::Json { context: "tokenizer".into(), source })?;
    AnyTokenizer::from_value(tokenizer_json.clone())
        .map_err(|e| fail(format!("the tokenizer could not be loaded back: {}", json_reason(&e))))?;
    check_vocab(&model_config, tokenizer).map_err(fail)?;

    let tmp = crate::io::TempDir::create(crate::io::temp_path_for(path))?;
    let weights: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    let mut files = BTreeMap::new();
    files.insert(MODEL_FILE.to_owned(), write_tensors(&tmp.path().join(MODEL_FILE), weights)?);
    files.insert(
        OPTIMIZER_FILE.to_owned(),
        write_tensors(&tmp.path().join(OPTIMIZER_FILE), trainer.optimizer().state_tensors())?,
    );
    let config = trainer.config().clone();
    let meta = Meta {
        format: FORMAT.into(),
        version: VERSION,
        step: trainer.step(),
        seed: config.seed,
        train_config: config,
        model_config,
        tokenizer: tokenizer_json,
        history: trainer.history().clone(),
        files,
    };
    let text = serde_json::to_string_pretty(&meta)
        .map_err(|source| Error::Json { context: "checkpoint.json".into(), source })?;
    crate::io::write_atomic(&tmp.path().join(META_FILE), text.as_bytes())?;
    crate::io::sync_dir(tmp.path());
    tmp.swap_into(path)?;
    if let Some(parent) = path.parent() {
        crate::io::sync_dir(if parent.as_os_str().is_empty() { Path::new(".") } else { parent });
    }
    Ok(())
}
