//! GPT-2 and the Hugging Face format (chapter 8): OpenAI's weights in, our models out.
//!
//! A model in the Hugging Face layout is a folder:
//!
//! ```text
//! gpt2/
//!   config.json          GPT2Config: n_layer, n_head, n_embd, n_positions, vocab_size, ...
//!   model.safetensors    GPT2LMHeadModel's tensors, by name
//!   tokenizer.json       the tokenizer, for AutoTokenizer (ours write it for byte-level BPE;
//!                        read back when there is no llm_tokenizer.json: [`tokenizer_from_json`])
//!   llm_tokenizer.json   (ours: every model) the tokenizer in this course's format
//!   llm_training.json    (ours, from a run) its training settings, for scripts/train_ddp.py
//! ```
//!
//! **The name map.** Our variables already carry GPT-2's names (nanoGPT kept them:
//! `transformer.h.0.attn.c_attn.weight`, ...), so three things differ:
//!
//! - OpenAI's own file (`openai-community/gpt2`) has no `transformer.` prefix (`h.0.ln_1.weight`);
//!   files that `transformers` saves have it. [`load`] accepts both.
//! - GPT-2 wrote its projections as `Conv1D`, which keeps the weight as `[in, out]`; ours
//!   are `nn.Linear`'s `[out, in]`. The four per block (`attn.c_attn`, `attn.c_proj`,
//!   `mlp.c_fc`, `mlp.c_proj`) are transposed on the way in and out ([`is_conv1d`]).
//! - The file has buffers that are not weights (`attn.bias`, the causal mask, and
//!   `attn.masked_bias` in old files): skipped. It has no `lm_head.weight` when the head is
//!   tied to `wte` (GPT-2's is).
//!
//! Every tensor is checked by name and shape before anything is copied: a file that is not a
//! GPT-2 of the configured size is an error naming the first tensor that does not fit.

use crate::io::Mismatch;
use crate::model::gpt::{Gpt, GptConfig};
use crate::model::layers::{Activation, Position, RopeScaling, LAYER_NORM_EPS};
use crate::model::llama::{Llama, LlamaConfig};
/// The `tokenizer.json` reader and writer, which live with the tokenizers.
pub use crate::tokenizer::{byte_to_unicode, tokenizer_from_json, tokenizer_json};
use crate::tokenizer::{AnyTokenizer, Tokenizer};
use crate::{Error, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The model's configuration in a Hugging Face folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights in a Hugging Face folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The tokenizer for `transformers` (`AutoTokenizer`), written for byte-level BPE models.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The tokenizer's settings for `transformers` (which class reads `tokenizer.json`).
const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// The tokenizer in this course's format, written for every model, so `llm` reads it back.
pub const LLM_TOKENIZER_FILE: &str = "llm_tokenizer.json";

/// The training settings of the run an export came from (`{"train": TrainConfig}`), for
/// `scripts/train_ddp.py`; it writes its own back beside its result.
pub const TRAINING_FILE: &str = "llm_training.json";

fn fail(path: &Path, reason: impl Into<String>) -> Error {
    Error::Hf { path: path.to_owned(), reason: reason.into() }
}

/// Whether GPT-2 keeps this weight as a `Conv1D`, `[in, out]`: the transpose of ours.
pub fn is_conv1d(name: &str) -> bool {
    ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// The [`GptConfig`] of a `GPT2Config` (`config.json`). Fields it does not give take
/// `GPT2Config`'s defaults; settings our GPT does not have (another layer-norm epsilon,
/// attention scaled by layer, ...) are refused, naming the field.
pub fn config_from_hf(hf: &Value) -> Result<GptConfig> {
    let field = |name: &str| hf.get(name).filter(|v| !v.is_null());
    let size = |name: &str, default: usize| -> Result<usize> {
        match field(name) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| Error::Config(format!("config.json: {name} must be a whole number, got {v}"))),
        }
    };
    let flag = |name: &str, default: bool| field(name).and_then(Value::as_bool).unwrap_or(default);
    if let Some(kind) = field("model_type").and_then(Value::as_str).filter(|&k| k != "gpt2") {
        return Err(Error::Config(format!("config.json: model_type is {kind:?}, not a GPT-2 (\"gpt2\")")));
    }
    let activation = match field("activation_function").and_then(Value::as_str).unwrap_or("gelu_new") {
        "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        "relu" => Activation::Relu,
        other => {
            return Err(Error::Config(format!(
                "config.json: activation_function {other:?} is not one of ours (gelu_new, gelu, relu)"
            )))
        }
    };
    let eps = field("layer_norm_epsilon").and_then(Value::as_f64).unwrap_or(LAYER_NORM_EPS);
    if (eps - LAYER_NORM_EPS).abs() > 1e-12 {
        return Err(Error::Config(format!("config.json: layer_norm_epsilon {eps} (ours is 1e-5)")));
    }
    for (name, ours) in [
        ("scale_attn_weights", true),
        ("scale_attn_by_inverse_layer_idx", false),
        ("reorder_and_upcast_attn", false),
    ] {
        if flag(name, ours) != ours {
            return Err(Error::Config(format!("config.json: {name} must be {ours} for our attention")));
        }
    }
    let n_embd = size("n_embd", 768)?;
    let config = GptConfig {
        vocab_size: size("vocab_size", 50_257)?,
        block_size: size("n_positions", 1024)?,
        n_layer: size("n_layer", 12)?,
        n_head: size("n_head", 12)?,
        n_embd,
        dropout: field("resid_pdrop").and_then(Value::as_f64).unwrap_or(0.1),
        bias: true,
        qkv_bias: true,
        activation,
        tie_weights: flag("tie_word_embeddings", true),
        lm_head_bias: false,
        d_ff: field("n_inner").map(|_| size("n_inner", 4 * n_embd)).transpose()?,
        position: Position::Learned,
    };
    config.validate()?;
    Ok(config)
}

