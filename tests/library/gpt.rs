//! Chapters 4 and 5: self-attention in its three forms, and the GPT built from it.

use crate::common::rng_lock;
use crate::{common, tiny_model};

use llm_from_scratch::model::Activation;
use llm_from_scratch::model::{
    sinusoidal_positions, Block, CausalSelfAttention, Gpt, GptConfig, Head, LanguageModel,
    MultiHeadAttention, Position,
};
use llm_from_scratch::tokenizer::Tokenizer;
use llm_from_scratch::train::{Checkpoint, TrainConfig, Trainer};
use llm_from_scratch::{device, Error};
use std::collections::HashMap;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// A GPT small enough that a test builds and runs it in milliseconds.
fn tiny(vocab_size: usize, dropout: f64) -> GptConfig {
    GptConfig {
        vocab_size,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 32,
        dropout,
        ..GptConfig::cpu_small()
    }
}

fn ids(rows: &[&[i64]]) -> Tensor {
    let t = rows[0].len() as i64;
    Tensor::from_slice(&rows.concat()).view([rows.len() as i64, t])
}

// --- Configurations and parameter counts ---------------------------------------------------

#[test]
fn the_lecture_model_has_10_788_929_parameters() {
    let _lock = rng_lock();
    let gpt = Gpt::new(GptConfig::lecture(), Device::Cpu).unwrap();
    assert_eq!(gpt.num_params(), 10_788_929);
    // Position embeddings: 256 × 384.
    assert_eq!(gpt.num_params() - gpt.num_params_non_embedding(), 98_304);
}

#[test]
fn nanogpt_shakespeare_char_has_10_646_784_parameters_besides_positions() {
    let _lock = rng_lock();
    let gpt = Gpt::new(GptConfig::shakespeare_char(), Device::Cpu).unwrap();
    assert_eq!(gpt.num_params_non_embedding(), 10_646_784);
    assert_eq!(gpt.num_params(), 10_646_784 + 256 * 384);
}

#[test]
fn cpu_small_has_795_904_parameters_besides_positions() {
    let _lock = rng_lock();
    let gpt = Gpt::new(GptConfig::cpu_small(), Device::Cpu).unwrap();
    assert_eq!(gpt.num_params_non_embedding(), 795_904);
}

#[test]
fn presets_are_what_they_say() {
    let _lock = rng_lock();
    let lecture = GptConfig::lecture();
    assert_eq!((lecture.activation, lecture.bias, lecture.qkv_bias), (Activation::Relu, true, false));
    assert!(!lecture.tie_weights && lecture.lm_head_bias);
    let nano = GptConfig::shakespeare_char();
    assert_eq!((nano.activation, nano.bias, nano.qkv_bias), (Activation::Gelu, false, false));
    assert!(nano.tie_weights && !nano.lm_head_bias);
    let small = GptConfig::cpu_small();
    assert_eq!((small.n_layer, small.n_head, small.n_embd, small.block_size), (4, 4, 128, 64));
    assert_eq!(small.dropout, 0.0);
    for config in [lecture, nano, small] {
        config.validate().unwrap();
    }
}

#[test]
fn config_round_trips_through_json() {
    let _lock = rng_lock();
    let config = GptConfig::shakespeare_char();
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains("\"activation\":\"gelu\""), "{json}");
    let back: GptConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);
}

#[test]
fn validate_says_what_to_change() {
    let _lock = rng_lock();
    let message = |config: GptConfig| match config.validate() {
        Err(Error::Config(m)) => m,
        other => panic!("expected a configuration error, got {other:?}"),
    };
    let m = message(GptConfig { n_embd: 100, n_head: 3, ..GptConfig::cpu_small() });
    assert!(m.contains("n_embd (100)") && m.contains("n_head (3)"), "{m}");
    assert!(m.contains("n_embd = 99") && m.contains("n_head = 2"), "{m}");
    for (name, config) in [
        ("vocab_size", GptConfig { vocab_size: 0, ..GptConfig::cpu_small() }),
        ("block_size", GptConfig { block_size: 0, ..GptConfig::cpu_small() }),
        ("n_layer", GptConfig { n_layer: 0, ..GptConfig::cpu_small() }),
        ("n_head", GptConfig { n_head: 0, ..GptConfig::cpu_small() }),
        ("n_embd", GptConfig { n_embd: 0, ..GptConfig::cpu_small() }),
        ("d_ff", GptConfig { d_ff: Some(0), ..GptConfig::cpu_small() }),
    ] {
        let m = message(config);
        assert!(m.contains(name) && m.contains("at least 1"), "{m}");
    }
    for p in [1.0, -0.1, f64::NAN] {
        let m = message(GptConfig { dropout: p, ..GptConfig::cpu_small() });
        assert!(m.contains("dropout must be in [0, 1)"), "{m}");
    }
    // Gpt::new refuses what validate refuses.
    let bad = GptConfig { n_embd: 100, n_head: 3, ..GptConfig::cpu_small() };
    assert!(matches!(Gpt::new(bad, Device::Cpu), Err(Error::Config(_))));
}

