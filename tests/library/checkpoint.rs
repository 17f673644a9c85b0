//! Checkpoints: a resumed run is the same run, the files are what the docs say (and
//! standard safetensors), saves are atomic, and every broken or mismatched checkpoint is a
//! clear error.

use crate::common::{rng_lock, TempDir};

use crate::tiny_model::{text_data, weights, TinyModel};
use llm_from_scratch::model::{Bigram, LanguageModel};
use llm_from_scratch::tokenizer::{AnyTokenizer, CharTokenizer, Tokenizer, WordTokenizer};
use llm_from_scratch::train::checkpoint::{META_FILE, MODEL_FILE, OPTIMIZER_FILE};
use llm_from_scratch::train::{Checkpoint, History, LrDecay, TrainConfig, Trainer};
use llm_from_scratch::{device, Error};
use serde_json::json;
use sha2::Digest;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

const N_EMBD: usize = 16;

/// Dropout, accumulation, clipping, warmup and decay, log lines: every source of state.
fn config() -> TrainConfig {
    TrainConfig {
        steps: 200,
        batch_size: 4,
        block_size: 8,
        grad_accum: 2,
        lr: 1e-2,
        warmup_steps: 20,
        lr_decay: LrDecay::Cosine,
        min_lr: 1e-3,
        weight_decay: 0.1,
        beta2: 0.99,
        grad_clip: Some(1.0),
        eval_interval: 50,
        eval_iters: 5,
        log_interval: Some(10),
        seed: 7,
        ..TrainConfig::default()
    }
}

fn model_config(vocab_size: usize) -> serde_json::Value {
    json!({ "vocab_size": vocab_size, "n_embd": N_EMBD, "dropout": 0.1 })
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct TinyConfig {
    vocab_size: usize,
    n_embd: usize,
    dropout: f64,
}

fn without_throughput(history: &History) -> History {
    let mut h = history.clone();
    h.points.iter_mut().for_each(|p| p.tokens_per_sec = None);
    h.logs.iter_mut().for_each(|l| l.tokens_per_sec = None);
    h
}

/// A model and trainer after `steps` steps of [`config`], and the tokenizer.
fn trained(steps: usize) -> (TinyModel, Trainer, CharTokenizer) {
    let (tok, data) = text_data();
    device::seed(42);
    let model = TinyModel::new(tok.vocab_size(), N_EMBD, 0.1);
    let mut trainer = Trainer::new(&model, config()).unwrap();
    trainer.train_until(&model, &data, steps, |_| {}).unwrap();
    (model, trainer, tok)
}

fn checkpoint_error(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(Error::Checkpoint { reason, .. }) => reason,
        other => panic!("expected Error::Checkpoint, got {other:?}"),
    }
}

// --- Resume -------------------------------------------------------------------------------

#[test]
fn resume_continues_the_same_run() {
    let _rng = rng_lock();
    let (_, data) = text_data();

    // 200 steps straight.
    let (straight, straight_trainer, _) = trained(200);

    // 100 steps, save, load into a fresh model (other initial weights) and trainer, 100 more.
    let dir = TempDir::new("ckpt_resume");
    let path = dir.join("ckpt");
    {
        let (model, trainer, tok) = trained(100);
        trainer.save_checkpoint(&path, &model, &model_config(tok.vocab_size()), &tok).unwrap();
    }
    let ckpt = Checkpoint::load(&path).unwrap();
    assert_eq!((ckpt.step, ckpt.seed), (100, 7));
    let cfg: TinyConfig = ckpt.model_config().unwrap();
    device::seed(999);
    let mut model = TinyModel::new(cfg.vocab_size, cfg.n_embd, cfg.dropout);
    assert_ne!(weights(&model), weights(&straight), "a fresh model starts elsewhere");
    let mut trainer = ckpt.resume(&mut model).unwrap();
    assert_eq!(trainer.step(), 100);
    assert_eq!(trainer.config(), &config());
    device::seed(12345); // whatever the global generator holds, the run does not depend on it
    trainer.train_until(&model, &data, 200, |_| {}).unwrap();

    assert_eq!(weights(&model), weights(&straight), "the weights after 200 steps, bit for bit");
    assert_eq!(without_throughput(trainer.history()), without_throughput(straight_trainer.history()));
    let (a, b) = (trainer.history().last().unwrap(), straight_trainer.history().last().unwrap());
    assert_eq!((a.step, a.train_loss, a.val_loss), (b.step, b.train_loss, b.val_loss));
    let moments = |t: &Trainer| -> Vec<Vec<f64>> {
        t.optimizer()
            .state_tensors()
            .iter()
            .map(|(_, m)| Vec::<f64>::try_from(m.reshape([-1]).to_kind(Kind::Double)).unwrap())
            .collect()
    };
    assert_eq!(moments(&trainer), moments(&straight_trainer));
    assert_eq!(trainer.optimizer().step_count(), 200);
}

