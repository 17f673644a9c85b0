//! Mixed precision: bf16 trains to fp32's losses, computes its matmuls in bfloat16 while every
//! weight, gradient and moment stays float32, saves float32 checkpoints that resume in
//! either precision, and is refused, saying why, where a device cannot run it.

use crate::common::{rng_lock, TempDir};
use crate::tiny_model::text_data;
use llm_from_scratch::model::{Gpt, GptConfig, LanguageModel};
use llm_from_scratch::precision::{Autocast, Precision};
use llm_from_scratch::tokenizer::Tokenizer;
use llm_from_scratch::train::checkpoint::MODEL_FILE;
use llm_from_scratch::train::{Checkpoint, TrainConfig, Trainer};
use llm_from_scratch::{device, Error};
use tch::{Device, Kind};

fn model_config(vocab_size: usize) -> GptConfig {
    GptConfig { vocab_size, block_size: 16, n_layer: 2, n_head: 2, n_embd: 32, ..GptConfig::cpu_small() }
}

fn train_config(precision: Precision) -> TrainConfig {
    TrainConfig {
        steps: 60,
        batch_size: 8,
        block_size: 16,
        warmup_steps: 5,
        eval_interval: 20,
        eval_iters: 4,
        precision,
        ..TrainConfig::cpu_small()
    }
}

/// A fresh model (seed 1) trained for `steps` steps of `train_config(precision)`.
fn trained(precision: Precision, steps: usize) -> (Gpt, Trainer) {
    let (tok, data) = text_data();
    device::seed(1);
    let model = Gpt::new(model_config(tok.vocab_size()), Device::Cpu).unwrap();
    let mut trainer = Trainer::new(&model, train_config(precision)).unwrap();
    trainer.train_until(&model, &data, steps, |_| {}).unwrap();
    (model, trainer)
}

fn val_losses(trainer: &Trainer) -> Vec<f64> {
    trainer.history().points.iter().map(|p| p.val_loss).collect()
}

#[test]
fn bf16_trains_to_the_losses_of_fp32_with_its_matmuls_in_bfloat16_and_its_weights_in_float32() {
    let _rng = rng_lock();
    let (fp32, fp32_trainer) = trained(Precision::Fp32, 60);
    let (bf16, bf16_trainer) = trained(Precision::Bf16, 60);
    let (a, b) = (val_losses(&fp32_trainer), val_losses(&bf16_trainer));
    assert_eq!(a.len(), 4, "estimates at steps 0, 20, 40, 60");
    assert!(a[3] < a[0] - 0.5, "fp32 learned: {a:?}");
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 0.02, "val losses fp32 {a:?} vs bf16 {b:?}");
    }
    assert_ne!(a, b, "bf16 rounds differently: the same losses to the last bit would mean no bfloat16 ran");

    // The master weights, their gradients and AdamW's moments stay float32.
    for (name, var) in bf16.vs.variables() {
        assert_eq!(var.kind(), Kind::Float, "{name}");
        assert_eq!(var.grad().kind(), Kind::Float, "the gradient of {name}");
    }
    for p in bf16_trainer.optimizer().params() {
        assert_eq!((p.exp_avg.kind(), p.exp_avg_sq.kind()), (Kind::Float, Kind::Float), "{}", p.name);
    }

    // Inside the region the logits come out of a bfloat16 matmul and the loss is float32;
    // outside it, and after it, everything is float32 again.
    let (_, data) = text_data();
    let (x, y) = data.get_batch(llm_from_scratch::data::Split::Train, 2, 16, Device::Cpu).unwrap();
    {
        let _autocast = Precision::Bf16.autocast(Device::Cpu).unwrap();
        assert!(Autocast::is_enabled(Device::Cpu));
        let (logits, loss) = bf16.forward(&x, Some(&y), false).unwrap();
        assert_eq!((logits.kind(), loss.unwrap().kind()), (Kind::BFloat16, Kind::Float));
        let _nested = Precision::Fp32.autocast(Device::Cpu).unwrap(); // fp32 enters nothing
        assert!(Autocast::is_enabled(Device::Cpu));
    }
    assert!(!Autocast::is_enabled(Device::Cpu), "the region ends with its guard");
    let (logits, _) = fp32.forward(&x, None, false).unwrap();
    assert_eq!(logits.kind(), Kind::Float);
}

