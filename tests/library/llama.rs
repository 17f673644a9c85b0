//! The Llama-style model and its layers: RMSNorm, rotary positions, SwiGLU and grouped-query
//! attention, each against its formula written out; the published models' parameter counts;
//! the KV cache of the key/value heads only.

use crate::common::rng_lock;
use llm_from_scratch::data::TokenData;
use llm_from_scratch::device;
use llm_from_scratch::generate::{generate_batch, Cache, Sampling};
use llm_from_scratch::model::layers::{GroupedQueryAttention, RmsNorm, RopeScaling, Rotary, SwiGlu};
use llm_from_scratch::model::{LanguageModel, Llama, LlamaConfig};
use llm_from_scratch::tokenizer::{
    AnyTokenizer, BpeConfig, BpeTokenizer, CharTokenizer, Tokenizer, ENDOFTEXT,
};
use llm_from_scratch::train::{TrainConfig, Trainer};
use tch::{nn, Device, Kind, Tensor};

fn close(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn tiny() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 20,
        block_size: 16,
        n_layer: 2,
        n_head: 4,
        n_kv_head: 2,
        n_embd: 32,
        intermediate_size: 40,
        tie_word_embeddings: false,
        ..LlamaConfig::cpu_small()
    }
}

#[test]
fn the_published_configs_have_their_parameter_counts() {
    assert_eq!(LlamaConfig::smollm2_135m().num_params(), 134_515_008);
    assert_eq!(LlamaConfig::llama_3_2_1b().num_params(), 1_235_814_400);
    // The CPU size: its SwiGLU holds what the GPT's GELU MLP holds, to 0.2%.
    let gpt = llm_from_scratch::model::GptConfig::cpu_small();
    let llama = LlamaConfig::cpu_small();
    assert_eq!((llama.n_layer, llama.n_head, llama.n_kv_head, llama.intermediate_size), (4, 4, 2, 342));
    let (swiglu, gelu) = (3 * 128 * llama.intermediate_size, 2 * 128 * gpt.mlp_width());
    assert!((swiglu as f64 / gelu as f64 - 1.0).abs() < 0.002, "{swiglu} vs {gelu}");
    // Counted from the config, and from the model built.
    let _lock = rng_lock();
    for config in [LlamaConfig::cpu_small(), LlamaConfig { tie_word_embeddings: true, ..tiny() }, tiny()] {
        let model = Llama::new(config.clone(), Device::Cpu).unwrap();
        assert_eq!(model.num_params(), config.num_params(), "{config:?}");
    }
    let names: Vec<String> = Llama::new(tiny(), Device::Cpu).unwrap().vs.variables().into_keys().collect();
    for name in [
        "model.embed_tokens.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
    ] {
        assert!(names.contains(&name.to_owned()), "{name} in {names:?}");
    }
    let bad = LlamaConfig { n_kv_head: 3, ..tiny() };
    assert!(Llama::new(bad, Device::Cpu).unwrap_err().to_string().contains("multiple of n_kv_head (3)"));
}

#[test]
fn rms_norm_divides_by_the_root_mean_square() {
    let _lock = rng_lock();
    device::seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut norm = RmsNorm::new(&vs.root(), 8, 1e-5);
    tch::no_grad(|| norm.weight.copy_(&Tensor::linspace(0.5, 2.0, 8, (Kind::Float, Device::Cpu))));
    let x = Tensor::randn([2, 3, 8], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
    let by_hand = &x / (x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float) + 1e-5).sqrt() * &norm.weight;
    assert!(close(&norm.forward(&x).unwrap(), &by_hand) < 1e-5);
    // Unlike LayerNorm it keeps the mean: a constant row stays (nearly) itself.
    let ones = Tensor::ones([1, 1, 8], (Kind::Float, Device::Cpu)) * 2.0;
    let plain = RmsNorm::new(&nn::VarStore::new(Device::Cpu).root(), 8, 1e-5);
    assert!(
        close(&plain.forward(&ones).unwrap(), &Tensor::ones([1, 1, 8], (Kind::Float, Device::Cpu))) < 1e-5
    );
}