/// The `GPT2Config` (`config.json`) of a [`GptConfig`], for `GPT2LMHeadModel`. What GPT-2
/// cannot express is refused, naming the setting. `eos` is the id of `<|endoftext|>`, if the
/// tokenizer has one (GPT-2's `bos_token_id` and `eos_token_id`).
pub fn config_to_hf(config: &GptConfig, eos: Option<u32>) -> Result<Value> {
    config.validate()?;
    if config.position != Position::Learned {
        return Err(Error::Config(format!(
            "position = {}: GPT-2 has learned positions only (a wpe table), so a model with these cannot be exported",
            config.position
        )));
    }
    if config.lm_head_bias {
        return Err(Error::Config(
            "lm_head_bias = true: GPT-2's LM head has no bias (the lecture's model has one), so a model \
             with one cannot be exported"
                .into(),
        ));
    }
    let activation = match config.activation {
        Activation::GeluTanh => "gelu_new",
        Activation::Gelu => "gelu",
        Activation::Relu => "relu",
    };
    Ok(json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.d_ff,
        "activation_function": activation,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        "scale_attn_weights": true,
        "tie_word_embeddings": config.tie_weights,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    }))
}

/// The weights file and config of `path`: a Hugging Face folder, or its `.safetensors` file;
/// an error naming `path` when it is neither.
fn files(path: &Path) -> Result<(PathBuf, PathBuf)> {
    if path.is_dir() {
        Ok((path.join(WEIGHTS_FILE), path.join(CONFIG_FILE)))
    } else if path.is_file() {
        Ok((path.to_owned(), path.with_file_name(CONFIG_FILE)))
    } else {
        Err(fail(path, "no such folder or file: give a GPT-2 folder (config.json, model.safetensors) or its .safetensors file"))
    }
}

/// Read a `config.json` as a [`GptConfig`].
pub fn load_config(path: &Path) -> Result<GptConfig> {
    let (_, config) = files(path)?;
    let hf: Value = crate::io::read_json(&config)?;
    config_from_hf(&hf).map_err(|e| fail(&config, e.to_string()))
}