// --- Positions and the MLP's width ----------------------------------------------------------

#[test]
fn sinusoidal_positions_follow_the_formula() {
    let _lock = rng_lock();
    for (t, c) in [(64usize, 128usize), (7, 5)] {
        let pe = sinusoidal_positions(t, c, Device::Cpu);
        assert_eq!(pe.size(), [t as i64, c as i64]);
        assert_eq!(pe.requires_grad(), false, "a fixed table, not a parameter");
        for p in 0..t {
            for j in 0..c {
                let theta = p as f64 / 10_000f64.powf((j - j % 2) as f64 / c as f64);
                let want = if j % 2 == 0 { theta.sin() } else { theta.cos() };
                let got = pe.double_value(&[p as i64, j as i64]);
                assert!((got - want).abs() < 1e-5, "PE[{p}, {j}] = {got}, the formula gives {want}");
            }
        }
    }
}

#[test]
fn parameter_counts_follow_the_position_encoding_and_d_ff() {
    let _lock = rng_lock();
    let small = GptConfig::cpu_small();
    let sinusoidal =
        Gpt::new(GptConfig { position: Position::Sinusoidal, ..small.clone() }, Device::Cpu).unwrap();
    // No wpe variable: sinusoidal positions add no parameters.
    assert_eq!(sinusoidal.num_params(), 795_904);
    assert_eq!(sinusoidal.num_params_non_embedding(), 795_904);
    assert!(!sinusoidal.vs.variables().contains_key("transformer.wpe.weight"));
    assert!(sinusoidal.wpe.equal(&sinusoidal_positions(64, 128, Device::Cpu)));
    let learned = Gpt::new(small.clone(), Device::Cpu).unwrap();
    assert_eq!(learned.num_params(), 795_904 + 64 * 128);

    // d_ff 256 instead of 4 · 128 = 512: each of the 4 MLPs loses 2 · 128 · 256 weights.
    assert_eq!(small.mlp_width(), 512);
    let narrow = Gpt::new(GptConfig { d_ff: Some(256), ..small.clone() }, Device::Cpu).unwrap();
    assert_eq!(narrow.num_params_non_embedding(), 795_904 - 4 * 2 * 128 * 256);
    assert_eq!(narrow.vs.variables()["transformer.h.0.mlp.c_fc.weight"].size(), [256, 128]);
    assert_eq!(narrow.vs.variables()["transformer.h.0.mlp.c_proj.weight"].size(), [128, 256]);
    // Unset, d_ff follows n_embd.
    assert_eq!(GptConfig { n_embd: 64, ..small }.mlp_width(), 256);
}

#[test]
fn a_config_saved_before_positions_and_d_ff_loads_as_learned_and_4_n_embd() {
    let _lock = rng_lock();
    let mut json = serde_json::to_value(GptConfig::cpu_small()).unwrap();
    let fields = json.as_object_mut().unwrap();
    assert_eq!(fields.remove("position"), Some(serde_json::json!("learned")));
    assert_eq!(fields.remove("d_ff"), Some(serde_json::Value::Null));
    let old: GptConfig = serde_json::from_value(json).unwrap();
    assert_eq!(old, GptConfig::cpu_small());
    assert_eq!((old.position, old.mlp_width()), (Position::Learned, 512));
    let sinusoidal = GptConfig { position: Position::Sinusoidal, d_ff: Some(96), ..GptConfig::cpu_small() };
    let json = serde_json::to_string(&sinusoidal).unwrap();
    assert!(json.contains("\"position\":\"sinusoidal\"") && json.contains("\"d_ff\":96"), "{json}");
    assert_eq!(serde_json::from_str::<GptConfig>(&json).unwrap(), sinusoidal);
}