#[test]
fn a_rotary_score_depends_only_on_the_distance() {
    let _lock = rng_lock();
    device::seed(2);
    let rotary = Rotary::new(64, 16, 10_000.0, Device::Cpu).unwrap();
    let (q, k) = (
        Tensor::randn([1, 1, 1, 16], (Kind::Float, Device::Cpu)),
        Tensor::randn([1, 1, 1, 16], (Kind::Float, Device::Cpu)),
    );
    let score = |m: usize, n: usize| {
        (rotary.apply(&q, m).unwrap() * rotary.apply(&k, n).unwrap()).sum(Kind::Float).double_value(&[])
    };
    for (m, n) in [(5, 2), (9, 1), (30, 30)] {
        for shift in [1, 7, 20] {
            let (a, b) = (score(m, n), score(m + shift, n + shift));
            assert!((a - b).abs() < 1e-4, "({m}, {n}) {a} vs shifted by {shift}: {b}");
        }
    }
    assert!((score(5, 2) - score(9, 1)).abs() > 1e-3, "another distance, another score");
    // Position 0 turns nothing; a rotation keeps the length.
    assert!(close(&rotary.apply(&q, 0).unwrap(), &q) < 1e-6);
    assert!(
        (rotary.apply(&q, 13).unwrap().norm().double_value(&[]) - q.norm().double_value(&[])).abs() < 1e-4
    );
    assert!(rotary.apply(&q, 64).is_err(), "beyond the tables");
    assert!(Rotary::new(8, 15, 10_000.0, Device::Cpu).is_err(), "an odd head size");
}

#[test]
fn llama_3_rotary_scaling_slows_only_the_slow_pairs() {
    // Llama 3.2 1B's: heads of 64 channels, base 500,000, stretched 32 times from 8,192.
    let scaling = LlamaConfig::llama_3_2_1b().rope_scaling.unwrap();
    let (mut kept, mut between, mut slowed) = (0, 0, 0);
    for i in 0..32 {
        let frequency = 500_000f64.powf(-2.0 * i as f64 / 64.0);
        let (scaled, wavelength) = (scaling.scale(frequency), 2.0 * std::f64::consts::PI / frequency);
        if wavelength < 8_192.0 / 4.0 {
            assert_eq!(scaled, frequency, "pair {i} turns within 2,048 positions: kept");
            kept += 1;
        } else if wavelength > 8_192.0 {
            assert!((scaled - frequency / 32.0).abs() < 1e-12 * frequency, "pair {i}: 32 times slower");
            slowed += 1;
        } else {
            assert!(scaled > frequency / 32.0 && scaled < frequency, "pair {i}: in between");
            between += 1;
        }
    }
    assert_eq!((kept, between, slowed), (15, 3, 14));
    // The tables are built from the scaled frequencies: position 10 of the slowest pair of a
    // small head turns a quarter as far; the score still depends only on the distance.
    let small = RopeScaling {
        factor: 4.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 16,
    };
    let plain = Rotary::new(32, 8, 10_000.0, Device::Cpu).unwrap();
    let stretched = Rotary::scaled(32, 8, 10_000.0, Some(&small), Device::Cpu).unwrap();
    let angle = |rotary: &Rotary| rotary.sin.double_value(&[10, 3]).asin();
    assert!(
        (angle(&stretched) - angle(&plain) / 4.0).abs() < 1e-6,
        "{} vs {}",
        angle(&stretched),
        angle(&plain)
    );
    let _lock = rng_lock();
    device::seed(4);
    let (q, k) = (
        Tensor::randn([1, 1, 1, 8], (Kind::Float, Device::Cpu)),
        Tensor::randn([1, 1, 1, 8], (Kind::Float, Device::Cpu)),
    );
    let score = |m: usize, n: usize| {
        (stretched.apply(&q, m).unwrap() * stretched.apply(&k, n).unwrap()).sum(Kind::Float).double_value(&[])
    };
    assert!((score(7, 3) - score(27, 23)).abs() < 1e-4);
    let backwards = RopeScaling { low_freq_factor: 4.0, high_freq_factor: 1.0, ..small };
    let err = Rotary::scaled(8, 8, 10_000.0, Some(&backwards), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("low_freq_factor < high_freq_factor"), "{err}");
}

