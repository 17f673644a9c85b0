//! Sampling: greedy, temperature, top-k and top-p, the prompt window and streaming.

use crate::common::rng_lock;
use llm_from_scratch::generate::{
    generate, generate_batch, generate_until, next_token, Cache, Rng, Sampling,
};
use llm_from_scratch::model::{Gpt, GptConfig, LanguageModel};
use llm_from_scratch::{device, Error, Result};
use std::cell::RefCell;
use tch::{nn, Device, Tensor};

const V: usize = 10;

/// The logit of token `j` after token `i`: `((7i + 13j) mod 11) · scale`. For a fixed `i` the
/// ten values are distinct (13 is invertible mod 11), so every row has one argmax.
fn logit(i: usize, j: usize, scale: f32) -> f32 {
    ((7 * i + 13 * j) % 11) as f32 * scale
}

fn argmax_after(i: usize) -> u32 {
    (0..V).max_by(|&a, &b| logit(i, a, 1.0).total_cmp(&logit(i, b, 1.0))).unwrap() as u32
}

/// A fake model: the logits of the next token depend on the current one only, through a
/// fixed table; it records every context it is given.
struct Table {
    vs: nn::VarStore,
    table: Tensor, // [V, V], a trainable variable
    block_size: Option<usize>,
    contexts: RefCell<Vec<Vec<i64>>>,
}

impl Table {
    fn new(scale: f32, block_size: Option<usize>) -> Self {
        let values: Vec<f32> = (0..V * V).map(|n| logit(n / V, n % V, scale)).collect();
        let vs = nn::VarStore::new(Device::Cpu);
        let table = vs.root().var_copy("table", &Tensor::from_slice(&values).view([V as i64, V as i64]));
        Self { vs, table, block_size, contexts: RefCell::new(Vec::new()) }
    }
}

impl LanguageModel for Table {
    fn forward(&self, idx: &Tensor, _: Option<&Tensor>, train: bool) -> Result<(Tensor, Option<Tensor>)> {
        assert!(!train, "generation must run in eval mode");
        self.contexts.borrow_mut().push(Vec::<i64>::try_from(idx.reshape([-1])).unwrap());
        let logits = Tensor::f_embedding(&self.table, idx, -1, false, false)?; // [B, T, V]
        assert!(!logits.requires_grad(), "generation must run without gradients");
        Ok((logits, None))
    }
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }
    fn block_size(&self) -> Option<usize> {
        self.block_size
    }
}

fn run(model: &dyn LanguageModel, prompt: &[u32], n: usize, sampling: &Sampling) -> Vec<u32> {
    generate(model, prompt, n, sampling, |_| Ok(())).unwrap()
}

fn greedy_chain(start: u32, n: usize) -> Vec<u32> {
    let mut out = vec![];
    let mut last = start;
    for _ in 0..n {
        last = argmax_after(last as usize);
        out.push(last);
    }
    out
}

fn config_error(result: Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::Config(m)) => m,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn greedy_follows_the_argmax_and_is_deterministic() {
    let _lock = rng_lock();
    let model = Table::new(1.0, None);
    let expected = greedy_chain(3, 15);
    assert_eq!(run(&model, &[3], 15, &Sampling::greedy()), expected);
    assert_eq!(run(&model, &[3], 15, &Sampling::greedy()), expected);
    // Only the new tokens come back, and zero of them is fine.
    assert_eq!(run(&model, &[1, 2, 3], 15, &Sampling::greedy()), expected);
    assert_eq!(run(&model, &[3], 0, &Sampling::greedy()), Vec::<u32>::new());
}

#[test]
fn generation_until_an_end_token_stops_there_and_drops_it() {
    let model = Table::new(1.0, None);
    let chain = greedy_chain(3, 15);
    // The fourth token of the chain ends it: the three before come back, and that it ended.
    let end = chain[3];
    let first = chain.iter().position(|&t| t == end).unwrap(); // it may come earlier
    let (tokens, ended) = generate_until(&model, &[3], 15, &Sampling::greedy(), 0, end).unwrap();
    assert_eq!((tokens, ended), (chain[..first].to_vec(), true));
    // A token the chain never reaches: all 15, not ended.
    let never = (0..V as u32).find(|t| !chain.contains(t)).unwrap();
    assert_eq!(generate_until(&model, &[3], 15, &Sampling::greedy(), 0, never).unwrap(), (chain, false));
}

