//! Training throughput of the course's GPTs on this machine, in float32 and in bf16 mixed
//! precision, each as a share of its own matmul peak, beside a PyTorch reference of the same
//! models (scripts/bench_torch.py, eager, with the venv's torch). Run with `make bench`
//! (`cargo run --release --example bench`); `-- --quick` runs a few steps of small sizes (what
//! `make test` runs, so this cannot rot).
//!
//! The `cpu_small` rows are chapter 5's run exactly (`TrainConfig::cpu_small()`, 2000 steps
//! with its loss estimates), timed the way the chapter and `llm train` time it
//! ([`train::RunTimes`]): ms per step with the estimates, and without them. The larger models
//! run a few steps after one to warm up.
//!
//! FLOPs per token follow nanoGPT's `estimate_mfu` (PaLM appendix B): `6·N + 12·L·C·T` for
//! forward plus backward, N the parameters without position embeddings. A row's share is of
//! the peak of its own precision: the best rate of a square matmul in that dtype.

use llm_from_scratch::prelude::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The best `n × n` matmul rate in `kind` over a few tries, in FLOP/s.
fn matmul_peak(n: i64, kind: Kind) -> f64 {
    let a = Tensor::randn([n, n], (kind, Device::Cpu));
    let b = Tensor::randn([n, n], (kind, Device::Cpu));
    let _ = a.matmul(&b); // warm up
    (0..5)
        .map(|_| {
            let t0 = Instant::now();
            let c = a.matmul(&b);
            let secs = t0.elapsed().as_secs_f64();
            drop(c);
            2.0 * (n * n * n) as f64 / secs
        })
        .fold(0.0, f64::max)
}

/// One measured row: ms per step with and without the loss estimates (PyTorch's: steps only).
struct Timing {
    ms_per_step: Option<f64>,
    ms_without_estimates: f64,
}

/// Train `model` as `config` says, from step 0; with `warmup`, time the steps after the
/// first `warmup` ones only.
fn ours(model: &Gpt, config: TrainConfig, data: &TokenData, warmup: usize) -> Result<Timing> {
    let mut trainer = Trainer::new(model, config)?;
    trainer.train_until(model, data, warmup, |_| {})?;
    let before = trainer.times();
    trainer.run(model, data, |_| {})?;
    let after = trainer.times();
    let steps = (after.steps - before.steps).max(1) as f64;
    let (total, eval) = (after.total_secs - before.total_secs, after.eval_secs - before.eval_secs);
    Ok(Timing { ms_per_step: Some(1e3 * total / steps), ms_without_estimates: 1e3 * (total - eval) / steps })
}

/// The same rows in eager PyTorch: scripts/bench_torch.py, one JSON line each way per row.
fn pytorch(rows: &[(GptConfig, TrainConfig, usize, usize)]) -> Result<Vec<Timing>> {
    // The venv's python: the one `make bench` puts first, else this checkout's.
    let venv =
        std::env::var("VIRTUAL_ENV").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv").into());
    let python = format!("{venv}/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench_torch.py");
    let fail = |what: String| Error::Config(format!("the PyTorch reference ({python} {script}): {what}"));
    let mut child = Command::new(&python)
        .args([script, &tch::get_num_threads().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    let mut stdin = child.stdin.take().ok_or_else(|| fail("no stdin".into()))?;
    for (model, train, warmup, steps) in rows {
        let row = serde_json::json!({ "model": model, "train": train, "warmup": warmup, "steps": steps });
        writeln!(stdin, "{row}").map_err(|e| fail(e.to_string()))?;
    }
    drop(stdin);
    let stdout = child.stdout.take().ok_or_else(|| fail("no stdout".into()))?;
    let mut timings = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| fail(e.to_string()))?;
        let row: serde_json::Value = serde_json::from_str(&line).map_err(|e| fail(format!("{e}: {line}")))?;
        let ms = row["ms_per_step"].as_f64().ok_or_else(|| fail(format!("no ms_per_step in {line}")))?;
        timings.push(Timing { ms_per_step: None, ms_without_estimates: ms });
    }
    let status = child.wait().map_err(|e| fail(e.to_string()))?;
    if !status.success() || timings.len() != rows.len() {
        return Err(fail(format!("{status}, {} of {} rows", timings.len(), rows.len())));
    }
    Ok(timings)
}