#[test]
fn a_sinusoidal_model_checkpoint_round_trips_and_resumes() {
    let _lock = rng_lock();
    let (tok, data) = tiny_model::text_data();
    let config = GptConfig { position: Position::Sinusoidal, d_ff: Some(48), ..tiny(tok.vocab_size(), 0.0) };
    let train = TrainConfig {
        steps: 40,
        batch_size: 4,
        block_size: 16,
        warmup_steps: 0,
        eval_interval: 20,
        eval_iters: 2,
        log_interval: None,
        seed: 5,
        ..TrainConfig::cpu_small()
    };
    let run = |steps: usize| {
        device::seed(5);
        let model = Gpt::new(config.clone(), Device::Cpu).unwrap();
        let mut trainer = Trainer::new(&model, train.clone()).unwrap();
        trainer.train_until(&model, &data, steps, |_| {}).unwrap();
        (model, trainer)
    };
    let (straight, _) = run(40);
    let dir = common::TempDir::new("gpt_sinusoidal_ckpt");
    let (half, trainer) = run(20);
    trainer.save_checkpoint(dir.join("ckpt"), &half, &config, &tok).unwrap();

    let ckpt = Checkpoint::load(dir.join("ckpt")).unwrap();
    let saved: GptConfig = ckpt.model_config().unwrap();
    assert_eq!((saved.position, saved.mlp_width()), (Position::Sinusoidal, 48));
    device::seed(99);
    let mut model = Gpt::new(saved, Device::Cpu).unwrap();
    ckpt.load_weights(&mut model).unwrap();
    let x = Tensor::arange(16, (Kind::Int64, Device::Cpu)).remainder(tok.vocab_size() as i64).view([1, 16]);
    let logits = |m: &Gpt| m.forward(&x, None, false).unwrap().0;
    assert_eq!(max_abs_diff(&logits(&model), &logits(&half)), 0.0, "the restored model is the saved one");
    let mut trainer = ckpt.resume(&mut model).unwrap();
    trainer.train_until(&model, &data, 40, |_| {}).unwrap();
    assert_eq!(tiny_model::weights(&model), tiny_model::weights(&straight), "20 + 20 steps are 40 steps");
}

#[test]
fn a_checkpoint_saved_before_positions_and_d_ff_loads_as_learned_and_4_n_embd() {
    let _lock = rng_lock();
    let (tok, data) = tiny_model::text_data();
    let config = tiny(tok.vocab_size(), 0.0);
    device::seed(6);
    let model = Gpt::new(config.clone(), Device::Cpu).unwrap();
    let train =
        TrainConfig { steps: 5, warmup_steps: 0, eval_iters: 1, block_size: 16, ..TrainConfig::cpu_small() };
    let mut trainer = Trainer::new(&model, train).unwrap();
    trainer.train_until(&model, &data, 5, |_| {}).unwrap();
    let dir = common::TempDir::new("gpt_old_ckpt");
    trainer.save_checkpoint(dir.join("ckpt"), &model, &config, &tok).unwrap();
    // The checkpoint as the course wrote it before: no "position", no "d_ff".
    let meta = dir.join("ckpt").join(llm_from_scratch::train::checkpoint::META_FILE);
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let fields = json["model_config"].as_object_mut().unwrap();
    assert!(fields.remove("position").is_some() && fields.remove("d_ff").is_some());
    std::fs::write(&meta, serde_json::to_vec(&json).unwrap()).unwrap();

    let ckpt = Checkpoint::load(dir.join("ckpt")).unwrap();
    let old: GptConfig = ckpt.model_config().unwrap();
    assert_eq!((old.position, old.mlp_width()), (Position::Learned, 4 * 32));
    let mut restored = Gpt::new(old, Device::Cpu).unwrap();
    ckpt.load_weights(&mut restored).unwrap();
    let x = Tensor::arange(16, (Kind::Int64, Device::Cpu)).remainder(tok.vocab_size() as i64).view([1, 16]);
    let logits = |m: &Gpt| m.forward(&x, None, false).unwrap().0;
    assert_eq!(max_abs_diff(&logits(&restored), &logits(&model)), 0.0);
}

// --- The GPT built by hand, from the weights by name (chapter 5's cells) ----------------------

/// LayerNorm written out: each position's channels to mean 0 and variance 1 (the biased
/// variance, as PyTorch's), then the gain and the bias.
fn layer_norm(x: &Tensor, w: &HashMap<String, Tensor>, name: &str) -> Tensor {
    let mean = x.mean_dim(-1, true, Kind::Float); // [B, T, 1]
    let var = (x - &mean).square().mean_dim(-1, true, Kind::Float); // [B, T, 1]
    let x_hat = (x - mean) / (var + 1e-5).sqrt(); // [B, T, C]
    let y = x_hat * &w[&format!("{name}.weight")];
    match w.get(&format!("{name}.bias")) {
        Some(b) => y + b,
        None => y,
    }
}

fn dense(x: &Tensor, w: &HashMap<String, Tensor>, name: &str) -> Tensor {
    x.linear(&w[&format!("{name}.weight")], w.get(&format!("{name}.bias")))
}