/// A GPT-2 in the Hugging Face layout: `path` is its folder (or its `model.safetensors`, with
/// `config.json` beside it), as `transformers` saves it or as [`export`] writes it.
pub fn load(path: impl AsRef<Path>, device: Device) -> Result<Gpt> {
    let path = path.as_ref();
    let config = load_config(path)?;
    let mut model = Gpt::new(config, device)?;
    load_weights(&mut model, &files(path)?.0)?;
    Ok(model)
}

/// Copy a `GPT2LMHeadModel` weights file into `model`, after checking every tensor's name and
/// shape against it (see the module docs for the name map).
///
/// The file is memory-mapped and copied a slice of rows at a time ([`LOAD_CHUNK_BYTES`]),
/// each slice's pages let go as soon as it is in place: loading holds one copy of the weights
/// (the model's), where reading the file whole held three (the file's bytes, its tensors,
/// the model).
pub fn load_weights(model: &mut Gpt, weights: &Path) -> Result<()> {
    let c = &model.config;
    let what = format!(
        "a GPT-2 of this size (n_layer {}, n_embd {}, vocab_size {}, n_positions {})",
        c.n_layer, c.n_embd, c.vocab_size, c.block_size
    );
    // Each variable's name in the file has no prefix, and Conv1D weights are transposed.
    let file_name = |name: &str| name.strip_prefix("transformer.").unwrap_or(name).to_owned();
    let skip = |name: &str| {
        name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") // buffers
            || (c.tie_weights && name == "lm_head.weight") // some files keep the tied copy: it is wte
    };
    copy_by_name(&model.vs, weights, &file_name, &is_conv1d, &skip, &what)
}

/// Copy a weights file into the variables of `vs`: each variable `name` from the file's tensor
/// `file_name(name)`, transposed where `transposed(name)`, leaving out the file's tensors that
/// `skip` (after `transformer.` is taken off GPT-2's names). Every name and shape is checked
/// first; an error names the first that does not fit, and `what` the model it expected.
fn copy_by_name(
    vs: &tch::nn::VarStore,
    weights: &Path,
    file_name: &dyn Fn(&str) -> String,
    transposed: &dyn Fn(&str) -> bool,
    skip: &dyn Fn(&str) -> bool,
    what: &str,
) -> Result<()> {
    let file = std::fs::File::open(weights).map_err(|e| Error::io(weights, e))?;
    // SAFETY: a read-only map of a file we only read. Were another program to truncate it
    // while we read, the process would stop on SIGBUS: the risk every reader of mapped
    // weights takes (safetensors in Python too).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(weights, e))?;
    let tensors = safetensors::SafeTensors::deserialize(&map)
        .map_err(|e| fail(weights, format!("not a safetensors file: {e:?}")))?;
    let mut by_name: HashMap<String, safetensors::tensor::TensorView> = tensors
        .tensors()
        .into_iter()
        .map(|(name, t)| (name.strip_prefix("transformer.").unwrap_or(&name).to_owned(), t))
        .filter(|(name, _)| !skip(name))
        .collect();
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by_key(|(name, _)| natural_key(name));
    let want: Vec<(String, Vec<i64>)> = variables
        .iter()
        .map(|(name, var)| {
            let mut shape = var.size();
            if transposed(name) {
                shape.reverse();
            }
            (file_name(name), shape)
        })
        .collect();
    let found =
        by_name.iter().map(|(n, t)| (n.clone(), t.shape().iter().map(|&d| d as i64).collect())).collect();
    if let Some(first) = crate::io::shape_mismatches(&want, &found).into_iter().next() {
        return Err(fail(
            weights,
            match first {
                Mismatch::Missing(name, want) => format!("no tensor {name} {want:?}: not {what}"),
                Mismatch::Shape(name, want, found) => format!(
                    "{name} is {found:?} where {what} has {want:?}: is config.json the one of these weights?"
                ),
                Mismatch::Unexpected(name) => format!("unexpected tensor {name}: not {what}"),
            },
        ));
    }
    let _no_grad = tch::no_grad_guard();
    for (name, var) in &variables {
        let view =
            by_name.remove(&file_name(name)).ok_or_else(|| fail(weights, format!("no tensor {name}")))?;
        copy_mapped(&map, &view, var, transposed(name)).map_err(|e| fail(weights, format!("{name}: {e}")))?;
    }
    Ok(())
}

