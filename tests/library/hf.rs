//! GPT-2 and the Hugging Face format: the configs and their counts, loading `transformers`'
//! files and OpenAI's layout, exporting ours, and parity both ways with the real
//! `transformers` (from the project's venv, `tests/hf_oracle.py`) as the oracle.

use crate::common::{rng_lock, TempDir};
use llm_from_scratch::generate::{generate_batch, Cache, Sampling};
use llm_from_scratch::model::{hf, Activation, Gpt, GptConfig, LanguageModel, Position};
use llm_from_scratch::tokenizer::{
    AnyTokenizer, BpeConfig, BpeTokenizer, CharTokenizer, Specials, Tokenizer, GPT4_PATTERN,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Kind, Tensor};

const TEXT: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n\
                    First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n";

/// Run `tests/hf_oracle.py` with the venv's python (where setup installs transformers).
pub(crate) fn oracle(args: &[&str]) -> String {
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

pub(crate) fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

pub(crate) fn tensor_of(v: &Value) -> Tensor {
    let rows: Vec<Vec<f32>> = serde_json::from_value(v.clone()).expect("rows of floats");
    let n = rows.len() as i64;
    Tensor::from_slice(&rows.concat()).reshape([n, -1])
}

pub(crate) fn logits(model: &Gpt, ids: &[u32]) -> Tensor {
    let idx = Tensor::from_slice(&ids.iter().map(|&i| i as i64).collect::<Vec<_>>()).unsqueeze(0);
    tch::no_grad(|| model.forward(&idx, None, false).unwrap().0.squeeze_dim(0))
}

fn greedy(model: &Gpt, ids: &[u32], n: usize, cache: Cache) -> Vec<u32> {
    generate_batch(model, ids, n, &Sampling::greedy(), &[0], cache, |_| Ok(())).unwrap().remove(0)
}

pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
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

/// The measured side of chapter 9's memory: the process's resident memory and its peak
/// follow a 256 MiB tensor (within 56 MiB: other tests run meanwhile).
#[test]
fn resident_memory_and_its_peak_follow_an_allocation() {
    use llm_from_scratch::device::{reset_peak_memory, resident_memory};
    // The tests that build models hold this lock until their models are freed: none frees
    // a model meanwhile.
    let _rng = rng_lock();
    assert!(reset_peak_memory());
    let (before, _) = resident_memory().expect("Linux reports VmRSS and VmHWM");
    let big = Tensor::ones([64 << 20], (Kind::Float, Device::Cpu)); // 256 MiB, every page written
    let (during, peak) = resident_memory().unwrap();
    assert!(during >= before + (200 << 20) && peak >= during, "{before} -> {during}, peak {peak}");
    assert_eq!(big.size(), [64 << 20]);
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

/// A GPT of `config` with LoRA adapters whose `B` is drawn (as if trained), then merged; its
/// logits checked equal to the adapted model's before the merge.
fn merged_lora(config: GptConfig) -> Gpt {
    let mut model = perturbed(config, 3);
    let ids = [1u32, 2, 3, 4];
    let base = logits(&model, &ids);
    model.add_lora(2, 4.0).unwrap();
    tch::no_grad(|| {
        for (name, mut t) in model.vs.variables() {
            if name.ends_with(".lora_b") {
                let _ = t.normal_(0.0, 0.2);
            }
        }
    });
    let adapted = logits(&model, &ids);
    model.merge_lora().unwrap();
    assert!(max_diff(&adapted, &base) > 1e-3, "the adapters change the model");
    assert!(max_diff(&logits(&model, &ids), &adapted) < 1e-5, "merged = adapted");
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
        // LoRA adapters trained (here: drawn) and merged: an ordinary GPT-2 folder again.
        ("merged_lora", merged_lora(small(chars.vocab_size())), AnyTokenizer::Char(chars.clone())),
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

/// Texts that exercise the pre-split: contractions, runs of spaces, newlines, digits, bytes
/// of several lengths, and the special token.
const TOKENIZER_SAMPLES: &[&str] = &[
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "It's we'll they've   three  spaces\n\n\tand 12345 digits ",
    "héllo wörld, 日本語 🙂 (bytes the corpus never had)",
    "Speak, speak.<|endoftext|>All:\nResolved.",
    "In 1599,  42 ships;   7 sank. x9y 3.14 \t5 ½ ٣ 10,000",
];

#[test]
fn tokenizer_json_files_written_by_tokenizers_and_transformers_load_with_their_ids() {
    let dir = TempDir::new("hf-their-tokenizers");
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, TEXT.repeat(3)).unwrap();
    let samples = dir.join("samples.json");
    std::fs::write(&samples, serde_json::to_string(TOKENIZER_SAMPLES).unwrap()).unwrap();
    let out = dir.join("out");
    let theirs: Value = serde_json::from_str(&oracle(&[
        "tokenizers",
        out.to_str().unwrap(),
        corpus.to_str().unwrap(),
        samples.to_str().unwrap(),
    ]))
    .unwrap();
    // "digits" is of SmolLM2's kind: `Digits` one by one, then `ByteLevel` with its regex.
    for kind in ["tokenizers", "transformers", "digits"] {
        // Neither folder has our llm_tokenizer.json: the tokenizer.json is read.
        let folder = out.join(kind);
        assert!(!folder.join(hf::LLM_TOKENIZER_FILE).exists());
        let Some(AnyTokenizer::Bpe(bpe)) = hf::load_tokenizer(&folder).unwrap() else {
            panic!("{kind}: no byte-level BPE read from {}", folder.display())
        };
        assert_eq!(bpe.vocab_size() as u64, theirs[kind]["vocab_size"].as_u64().unwrap(), "{kind}");
        for (text, ids) in TOKENIZER_SAMPLES.iter().zip(theirs[kind]["ids"].as_array().unwrap()) {
            let ours = bpe.encode_with_specials(text, Specials::AllowAll).unwrap();
            assert_eq!(ours, ids_of(ids), "{kind}: {text:?}");
            assert_eq!(bpe.decode(&ours).unwrap(), *text, "{kind}");
        }
        // The file's numbering survives our own format and our tokenizer.json.
        let again = AnyTokenizer::from_json(&bpe.to_json().unwrap()).unwrap();
        assert_eq!(again, AnyTokenizer::Bpe(bpe.clone()), "{kind}");
        assert_eq!(hf::tokenizer_from_json(&hf::tokenizer_json(&bpe).unwrap()).unwrap(), bpe, "{kind}");
    }
    // `tokenizers` numbers the special token first, so its ids are not ours: a renumbering.
    let Some(AnyTokenizer::Bpe(specials_first)) = hf::load_tokenizer(out.join("tokenizers")).unwrap() else {
        unreachable!()
    };
    assert_eq!(specials_first.special_id(llm_from_scratch::tokenizer::ENDOFTEXT), Some(0));
}

#[test]
fn a_tokenizer_json_ours_would_read_differently_is_refused_by_name() {
    let bpe = BpeTokenizer::train(TEXT, &BpeConfig::new(300).special_tokens(&["<|endoftext|>"])).unwrap();
    let good = hf::tokenizer_json(&bpe).unwrap();
    assert_eq!(hf::tokenizer_from_json(&good).unwrap(), bpe);
    let refused = |change: &dyn Fn(&mut Value), expected: &str| {
        let mut json = good.clone();
        change(&mut json);
        let err = hf::tokenizer_from_json(&json).unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in: {err}");
    };
    refused(&|j| j["normalizer"] = serde_json::json!({"type": "NFC"}), "normalizer \"NFC\"");
    refused(&|j| j["model"]["byte_fallback"] = true.into(), "model.byte_fallback");
    refused(&|j| j["model"]["ignore_merges"] = true.into(), "model.ignore_merges");
    refused(&|j| j["model"]["type"] = "WordPiece".into(), "model type \"WordPiece\"");
    refused(
        &|j| j["pre_tokenizer"] = serde_json::json!({"type": "ByteLevel", "add_prefix_space": true}),
        "add_prefix_space",
    );
    refused(&|j| j["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"}), "\"Whitespace\"");
    refused(
        &|j| {
            j["post_processor"] = serde_json::json!({"type": "TemplateProcessing", "single": [
                {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]})
        },
        "adds tokens",
    );
    refused(&|j| drop(j["model"]["vocab"].as_object_mut().unwrap().remove("Ġ")), "lacks byte 0x20");
    refused(&|j| j["model"]["vocab"]["zzzq"] = 299.into(), "\"zzzq\" (id 299) is neither");
    refused(&|j| j["model"]["merges"][0] = "nosuch token".into(), "is not in the vocabulary");
    // An id far past the vocabulary would size the id table: refused before it is allocated.
    refused(&|j| j["model"]["vocab"]["Ġ"] = 4_000_000_000u64.into(), "ids must be dense");
    // A folder whose tokenizer.json is refused says which file.
    let dir = TempDir::new("hf-bad-tokenizer");
    let mut json = good.clone();
    json["normalizer"] = serde_json::json!({"type": "Lowercase"});
    std::fs::write(dir.join(hf::TOKENIZER_FILE), json.to_string()).unwrap();
    let err = hf::load_tokenizer(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("Lowercase"), "{err}");
}

/// The peak resident memory, in bytes, of `cmd` run to its end (`getrusage`'s `ru_maxrss` of
/// the child, from `wait4`), with what it printed (into `out`); fails the test unless it
/// succeeds.
fn peak_rss(mut cmd: Command, out: &Path) -> (u64, String) {
    let file = || std::fs::OpenOptions::new().create(true).append(true).open(out).unwrap();
    let child = cmd.stdout(file()).stderr(file()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: wait4 on our own child (reaped here, never by `child`), into locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let printed = std::fs::read_to_string(out).unwrap();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status}: {printed}");
    (usage.ru_maxrss as u64 * 1024, printed) // Linux counts kibibytes
}

/// `hf::load_weights` maps the file and copies it a slice at a time: loading a GPT-2 of the
/// 124M size (498 MB in float32, saved by `transformers`) costs one copy of the weights plus
/// working memory, where reading the file whole held nearly three (`llm eval --model`: 1.91
/// GB at its peak before, 1.03 GB now). The cost is the peak above the same command's on a
/// tiny model: libtorch alone is about half a gigabyte of the process (its pages, touched
/// as it loads).
#[test]
fn loading_a_124m_gpt2_costs_one_copy_of_its_weights() {
    let dir = TempDir::new("hf-124m");
    let (big, tiny) = (dir.join("gpt2-124m"), dir.join("tiny"));
    oracle(&["gpt2-124m", big.to_str().unwrap()]);
    let file = std::fs::metadata(big.join(hf::WEIGHTS_FILE)).unwrap().len();
    assert!(file > 490_000_000, "{file} bytes");
    let text = "First Citizen:\nBefore we proceed any further, hear me speak.\n";
    let chars = AnyTokenizer::Char(CharTokenizer::from_text(text));
    {
        let _rng = rng_lock(); // initial weights draw from the global generator
        let config = GptConfig {
            vocab_size: 128,
            block_size: 16,
            n_layer: 1,
            n_head: 2,
            n_embd: 16,
            ..GptConfig::gpt2()
        };
        hf::export(&Gpt::new(config, Device::Cpu).unwrap(), &chars, &tiny).unwrap();
    }
    // A character tokenizer beside the big one too (GPT-2's ranks are not fetched offline):
    // ids 0..20 are as good as any for measuring memory.
    chars.save(&big.join(hf::LLM_TOKENIZER_FILE)).unwrap();
    std::fs::write(dir.join("text.txt"), text).unwrap();
    let peak = |model: &Path| {
        let mut eval = Command::new(env!("CARGO_BIN_EXE_llm"));
        eval.args(["eval", "--model"])
            .arg(model)
            .arg("--input")
            .arg(dir.join("text.txt"))
            .args(["--device", "cpu"]);
        let (peak, printed) = peak_rss(eval, &model.with_extension("out"));
        assert!(printed.contains("loss "), "{printed}");
        peak
    };
    let (baseline, loaded) = (peak(&tiny), peak(&big));
    let cost = loaded.saturating_sub(baseline) as f64 / file as f64;
    eprintln!("llm eval --model, peak RSS: {loaded} bytes with the 124M model ({file} bytes of weights), {baseline} with a tiny one: {cost:.2}× the file");
    assert!(cost <= 1.25, "loading cost {cost:.2}× the {file}-byte file ({loaded} bytes against {baseline})");
}