#[test]
fn bigram_checkpoint_round_trips_with_a_word_tokenizer() {
    let _rng = rng_lock();
    let text = "to be or not to be, that is the question\n".repeat(20);
    let tok = WordTokenizer::from_text(&text);
    let data = llm_from_scratch::data::TokenData::new(&tok.encode(&text).unwrap(), 0.9).unwrap();
    device::seed(1);
    let model = Bigram::new(tok.vocab_size(), Device::Cpu);
    let config = TrainConfig { steps: 20, eval_interval: 10, eval_iters: 2, ..TrainConfig::default() };
    let mut trainer = Trainer::new(&model, config).unwrap();
    trainer.run(&model, &data, |_| {}).unwrap();
    let dir = TempDir::new("ckpt_bigram");
    let path = dir.join("bigram");
    trainer.save_checkpoint(&path, &model, &json!({ "vocab_size": tok.vocab_size() }), &tok).unwrap();

    let ckpt = Checkpoint::load(&path).unwrap();
    assert_eq!(ckpt.tokenizer, AnyTokenizer::Word(tok.clone()));
    assert_eq!(ckpt.tokenizer.encode("to be").unwrap(), tok.encode("to be").unwrap());
    assert_eq!(&ckpt.history, trainer.history());
    let vocab = ckpt.model_config["vocab_size"].as_u64().unwrap() as usize;
    let mut loaded = Bigram::new(vocab, Device::Cpu);
    ckpt.load_weights(&mut loaded).unwrap();
    assert_eq!(weights(&loaded), weights(&model));
}

// --- Layout -------------------------------------------------------------------------------

/// Parse a safetensors file by its specification (8-byte little-endian header length, a
/// JSON header of `name: {dtype, shape, data_offsets}`, then the data), independently of
/// the reader the library uses: what Python's `safetensors.torch.load_file` reads.
fn safetensors_header(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut header = header.as_object().unwrap().clone();
    header.remove("__metadata__");
    let data_len = (bytes.len() - 8 - n) as u64;
    for (name, info) in &header {
        let end = info["data_offsets"][1].as_u64().unwrap();
        assert!(end <= data_len, "{name} runs past the end of the file");
    }
    header
}