#[test]
fn top_k_1_and_a_tiny_top_p_are_greedy() {
    let _lock = rng_lock();
    device::seed(0);
    let model = Table::new(0.3, None); // a flat table: plain sampling would wander
    let expected = greedy_chain(5, 20);
    let top_k = Sampling { top_k: Some(1), temperature: 1.5, ..Default::default() };
    assert_eq!(run(&model, &[5], 20, &top_k), expected);
    let top_p = Sampling { top_p: Some(1e-6), temperature: 1.5, ..Default::default() };
    assert_eq!(run(&model, &[5], 20, &top_p), expected);
    let cold = Sampling { temperature: 1e-4, ..Default::default() };
    assert_eq!(run(&model, &[5], 20, &cold), expected);
    assert_ne!(run(&model, &[5], 20, &Sampling::default()), expected);
}

#[test]
fn invalid_settings_are_clear_errors() {
    let _lock = rng_lock();
    let model = Table::new(1.0, None);
    let try_with = |s: Sampling| config_error(generate(&model, &[1], 5, &s, |_| Ok(())));
    for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let m = try_with(Sampling { temperature: t, ..Default::default() });
        assert!(m.contains("temperature must be a positive number"), "{m}");
    }
    let m = try_with(Sampling { top_k: Some(0), ..Default::default() });
    assert!(m.contains("top_k must be at least 1"), "{m}");
    for p in [0.0, -0.5, 1.5, f64::NAN] {
        let m = try_with(Sampling { top_p: Some(p), ..Default::default() });
        assert!(m.contains("top_p must be in (0, 1]"), "{m}");
    }
    // Edges that are allowed.
    Sampling { top_p: Some(1.0), top_k: Some(1000), temperature: 1e-9, greedy: false }.validate().unwrap();
    assert!(model.contexts.borrow().is_empty(), "the model ran despite bad settings");
}

#[test]
fn an_empty_prompt_is_an_error() {
    let _lock = rng_lock();
    let model = Table::new(1.0, None);
    let mut called = false;
    let m = config_error(generate(&model, &[], 5, &Sampling::default(), |_| {
        called = true;
        Ok(())
    }));
    assert!(m.contains("prompt"), "{m}");
    assert!(!called);
}

#[test]
fn a_prompt_with_an_unknown_id_is_an_error() {
    let _lock = rng_lock();
    let model = Table::new(1.0, None);
    assert!(generate(&model, &[1, V as u32], 5, &Sampling::greedy(), |_| Ok(())).is_err());
}

#[test]
fn a_long_prompt_is_cropped_to_the_block() {
    let _lock = rng_lock();
    let model = Table::new(1.0, Some(4));
    let prompt: Vec<u32> = (0..10).map(|i| i % V as u32).collect();
    let out = run(&model, &prompt, 6, &Sampling::greedy());
    assert_eq!(out, greedy_chain(9, 6));
    let contexts = model.contexts.borrow();
    assert_eq!(contexts.len(), 6);
    assert_eq!(contexts[0], [6, 7, 8, 9]);
    let mut all: Vec<i64> = prompt.iter().chain(&out).map(|&t| t as i64).collect();
    all.pop(); // the last token is never fed back
    for (step, context) in contexts.iter().enumerate() {
        let end = prompt.len() + step;
        assert_eq!(context[..], all[end - 4..end], "step {step}");
    }
}

#[test]
fn a_short_prompt_grows_up_to_the_block() {
    let _lock = rng_lock();
    let model = Table::new(1.0, Some(3));
    run(&model, &[1], 5, &Sampling::greedy());
    let lengths: Vec<usize> = model.contexts.borrow().iter().map(Vec::len).collect();
    assert_eq!(lengths, [1, 2, 3, 3, 3]);
}