/// A `LlamaConfig` of `transformers` (its `config.json`) as ours. The rotary settings come
/// from `rope_parameters` (transformers 5) or from `rope_theta` and `rope_scaling` beside the
/// rest (earlier files: SmolLM2's, Llama 3.2's); of their types, `default` and `llama3` are read.
/// What our model does not have is refused by name: another rotary type (`yarn`, `linear`,
/// ...), biases (`attention_bias`, `mlp_bias`), a `head_dim` other than
/// `hidden_size / num_attention_heads`, an activation other than SiLU.
pub fn llama_config_from_hf(hf: &Value) -> Result<LlamaConfig> {
    let int = |key: &str| hf[key].as_u64().map(|v| v as usize);
    let missing = |key: &str| Error::Config(format!("config.json has no {key}"));
    let need = |key: &str| int(key).ok_or_else(|| missing(key));
    if hf["model_type"].as_str() != Some("llama") {
        return Err(Error::Config(format!("config.json's model_type is {}, not llama", hf["model_type"])));
    }
    let (n_embd, n_head) = (need("hidden_size")?, need("num_attention_heads")?);
    // transformers 5 writes the rotary settings in rope_parameters; earlier files beside the rest.
    let rope = match &hf["rope_scaling"] {
        Value::Null => &hf["rope_parameters"],
        legacy => legacy,
    };
    let rope_type = rope["rope_type"].as_str().or(rope["type"].as_str()).unwrap_or("default");
    let refused = [
        ("rotary type", !matches!(rope_type, "default" | "llama3")),
        ("attention_bias", hf["attention_bias"].as_bool() == Some(true)),
        ("mlp_bias", hf["mlp_bias"].as_bool() == Some(true)),
        ("hidden_act", hf["hidden_act"].as_str().is_some_and(|a| a != "silu")),
        ("head_dim", int("head_dim").is_some_and(|d| d * n_head != n_embd)),
    ];
    if let Some((key, _)) = refused.iter().find(|(_, set)| *set) {
        let value = if *key == "rotary type" { json!(rope_type) } else { hf[*key].clone() };
        return Err(Error::Config(format!(
            "config.json sets {key} = {value}: not a model this course builds"
        )));
    }
    // RopeScaling's fields are named as the file names them; the rest of the entry is ignored.
    let rope_scaling = match rope_type {
        "llama3" => Some(
            serde_json::from_value::<RopeScaling>(rope.clone())
                .map_err(|e| Error::Config(format!("config.json's llama3 rotary scaling: {e}")))?,
        ),
        _ => None,
    };
    let config = LlamaConfig {
        vocab_size: need("vocab_size")?,
        block_size: need("max_position_embeddings")?,
        n_layer: need("num_hidden_layers")?,
        n_head,
        n_kv_head: int("num_key_value_heads").unwrap_or(n_head),
        n_embd,
        intermediate_size: need("intermediate_size")?,
        rope_theta: hf["rope_theta"]
            .as_f64()
            .or(hf["rope_parameters"]["rope_theta"].as_f64())
            .unwrap_or(10_000.0),
        rms_norm_eps: hf["rms_norm_eps"].as_f64().unwrap_or(1e-6),
        tie_word_embeddings: hf["tie_word_embeddings"].as_bool().unwrap_or(false),
        rope_scaling,
    };
    config.validate()?;
    Ok(config)
}