#[test]
fn a_checkpoint_is_a_directory_of_safetensors_and_json() {
    let _rng = rng_lock();
    let (model, trainer, tok) = trained(30);
    let dir = TempDir::new("ckpt_layout");
    let path = dir.join("ckpt");
    trainer.save_checkpoint(&path, &model, &model_config(tok.vocab_size()), &tok).unwrap();
    assert_eq!(dir.entries(), ["ckpt"], "nothing left beside it");
    let mut files: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, [META_FILE, MODEL_FILE, OPTIMIZER_FILE]);

    let model_header = safetensors_header(&path.join(MODEL_FILE));
    let mut names: Vec<&String> = model_header.keys().collect();
    names.sort();
    assert_eq!(names, ["buffer", "emb.weight", "gain", "head.bias", "head.weight"]);
    let v = tok.vocab_size() as u64;
    assert_eq!(model_header["emb.weight"]["dtype"], "F32");
    assert_eq!(model_header["emb.weight"]["shape"], json!([v, N_EMBD]));
    let optimizer_header = safetensors_header(&path.join(OPTIMIZER_FILE));
    let mut names: Vec<&String> = optimizer_header.keys().collect();
    names.sort();
    assert_eq!(names.len(), 8, "two moments for each of the 4 trainable tensors (not the buffer)");
    assert_eq!(names[0], "exp_avg.emb.weight");
    assert_eq!(optimizer_header["exp_avg_sq.head.bias"]["shape"], json!([v]));

    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path.join(META_FILE)).unwrap()).unwrap();
    assert_eq!(meta["format"], "llm_from_scratch checkpoint");
    assert_eq!(meta["version"], 1);
    assert_eq!(meta["step"], 30);
    assert_eq!(meta["seed"], 7);
    assert_eq!(meta["model_config"], model_config(tok.vocab_size()));
    assert_eq!(meta["tokenizer"]["kind"], "char");
    assert_eq!(meta["train_config"]["grad_accum"], 2);
    assert_eq!(meta["history"]["points"][0]["step"], 0);
    let size = std::fs::metadata(path.join(MODEL_FILE)).unwrap().len();
    assert_eq!(meta["files"][MODEL_FILE]["bytes"], size);
    let digest = sha2::Sha256::digest(std::fs::read(path.join(MODEL_FILE)).unwrap());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(meta["files"][MODEL_FILE]["sha256"], hex.as_str());
}

// --- Atomic saves -------------------------------------------------------------------------

#[test]
fn saving_again_replaces_the_checkpoint() {
    let _rng = rng_lock();
    let (_, data) = text_data();
    let (model, mut trainer, tok) = trained(20);
    let dir = TempDir::new("ckpt_replace");
    let path = dir.join("ckpt");
    let cfg = model_config(tok.vocab_size());
    trainer.save_checkpoint(&path, &model, &cfg, &tok).unwrap();
    trainer.train_until(&model, &data, 40, |_| {}).unwrap();
    trainer.save_checkpoint(&path, &model, &cfg, &tok).unwrap();
    assert_eq!(dir.entries(), ["ckpt"], "the old checkpoint is gone, no temporary left");
    let ckpt = Checkpoint::load(&path).unwrap();
    assert_eq!(ckpt.step, 40);
    let mut fresh = TinyModel::new(tok.vocab_size(), N_EMBD, 0.1);
    ckpt.load_weights(&mut fresh).unwrap();
    assert_eq!(weights(&fresh), weights(&model));
}

#[test]
fn a_failed_save_leaves_the_previous_checkpoint_loadable() {
    let _rng = rng_lock();
    let (model, trainer, tok) = trained(20);
    let dir = TempDir::new("ckpt_failed_save");
    let path = dir.join("ckpt");
    let cfg = model_config(tok.vocab_size());
    trainer.save_checkpoint(&path, &model, &cfg, &tok).unwrap();
    let before: Vec<(String, Vec<u8>)> = [META_FILE, MODEL_FILE, OPTIMIZER_FILE]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(path.join(f)).unwrap()))
        .collect();

    // A variable safetensors cannot store makes the save fail halfway, after the temporary
    // directory was created and the optimizer's file written.
    let _ = model.vs.root().add("complex", Tensor::zeros([2], (Kind::ComplexFloat, Device::Cpu)), false);
    let err = trainer.save_checkpoint(&path, &model, &cfg, &tok).unwrap_err();
    assert!(err.to_string().contains("unsupported"), "{err}");
    assert_eq!(dir.entries(), ["ckpt"], "the temporary directory is cleaned up");
    for (file, bytes) in &before {
        assert_eq!(&std::fs::read(path.join(file)).unwrap(), bytes, "{file} changed");
    }
    assert_eq!(Checkpoint::load(&path).unwrap().step, 20);

    // A save interrupted by a crash leaves at most a hidden temporary directory, which
    // changes nothing for loading or the next save.
    std::fs::create_dir(dir.join(".ckpt.1234-0.tmp")).unwrap();
    std::fs::write(dir.join(".ckpt.1234-0.tmp").join(MODEL_FILE), b"half a file").unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap().step, 20);
}

