//! GPT-2 and the Hugging Face format: the configs and their counts, loading `transformers`'
//! files and OpenAI's layout, exporting ours, and parity both ways with the real
//! `transformers` (from the project's venv, `tests/hf_oracle.py`) as the oracle.

use crate::common::{rng_lock, TempDir};
use llm_from_scratch::generate::{generate_batch, Cache, Sampling};
use llm_from_scratch::model::{hf, Activation, Gpt, GptConfig, LanguageModel, Position};
use llm_from_scratch::tokenizer::{
    AnyTokenizer, BpeConfig, BpeTokenizer, CharTokenizer, Tokenizer, GPT4_PATTERN,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Kind, Tensor};

const TEXT: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n\
                    First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n";

/// Run `tests/hf_oracle.py` with the venv's python (where setup installs transformers).
fn oracle(args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    let out = Command::new(&python)
        .arg(root.join("tests/hf_oracle.py"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (make setup installs it)", python.display()));
    assert!(out.status.success(), "hf_oracle.py {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn tensor_of(v: &Value) -> Tensor {
    let rows: Vec<Vec<f32>> = serde_json::from_value(v.clone()).expect("rows of floats");
    let n = rows.len() as i64;
    Tensor::from_slice(&rows.concat()).reshape([n, -1])
}

fn logits(model: &Gpt, ids: &[u32]) -> Tensor {
    let idx = Tensor::from_slice(&ids.iter().map(|&i| i as i64).collect::<Vec<_>>()).unsqueeze(0);
    tch::no_grad(|| model.forward(&idx, None, false).unwrap().0.squeeze_dim(0))
}

fn greedy(model: &Gpt, ids: &[u32], n: usize, cache: Cache) -> Vec<u32> {
    generate_batch(model, ids, n, &Sampling::greedy(), &[0], cache, |_| Ok(())).unwrap().remove(0)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn gpt2_configs_have_the_published_parameter_counts() {
    let _rng = rng_lock(); // initial weights draw from the global generator
    let model = Gpt::new(GptConfig::gpt2(), Device::Cpu).unwrap();
    assert_eq!(model.num_params(), 124_439_808);
    assert_eq!(GptConfig::gpt2().num_params(), 124_439_808);
    assert_eq!(GptConfig::gpt2_medium().num_params(), 354_823_168);
    assert_eq!(GptConfig::gpt2_large().num_params(), 774_030_080);
    assert_eq!(GptConfig::gpt2_xl().num_params(), 1_557_611_200);
    let c = GptConfig::gpt2();
    assert_eq!((c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_embd), (50_257, 1024, 12, 12, 768));
    assert_eq!((c.bias, c.qkv_bias, c.tie_weights, c.lm_head_bias), (true, true, true, false));
    assert_eq!(c.activation, Activation::GeluTanh);
    // The count from the sizes alone is the count of the built model, for every switch.
    let small =
        GptConfig { vocab_size: 50, block_size: 8, n_layer: 2, n_head: 2, n_embd: 16, ..GptConfig::gpt2() };
    for config in [
        small.clone(),
        GptConfig { bias: false, qkv_bias: false, ..small.clone() },
        GptConfig { tie_weights: false, lm_head_bias: true, d_ff: Some(24), ..small.clone() },
        GptConfig { position: Position::Sinusoidal, ..small.clone() },
        GptConfig { vocab_size: 65, ..GptConfig::lecture() },
    ] {
        assert_eq!(
            config.num_params(),
            Gpt::new(config.clone(), Device::Cpu).unwrap().num_params(),
            "{config:?}"
        );
    }
}

#[test]
fn a_model_too_big_for_memory_is_refused_before_it_is_allocated() {
    let huge = GptConfig { n_layer: 64, n_embd: 16_384, n_head: 16, ..GptConfig::gpt2() };
    assert!(huge.num_params() > 200_000_000_000);
    let err = Gpt::new(huge, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("needs 82") && err.contains("GB for its weights alone"), "{err}");
    // Training takes the weights four times over, plus activations that grow with the batch.
    let gpt2 = GptConfig::gpt2();
    assert!(gpt2.training_bytes(1, 1024) > 16 * 124_439_808);
    assert!(gpt2.training_bytes(12, 1024) > 10 * (gpt2.training_bytes(1, 1024) - 16 * 124_439_808));
}

#[test]
fn tanh_gelu_is_the_approximation_and_differs_from_the_exact_one() {
    let _rng = rng_lock(); // initial weights draw from the global generator
    let x = Tensor::linspace(-4.0, 4.0, 81, (Kind::Float, Device::Cpu));
    let by_formula = &x
        * 0.5
        * (((&x + x.pow_tensor_scalar(3) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt()).tanh() + 1.0);
    assert!(max_diff(&Activation::GeluTanh.apply(&x), &by_formula) < 1e-6);
    let gap = max_diff(&Activation::GeluTanh.apply(&x), &Activation::Gelu.apply(&x));
    assert!(gap > 1e-4 && gap < 1e-2, "tanh vs exact GELU: {gap}");
}

#[test]
fn a_gpt2_saved_by_transformers_gives_the_same_logits_and_greedy_text_here() {
    let _rng = rng_lock(); // initial weights draw from the global generator
    let dir = TempDir::new("hf-load");
    oracle(&["make", dir.path().to_str().unwrap()]);
    let expected = read_json(&dir.join("expected.json"));
    let model = hf::load(dir.path(), Device::Cpu).unwrap();
    assert_eq!(model.config.activation, Activation::GeluTanh);
    assert_eq!((model.config.n_layer, model.config.block_size, model.config.vocab_size), (2, 24, 101));
    let ids = ids_of(&expected["ids"]);
    let diff = max_diff(&logits(&model, &ids), &tensor_of(&expected["logits"]));
    assert!(diff < 1e-4, "logits differ from transformers' by {diff}");
    // 30 tokens from 10: past n_positions (24), where the window moves.
    let want = ids_of(&expected["greedy"]);
    assert_eq!(greedy(&model, &ids, 30, Cache::On), want);
    assert_eq!(greedy(&model, &ids, 30, Cache::Off), want);

    // OpenAI's own layout: no `transformer.` prefix, the causal-mask buffers, and a tied
    // lm_head.weight kept in the file. It loads to the same model.
    let openai = TempDir::new("hf-openai-layout");
    let mut tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(dir.join(hf::WEIGHTS_FILE))
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name.strip_prefix("transformer.").unwrap_or(&name).to_owned(), t))
        .collect();
    for i in 0..2 {
        tensors.push((
            format!("h.{i}.attn.bias"),
            Tensor::ones([1, 1, 24, 24], (Kind::Float, Device::Cpu)).tril(0),
        ));
        tensors.push((format!("h.{i}.attn.masked_bias"), Tensor::from(-1e4f32)));
    }
    let wte = tensors.iter().find(|(n, _)| n == "wte.weight").unwrap().1.shallow_clone();
    tensors.push(("lm_head.weight".into(), wte));
    Tensor::write_safetensors(&tensors, openai.join(hf::WEIGHTS_FILE)).unwrap();
    std::fs::copy(dir.join(hf::CONFIG_FILE), openai.join(hf::CONFIG_FILE)).unwrap();
    let again = hf::load(openai.join(hf::WEIGHTS_FILE), Device::Cpu).unwrap();
    assert_eq!(logits(&again, &ids).equal(&logits(&model, &ids)), true);
}

/// A model of `config` with every weight moved off its initial value (biases included), so
/// that a tensor mapped to the wrong place shows in the logits.
fn perturbed(config: GptConfig, seed: i64) -> Gpt {
    tch::manual_seed(seed);
    let model = Gpt::new(config, Device::Cpu).unwrap();
    tch::no_grad(|| {
        for mut t in model.vs.trainable_variables() {
            let noise = t.randn_like() * 0.05;
            let _ = t.f_add_(&noise).unwrap();
        }
    });
    model
}

#[test]
fn our_models_exported_load_in_transformers_with_the_same_logits_greedy_text_and_tokenizer() {
    let _rng = rng_lock(); // initial weights draw from the global generator
    let base = TempDir::new("hf-export");
    let bpe = BpeTokenizer::train(
        TEXT,
        &BpeConfig::new(300).pattern(Some(GPT4_PATTERN)).special_tokens(&["<|endoftext|>"]),
    )
    .unwrap();
    let chars = CharTokenizer::from_text(TEXT);
    let small = |vocab_size: usize| GptConfig {
        vocab_size,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 24,
        dropout: 0.1,
        ..GptConfig::shakespeare_char()
    };
    // nanoGPT's architecture (no biases, tied head, exact GELU, a d_ff of its own) with a BPE
    // tokenizer; and an untied model with biases but none in q/k/v, ReLU, with characters.
    let cases: Vec<(&str, Gpt, AnyTokenizer)> = vec![
        (
            "nanogpt",
            perturbed(GptConfig { d_ff: Some(40), ..small(bpe.vocab_size()) }, 1),
            AnyTokenizer::Bpe(bpe.clone()),
        ),
        (
            "untied",
            perturbed(
                GptConfig {
                    bias: true,
                    qkv_bias: false,
                    activation: Activation::Relu,
                    tie_weights: false,
                    ..small(chars.vocab_size())
                },
                2,
            ),
            AnyTokenizer::Char(chars.clone()),
        ),
    ];
    let mut folders = Vec::new();
    for (name, model, tokenizer) in &cases {
        let dir = base.join(name);
        hf::export(model, tokenizer, &dir).unwrap();
        let ids = tokenizer.encode("All:\nSpeak").unwrap();
        let case = serde_json::json!({"ids": ids, "new_tokens": 24, "text": TEXT});
        std::fs::write(dir.join("ids.json"), case.to_string()).unwrap();
        folders.push(dir);
    }
    let args: Vec<&str> =
        std::iter::once("check").chain(folders.iter().map(|d| d.to_str().unwrap())).collect();
    let results: Value = serde_json::from_str(&oracle(&args)).expect("oracle JSON");

    for ((name, model, tokenizer), dir) in cases.iter().zip(&folders) {
        let theirs = &results[dir.to_str().unwrap()];
        let ids = tokenizer.encode("All:\nSpeak").unwrap();
        let diff = max_diff(&logits(model, &ids), &tensor_of(&theirs["logits"]));
        assert!(diff < 1e-4, "{name}: transformers' logits differ by {diff}");
        assert_eq!(ids_of(&theirs["greedy"]), greedy(model, &ids, 24, Cache::On), "{name}: greedy text");
        let [before, after] = [0, 1].map(|i| theirs["train_step"][i].as_f64().unwrap());
        assert!(after < before, "{name}: a transformers training step went from {before} to {after}");
        // llm reads the folder back: the same model and tokenizer.
        let back = hf::load(dir, Device::Cpu).unwrap();
        assert!(max_diff(&logits(&back, &ids), &logits(model, &ids)) < 1e-6, "{name}: loaded back");
        assert_eq!(hf::load_tokenizer(dir).unwrap().as_ref(), Some(tokenizer), "{name}: tokenizer back");
    }
    // AutoTokenizer gives our ids, and decodes them to the text.
    let theirs = &results[folders[0].to_str().unwrap()];
    assert_eq!(ids_of(&theirs["tokenizer_ids"]), bpe.encode(TEXT).unwrap());
    assert_eq!(theirs["decoded"].as_str(), Some(TEXT));
    assert!(!folders[1].join(hf::TOKENIZER_FILE).exists(), "a character tokenizer has no tokenizer.json");
}

#[test]
fn the_exported_tokenizer_json_encodes_as_ours_in_the_tokenizers_library() {
    let _rng = rng_lock(); // initial weights draw from the global generator
    let dir = TempDir::new("hf-tokenizer-json");
    let text = format!("{TEXT} Don't   stop: 12345 héllo 🙂\n\n  tabs\there");
    for pattern in [Some(llm_from_scratch::tokenizer::GPT2_PATTERN), Some(GPT4_PATTERN), None] {
        let bpe = BpeTokenizer::train(&text, &BpeConfig::new(330).pattern(pattern)).unwrap();
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, hf::tokenizer_json(&bpe).unwrap().to_string()).unwrap();
        let theirs = tokenizers::Tokenizer::from_file(&path).unwrap();
        let encoding = theirs.encode(text.as_str(), false).unwrap();
        assert_eq!(encoding.get_ids(), bpe.encode(&text).unwrap().as_slice(), "pattern {pattern:?}");
        assert_eq!(theirs.decode(encoding.get_ids(), false).unwrap(), text);
    }
}

#[test]
fn what_gpt2_cannot_express_is_refused_by_name() {
    let _rng = rng_lock(); // initial weights draw from the global generator
    let dir = TempDir::new("hf-refuse");
    let chars = AnyTokenizer::Char(CharTokenizer::from_text(TEXT));
    let tiny = GptConfig {
        vocab_size: chars.vocab_size(),
        block_size: 8,
        n_layer: 1,
        n_head: 2,
        n_embd: 8,
        ..GptConfig::lecture()
    };
    let out = dir.join("out");
    let lecture = Gpt::new(tiny.clone(), Device::Cpu).unwrap();
    let err = hf::export(&lecture, &chars, &out).unwrap_err().to_string();
    assert!(err.contains("lm_head_bias"), "{err}");
    let sinusoidal = Gpt::new(
        GptConfig { lm_head_bias: false, position: Position::Sinusoidal, ..tiny.clone() },
        Device::Cpu,
    )
    .unwrap();
    let err = hf::export(&sinusoidal, &chars, &out).unwrap_err().to_string();
    assert!(err.contains("position = sinusoidal"), "{err}");
    assert!(!out.exists(), "a refused export writes nothing");
    // A folder that is not an export is never replaced.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let ok = Gpt::new(GptConfig { lm_head_bias: false, ..tiny }, Device::Cpu).unwrap();
    let err = hf::export(&ok, &chars, &out).unwrap_err().to_string();
    assert!(err.contains("not a model folder written by export"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
}

#[test]
fn weights_that_do_not_fit_the_config_name_the_first_bad_tensor() {
    let _rng = rng_lock(); // initial weights draw from the global generator
    let dir = TempDir::new("hf-bad");
    let chars = AnyTokenizer::Char(CharTokenizer::from_text(TEXT));
    let config = GptConfig {
        vocab_size: chars.vocab_size(),
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        ..GptConfig::gpt2()
    };
    let model = Gpt::new(config.clone(), Device::Cpu).unwrap();
    let good = dir.join("good");
    hf::export(&model, &chars, &good).unwrap();
    let weights = good.join(hf::WEIGHTS_FILE);
    let load = |config: GptConfig| {
        let mut m = Gpt::new(config, Device::Cpu).unwrap();
        hf::load_weights(&mut m, &weights).map(|()| m).unwrap_err().to_string()
    };
    // Another size: a wider model, a deeper one, a shallower one.
    let err = load(GptConfig { n_embd: 16, ..config.clone() });
    assert!(err.contains("h.0.attn.c_attn.bias is [24] where a GPT-2 of this size"), "{err}");
    let err = load(GptConfig { n_layer: 3, ..config.clone() });
    assert!(err.contains("no tensor h.2.attn.c_attn.bias [24]"), "{err}");
    let err = load(GptConfig { n_layer: 1, ..config.clone() });
    assert!(err.contains("unexpected tensor h.1."), "{err}");
    // Not a safetensors file at all.
    let junk: PathBuf = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors").unwrap();
    let mut m = Gpt::new(config.clone(), Device::Cpu).unwrap();
    let err = hf::load_weights(&mut m, &junk).unwrap_err().to_string();
    assert!(err.contains("junk.safetensors"), "{err}");
    // A config.json for another architecture.
    std::fs::write(good.join(hf::CONFIG_FILE), r#"{"model_type": "llama"}"#).unwrap();
    let err = hf::load(&good, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("model_type is \"llama\""), "{err}");
}