/// Whether `dir` holds a Llama (its `config.json` says `"model_type": "llama"`).
pub fn is_llama(dir: &Path) -> bool {
    crate::io::read_json::<Value>(&dir.join(CONFIG_FILE)).is_ok_and(|hf| hf["model_type"] == "llama")
}

/// A `LlamaForCausalLM` folder (`config.json`, `model.safetensors`) as our [`Llama`]. The
/// names are the same, and so are the weights' layouts (`nn.Linear`'s `[out, in]`).
pub fn load_llama(path: impl AsRef<Path>, device: Device) -> Result<Llama> {
    let path = path.as_ref();
    let (weights, config_path) = files(path)?;
    let hf: Value = crate::io::read_json(&config_path)?;
    let config = llama_config_from_hf(&hf).map_err(|e| fail(&config_path, e.to_string()))?;
    let what = format!(
        "a Llama of this size (n_layer {}, hidden_size {}, vocab_size {}, {} of {} heads for keys and values)",
        config.n_layer, config.n_embd, config.vocab_size, config.n_kv_head, config.n_head
    );
    let tied = config.tie_word_embeddings;
    let model = Llama::new(config, device)?;
    let skip = |name: &str| tied && name == "lm_head.weight";
    copy_by_name(&model.vs, &weights, &|name| name.to_owned(), &|_| false, &skip, &what)?;
    Ok(model)
}

/// How much of a mapped weights file is held at once while [`load_weights`] copies it.
pub const LOAD_CHUNK_BYTES: usize = 16 << 20;

/// Copy the tensor `view` of the mapped file `map` into `var` (transposed: a Conv1D weight),
/// [`LOAD_CHUNK_BYTES`] of rows at a time, letting each slice's pages go once copied.
fn copy_mapped(
    map: &memmap2::Mmap,
    view: &safetensors::tensor::TensorView,
    var: &Tensor,
    transposed: bool,
) -> Result<()> {
    use safetensors::Dtype;
    let kind = match view.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        other => return Err(Error::Config(format!("dtype {other:?}: weights must be floating point"))),
    };
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    let (rows, row_shape) = shape.split_first().map_or((1, &[][..]), |(&rows, rest)| (rows, rest));
    let row_bytes = view.data().len() / rows.max(1) as usize;
    let rows_per_chunk = (LOAD_CHUNK_BYTES / row_bytes.max(1)).max(1) as i64;
    let mut row = 0;
    while row < rows {
        let n = rows_per_chunk.min(rows - row);
        let bytes = &view.data()[row as usize * row_bytes..(row + n) as usize * row_bytes];
        let chunk_shape: Vec<i64> = if shape.is_empty() { Vec::new() } else { [&[n], row_shape].concat() };
        let chunk = Tensor::f_from_data_size(bytes, &chunk_shape, kind)?;
        let mut dst = match (transposed, shape.is_empty()) {
            (_, true) => var.shallow_clone(),
            (true, false) => var.f_narrow(1, row, n)?,
            (false, false) => var.f_narrow(0, row, n)?,
        };
        dst.f_copy_(&if transposed { chunk.f_transpose(0, 1)? } else { chunk })?;
        // The slice is copied: its pages leave this process's memory (and are read from the
        // file again, should anything look at them).
        #[cfg(unix)]
        {
            let offset = bytes.as_ptr() as usize - map.as_ptr() as usize;
            // SAFETY: the map is a read-only shared map of a file: MADV_DONTNEED drops its pages
            // from this process, and reading them again reads the same bytes from the file, so
            // every reference into the map stays valid. A refusal only keeps the pages longer.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, bytes.len())
            };
        }
        row += n;
    }
    Ok(())
}

/// `h.10.ln_1.weight` after `h.9.ln_1.weight`: numbers in names compared as numbers.
fn natural_key(name: &str) -> Vec<(u64, String)> {
    name.split('.')
        .map(|part| part.parse().map_or((u64::MAX, part.to_owned()), |n| (n, String::new())))
        .collect()
}