#[test]
fn saving_never_overwrites_something_that_is_not_a_checkpoint() {
    let _rng = rng_lock();
    let (model, trainer, tok) = trained(1);
    let dir = TempDir::new("ckpt_not_a_checkpoint");
    let cfg = model_config(tok.vocab_size());
    std::fs::write(dir.join("notes.txt"), "precious").unwrap();
    std::fs::create_dir(dir.join("photos")).unwrap();
    std::fs::write(dir.join("photos").join("cat.jpg"), "meow").unwrap();
    for name in ["notes.txt", "photos"] {
        let reason = checkpoint_error(trainer.save_checkpoint(dir.join(name), &model, &cfg, &tok));
        assert!(reason.contains("not a checkpoint"), "{reason}");
    }
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "precious");
    assert_eq!(std::fs::read_to_string(dir.join("photos").join("cat.jpg")).unwrap(), "meow");
    assert_eq!(dir.entries(), ["notes.txt", "photos"]);
}

// --- Broken checkpoints -------------------------------------------------------------------

/// A saved checkpoint to break in a test.
fn saved(test: &str) -> (TempDir, std::path::PathBuf) {
    let (model, trainer, tok) = trained(10);
    let dir = TempDir::new(test);
    let path = dir.join("ckpt");
    trainer.save_checkpoint(&path, &model, &model_config(tok.vocab_size()), &tok).unwrap();
    (dir, path)
}

fn edit_meta(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let file = path.join(META_FILE);
    let mut meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    f(&mut meta);
    std::fs::write(&file, serde_json::to_string(&meta).unwrap()).unwrap();
}

#[test]
fn corrupt_and_truncated_files_are_clear_errors() {
    let _rng = rng_lock();
    let (_dir, path) = saved("ckpt_corrupt");
    let model_file = path.join(MODEL_FILE);
    let good = std::fs::read(&model_file).unwrap();

    // One flipped bit in the weights.
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    std::fs::write(&model_file, &flipped).unwrap();
    let reason = checkpoint_error(Checkpoint::load(&path));
    assert!(reason.contains("model.safetensors is corrupt"), "{reason}");

    // Truncated.
    std::fs::write(&model_file, &good[..good.len() / 2]).unwrap();
    let reason = checkpoint_error(Checkpoint::load(&path));
    assert!(reason.contains("truncated"), "{reason}");
    std::fs::write(&model_file, &good).unwrap();
    assert!(Checkpoint::load(&path).is_ok());

    // A missing tensor file.
    std::fs::remove_file(path.join(OPTIMIZER_FILE)).unwrap();
    let reason = checkpoint_error(Checkpoint::load(&path));
    assert!(reason.contains("optimizer.safetensors is missing"), "{reason}");

    // checkpoint.json truncated, not JSON, or missing.
    let meta = std::fs::read_to_string(path.join(META_FILE)).unwrap();
    std::fs::write(path.join(META_FILE), &meta[..meta.len() / 2]).unwrap();
    let reason = checkpoint_error(Checkpoint::load(&path));
    assert!(reason.contains("not valid JSON"), "{reason}");
    std::fs::write(path.join(META_FILE), b"\xff\xfe").unwrap();
    assert!(checkpoint_error(Checkpoint::load(&path)).contains("UTF-8"));
    std::fs::remove_file(path.join(META_FILE)).unwrap();
    let reason = checkpoint_error(Checkpoint::load(&path));
    assert!(reason.contains("checkpoint.json is missing"), "{reason}");

    // Not a directory at all, or nothing there.
    let reason = checkpoint_error(Checkpoint::load(path.join(MODEL_FILE)));
    assert!(reason.contains("is a file"), "{reason}");
    assert!(matches!(Checkpoint::load(path.join("nope")), Err(Error::Io { .. })));
}