/// One block by hand: attention (the fused form of chapter 4) and the MLP, each added to the
/// residual stream after a LayerNorm.
fn block_by_hand(x: &Tensor, w: &HashMap<String, Tensor>, h: &str, config: &GptConfig) -> Tensor {
    let (b, t, c) = x.size3().unwrap();
    let nh = config.n_head as i64;
    let qkv = dense(&layer_norm(x, w, &format!("{h}.ln_1")), w, &format!("{h}.attn.c_attn")); // [B, T, 3C]
    let heads = |z: &Tensor| z.view([b, t, nh, c / nh]).transpose(1, 2); // [B, nh, T, hs]
    let (q, k, v) =
        (heads(&qkv.narrow(2, 0, c)), heads(&qkv.narrow(2, c, c)), heads(&qkv.narrow(2, 2 * c, c)));
    let att = q.matmul(&k.transpose(-2, -1)) / ((c / nh) as f64).sqrt(); // [B, nh, T, T]
    let future = Tensor::ones([t, t], (Kind::Bool, Device::Cpu)).triu(1); // [T, T]
    let att = att.masked_fill(&future, f64::NEG_INFINITY).softmax(-1, Kind::Float);
    let y = att.matmul(&v).transpose(1, 2).contiguous().view([b, t, c]); // [B, T, C]
    let x = x + dense(&y, w, &format!("{h}.attn.c_proj"));
    let hidden = config.activation.apply(&dense(
        &layer_norm(&x, w, &format!("{h}.ln_2")),
        w,
        &format!("{h}.mlp.c_fc"),
    ));
    &x + dense(&hidden, w, &format!("{h}.mlp.c_proj"))
}

#[test]
fn the_block_built_by_hand_equals_the_library_block() {
    let _lock = rng_lock();
    device::seed(21);
    for config in [GptConfig::lecture(), GptConfig { d_ff: Some(80), ..GptConfig::cpu_small() }] {
        let config = GptConfig { n_layer: 2, n_embd: 48, n_head: 4, ..config };
        let vs = nn::VarStore::new(Device::Cpu);
        let block = Block::new(&(vs.root() / "h"), &config).unwrap();
        // Biases start at zero; give them values so a missing one would show.
        tch::no_grad(|| vs.variables().values().for_each(|v| drop(v.shallow_clone().normal_(0.0, 0.1))));
        let w = vs.variables();
        let x = Tensor::randn([3, 10, 48], (Kind::Float, Device::Cpu));
        let by_hand = block_by_hand(&x, &w, "h", &config);
        let library = block.forward(&x, false).unwrap();
        assert!(
            max_abs_diff(&by_hand, &library) < 1e-5,
            "{:?}: {}",
            config.activation,
            max_abs_diff(&by_hand, &library)
        );
    }
}

#[test]
fn the_gpt_built_by_hand_gives_the_library_logits_and_loss() {
    let _lock = rng_lock();
    device::seed(22);
    for position in [Position::Learned, Position::Sinusoidal] {
        let config = GptConfig { position, ..tiny(11, 0.0) };
        let gpt = Gpt::new(config.clone(), Device::Cpu).unwrap();
        let w = gpt.vs.variables();
        let idx = Tensor::randint(11, [2, 12], (Kind::Int64, Device::Cpu));
        let targets = Tensor::randint(11, [2, 12], (Kind::Int64, Device::Cpu));
        let pos = match position {
            Position::Learned => w["transformer.wpe.weight"].narrow(0, 0, 12),
            Position::Sinusoidal => sinusoidal_positions(12, config.n_embd, Device::Cpu),
        };
        let tok = w["transformer.wte.weight"].index_select(0, &idx.view([-1])).view([2, 12, -1]);
        let tok = match position {
            Position::Learned => tok,
            Position::Sinusoidal => tok * (config.n_embd as f64).sqrt(), // the paper's scale
        };
        let mut x = tok + pos;
        for i in 0..config.n_layer {
            x = block_by_hand(&x, &w, &format!("transformer.h.{i}"), &config);
        }
        let logits = layer_norm(&x, &w, "transformer.ln_f").matmul(&w["transformer.wte.weight"].tr()); // tied
        let loss = logits.view([-1, 11]).cross_entropy_for_logits(&targets.view([-1]));
        let (lib_logits, lib_loss) = gpt.forward(&idx, Some(&targets), false).unwrap();
        assert!(max_abs_diff(&logits, &lib_logits) < 1e-5, "{position}");
        assert!(max_abs_diff(&loss, &lib_loss.unwrap()) < 1e-5, "{position}");
    }
}

#[test]
fn attention_weights_are_causal_rows_that_sum_to_one() {
    let _lock = rng_lock();
    device::seed(23);
    let gpt = Gpt::new(tiny(9, 0.0), Device::Cpu).unwrap();
    let idx = Tensor::randint(9, [2, 7], (Kind::Int64, Device::Cpu));
    let maps = gpt.attention_weights(&idx).unwrap();
    assert_eq!(maps.len(), 2);
    for att in &maps {
        assert_eq!(att.size(), [2, 2, 7, 7]);
        let sums = att.sum_dim_intlist(-1, false, Kind::Float);
        assert!(max_abs_diff(&sums, &Tensor::ones([2, 2, 7], (Kind::Float, Device::Cpu))) < 1e-6);
        assert_eq!(att.triu(1).abs().max().double_value(&[]), 0.0, "no weight on the future");
    }
    // The first position can only look at itself.
    assert!((maps[0].double_value(&[0, 0, 0, 0]) - 1.0).abs() < 1e-6);
    assert!(gpt.attention_weights(&Tensor::zeros([1, 17], (Kind::Int64, Device::Cpu))).is_err());
}