#[test]
fn a_bf16_checkpoint_is_float32_and_resumes_in_bf16_as_the_same_run_and_in_fp32() {
    let _rng = rng_lock();
    let (tok, data) = text_data();
    let (_, straight) = trained(Precision::Bf16, 60);
    let dir = TempDir::new("bf16_resume");
    let path = dir.join("ckpt");
    {
        let (model, trainer) = trained(Precision::Bf16, 40);
        trainer.save_checkpoint(&path, &model, &model.config, &tok).unwrap();
    }
    let bytes = std::fs::read(path.join(MODEL_FILE)).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, view) in file.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name} is saved as the float32 master weight");
    }

    let ckpt = Checkpoint::load(&path).unwrap();
    assert_eq!(ckpt.train_config.precision, Precision::Bf16);
    for precision in [Precision::Bf16, Precision::Fp32] {
        device::seed(99); // other initial weights: the checkpoint's replace them
        let mut model = Gpt::new(model_config(tok.vocab_size()), Device::Cpu).unwrap();
        let mut trainer = ckpt.resume(&mut model).unwrap();
        trainer.set_config(train_config(precision)).unwrap();
        trainer.train_until(&model, &data, 60, |_| {}).unwrap();
        let (resumed, whole) = (val_losses(&trainer), val_losses(&straight));
        match precision {
            Precision::Bf16 => assert_eq!(resumed, whole, "resumed in bf16: the uninterrupted run, exactly"),
            Precision::Fp32 => {
                assert_eq!(resumed[..3], whole[..3], "the history up to the checkpoint");
                assert!((resumed[3] - whole[3]).abs() < 0.02, "fp32 from step 40: {resumed:?} vs {whole:?}");
            }
        }
    }
}

#[test]
fn bf16_is_refused_where_a_device_cannot_run_it_and_the_hardware_is_read_honestly() {
    // Every CPU can (emulated where it lacks the instructions); fp32 runs everywhere.
    assert!(Precision::Bf16.check(Device::Cpu).is_ok());
    assert!(Precision::Fp32.check(Device::Mps).is_ok());
    let refused = |device: Device| match Precision::Bf16.check(device) {
        Err(Error::Config(msg)) => msg,
        other => panic!("bf16 on {device:?}: expected a refusal, got {other:?}"),
    };
    let msg = refused(Device::Mps);
    assert!(msg.contains("bf16 is not available on Mps") && msg.ends_with("train in fp32"), "{msg}");
    if tch::Cuda::device_count() == 0 {
        let msg = refused(Device::Cuda(0));
        assert!(msg.contains("libtorch sees no CUDA device 0"), "{msg}");
    }
    assert!(Precision::Bf16.autocast(Device::Mps).is_err(), "no region is entered where bf16 is refused");

    // A GPU before Ampere has no bfloat16; from compute capability 8.0 on it has.
    let old = device::cuda_bf16((7, 5)).unwrap_err();
    assert!(old.contains("compute capability 7.5") && old.contains("8.0 (Ampere)"), "{old}");
    assert_eq!(device::cuda_bf16((9, 0)).unwrap(), "compute capability 9.0");

    // The CPU's flags, as /proc/cpuinfo lists them on x86 and on Arm.
    let x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n";
    let amx = "flags\t\t: avx512f amx_tile amx_bf16 avx512_bf16\n";
    let arm = "Features\t: fp asimd bf16 i8mm\n";
    let none = "flags\t\t: fpu sse2 avx2 avx512f avx512bw\n";
    assert_eq!(device::cpu_bf16_instructions(x86), Some("AVX512-BF16"));
    assert_eq!(device::cpu_bf16_instructions(amx), Some("AMX-BF16"));
    assert_eq!(device::cpu_bf16_instructions(arm), Some("BF16"));
    assert_eq!(device::cpu_bf16_instructions(none), None);
    let here = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    assert_eq!(device::bf16_supported(Device::Cpu), device::cpu_bf16_instructions(&here).is_some());
    let described = Precision::Bf16.describe(Device::Cpu);
    match device::cpu_bf16_instructions(&here) {
        Some(name) => assert_eq!(described, format!("bf16 ({name})")),
        None => assert!(
            described.starts_with("bf16 (emulated: this CPU has no bfloat16 instructions"),
            "{described}"
        ),
    }
    // auto: never bf16 without the instructions, nor where libtorch's bfloat16 matmul is
    // measured slower than its float32 one (some CPUs list them and run it at half the rate).
    let gain = llm_from_scratch::precision::bf16_matmul_gain().expect("both matmuls measured");
    assert!(gain > 0.0 && gain.is_finite(), "{gain}");
    if !device::bf16_supported(Device::Cpu) || gain < 1.0 {
        assert_eq!(Precision::auto(Device::Cpu), Precision::Fp32, "bf16 matmul gain {gain}");
    }

    // The name, as a config file and the command line write it.
    assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
    let msg = "fp16".parse::<Precision>().unwrap_err().to_string();
    assert!(msg.contains("unknown precision 'fp16' (known: fp32, bf16)"), "{msg}");
    let saved: TrainConfig = serde_json::from_value({
        let mut v = serde_json::to_value(TrainConfig::default()).unwrap();
        v.as_object_mut().unwrap().remove("precision"); // a config saved before there was a choice
        v
    })
    .unwrap();
    assert_eq!(saved.precision, Precision::Fp32);
}