#[test]
fn mismatched_descriptions_are_clear_errors() {
    let _rng = rng_lock();
    let (_dir, path) = saved("ckpt_mismatched_meta");
    let original = std::fs::read_to_string(path.join(META_FILE)).unwrap();
    let reset = || std::fs::write(path.join(META_FILE), &original).unwrap();
    let cases: Vec<(&str, Box<dyn Fn(&mut serde_json::Value)>)> = vec![
        ("version 2", Box::new(|m| m["version"] = json!(2))),
        ("not an llm_from_scratch checkpoint", Box::new(|m| m["format"] = json!("something else"))),
        ("missing field `history`", Box::new(|m| drop(m.as_object_mut().unwrap().remove("history")))),
        ("unknown field `extra`", Box::new(|m| m["extra"] = json!(1))),
        ("train_config: invalid configuration: beta2", Box::new(|m| m["train_config"]["beta2"] = json!(1.0))),
        ("seed 8 differs", Box::new(|m| m["seed"] = json!(8))),
        ("unknown tokenizer kind \"unigram\"", Box::new(|m| m["tokenizer"]["kind"] = json!("unigram"))),
        ("vocab_size is 3", Box::new(|m| m["model_config"]["vocab_size"] = json!(3))),
        (
            "does not list optimizer.safetensors",
            Box::new(|m| drop(m["files"].as_object_mut().unwrap().remove(OPTIMIZER_FILE))),
        ),
    ];
    for (needle, edit) in cases {
        edit_meta(&path, edit);
        let reason = checkpoint_error(Checkpoint::load(&path));
        assert!(reason.contains(needle), "{needle:?} not in {reason:?}");
        reset();
    }
    assert!(Checkpoint::load(&path).is_ok());
}

#[test]
fn weights_that_do_not_fit_the_model_are_clear_errors_and_change_nothing() {
    let _rng = rng_lock();
    let (_dir, path) = saved("ckpt_mismatched_model");
    let ckpt = Checkpoint::load(&path).unwrap();
    let v = ckpt.tokenizer.vocab_size();

    // Wrong vocabulary: every shape that involves V differs.
    let mut wrong_vocab = TinyModel::new(v + 1, N_EMBD, 0.1);
    let before = weights(&wrong_vocab);
    let reason = checkpoint_error(ckpt.load_weights(&mut wrong_vocab));
    assert!(
        reason.contains(&format!(
            "emb.weight has shape [{v}, 16] in the checkpoint but [{}, 16] in the model",
            v + 1
        )),
        "{reason}"
    );
    assert!(reason.contains("head.bias has shape"), "{reason}");
    assert_eq!(weights(&wrong_vocab), before, "nothing was copied");
    assert!(checkpoint_error(ckpt.resume(&mut wrong_vocab)).contains("do not fit"));

    // Wrong width.
    let mut wrong_width = TinyModel::new(v, 8, 0.1);
    assert!(checkpoint_error(ckpt.load_weights(&mut wrong_width)).contains("[16] in the checkpoint but [8]"));

    // Another model altogether: missing and extra tensors are listed by name.
    let mut bigram = Bigram::new(v, Device::Cpu);
    let reason = checkpoint_error(ckpt.load_weights(&mut bigram));
    assert!(reason.contains("token_embedding.weight is missing from model.safetensors"), "{reason}");
    assert!(reason.contains("emb.weight is in the checkpoint but not in the model"), "{reason}");

    // The model config read as the wrong type.
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct GptLike {
        vocab_size: usize,
        n_layer: usize,
    }
    let reason = checkpoint_error(ckpt.model_config::<GptLike>());
    assert!(reason.contains("missing field `n_layer`"), "{reason}");
}

