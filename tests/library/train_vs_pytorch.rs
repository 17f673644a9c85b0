//! The whole training step against PyTorch's: the same GPT, from the same weights, on the
//! same batches, trained 20 steps by our `Trainer` and by a nanoGPT-style PyTorch loop
//! (`tests/hf_oracle.py train`: `GPT2LMHeadModel`, with `scripts/train_ddp.py`'s AdamW and
//! decay groups and its warmup then cosine, `clip_grad_norm_`, micro-batches), which also
//! checks the DDP script's schedule and optimizer against ours. Each piece has a test of its own;
//! this one checks that they compose as PyTorch's do: the per-step losses and the final
//! weights agree.

use crate::common::{rng_lock, TempDir};
use crate::hf::{max_diff, oracle};
use crate::tiny_model::text_data;
use llm_from_scratch::data::Split;
use llm_from_scratch::device;
use llm_from_scratch::model::{hf, Gpt, GptConfig};
use llm_from_scratch::tokenizer::{AnyTokenizer, Tokenizer};
use llm_from_scratch::train::{self, LrDecay, TrainConfig, Trainer};
use serde_json::{json, Value};
use tch::{Device, Tensor};

#[test]
fn twenty_training_steps_equal_pytorchs() {
    let _rng = rng_lock();
    let (tok, data) = text_data();
    device::seed(11);
    let config = GptConfig {
        vocab_size: tok.vocab_size(),
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 32,
        dropout: 0.0,
        ..GptConfig::gpt2() // tied head, biases, tanh GELU: what GPT2LMHeadModel computes
    };
    let model = Gpt::new(config, Device::Cpu).unwrap();
    let run = TrainConfig {
        steps: 20,
        batch_size: 4,
        block_size: 16,
        grad_accum: 2,
        lr: 3e-3,
        warmup_steps: 5,
        lr_decay: LrDecay::Cosine,
        min_lr: 3e-4,
        weight_decay: 0.1,
        beta1: 0.9,
        beta2: 0.95,
        grad_clip: Some(0.5),
        eval_interval: 20,
        eval_iters: 1,
        log_interval: Some(1),
        seed: 5,
        ..TrainConfig::default()
    };
    let dir = TempDir::new("train-vs-pytorch");
    hf::export(&model, &AnyTokenizer::Char(tok), dir.join("start")).unwrap();

    // The batches the trainer draws: before step s it seeds from (seed, s) and draws one
    // batch of batch_size × grad_accum windows (the trainer's docs); the same calls here.
    let mut batches = Vec::new();
    for s in 0..run.steps {
        tch::manual_seed(train::step_seed(run.seed, s) as i64);
        let (x, y) = data
            .get_batch(Split::Train, run.batch_size * run.grad_accum, run.block_size, Device::Cpu)
            .unwrap();
        batches.push((format!("x_{s}"), x.contiguous()));
        batches.push((format!("y_{s}"), y.contiguous()));
    }
    Tensor::write_safetensors(&batches, dir.join("batches.safetensors")).unwrap();
    let settings = json!({
        "steps": run.steps, "grad_accum": run.grad_accum, "lr": run.lr, "min_lr": run.min_lr,
        "warmup_steps": run.warmup_steps, "weight_decay": run.weight_decay, "beta1": run.beta1,
        "beta2": run.beta2, "eps": 1e-8, "grad_clip": run.grad_clip.unwrap(), "lr_decay": "cosine",
    });
    std::fs::write(dir.join("settings.json"), settings.to_string()).unwrap();

    let mut trainer = Trainer::new(&model, run.clone()).unwrap();
    trainer.run(&model, &data, |_| {}).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let theirs: Value = serde_json::from_str(&oracle(&[
        "train",
        &path("start"),
        &path("batches.safetensors"),
        &path("settings.json"),
        &path("end"),
    ]))
    .unwrap();

    // Every step's loss and gradient norm (before clipping), to float32's rounding.
    let logs = &trainer.history().logs;
    assert_eq!(logs.len(), run.steps);
    let column = |key: &str| -> Vec<f64> { serde_json::from_value(theirs[key].clone()).unwrap() };
    for (log, (loss, norm)) in logs.iter().zip(column("losses").into_iter().zip(column("grad_norms"))) {
        assert!(
            (log.loss - loss).abs() < 1e-5,
            "step {}: loss {} here, {loss} in PyTorch",
            log.step,
            log.loss
        );
        assert!(
            (log.grad_norm - norm).abs() < 1e-4 * norm.max(1.0),
            "step {}: gradient norm {} here, {norm} in PyTorch",
            log.step,
            log.grad_norm
        );
    }
    // The run clipped (some norms are above 0.5), warmed up and decayed, and learned.
    assert!(logs.iter().filter(|l| l.grad_norm > 0.5).count() >= 5, "clipping never engaged: {logs:?}");
    assert!(logs.last().unwrap().loss < logs[0].loss - 0.3, "{logs:?}");
    // The final weights, tensor by tensor.
    let ours = hf::hf_tensors(&model).unwrap();
    let end = hf::load(dir.join("end"), Device::Cpu).unwrap();
    for ((name, a), (_, b)) in ours.iter().zip(hf::hf_tensors(&end).unwrap()) {
        let gap = max_diff(a, &b);
        assert!(gap < 1e-5, "{name}: the final weights differ by {gap}");
    }
    assert_eq!(ours.len(), 2 + 12 * 2 + 2, "wte, wpe, 12 tensors a block, ln_f");
}