fn main() -> Result<()> {
    let text = data::tinyshakespeare()?;
    let tok = CharTokenizer::from_text(&text);
    let data = TokenData::new(&tok.encode(&text)?, 0.9)?;
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 256 } else { 2048 };
    let peak = |p: Precision| match p {
        Precision::Fp32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
    };
    let peaks = [Precision::Fp32, Precision::Bf16].map(|p| (p, matmul_peak(n, peak(p))));
    let peak_of = |p: Precision| peaks.iter().find(|(q, _)| *q == p).map_or(f64::NAN, |(_, r)| *r);
    println!(
        "machine: {} libtorch threads; matmul peak ({n}², best of 5): fp32 {:.1} GFLOP/s, bf16 {:.1} GFLOP/s ({})",
        tch::get_num_threads(),
        peak_of(Precision::Fp32) / 1e9,
        peak_of(Precision::Bf16) / 1e9,
        Precision::Bf16.describe(Device::Cpu)
    );

    // Chapter 5's run as it is, and the two 10.7M-parameter models for a few steps (one to
    // warm up); in quick mode a few steps of each at small sizes.
    let small = TrainConfig::cpu_small();
    let small_run = TrainConfig {
        steps: if quick { 20 } else { small.steps },
        eval_interval: if quick { 10 } else { small.eval_interval },
        eval_iters: if quick { 2 } else { small.eval_iters },
        warmup_steps: if quick { 5 } else { small.warmup_steps },
        ..small.clone()
    };
    let (big_steps, big_batch, big_layers) = if quick { (2, 2, 1) } else { (4, 16, 6) };
    let big_run = |block_size| TrainConfig {
        steps: 1 + big_steps,
        batch_size: big_batch,
        block_size,
        eval_interval: 1 + big_steps,
        eval_iters: 1,
        warmup_steps: 1,
        ..small.clone()
    };
    let models = [
        ("cpu_small", GptConfig::cpu_small(), small_run, 0, if quick { 10 } else { 200 }),
        ("lecture", GptConfig { n_layer: big_layers, ..GptConfig::lecture() }, big_run(256), 1, big_steps),
        (
            "shakespeare_char",
            GptConfig { n_layer: big_layers, ..GptConfig::shakespeare_char() },
            big_run(256),
            1,
            big_steps,
        ),
    ];
    let precisions = [Precision::Fp32, Precision::Bf16];

    // The PyTorch rows first (one process), then ours.
    let mut reference_rows = Vec::new();
    for (_, model, train, _, torch_steps) in &models {
        for precision in precisions {
            let train = TrainConfig { precision, ..train.clone() };
            reference_rows.push((model.clone(), train, if quick { 1 } else { 3 }, *torch_steps));
        }
    }
    let reference = pytorch(&reference_rows)?;

    println!(
        "{:<17} {:<8} {:<5} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10}",
        "model", "of", "in", "batch", "ms/step", "w/o est.", "tokens/s", "GFLOP/s", "of peak", "bf16 gain"
    );
    let mut reference = reference.into_iter();
    for (name, model_config, train_config, warmup, _) in models {
        let (b, t) = (train_config.batch_size, train_config.block_size);
        let mut rows = Vec::new();
        for precision in precisions {
            seed(1337);
            let model = Gpt::new(model_config.clone(), Device::Cpu)?;
            let timing = ours(&model, TrainConfig { precision, ..train_config.clone() }, &data, warmup)?;
            let flops_per_token = 6.0 * model.num_params_non_embedding() as f64
                + 12.0 * (model_config.n_layer * model_config.n_embd * t) as f64;
            rows.push(("ours", precision, timing, flops_per_token));
        }
        for i in 0..precisions.len() {
            let flops_per_token = rows[i].3;
            rows.push(("PyTorch", precisions[i], reference.next().expect("a row each"), flops_per_token));
        }
        for (i, (implementation, precision, timing, flops_per_token)) in rows.iter().enumerate() {
            let tokens_per_sec = (b * t) as f64 / (timing.ms_without_estimates / 1e3);
            let flops = flops_per_token * tokens_per_sec;
            let gain = match precision {
                Precision::Fp32 => String::new(),
                Precision::Bf16 => {
                    format!("{:.2}×", rows[i - 1].2.ms_without_estimates / timing.ms_without_estimates)
                }
            };
            println!(
                "{name:<17} {implementation:<8} {precision:<5} {:>7} {:>9} {:>9.1} {:>9.0} {:>9.1} {:>7.1}% {gain:>10}",
                format!("{b}×{t}"),
                timing.ms_per_step.map_or("—".into(), |ms| format!("{ms:.1}")),
                timing.ms_without_estimates,
                tokens_per_sec,
                flops / 1e9,
                100.0 * flops / peak_of(*precision),
            );
        }
    }
    println!("ms/step: all of `trainer.run` (the loss estimates included) divided by its steps, then without the estimates' time;");
    println!(
        "the other columns count training steps only. Chapter 5 and `llm train` print the same two figures."
    );
    println!(
        "of peak: of the matmul peak of the row's precision. bf16 gain: its fp32 row's ms/step over its own."
    );
    Ok(())
}