/// Every tensor of `model` under its `GPT2LMHeadModel` name, Conv1D weights transposed,
/// contiguous, on the CPU. Biases our model does not have (`bias = false`, `qkv_bias =
/// false`) are zeros, which is what they compute.
pub fn hf_tensors(model: &Gpt) -> Result<Vec<(String, Tensor)>> {
    let c = &model.config;
    let zeros = |n: usize| Tensor::zeros([n as i64], (Kind::Float, Device::Cpu));
    let mut out: Vec<(String, Tensor)> = Vec::new();
    let mut put = |name: String, t: &Tensor| -> Result<()> {
        let t = t.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?;
        let t = if is_conv1d(&name) { t.f_transpose(0, 1)? } else { t };
        out.push((name, t.f_contiguous()?));
        Ok(())
    };
    let bias = |b: &Option<Tensor>, n: usize| b.as_ref().map_or_else(|| zeros(n), Tensor::shallow_clone);
    put("transformer.wte.weight".into(), &model.wte)?;
    put("transformer.wpe.weight".into(), &model.wpe)?;
    for (i, block) in model.blocks.iter().enumerate() {
        let h = format!("transformer.h.{i}");
        let (attn, mlp) = (&block.attn, &block.mlp);
        put(format!("{h}.ln_1.weight"), &block.ln_1.weight)?;
        put(format!("{h}.ln_1.bias"), &bias(&block.ln_1.bias, c.n_embd))?;
        put(format!("{h}.attn.c_attn.weight"), &attn.c_attn.ws)?;
        put(format!("{h}.attn.c_attn.bias"), &bias(&attn.c_attn.bs, 3 * c.n_embd))?;
        put(format!("{h}.attn.c_proj.weight"), &attn.c_proj.ws)?;
        put(format!("{h}.attn.c_proj.bias"), &bias(&attn.c_proj.bs, c.n_embd))?;
        put(format!("{h}.ln_2.weight"), &block.ln_2.weight)?;
        put(format!("{h}.ln_2.bias"), &bias(&block.ln_2.bias, c.n_embd))?;
        put(format!("{h}.mlp.c_fc.weight"), &mlp.c_fc.ws)?;
        put(format!("{h}.mlp.c_fc.bias"), &bias(&mlp.c_fc.bs, c.mlp_width()))?;
        put(format!("{h}.mlp.c_proj.weight"), &mlp.c_proj.ws)?;
        put(format!("{h}.mlp.c_proj.bias"), &bias(&mlp.c_proj.bs, c.n_embd))?;
    }
    put("transformer.ln_f.weight".into(), &model.ln_f.weight)?;
    put("transformer.ln_f.bias".into(), &bias(&model.ln_f.bias, c.n_embd))?;
    if !c.tie_weights {
        put("lm_head.weight".into(), &model.lm_head)?;
    }
    Ok(out)
}

/// Write `model` (and `tokenizer`) to the folder `dir` in the layout that
/// `transformers.GPT2LMHeadModel.from_pretrained(dir)` loads (and `AutoTokenizer`, for a
/// byte-level BPE tokenizer): see the module docs. Written beside `dir` first and swapped into
/// place, so a failed export leaves what was there; an existing `dir` must be an export
/// (it has a `config.json`), anything else is refused, never deleted.
pub fn export(model: &Gpt, tokenizer: &AnyTokenizer, dir: impl AsRef<Path>) -> Result<()> {
    export_with_training(model, tokenizer, None, dir)
}