// --- Forward ----------------------------------------------------------------------------------

#[test]
fn forward_gives_logits_of_shape_batch_time_vocab() {
    let _lock = rng_lock();
    let gpt = Gpt::new(tiny(11, 0.1), Device::Cpu).unwrap();
    let x = Tensor::randint(11, [3, 7], (Kind::Int64, Device::Cpu));
    let (logits, loss) = gpt.forward(&x, None, false).unwrap();
    assert_eq!(logits.size(), [3, 7, 11]);
    assert!(loss.is_none());
    let (logits, loss) = gpt.forward(&x.narrow(1, 0, 1), Some(&x.narrow(1, 1, 1)), true).unwrap();
    assert_eq!(logits.size(), [3, 1, 11]);
    assert_eq!(loss.unwrap().size(), Vec::<i64>::new());
    // The full block is accepted.
    let x = Tensor::zeros([2, 16], (Kind::Int64, Device::Cpu));
    assert_eq!(gpt.forward(&x, None, false).unwrap().0.size(), [2, 16, 11]);
}

#[test]
fn loss_at_init_is_close_to_ln_vocab() {
    let _lock = rng_lock();
    device::seed(1337);
    for config in [GptConfig::cpu_small(), GptConfig::lecture(), GptConfig::shakespeare_char()] {
        // Logits start as N(0, σ²) with σ² ≈ 0.02²·n_embd (the LM head's init over a unit-variance
        // LayerNorm output), and for small σ the expected cross-entropy is ln(V) + σ²/2:
        // 4.20 for n_embd 128, 4.25 for 384.
        let expected = (65f64).ln() + 0.5 * 0.02f64.powi(2) * config.n_embd as f64;
        let gpt = Gpt::new(config.clone(), Device::Cpu).unwrap();
        let x = Tensor::randint(65, [4, 64], (Kind::Int64, Device::Cpu));
        let y = Tensor::randint(65, [4, 64], (Kind::Int64, Device::Cpu));
        let loss = tch::no_grad(|| gpt.loss(&x, &y, false)).unwrap().double_value(&[]);
        assert!((loss - expected).abs() < 0.06, "{config:?}: loss at init {loss}, expected about {expected}");
    }
}

#[test]
fn bad_contexts_are_errors_not_panics() {
    let _lock = rng_lock();
    let gpt = Gpt::new(tiny(11, 0.0), Device::Cpu).unwrap();
    // Longer than block_size.
    let long = Tensor::zeros([1, 17], (Kind::Int64, Device::Cpu));
    match gpt.forward(&long, None, false) {
        Err(Error::Config(m)) => assert!(m.contains("17") && m.contains("block_size 16"), "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // Ids outside the vocabulary, above and below.
    for bad in [11, 1000, -1] {
        let x = ids(&[&[1, 2, bad]]);
        assert!(gpt.forward(&x, None, false).is_err(), "id {bad} was accepted");
    }
    // Wrong rank, empty time, float ids.
    assert!(gpt.forward(&Tensor::from_slice(&[1i64, 2, 3]), None, false).is_err());
    assert!(gpt.forward(&Tensor::zeros([2, 0], (Kind::Int64, Device::Cpu)), None, false).is_err());
    assert!(gpt.forward(&Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)), None, false).is_err());
    // Targets of the wrong shape.
    let x = ids(&[&[1, 2, 3]]);
    assert!(gpt.forward(&x, Some(&ids(&[&[1, 2]])), false).is_err());
}

#[test]
fn dropout_is_active_only_in_training() {
    let _lock = rng_lock();
    device::seed(7);
    let gpt = Gpt::new(tiny(11, 0.2), Device::Cpu).unwrap();
    let x = Tensor::randint(11, [2, 16], (Kind::Int64, Device::Cpu));
    let run = |train| tch::no_grad(|| gpt.forward(&x, None, train)).unwrap().0;
    assert_eq!(max_abs_diff(&run(false), &run(false)), 0.0, "eval forward is not deterministic");
    assert!(max_abs_diff(&run(true), &run(true)) > 1e-3, "train forward does not drop anything");
    assert!(max_abs_diff(&run(true), &run(false)) > 1e-3);
    // Without dropout, train and eval agree.
    let gpt = Gpt::new(tiny(11, 0.0), Device::Cpu).unwrap();
    let (a, b) =
        tch::no_grad(|| (gpt.forward(&x, None, true).unwrap().0, gpt.forward(&x, None, false).unwrap().0));
    assert!(max_abs_diff(&a, &b) < 1e-6);
}