#[test]
fn on_token_sees_every_token_in_order_and_can_stop() {
    let _lock = rng_lock();
    let model = Table::new(1.0, None);
    let mut streamed = vec![];
    let out = generate(&model, &[2], 8, &Sampling::greedy(), |id| {
        streamed.push(id);
        Ok(())
    })
    .unwrap();
    assert_eq!(streamed, out);
    assert_eq!(out, greedy_chain(2, 8));

    model.contexts.borrow_mut().clear();
    let mut seen = 0;
    let result = generate(&model, &[2], 8, &Sampling::greedy(), |_| {
        seen += 1;
        if seen == 3 {
            Err(Error::Config("reader closed the pipe".into()))
        } else {
            Ok(())
        }
    });
    assert_eq!(config_error(result), "reader closed the pipe");
    assert_eq!(seen, 3);
    assert_eq!(model.contexts.borrow().len(), 3, "generation went on after on_token failed");
}

#[test]
fn the_same_seed_gives_the_same_sample() {
    let _lock = rng_lock();
    let model = Table::new(0.3, None);
    let sample = |seed, sampling: &Sampling| {
        device::seed(seed);
        run(&model, &[0], 40, sampling)
    };
    for sampling in [
        Sampling::default(),
        Sampling { temperature: 0.7, top_k: Some(4), ..Default::default() },
        Sampling { top_p: Some(0.8), ..Default::default() },
    ] {
        let a = sample(1337, &sampling);
        assert_eq!(a, sample(1337, &sampling), "{sampling:?}");
        assert_ne!(a, sample(1338, &sampling), "{sampling:?}: two seeds gave the same 40 tokens");
    }
}

/// Draw `n` tokens from fixed logits; return how often each id came up.
fn histogram(logits: &Tensor, sampling: &Sampling, n: usize) -> Vec<usize> {
    let mut counts = vec![0; logits.size()[0] as usize];
    let mut rng = Rng::new(2024);
    for _ in 0..n {
        counts[next_token(logits, sampling, &mut rng).unwrap() as usize] += 1;
    }
    counts
}

#[test]
fn sampling_follows_the_softmax_and_its_filters() {
    // Probabilities 0.5, 0.3, 0.15, 0.05, in a shuffled order of ids.
    let logits = Tensor::from_slice(&[0.15f32, 0.5, 0.05, 0.3]).log(); // [4]
    let n = 4000;
    let plain = histogram(&logits, &Sampling::default(), n);
    for (id, p) in [(0, 0.15), (1, 0.5), (2, 0.05), (3, 0.3)] {
        let freq = plain[id] as f64 / n as f64;
        assert!((freq - p).abs() < 0.03, "id {id}: frequency {freq}, probability {p}");
    }
    // top-p 0.7: 0.5 is not enough, 0.5 + 0.3 is: ids 1 and 3.
    let nucleus = histogram(&logits, &Sampling { top_p: Some(0.7), ..Default::default() }, n);
    assert!(nucleus[0] == 0 && nucleus[2] == 0 && nucleus[1] > 0 && nucleus[3] > 0, "{nucleus:?}");
    let freq = nucleus[1] as f64 / n as f64;
    assert!((freq - 0.625).abs() < 0.03, "renormalised 0.5 / 0.8, got {freq}");
    // top-p 0.4: the most likely alone.
    assert_eq!(histogram(&logits, &Sampling { top_p: Some(0.4), ..Default::default() }, 200)[1], 200);
    // top-k 2: the same two; top-k larger than the vocabulary keeps everything.
    let top2 = histogram(&logits, &Sampling { top_k: Some(2), ..Default::default() }, n);
    assert!(top2[0] == 0 && top2[2] == 0 && top2[1] > 0 && top2[3] > 0, "{top2:?}");
    let all = histogram(&logits, &Sampling { top_k: Some(100), top_p: Some(1.0), ..Default::default() }, n);
    assert!(all.iter().all(|&c| c > 0), "{all:?}");
    // A high temperature flattens: the least likely id comes up far more often.
    let hot = histogram(&logits, &Sampling { temperature: 5.0, ..Default::default() }, n);
    assert!(hot[2] as f64 / n as f64 > 0.15, "{hot:?}");
    // Greedy: the argmax, whatever the temperature.
    let mut rng = Rng::new(0);
    assert_eq!(
        next_token(&logits, &Sampling { temperature: 100.0, ..Sampling::greedy() }, &mut rng).unwrap(),
        1
    );
    // Logits must be one row.
    assert!(next_token(&logits.view([2, 2]), &Sampling::default(), &mut rng).is_err());
}