/// [`export`], with the run's training settings (a `TrainConfig` as JSON) in
/// [`TRAINING_FILE`]: what a trainer elsewhere (`scripts/train_ddp.py`) continues with.
pub fn export_with_training(
    model: &Gpt,
    tokenizer: &AnyTokenizer,
    training: Option<&Value>,
    dir: impl AsRef<Path>,
) -> Result<()> {
    let dir = dir.as_ref();
    check_vocab(dir, tokenizer, model.config.vocab_size)?;
    let config = config_to_hf(&model.config, end_of_text(tokenizer))
        .map_err(|e| fail(dir, format!("cannot export: {e}")))?;
    if dir.exists() && !is_export(dir) {
        return Err(fail(
            dir,
            "exists and is not a model folder written by export (it holds other files); choose another \
             path or remove it",
        ));
    }
    let tmp = crate::io::TempDir::create(crate::io::temp_path_for(dir))?;
    write_safetensors(&tmp.path().join(WEIGHTS_FILE), &hf_tensors(model)?)?;
    crate::io::write_atomic(&tmp.path().join(CONFIG_FILE), pretty(&config)?.as_bytes())?;
    write_tokenizer(tmp.path(), tokenizer, model.config.block_size)?;
    if let Some(train) = training {
        let file = json!({"train": train});
        crate::io::write_atomic(&tmp.path().join(TRAINING_FILE), pretty(&file)?.as_bytes())?;
    }
    crate::io::sync_dir(tmp.path());
    tmp.swap_into(dir)
}

/// A model's vocabulary must cover its tokenizer's ids.
fn check_vocab(dir: &Path, tokenizer: &AnyTokenizer, vocab_size: usize) -> Result<()> {
    match tokenizer.vocab_size() {
        n if n > vocab_size => {
            Err(fail(dir, format!("the tokenizer has {n} tokens, the model's vocab_size is {vocab_size}")))
        }
        _ => Ok(()),
    }
}

/// The id of a byte-level BPE's `<|endoftext|>`, which the exported config names as the
/// model's end (and beginning) of text; `None` for another tokenizer.
fn end_of_text(tokenizer: &AnyTokenizer) -> Option<u32> {
    match tokenizer {
        AnyTokenizer::Bpe(bpe) => bpe.special_id(crate::tokenizer::ENDOFTEXT),
        _ => None,
    }
}

/// Write `tokenizer` into the export folder `dir`: in our format ([`LLM_TOKENIZER_FILE`],
/// any tokenizer), and a byte-level BPE also as `tokenizer.json` with its
/// `tokenizer_config.json`, which `transformers.AutoTokenizer` loads.
fn write_tokenizer(dir: &Path, tokenizer: &AnyTokenizer, model_max_length: usize) -> Result<()> {
    tokenizer.save(&dir.join(LLM_TOKENIZER_FILE))?;
    if let AnyTokenizer::Bpe(bpe) = tokenizer {
        crate::io::write_atomic(&dir.join(TOKENIZER_FILE), pretty(&tokenizer_json(bpe)?)?.as_bytes())?;
        let endoftext = end_of_text(tokenizer).map(|_| crate::tokenizer::ENDOFTEXT);
        let tokenizer_config = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": model_max_length,
            "bos_token": endoftext,
            "eos_token": endoftext,
            "add_prefix_space": false,
            "clean_up_tokenization_spaces": false,
        });
        crate::io::write_atomic(&dir.join(TOKENIZER_CONFIG_FILE), pretty(&tokenizer_config)?.as_bytes())?;
    }
    Ok(())
}

/// Our `config` as a `transformers` `LlamaConfig` (`config.json`): the rotary settings both as
/// transformers 5 writes them (`rope_parameters`) and as earlier versions read them
/// (`rope_theta`, `rope_scaling`); `eos` is the id of the tokenizer's end of text, if it has one.
pub fn llama_config_to_hf(config: &LlamaConfig, eos: Option<u32>) -> Value {
    let rope_scaling = config.rope_scaling.map(|scaling| {
        let mut entry = json!(scaling);
        entry["rope_type"] = json!("llama3");
        entry
    });
    let mut rope_parameters = rope_scaling.clone().unwrap_or_else(|| json!({"rope_type": "default"}));
    rope_parameters["rope_theta"] = json!(config.rope_theta);
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.block_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "hidden_size": config.n_embd,
        "head_dim": config.head_size(),
        "intermediate_size": config.intermediate_size,
        "hidden_act": "silu",
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": rope_scaling,
        "rope_parameters": rope_parameters,
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": false,
        "mlp_bias": false,
        "torch_dtype": "float32",
        "bos_token_id": eos,
        "eos_token_id": eos,
    })
}