#[test]
fn the_model_is_causal() {
    let _lock = rng_lock();
    // Changing a token changes no logits before its position.
    let gpt = Gpt::new(tiny(11, 0.0), Device::Cpu).unwrap();
    let a = ids(&[&[1, 2, 3, 4, 5, 6]]);
    let b = ids(&[&[1, 2, 3, 9, 5, 6]]);
    let (la, lb) =
        tch::no_grad(|| (gpt.forward(&a, None, false).unwrap().0, gpt.forward(&b, None, false).unwrap().0));
    assert_eq!(max_abs_diff(&la.narrow(1, 0, 3), &lb.narrow(1, 0, 3)), 0.0);
    assert!(max_abs_diff(&la.narrow(1, 3, 3), &lb.narrow(1, 3, 3)) > 1e-4);
}

// --- Weights ----------------------------------------------------------------------------------

#[test]
fn variables_have_nanogpt_names_and_tying_shares_the_embedding() {
    let _lock = rng_lock();
    let tied = Gpt::new(tiny(11, 0.0), Device::Cpu).unwrap();
    let names = tied.vs.variables();
    assert!(names.contains_key("transformer.wte.weight"));
    assert!(names.contains_key("transformer.h.1.attn.c_attn.weight"));
    assert!(names.contains_key("transformer.h.0.mlp.c_proj.weight"));
    assert!(!names.contains_key("lm_head.weight"), "a tied LM head must not have its own weight");
    assert!(!names.keys().any(|n| n.ends_with(".bias")), "bias = false, yet: {names:?}");
    assert_eq!(tied.lm_head.data_ptr(), tied.wte.data_ptr());

    let untied = Gpt::new(GptConfig { tie_weights: false, ..tiny(11, 0.0) }, Device::Cpu).unwrap();
    assert!(untied.vs.variables().contains_key("lm_head.weight"));
    assert_eq!(untied.num_params(), tied.num_params() + 11 * 32);
}

#[test]
fn changing_the_tied_embedding_changes_the_lm_head() {
    let _lock = rng_lock();
    // Zero token 5's embedding row: with tying, its logit becomes 0 everywhere (no bias).
    let x = ids(&[&[1, 2, 3, 4]]);
    let logit_of_5 = |gpt: &Gpt| tch::no_grad(|| gpt.forward(&x, None, false)).unwrap().0.select(2, 5);
    for tie_weights in [true, false] {
        let gpt = Gpt::new(GptConfig { tie_weights, ..tiny(11, 0.0) }, Device::Cpu).unwrap();
        assert!(logit_of_5(&gpt).abs().max().double_value(&[]) > 1e-4);
        let _ = tch::no_grad(|| gpt.vs.variables()["transformer.wte.weight"].get(5).fill_(0.0));
        let after = logit_of_5(&gpt).abs().max().double_value(&[]);
        assert_eq!(after == 0.0, tie_weights, "tie_weights {tie_weights}: |logit of 5| = {after}");
    }
}

#[test]
fn residual_projections_get_the_scaled_init() {
    let _lock = rng_lock();
    device::seed(3);
    let config = GptConfig { n_layer: 8, ..GptConfig::cpu_small() };
    let gpt = Gpt::new(config, Device::Cpu).unwrap();
    let vars = gpt.vs.variables();
    let std = |name: &str| vars[name].std(true).double_value(&[]);
    let scaled = 0.02 / (16f64).sqrt(); // 0.005
    for name in ["transformer.h.3.attn.c_proj.weight", "transformer.h.3.mlp.c_proj.weight"] {
        assert!((std(name) - scaled).abs() < 0.0005, "{name}: std {}", std(name));
    }
    for name in
        ["transformer.h.3.attn.c_attn.weight", "transformer.h.3.mlp.c_fc.weight", "transformer.wte.weight"]
    {
        assert!((std(name) - 0.02).abs() < 0.002, "{name}: std {}", std(name));
    }
}

// --- Attention in three forms -------------------------------------------------------------