#[test]
fn missing_and_extra_optimizer_state_is_a_clear_error() {
    let _rng = rng_lock();
    let (_dir, path) = saved("ckpt_mismatched_optimizer");
    let mut ckpt = Checkpoint::load(&path).unwrap();
    let v = ckpt.tokenizer.vocab_size();
    let mut model = TinyModel::new(v, N_EMBD, 0.1);
    ckpt.load_weights(&mut model).unwrap();

    let moment = ckpt.optimizer.remove("exp_avg_sq.gain").unwrap();
    ckpt.optimizer.insert("exp_avg.unknown".into(), moment);
    let reason = checkpoint_error(Trainer::from_checkpoint(&model, &ckpt));
    assert!(reason.contains("exp_avg_sq.gain is missing"), "{reason}");
    assert!(reason.contains("exp_avg.unknown belongs to no parameter"), "{reason}");

    // A model with other parameters: the moments have other names and shapes.
    let ckpt = Checkpoint::load(&path).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let _ = vs.root().zeros("gain", &[1]);
    let reason = checkpoint_error(Trainer::from_checkpoint(&TinyHolder(vs), &ckpt));
    assert!(reason.contains("exp_avg.gain has shape [16], the parameter [1]"), "{reason}");
    assert!(reason.contains("exp_avg.emb.weight belongs to no parameter"), "{reason}");
}

/// A "model" that is only a VarStore, for optimizer-state checks.
struct TinyHolder(nn::VarStore);

impl LanguageModel for TinyHolder {
    fn forward(
        &self,
        _: &Tensor,
        _: Option<&Tensor>,
        _: bool,
    ) -> llm_from_scratch::Result<(Tensor, Option<Tensor>)> {
        Err(Error::Config("not a real model".into()))
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.0
    }
    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.0
    }
}

// --- Tokenizers ---------------------------------------------------------------------------

#[test]
fn any_tokenizer_loads_by_kind() {
    let chars = CharTokenizer::from_text("hello world");
    let words = WordTokenizer::from_text("hello world");
    let any_char = AnyTokenizer::from_json(&chars.to_json().unwrap()).unwrap();
    let any_word = AnyTokenizer::from_json(&words.to_json().unwrap()).unwrap();
    assert_eq!(any_char, AnyTokenizer::Char(chars.clone()));
    assert_eq!(any_word, AnyTokenizer::Word(words.clone()));
    assert_eq!((any_char.kind(), any_word.kind()), ("char", "word"));
    assert_eq!(any_char.vocab_size(), chars.vocab_size());
    assert_eq!(any_word.encode(" world").unwrap(), words.encode(" world").unwrap());
    assert_eq!(any_char.decode(&[0, 1]).unwrap(), chars.decode(&[0, 1]).unwrap());
    assert_eq!(any_char.to_json().unwrap(), chars.to_json().unwrap(), "the same file");
    assert_eq!(AnyTokenizer::from(words.clone()), any_word);

    let dir = TempDir::new("any_tokenizer");
    let file = dir.join("tok.json");
    any_word.save(&file).unwrap();
    assert_eq!(AnyTokenizer::load(&file).unwrap(), any_word);
    assert_eq!(WordTokenizer::load(&file).unwrap(), words);

    let err = |json: &str| match AnyTokenizer::from_json(json) {
        Err(Error::Json { source, .. }) => source.to_string(),
        other => panic!("expected a JSON error for {json}, got {other:?}"),
    };
    assert!(err(r#"{"kind": "unigram", "version": 1}"#)
        .contains("unknown tokenizer kind \"unigram\" (known: char, word, bpe)"));
    assert!(err(r#"{"kind": "bpe", "version": 1}"#).contains("missing field"));
    assert!(err(r#"{"version": 1, "chars": "ab"}"#).contains("no \"kind\" field"));
    assert!(err(r#"{"kind": 3}"#).contains("must be a string"));
    assert!(err(r#"{"kind": "char", "version": 1, "chars": "aba"}"#).contains("non-empty and distinct"));
    assert!(err(r#"{"kind": "char", "version": 9, "chars": "ab"}"#).contains("version 9"));
    assert!(err("[1, 2").contains("EOF"));
}