/// Write `model` and its `tokenizer` as a `LlamaForCausalLM` folder (`config.json`,
/// `model.safetensors`, the tokenizer's files as [`export`] writes them), which `transformers`
/// loads; the folder appears whole or not at all, and replaces only an earlier export.
pub fn export_llama(model: &Llama, tokenizer: &AnyTokenizer, dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    check_vocab(dir, tokenizer, model.config.vocab_size)?;
    if dir.exists() && !is_export(dir) {
        return Err(fail(
            dir,
            "exists and is not a model folder written by export; choose another path or remove it",
        ));
    }
    let mut tensors: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
    tensors.sort_by_key(|(name, _)| natural_key(name));
    let tmp = crate::io::TempDir::create(crate::io::temp_path_for(dir))?;
    write_safetensors(&tmp.path().join(WEIGHTS_FILE), &tensors)?;
    crate::io::write_atomic(
        &tmp.path().join(CONFIG_FILE),
        pretty(&llama_config_to_hf(&model.config, end_of_text(tokenizer)))?.as_bytes(),
    )?;
    write_tokenizer(tmp.path(), tokenizer, model.config.block_size)?;
    crate::io::sync_dir(tmp.path());
    tmp.swap_into(dir)
}

/// The files [`export`] writes (and `transformers` may add beside them).
const EXPORT_FILES: &[&str] = &[
    CONFIG_FILE,
    WEIGHTS_FILE,
    TOKENIZER_FILE,
    LLM_TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    TRAINING_FILE,
    "generation_config.json",
];

/// Whether `dir` is a folder that [`export`] may replace: a `config.json`, and nothing but
/// the files of an export.
fn is_export(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let names: Vec<String> =
        entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.iter().any(|n| n == CONFIG_FILE) && names.iter().all(|n| EXPORT_FILES.contains(&n.as_str()))
}

/// The tokenizer a Hugging Face folder carries: in our format ([`LLM_TOKENIZER_FILE`]), else
/// its `tokenizer.json` when that is a byte-level BPE ([`tokenizer_from_json`]); `None` when
/// it has neither file.
pub fn load_tokenizer(dir: impl AsRef<Path>) -> Result<Option<AnyTokenizer>> {
    let (ours, theirs) = (dir.as_ref().join(LLM_TOKENIZER_FILE), dir.as_ref().join(TOKENIZER_FILE));
    if ours.is_file() {
        return AnyTokenizer::load(&ours).map(Some);
    }
    if !theirs.is_file() {
        return Ok(None);
    }
    let json: Value = crate::io::read_json(&theirs)?;
    let bpe = tokenizer_from_json(&json).map_err(|e| fail(&theirs, e.to_string()))?;
    Ok(Some(AnyTokenizer::Bpe(bpe)))
}

fn pretty(value: &Value) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map_err(|source| Error::Json { context: "Hugging Face files".into(), source })
}

/// A safetensors file with `{"format": "pt"}` metadata, the mark `transformers` checks.
fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    struct F32(Vec<usize>, Vec<u8>);
    impl safetensors::View for F32 {
        fn dtype(&self) -> safetensors::Dtype {
            safetensors::Dtype::F32
        }
        fn shape(&self) -> &[usize] {
            &self.0
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            std::borrow::Cow::Borrowed(&self.1)
        }
        fn data_len(&self) -> usize {
            self.1.len()
        }
    }
    let views = tensors
        .iter()
        .map(|(name, t)| {
            let values = Vec::<f32>::try_from(&t.f_reshape([-1])?)?;
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok((name.as_str(), F32(t.size().iter().map(|&d| d as usize).collect(), bytes)))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = Some(HashMap::from([("format".to_owned(), "pt".to_owned())]));
    safetensors::serialize_to_file(views, &metadata, path).map_err(|e| fail(path, format!("{e:?}")))?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}