#[test]
fn a_head_is_the_masked_softmax_of_the_lecture() {
    let _lock = rng_lock();
    device::seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    let head = Head::new(&vs.root(), 32, 8, 16, 0.0).unwrap();
    let x = Tensor::randn([2, 10, 32], (Kind::Float, Device::Cpu));
    // The chapter's cells: loop over t, attend to 0..=t.
    let (q, k, v) = (x.apply(&head.query), x.apply(&head.key), x.apply(&head.value));
    let mut rows = Vec::new();
    for t in 0..10 {
        let (kt, vt) = (k.narrow(1, 0, t + 1), v.narrow(1, 0, t + 1)); // [B, t+1, hs]
        let w = q.narrow(1, t, 1).matmul(&kt.transpose(-2, -1)) / (8f64).sqrt(); // [B, 1, t+1]
        rows.push(w.softmax(-1, Kind::Float).matmul(&vt)); // [B, 1, hs]
    }
    let expected = Tensor::cat(&rows, 1);
    let got = tch::no_grad(|| head.forward(&x, false)).unwrap();
    assert_eq!(got.size(), [2, 10, 8]);
    assert!(max_abs_diff(&got, &expected) < 1e-5);
    // Inputs it cannot take.
    assert!(head.forward(&Tensor::zeros([2, 17, 32], (Kind::Float, Device::Cpu)), false).is_err());
    assert!(head.forward(&Tensor::zeros([2, 4, 31], (Kind::Float, Device::Cpu)), false).is_err());
    assert!(Head::new(&vs.root(), 32, 0, 16, 0.0).is_err());
}

#[test]
fn multi_head_and_fused_attention_agree_on_the_same_weights() {
    let _lock = rng_lock();
    device::seed(42);
    let vs = nn::VarStore::new(Device::Cpu);
    let mha = MultiHeadAttention::new(&(vs.root() / "mha"), 48, 4, 16, 0.2).unwrap();
    let fused = CausalSelfAttention::from_multi_head(&(vs.root() / "csa"), &mha).unwrap();
    let x = Tensor::randn([3, 16, 48], (Kind::Float, Device::Cpu));
    let (a, b, c) = tch::no_grad(|| {
        (
            mha.forward(&x, false).unwrap(),
            fused.forward(&x, false).unwrap(),
            fused.forward_manual(&x, false).unwrap(),
        )
    });
    assert_eq!(a.size(), [3, 16, 48]);
    assert!(max_abs_diff(&a, &b) < 1e-5, "MultiHeadAttention vs SDPA: {}", max_abs_diff(&a, &b));
    assert!(max_abs_diff(&a, &c) < 1e-5, "MultiHeadAttention vs manual: {}", max_abs_diff(&a, &c));
    // The heads, concatenated and projected, are the multi-head output.
    let heads = tch::no_grad(|| mha.heads.iter().map(|h| h.forward(&x, false).unwrap()).collect::<Vec<_>>());
    let by_hand = Tensor::cat(&heads, -1).apply(&mha.proj);
    assert!(max_abs_diff(&a, &by_hand) < 1e-6);
    // The copy is a copy: both have their own variables.
    assert_eq!(vs.variables().len(), 4 * 3 + 2 + 3);
    assert!(MultiHeadAttention::new(&vs.root(), 48, 5, 16, 0.0).is_err());
}

#[test]
fn manual_and_fused_kernels_agree() {
    let _lock = rng_lock();
    device::seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let config = GptConfig { bias: true, qkv_bias: true, dropout: 0.1, ..GptConfig::cpu_small() };
    let attn = CausalSelfAttention::new(&vs.root(), &config).unwrap();
    // Non-zero biases, so they are exercised too.
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            let _ = v.normal_(0.0, 0.1);
        }
    });
    for t in [1, 7, 64] {
        let x = Tensor::randn([2, t, 128], (Kind::Float, Device::Cpu));
        let (a, b) =
            tch::no_grad(|| (attn.forward(&x, false).unwrap(), attn.forward_manual(&x, false).unwrap()));
        assert_eq!(a.size(), [2, t, 128]);
        assert!(max_abs_diff(&a, &b) < 1e-5, "T = {t}: {}", max_abs_diff(&a, &b));
    }
    // Dropout makes the fused path random in training.
    let x = Tensor::randn([2, 8, 128], (Kind::Float, Device::Cpu));
    let (a, b) = tch::no_grad(|| (attn.forward(&x, true).unwrap(), attn.forward(&x, true).unwrap()));
    assert!(max_abs_diff(&a, &b) > 1e-4);
    assert!(attn.forward(&Tensor::zeros([2, 8, 64], (Kind::Float, Device::Cpu)), false).is_err());
}

// --- Training ---------------------------------------------------------------------------------