#[test]
fn a_gpt_generates_from_its_vocabulary() {
    let _lock = rng_lock();
    device::seed(9);
    let config = GptConfig {
        vocab_size: 13,
        block_size: 8,
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
        ..GptConfig::cpu_small()
    };
    let gpt = Gpt::new(config, Device::Cpu).unwrap();
    let prompt: Vec<u32> = (0..12).collect(); // longer than the block
    let sampling = Sampling { temperature: 0.9, top_k: Some(5), top_p: Some(0.95), greedy: false };
    let out = run(&gpt, &prompt, 20, &sampling);
    assert_eq!(out.len(), 20);
    assert!(out.iter().all(|&id| id < 13), "{out:?}");
    // No gradient graph is left behind.
    assert!(gpt.vs.trainable_variables().iter().all(|v| !v.grad().defined()));
    let greedy = run(&gpt, &prompt, 10, &Sampling::greedy());
    assert_eq!(greedy, run(&gpt, &prompt, 10, &Sampling::greedy()));
}

/// The GPT presets' architectures (biases or none, ReLU or GELU, tied or not, dropout that
/// generation must switch off) and a tiny model with sinusoidal positions, at random init:
/// the cache's arithmetic does not need a trained model. `cpu_small` and `shakespeare_char`
/// keep their sizes but get a shorter context, so that a test crosses `block_size` in a few
/// tokens; `lecture` runs at its full context of 256. The first `count` of them (each test
/// builds only what it uses: the larger two take seconds).
fn cached_models(count: usize) -> Vec<(&'static str, Gpt)> {
    let _lock = rng_lock();
    device::seed(11);
    let short = |config: GptConfig| GptConfig { block_size: 24, ..config };
    let tiny = GptConfig {
        vocab_size: 13,
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        position: llm_from_scratch::model::Position::Sinusoidal,
        ..GptConfig::cpu_small()
    };
    [
        ("tiny sinusoidal", tiny),
        ("cpu_small", short(GptConfig::cpu_small())),
        ("shakespeare_char", short(GptConfig::shakespeare_char())),
        ("lecture", GptConfig::lecture()),
    ]
    .into_iter()
    .take(count)
    .map(|(name, config)| (name, Gpt::new(config, Device::Cpu).unwrap()))
    .collect()
}

fn samplings() -> [Sampling; 4] {
    [
        Sampling::greedy(),
        Sampling::default(),
        Sampling { temperature: 0.8, top_k: Some(5), ..Default::default() },
        Sampling { temperature: 1.3, top_p: Some(0.9), ..Default::default() },
    ]
}

#[test]
fn cached_and_uncached_generation_give_the_same_tokens_across_block_size() {
    for (name, gpt) in cached_models(4) {
        let block = gpt.config.block_size;
        let vocab = gpt.config.vocab_size as u32;
        // A prompt two tokens short of the block, then enough tokens to move the window on.
        let prompt: Vec<u32> = (0..block as u32 - 2).map(|i| (7 * i + 3) % vocab).collect();
        let n = if block > 100 { 4 } else { block + 6 };
        for sampling in samplings() {
            let with =
                |cache| generate_batch(&gpt, &prompt, n, &sampling, &[42, 43], cache, |_| Ok(())).unwrap();
            let cached = with(Cache::On);
            assert_eq!(cached, with(Cache::Off), "{name}, {sampling:?}");
            assert_eq!(cached[0].len(), n);
            if !sampling.greedy {
                assert_ne!(cached[0], cached[1], "{name}, {sampling:?}: two seeds gave the same tokens");
            }
        }
    }
}