#[test]
fn swiglu_and_grouped_query_attention_equal_their_formulas() {
    let _lock = rng_lock();
    device::seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let x = Tensor::randn([2, 6, 32], (Kind::Float, Device::Cpu));
    let mlp = SwiGlu::new(&(vs.root() / "mlp"), 32, 40, 0.02);
    let by_hand = (x.matmul(&mlp.gate_proj.ws.tr()).silu() * x.matmul(&mlp.up_proj.ws.tr()))
        .matmul(&mlp.down_proj.ws.tr());
    assert!(close(&mlp.forward(&x), &by_hand) < 1e-6);

    // 4 query heads of 8 channels reading 2 key/value heads: heads 0 and 1 read key head 0.
    let attn = GroupedQueryAttention::new(&(vs.root() / "attn"), 32, 4, 2, 0.02).unwrap();
    let rotary = Rotary::new(16, 8, 10_000.0, Device::Cpu).unwrap();
    let heads = |z: Tensor, n: i64| z.view([2, 6, n, 8]).transpose(1, 2);
    let q = rotary.apply(&heads(x.matmul(&attn.q_proj.ws.tr()), 4), 0).unwrap();
    let k = rotary
        .apply(&heads(x.matmul(&attn.k_proj.ws.tr()), 2), 0)
        .unwrap()
        .repeat_interleave_self_int(2, 1, None);
    let v = heads(x.matmul(&attn.v_proj.ws.tr()), 2).repeat_interleave_self_int(2, 1, None);
    let future = Tensor::ones([6, 6], (Kind::Bool, Device::Cpu)).tril(0).logical_not();
    let att = (q.matmul(&k.transpose(-2, -1)) / 8f64.sqrt())
        .masked_fill(&future, f64::NEG_INFINITY)
        .softmax(-1, Kind::Float);
    let y = att.matmul(&v).transpose(1, 2).contiguous().view([2, 6, 32]).matmul(&attn.o_proj.ws.tr());
    assert!(close(&attn.forward(&x, &rotary).unwrap(), &y) < 1e-5);
}

#[test]
fn the_kv_cache_holds_the_key_value_heads_and_gives_the_same_logits() {
    let _lock = rng_lock();
    device::seed(4);
    let model = Llama::new(tiny(), Device::Cpu).unwrap();
    let idx = Tensor::randint(20, [2, 12], (Kind::Int64, Device::Cpu));
    let full = tch::no_grad(|| model.forward(&idx, None, false).unwrap().0); // [2, 12, 20]
    let mut cache = model.kv_cache(2).unwrap().unwrap();
    // 2 layers × keys and values × 2 sequences × 2 heads × 16 positions × 8 channels × 4 bytes:
    // half of what 4 heads would take.
    assert_eq!(cache.bytes(), 2 * 2 * 2 * 2 * 16 * 8 * 4);
    assert_eq!(tiny().kv_cache_bytes_per_token(), 2 * 2 * 2 * 8 * 4);
    assert_eq!(LlamaConfig::smollm2_135m().kv_cache_bytes_per_token(), 46_080); // 3 of 9 heads
    let mut pieces = Vec::new();
    for (start, len) in [(0, 5), (5, 1), (6, 1), (7, 3), (10, 2)] {
        pieces.push(model.forward_cached(&idx.narrow(1, start, len), &mut cache).unwrap());
    }
    assert!(close(&Tensor::cat(&pieces, 1), &full) < 1e-5, "{}", close(&Tensor::cat(&pieces, 1), &full));
    assert!(model.forward_cached(&idx.narrow(1, 0, 5), &mut cache).is_err(), "past the context");
    // Greedy text, with and without the cache, past the context.
    let prompt = [3u32, 1, 4];
    let with = generate_batch(&model, &prompt, 30, &Sampling::greedy(), &[0], Cache::On, |_| Ok(())).unwrap();
    let without =
        generate_batch(&model, &prompt, 30, &Sampling::greedy(), &[0], Cache::Off, |_| Ok(())).unwrap();
    assert_eq!(with, without);
}

#[test]
fn the_trainer_trains_a_llama() {
    let _lock = rng_lock();
    device::seed(5);
    let ids: Vec<u32> = (0..4000).map(|i| ((i * 7) % 20) as u32).collect(); // a pattern to learn
    let data = TokenData::new(&ids, 0.9).unwrap();
    let model = Llama::new(tiny(), Device::Cpu).unwrap();
    let config = TrainConfig {
        steps: 60,
        batch_size: 8,
        block_size: 16,
        lr: 3e-3,
        eval_interval: 60,
        eval_iters: 4,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&model, config).unwrap();
    trainer.run(&model, &data, |_| {}).unwrap();
    let points = &trainer.history().points;
    let (first, last) = (points.first().unwrap().val_loss, points.last().unwrap().val_loss);
    assert!((first - 20f64.ln()).abs() < 0.3, "at init, about ln(20): {first}");
    assert!(last < 0.5, "a pattern of period 20 is learnt: {last}");
}

