//! The layers under every model: our `Linear` with its LoRA slot, and a trainable-parameter
//! count that agrees with what AdamW updates.

use crate::common::rng_lock;
use llm_from_scratch::device;
use llm_from_scratch::model::{Gpt, GptConfig, LanguageModel, Linear};
use llm_from_scratch::train::{AdamW, AdamWConfig};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

fn tiny() -> GptConfig {
    GptConfig { vocab_size: 11, block_size: 8, n_layer: 2, n_head: 2, n_embd: 16, ..GptConfig::cpu_small() }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn numel(vars: &[(String, Tensor)]) -> usize {
    vars.iter().map(|(_, t)| t.numel()).sum()
}

/// Detached copies of every variable, by name.
fn snapshot(gpt: &Gpt) -> HashMap<String, Tensor> {
    gpt.vs.variables().into_iter().map(|(name, t)| (name, t.detach().copy())).collect()
}

#[test]
fn a_lora_adapter_starts_as_no_change_and_merges_into_the_same_layer() {
    let _lock = rng_lock();
    device::seed(7);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let mut layer = Linear::new(&(vs.root() / "proj"), 16, 8, true, 0.02);
    let x = Tensor::randn([3, 5, 16], (Kind::Float, Device::Cpu));
    let before = layer.forward(&x);
    layer.add_lora(&(vs.root() / "proj"), 4, 8.0).unwrap();
    let lora = layer.lora.as_ref().unwrap();
    assert_eq!((lora.a.size(), lora.b.size(), lora.scale), (vec![4, 16], vec![8, 4], 2.0)); // alpha / rank
    assert!(max_abs_diff(&before, &layer.forward(&x)) == 0.0, "B starts at zero: nothing changes");
    // As if it had trained: B is no longer zero, and the output moves by scale · x Aᵀ Bᵀ.
    tch::no_grad(|| {
        let _ = layer.lora.as_ref().unwrap().b.shallow_clone().normal_(0.0, 0.1);
    });
    let adapted = layer.forward(&x);
    let (a, b) = layer.lora.as_ref().map(|l| (l.a.detach(), l.b.detach())).unwrap();
    let by_hand = &before + x.matmul(&a.tr()).matmul(&b.tr()) * 2.0;
    assert!(max_abs_diff(&adapted, &by_hand) < 1e-6);
    assert!(max_abs_diff(&adapted, &before) > 1e-3);
    layer.merge().unwrap();
    assert!(layer.lora.is_none());
    assert!(max_abs_diff(&layer.forward(&x), &adapted) < 1e-5, "merged vs adapted");

    let err = |rank: usize, alpha: f64| {
        let mut fresh = Linear::new(&(vs.root() / "other"), 16, 8, false, 0.02);
        fresh.add_lora(&(vs.root() / "other"), rank, alpha).unwrap_err().to_string()
    };
    assert!(err(9, 8.0).contains("between 1 and the smaller side of the weight (8)"));
    assert!(err(0, 8.0).contains("between 1 and"));
    assert!(err(2, 0.0).contains("alpha must be a positive number"));
    layer.add_lora(&(vs.root() / "proj2"), 2, 2.0).unwrap();
    let twice = layer.add_lora(&(vs.root() / "proj3"), 2, 2.0).unwrap_err().to_string();
    assert!(twice.contains("already has a LoRA adapter"), "{twice}");
}

#[test]
fn the_trainable_count_is_what_adamw_updates() {
    let _lock = rng_lock();
    device::seed(3);
    let gpt = Gpt::new(tiny(), Device::Cpu).unwrap();
    let all = gpt.num_params();
    assert_eq!(all, tiny().num_params());
    assert_eq!(all, numel(&llm_from_scratch::model::trainable_variables(&gpt.vs)));
    // Freeze the first block: neither the count nor AdamW has it any more.
    let mut block_0 = 0;
    for (name, t) in gpt.vs.variables() {
        if name.starts_with("transformer.h.0.") {
            block_0 += t.numel();
            let _ = t.set_requires_grad(false);
        }
    }
    assert!(block_0 > 0);
    assert_eq!(gpt.num_params(), all - block_0);
    let opt = AdamW::new(&gpt.vs, AdamWConfig::default()).unwrap();
    assert_eq!(opt.params().iter().map(|p| p.param.numel()).sum::<usize>(), all - block_0);
    assert!(opt.params().iter().all(|p| !p.name.starts_with("transformer.h.0.")));
    // tch's freeze() turns requires_grad off everywhere: nothing left to train or count.
    let mut frozen = Gpt::new(tiny(), Device::Cpu).unwrap();
    frozen.vs.freeze();
    assert_eq!(frozen.num_params(), 0);
    assert!(AdamW::new(&frozen.vs, AdamWConfig::default()).unwrap().params().is_empty());
}

#[test]
fn a_gpt_with_lora_trains_its_adapters_only_and_merges_into_an_ordinary_gpt() {
    let _lock = rng_lock();
    device::seed(5);
    let mut gpt = Gpt::new(tiny(), Device::Cpu).unwrap();
    let all = gpt.num_params();
    let idx = Tensor::randint(11, [3, 8], (Kind::Int64, Device::Cpu));
    let targets = Tensor::randint(11, [3, 8], (Kind::Int64, Device::Cpu));
    let logits = |gpt: &Gpt| tch::no_grad(|| gpt.forward(&idx, None, false).unwrap().0);
    let before = logits(&gpt);
    gpt.add_lora(2, 4.0).unwrap();
    let per_block = 2 * (16 + 48) + 2 * (16 + 16) + 2 * (16 + 64) + 2 * (64 + 16);
    assert_eq!(gpt.num_params(), 2 * per_block);
    assert!(max_abs_diff(&before, &logits(&gpt)) == 0.0);
    let base = snapshot(&gpt);
    let mut opt = AdamW::new(&gpt.vs, AdamWConfig { lr: 1e-2, ..Default::default() }).unwrap();
    for _ in 0..5 {
        opt.zero_grad();
        gpt.loss(&idx, &targets, true).unwrap().backward();
        opt.step().unwrap();
    }
    for (name, t) in gpt.vs.variables() {
        assert_eq!(max_abs_diff(&t, &base[&name]) > 0.0, name.contains(".lora_"), "{name}");
    }
    let adapted = logits(&gpt);
    gpt.merge_lora().unwrap();
    assert!(max_abs_diff(&logits(&gpt), &adapted) < 1e-5);
    // An ordinary GPT again: its own variables only, all of them training, and they load
    // into a fresh one.
    assert_eq!(gpt.num_params(), all);
    assert!(gpt.vs.variables().keys().all(|name| !name.contains("lora")));
    let mut fresh = Gpt::new(tiny(), Device::Cpu).unwrap();
    fresh.vs.copy(&gpt.vs).unwrap();
    assert!(max_abs_diff(&logits(&fresh), &adapted) < 1e-5);
}