#[test]
fn a_tiny_gpt_overfits_a_repeated_pattern() {
    let _lock = rng_lock();
    device::seed(1337);
    let (vocab, block, batch) = (8i64, 16i64, 8i64);
    let gpt = Gpt::new(tiny(vocab as usize, 0.0), Device::Cpu).unwrap();
    // 0 1 2 ... 7 0 1 2 ...: each token fixes the next.
    let data = Tensor::arange(block * batch + 8, (Kind::Int64, Device::Cpu)).remainder(vocab);
    let starts: Vec<i64> = (0..batch).collect();
    let x = Tensor::stack(&starts.iter().map(|&s| data.narrow(0, s, block)).collect::<Vec<_>>(), 0);
    let y = Tensor::stack(&starts.iter().map(|&s| data.narrow(0, s + 1, block)).collect::<Vec<_>>(), 0);
    let mut opt = nn::AdamW::default().build(&gpt.vs, 3e-3).unwrap();
    let first = gpt.loss(&x, &y, true).unwrap().double_value(&[]);
    let mut last = first;
    for _ in 0..100 {
        let loss = gpt.loss(&x, &y, true).unwrap();
        opt.backward_step(&loss);
        last = loss.double_value(&[]);
    }
    assert!(first > 1.5, "first loss {first}");
    assert!(last < 0.05, "loss after 100 steps: {last} (from {first})");
    let (logits, _) = tch::no_grad(|| gpt.forward(&x, None, false)).unwrap();
    assert!(logits.argmax(-1, false).equal(&y), "the model does not predict the pattern");
}

#[test]
fn the_ladder_climbs_one_change_at_a_time_and_its_top_rung_is_the_gpt() {
    use llm_from_scratch::model::ladder::Init;
    use llm_from_scratch::model::{lecture_ladder, Ladder, LadderConfig};
    let _rng = rng_lock();
    let rungs = lecture_ladder(65);
    let names: Vec<&str> = rungs.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        ["one head", "4 heads", "+ MLP", "3 blocks", "+ residual", "+ LayerNorm", "+ dropout 0.2"]
    );
    for pair in rungs.windows(2) {
        assert_ne!(pair[0].1, pair[1].1, "{} changes nothing", pair[1].0);
    }
    let top = rungs[5].1.clone();
    let idx = ids(&[&[1, 2, 3, 4, 5, 6, 7, 8], &[8, 7, 6, 5, 4, 3, 2, 1]]);

    // The GPT's init, drawn in the GPT's order: the same weights as Gpt::new, the same logits.
    device::seed(7);
    let ladder = Ladder::new(LadderConfig { init: Init::Gpt, ..top.clone() }, Device::Cpu).unwrap();
    device::seed(7);
    let gpt = Gpt::new(top.gpt.clone(), Device::Cpu).unwrap();
    assert_eq!(
        max_abs_diff(
            &ladder.forward(&idx, None, false).unwrap().0,
            &gpt.forward(&idx, None, false).unwrap().0
        ),
        0.0
    );
    assert_eq!(ladder.num_params(), gpt.num_params());

    // PyTorch's init: N(0, 1) embeddings, Linear weights within ±1/√fan_in; LayerNorms at one.
    device::seed(7);
    let ladder = Ladder::new(top.clone(), Device::Cpu).unwrap();
    let vars = ladder.vs.variables();
    let std = vars["transformer.wte.weight"].std(true).double_value(&[]);
    assert!((std - 1.0).abs() < 0.05, "wte std {std}");
    for (name, fan_in) in [
        ("transformer.h.0.attn.c_attn.weight", 32.0),
        ("transformer.h.0.mlp.c_proj.weight", 128.0),
        ("lm_head.bias", 32.0),
    ] {
        let (max, bound) = (vars[name].abs().max().double_value(&[]), 1.0 / f64::sqrt(fan_in));
        assert!(max <= bound && max > 0.8 * bound, "{name}: largest {max}, bound {bound}");
    }
    assert!(vars["transformer.h.0.ln_1.weight"].eq(1.0).all().int64_value(&[]) == 1);
    // Copied into a Gpt by name, its weights give the Gpt the ladder's logits.
    let mut gpt = Gpt::new(top.gpt.clone(), Device::Cpu).unwrap();
    gpt.vs.copy(&ladder.vs).unwrap();
    assert_eq!(
        max_abs_diff(
            &ladder.forward(&idx, None, false).unwrap().0,
            &gpt.forward(&idx, None, false).unwrap().0
        ),
        0.0
    );

    // The lower rungs have fewer pieces: no MLP or LayerNorm variables until they are in.
    let one_head = Ladder::new(rungs[0].1.clone(), Device::Cpu).unwrap();
    assert!(one_head.vs.variables().keys().all(|name| !name.contains("mlp") && !name.contains("ln_")));
    let no_mlp = Ladder::new(LadderConfig { mlp: false, ..top.clone() }, Device::Cpu).unwrap();
    assert!(
        no_mlp.vs.variables().keys().all(|name| !name.contains("ln_2")),
        "an ln_2 without an MLP to read it"
    );
    let sinusoidal =
        LadderConfig { gpt: GptConfig { position: Position::Sinusoidal, ..top.gpt.clone() }, ..top };
    assert!(Ladder::new(sinusoidal, Device::Cpu).unwrap_err().to_string().contains("learned positions"));
}
