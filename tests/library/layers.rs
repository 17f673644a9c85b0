//! The layers under every model: our `Linear` with its LoRA slot, and a trainable-parameter
//! count that agrees with what AdamW updates.

use crate::common::rng_lock;
use llm_from_scratch::device;
use llm_from_scratch::model::{Gpt, GptConfig, LanguageModel};
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
fn lora_adapters_start_as_no_change_train_alone_and_merge_into_the_same_model() {
    let _lock = rng_lock();
    device::seed(7);
    let mut gpt = Gpt::new(tiny(), Device::Cpu).unwrap();
    let idx = Tensor::randint(11, [3, 8], (Kind::Int64, Device::Cpu));
    let targets = Tensor::randint(11, [3, 8], (Kind::Int64, Device::Cpu));
    let logits = |gpt: &Gpt| tch::no_grad(|| gpt.forward(&idx, None, false).unwrap().0);
    let before = logits(&gpt);

    // An adapter of rank 4 on every attention and MLP projection.
    let root = gpt.vs.root();
    for (i, block) in gpt.blocks.iter_mut().enumerate() {
        let h = &root / "transformer" / "h" / i;
        block.attn.c_attn.add_lora(&(&h / "attn" / "c_attn"), 4, 8.0).unwrap();
        block.attn.c_proj.add_lora(&(&h / "attn" / "c_proj"), 4, 8.0).unwrap();
        block.mlp.c_fc.add_lora(&(&h / "mlp" / "c_fc"), 4, 8.0).unwrap();
        block.mlp.c_proj.add_lora(&(&h / "mlp" / "c_proj"), 4, 8.0).unwrap();
    }
    assert_eq!(gpt.blocks[0].attn.c_attn.lora.as_ref().unwrap().scale, 2.0); // alpha / rank
    assert!(max_abs_diff(&before, &logits(&gpt)) == 0.0, "B starts at zero: nothing changes");
    let bad = gpt.blocks[0].mlp.c_fc.add_lora(&(&root / "again"), 4, 8.0).unwrap_err().to_string();
    assert!(bad.contains("already has"), "{bad}");
    let mut layer = llm_from_scratch::model::Linear::new(&(&root / "spare"), 16, 8, true, 0.02);
    assert!(layer.add_lora(&(&root / "spare"), 9, 8.0).unwrap_err().to_string().contains("between 1 and"));
    assert!(layer.add_lora(&(&root / "spare"), 2, 0.0).unwrap_err().to_string().contains("alpha"));

    // Only the adapters train: freeze the rest.
    for (name, t) in gpt.vs.variables() {
        if !name.contains(".lora_") {
            let _ = t.set_requires_grad(false);
        }
    }
    // Per block: c_attn 4·(16 + 48), c_proj 4·(16 + 16), c_fc 4·(16 + 64), mlp.c_proj 4·(64 + 16).
    let per_block = 4 * (16 + 48) + 4 * (16 + 16) + 4 * (16 + 64) + 4 * (64 + 16);
    assert_eq!(gpt.num_params(), 2 * per_block);
    let frozen = snapshot(&gpt);
    let mut opt = AdamW::new(&gpt.vs, AdamWConfig { lr: 1e-2, ..Default::default() }).unwrap();
    assert!(opt.params().iter().all(|p| p.name.contains(".lora_")));
    assert_eq!(opt.params().iter().map(|p| p.param.numel()).sum::<usize>(), gpt.num_params());
    for _ in 0..5 {
        opt.zero_grad();
        gpt.loss(&idx, &targets, true).unwrap().backward();
        opt.step().unwrap();
    }
    for (name, t) in gpt.vs.variables() {
        let changed = max_abs_diff(&t, &frozen[&name]) > 0.0;
        assert_eq!(changed, name.contains(".lora_"), "{name}: changed {changed}");
    }
    let adapted = logits(&gpt);
    assert!(max_abs_diff(&adapted, &before) > 1e-3, "the adapters trained");

    // Merged, each layer is an ordinary linear layer computing the same.
    for block in &mut gpt.blocks {
        for layer in
            [&mut block.attn.c_attn, &mut block.attn.c_proj, &mut block.mlp.c_fc, &mut block.mlp.c_proj]
        {
            layer.merge().unwrap();
            assert!(layer.lora.is_none());
        }
    }
    let merged = logits(&gpt);
    assert!(max_abs_diff(&merged, &adapted) < 1e-5, "merged vs adapted: {}", max_abs_diff(&merged, &adapted));
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