#[test]
fn llama_models_saved_by_transformers_load_with_the_same_logits_and_greedy_text() {
    use crate::common::TempDir;
    use crate::hf::{ids_of, oracle};
    let dir = TempDir::new("llama-hf");
    oracle(&["llama", dir.path().to_str().unwrap()]);
    // Grouped (2 of 4 heads) and tied, with Llama 3's rotary base; multi-head and untied;
    // multi-query (1 of 4) with Llama 3's rotary scaling.
    let scaling = RopeScaling {
        factor: 4.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 16,
    };
    for (case, kv_heads, tied, theta) in
        [("gqa", "2", "1", "500000"), ("mha", "4", "0", "10000"), ("llama3", "1", "1", "10000")]
    {
        let folder = dir.join(case);
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(folder.join("expected.json")).unwrap()).unwrap();
        let model = llm_from_scratch::model::hf::load_llama(&folder, Device::Cpu).unwrap();
        assert_eq!(
            (model.config.n_kv_head, model.config.tie_word_embeddings),
            (kv_heads.parse().unwrap(), tied == "1")
        );
        assert_eq!(model.config.rope_theta, theta.parse::<f64>().unwrap());
        assert_eq!(model.config.rope_scaling, (case == "llama3").then_some(scaling), "{case}");
        let ids = ids_of(&expected["ids"]);
        let idx = Tensor::from_slice(&ids.iter().map(|&i| i as i64).collect::<Vec<_>>()).unsqueeze(0);
        let logits = tch::no_grad(|| model.forward(&idx, None, false).unwrap().0).squeeze_dim(0);
        let theirs: Vec<Vec<f32>> = serde_json::from_value(expected["logits"].clone()).unwrap();
        let theirs = Tensor::from_slice2(&theirs);
        assert!(close(&logits, &theirs) < 1e-4, "{case}: logits differ by {}", close(&logits, &theirs));
        for cache in [Cache::On, Cache::Off] {
            let greedy =
                generate_batch(&model, &ids, 10, &Sampling::greedy(), &[0], cache, |_| Ok(())).unwrap();
            assert_eq!(greedy[0], ids_of(&expected["greedy"]), "{case}, {cache:?}");
        }
    }
    // The scaling as Llama 3.2's own config.json writes it (`rope_scaling` and `rope_theta`
    // beside the rest) gives the same model; without it the logits move.
    let folder = dir.join("llama3");
    let logits_of = |config: &serde_json::Value| {
        std::fs::write(folder.join("config.json"), config.to_string()).unwrap();
        let model = llm_from_scratch::model::hf::load_llama(&folder, Device::Cpu).unwrap();
        let idx = Tensor::from_slice(&[5i64, 17, 3, 99, 42, 8, 0, 61, 23, 11, 70, 2, 19, 4, 33, 90, 27, 6])
            .unsqueeze(0);
        tch::no_grad(|| model.forward(&idx, None, false).unwrap().0)
    };
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("config.json")).unwrap()).unwrap();
    let mut legacy = saved.clone();
    let rope = legacy.as_object_mut().unwrap().remove("rope_parameters").unwrap();
    legacy["rope_theta"] = rope["rope_theta"].clone();
    legacy["rope_scaling"] = rope;
    let mut unscaled = legacy.clone();
    unscaled["rope_scaling"] = serde_json::Value::Null;
    assert_eq!(close(&logits_of(&legacy), &logits_of(&saved)), 0.0);
    assert!(close(&logits_of(&unscaled), &logits_of(&saved)) > 1e-3, "the scaling changes the logits");
    let mut yarn = legacy.clone();
    yarn["rope_scaling"]["rope_type"] = "yarn".into();
    std::fs::write(folder.join("config.json"), yarn.to_string()).unwrap();
    let err = llm_from_scratch::model::hf::load_llama(&folder, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("rotary type = \"yarn\": not a model this course builds"), "{err}");

    // `llm` reads a Llama folder too, with the tokenizer beside it, and writes one back.
    let folder = dir.join("gqa");
    let letters: String = (0x400..0x400 + 101).filter_map(char::from_u32).collect(); // a token each
    CharTokenizer::from_text(&letters).save(&folder.join("llm_tokenizer.json")).unwrap();
    std::fs::write(dir.join("text.txt"), &letters[..40]).unwrap();
    let llm = |args: &[&str]| {
        let out = crate::common::llm(dir.path(), args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let prompt: String = letters.chars().take(2).collect();
    let sample = llm(&[
        "sample",
        "--model",
        "gqa",
        "--prompt",
        &prompt,
        "--max-new-tokens",
        "5",
        "--top-k",
        "1",
        "--device",
        "cpu",
    ]);
    assert_eq!(sample.trim_end_matches('\n').chars().count(), 7, "{sample:?}");
    assert!(llm(&["eval", "--model", "gqa", "--input", "text.txt", "--device", "cpu"]).starts_with("loss "));
    llm(&["export", "--model", "gqa", "--out", "again", "--device", "cpu"]);
    let again = llm_from_scratch::model::hf::load_llama(dir.join("again"), Device::Cpu).unwrap();
    assert_eq!(again.config.n_kv_head, 2);

    // What the model here does not have is refused by name.
    let config = std::fs::read_to_string(folder.join("config.json")).unwrap();
    std::fs::write(folder.join("config.json"), config.replace("\"mlp_bias\": false", "\"mlp_bias\": true"))
        .unwrap();
    let err = llm_from_scratch::model::hf::load_llama(&folder, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("mlp_bias = true: not a model this course builds"), "{err}");
}

#[test]
fn our_llama_exported_loads_in_transformers_with_the_same_logits_greedy_text_and_tokenizer() {
    use crate::common::TempDir;
    use crate::hf::{ids_of, oracle};
    let dir = TempDir::new("llama-export");
    let _lock = rng_lock();
    device::seed(6);
    // With Llama 3's rotary scaling, from a context of 8 (tiny's is 16).
    let scaling = RopeScaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8,
    };
    let config =
        LlamaConfig { rope_theta: 500_000.0, vocab_size: 300, rope_scaling: Some(scaling), ..tiny() };
    let model = Llama::new(config, Device::Cpu).unwrap();
    // A byte-level BPE of the model's vocabulary (its last id <|endoftext|>), written beside it.
    let text = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer";
    let bpe =
        BpeTokenizer::train(text, &BpeConfig::new(model.config.vocab_size).special_tokens(&[ENDOFTEXT]))
            .unwrap();
    let end_of_text = bpe.special_id(ENDOFTEXT).unwrap();
    let tokenizer = AnyTokenizer::Bpe(bpe);
    let folder = dir.join("ours");
    llm_from_scratch::model::hf::export_llama(&model, &tokenizer, &folder).unwrap();
    let ids: Vec<u32> = vec![3, 1, 4, 1, 5, 9, 2, 6];
    let case = serde_json::json!({"ids": ids, "new_tokens": 6, "text": text});
    std::fs::write(folder.join("ids.json"), case.to_string()).unwrap();
    let theirs: serde_json::Value =
        serde_json::from_str(&oracle(&["check-llama", folder.to_str().unwrap()])).unwrap();
    // The tokenizer: AutoTokenizer's ids are ours, the config names our end of text, and the
    // folder's tokenizer loads here as the one written.
    assert_eq!(ids_of(&theirs["tokenizer_ids"]), tokenizer.encode(text).unwrap());
    assert_eq!(theirs["decoded"], text);
    assert_eq!(theirs["eos_token_id"], end_of_text);
    let loaded = llm_from_scratch::model::hf::load_tokenizer(&folder).unwrap().unwrap();
    assert_eq!(loaded.encode(text).unwrap(), tokenizer.encode(text).unwrap());
    let idx = Tensor::from_slice(&ids.iter().map(|&i| i as i64).collect::<Vec<_>>()).unsqueeze(0);
    let ours = tch::no_grad(|| model.forward(&idx, None, false).unwrap().0).squeeze_dim(0);
    let logits: Vec<Vec<f32>> = serde_json::from_value(theirs["logits"].clone()).unwrap();
    assert!(
        close(&ours, &Tensor::from_slice2(&logits)) < 1e-4,
        "{}",
        close(&ours, &Tensor::from_slice2(&logits))
    );
    let greedy = generate_batch(&model, &ids, 6, &Sampling::greedy(), &[0], Cache::On, |_| Ok(())).unwrap();
    assert_eq!(greedy[0], ids_of(&theirs["greedy"]));
    // And back: the folder loads here as the same model.
    let again = llm_from_scratch::model::hf::load_llama(&folder, Device::Cpu).unwrap();
    assert_eq!(again.config, model.config);
    assert!(
        close(&tch::no_grad(|| again.forward(&idx, None, false).unwrap().0).squeeze_dim(0), &ours) == 0.0
    );
}