#[test]
fn a_batch_of_samples_is_the_samples_one_by_one() {
    for (name, gpt) in cached_models(2) {
        let sampling = Sampling { temperature: 0.9, top_k: Some(8), ..Default::default() };
        for cache in [Cache::On, Cache::Off] {
            let seeds = [1337, 1338, 1339, 7];
            let batch = generate_batch(&gpt, &[1, 2, 3], 30, &sampling, &seeds, cache, |_| Ok(())).unwrap();
            for (seed, sample) in seeds.iter().zip(&batch) {
                let alone =
                    generate_batch(&gpt, &[1, 2, 3], 30, &sampling, &[*seed], cache, |_| Ok(())).unwrap();
                assert_eq!(alone[0], *sample, "{name}, {cache:?}, seed {seed}");
            }
        }
    }
}

#[test]
fn the_cached_forward_gives_the_full_forward_logits() {
    let _lock = rng_lock();
    device::seed(5);
    let gpt = Gpt::new(GptConfig { block_size: 16, ..GptConfig::cpu_small() }, Device::Cpu).unwrap();
    let idx = Tensor::randint(65, [2, 16], (tch::Kind::Int64, Device::Cpu)); // [2, 16]
    let (full, _) = tch::no_grad(|| gpt.forward(&idx, None, false)).unwrap(); // [2, 16, 65]
                                                                              // A prefill of 5 positions, one of 3 (several queries against a non-empty cache), then one at a time.
    let mut kv = gpt.kv_cache(2).unwrap().unwrap();
    let mut parts = vec![gpt.forward_cached(&idx.narrow(1, 0, 5), &mut kv).unwrap()];
    parts.push(gpt.forward_cached(&idx.narrow(1, 5, 3), &mut kv).unwrap());
    for t in 8..16 {
        parts.push(gpt.forward_cached(&idx.narrow(1, t, 1), &mut kv).unwrap());
    }
    assert_eq!(kv.len(), 16);
    let cached = Tensor::cat(&parts, 1); // [2, 16, 65]
    let diff = (cached - &full).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "cached logits differ from the full pass by {diff}");
}

#[test]
fn the_cache_refuses_positions_beyond_what_it_holds() {
    let _lock = rng_lock();
    let gpt = Gpt::new(GptConfig { block_size: 8, ..GptConfig::cpu_small() }, Device::Cpu).unwrap();
    let mut kv = gpt.kv_cache(1).unwrap().unwrap();
    assert_eq!((kv.len(), kv.capacity(), kv.batch_size()), (0, 8, 1));
    let ids = |t: i64| Tensor::zeros([1, t], (tch::Kind::Int64, Device::Cpu));
    let m = config_error(gpt.forward_cached(&ids(9), &mut kv));
    assert!(m.contains("would reach position 8, beyond the model's context"), "{m}");
    assert!(kv.is_empty(), "a refused step must leave the cache as it was");
    assert_eq!(gpt.forward_cached(&ids(6), &mut kv).unwrap().size(), [1, 6, 65]);
    let m = config_error(gpt.forward_cached(&ids(3), &mut kv));
    assert!(m.contains("holds positions 0..6 of at most 8: 3 more would reach position 8"), "{m}");
    assert_eq!(gpt.forward_cached(&ids(2), &mut kv).unwrap().size(), [1, 2, 65]);
    assert_eq!(kv.len(), 8);
    assert!(config_error(gpt.forward_cached(&ids(1), &mut kv)).contains("beyond"));
    // A cache made for another batch size is refused too.
    let m = config_error(gpt.forward_cached(
        &Tensor::zeros([2, 1], (tch::Kind::Int64, Device::Cpu)),
        &mut gpt.kv_cache(1).unwrap().unwrap(),
    ));
    assert!(m.contains("a batch of 1, not 4 layers and a batch of 2"), "{m}");
    // The bigram has no cache, and says so.
    let bigram = llm_from_scratch::model::Bigram::new(5, Device::Cpu);
    assert!(bigram.kv_cache(1).unwrap().is_none());
    kv.clear();
    assert!(config_error(bigram.forward_cached(&ids(1), &mut kv)).contains("no KV cache"));
}
