//! Mixed precision, the idea of chapter 9: the matmuls in bfloat16, everything that needs the
//! range or the digits in float32.
//!
//! bfloat16 keeps float32's 8 exponent bits and only 7 of its 23 mantissa bits: the same
//! range, about 3 significant digits, half the bytes, and on hardware that has it (AVX512-BF16
//! or AMX on x86 CPUs, Armv8.6's BF16, NVIDIA GPUs from Ampere on) matrix products at several
//! times the float32 rate. Training in it follows PyTorch's automatic mixed precision:
//!
//! - the **master weights** stay float32, and so do their gradients and AdamW's moments: an
//!   update of `lr · m / √v` to a weight of 1 is often below bfloat16's step of 2⁻⁷ there,
//!   and would be lost;
//! - the **forward pass** runs in an [`Autocast`] region: libtorch's dispatcher casts the
//!   inputs of matmuls, linear layers and `scaled_dot_product_attention` to bfloat16 (the
//!   weights' casts cached for the region), and those of losses and other range-hungry ops
//!   to float32. The residual stream stays float32 (a float32 embedding plus a bfloat16
//!   projection is float32), so the LayerNorms read float32, and softmax statistics are
//!   kept in float32 (our softmaxes ask for it, the fused attention accumulates in it);
//! - the **backward pass** runs outside the region, each op in the dtype its forward chose;
//!   the gradient of a float32 weight, cast in the forward, arrives as float32.
//!
//! Checkpoints hold the float32 master weights, so a run saved in one precision resumes in
//! either.
//!
//! Why autocast, not explicit casts in our layers: it covers every model at once (the bigram,
//! the ladder, the GPT, GPT-2 loaded from Hugging Face), the chapters' own hand-written
//! layers too, with PyTorch's tested policy of which op runs in what. tch 0.26 reaches only
//! the CUDA switch, so `csrc/autocast.cpp` (built by `build.rs`) calls libtorch's per-device
//! one: the same code path on the CPU and on CUDA.

use crate::{Error, Result};
use std::marker::PhantomData;
use tch::Device;

/// The dtype the forward pass computes in. Master weights, gradients and optimizer state are
/// float32 in both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in float32.
    #[default]
    Fp32,
    /// Matmuls and attention in bfloat16 under autocast; the rest float32.
    Bf16,
}

impl Precision {
    /// The faster of the two on `device`: bf16 where it has bfloat16 hardware
    /// ([`crate::device::bf16_supported`]) and, on a CPU, where libtorch's bfloat16 matmul
    /// also measures faster than its float32 one ([`bf16_matmul_gain`]): some CPUs list
    /// AVX512-BF16 and still run libtorch's bfloat16 kernels at half float32's rate. Else fp32.
    /// (A CPU whose gain sits near [`MIN_CPU_GAIN`] may get either, from run to run.)
    pub fn auto(device: Device) -> Precision {
        Self::auto_with_reason(device).0
    }

    /// [`Precision::auto`]'s choice, with what was measured when that overruled the hardware
    /// (`"its bf16 matmul measured 0.52× fp32's"`), for a run's first line.
    pub fn auto_with_reason(device: Device) -> (Precision, Option<String>) {
        if !crate::device::bf16_supported(device) {
            return (Precision::Fp32, None);
        }
        match (device, bf16_matmul_gain()) {
            (Device::Cpu, Some(gain)) if gain < MIN_CPU_GAIN => {
                (Precision::Fp32, Some(format!("its bf16 matmul measured {gain:.2}× fp32's")))
            }
            (Device::Cpu, None) => (Precision::Fp32, Some("its bf16 matmul could not be timed".to_owned())),
            _ => (Precision::Bf16, None),
        }
    }

    /// An error, saying why and what to use instead, where `device` cannot run this precision:
    /// bf16 on a GPU without bfloat16 (before Ampere) or a device other than the CPU and
    /// CUDA. A CPU always can: without bfloat16 instructions libtorch emulates them, slower
    /// than float32 ([`Precision::describe`] says so).
    pub fn check(self, device: Device) -> Result<()> {
        match (self, device) {
            (Precision::Fp32, _) | (Precision::Bf16, Device::Cpu) => Ok(()),
            (Precision::Bf16, _) => match crate::device::bf16_hardware(device) {
                Ok(_) => Ok(()),
                Err(why) => Err(Error::Config(format!(
                    "precision bf16 is not available on {device:?}: {why}; train in fp32"
                ))),
            },
        }
    }

    /// What a run in this precision on `device` computes with, for its first line:
    /// `fp32`, `bf16 (AVX512-BF16)`, or `bf16 (emulated: ...)`.
    pub fn describe(self, device: Device) -> String {
        match (self, crate::device::bf16_hardware(device)) {
            (Precision::Fp32, _) => "fp32".to_owned(),
            (Precision::Bf16, Ok(hardware)) => format!("bf16 ({hardware})"),
            (Precision::Bf16, Err(why)) => format!("bf16 (emulated: {why})"),
        }
    }

    /// The region the forward pass runs in on `device`: autocast to bfloat16 for
    /// [`Precision::Bf16`], nothing for [`Precision::Fp32`]; an error for a device autocast
    /// does not know. The region lasts until the guard is dropped. Called per forward pass,
    /// it does not read the hardware again: [`Precision::check`] it once first (the trainer
    /// does, when it starts).
    pub fn autocast(self, device: Device) -> Result<Autocast> {
        match self {
            Precision::Fp32 => Ok(Autocast::none()),
            Precision::Bf16 => Autocast::bf16(device),
        }
    }
}

/// How much faster bf16 must measure than fp32 on a CPU for [`Precision::auto`] to pick it:
/// a step gains less than its matmuls do (chapter 9).
pub const MIN_CPU_GAIN: f64 = 1.2;

/// libtorch's bfloat16 matmul rate over its float32 one on this CPU: a 512 × 512 product in
/// each, one of each to warm up, then 7 rounds of one of each, the best of each kept (a few
/// milliseconds in all). The rounds alternate, so that whatever else the machine is doing
/// slows both alike. Measured once a process; `None` if it cannot be measured.
pub fn bf16_matmul_gain() -> Option<f64> {
    static GAIN: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *GAIN.get_or_init(|| {
        let fp32 = tch::Tensor::f_ones([512, 512], (tch::Kind::Float, Device::Cpu)).ok()?;
        let bf16 = fp32.f_to_kind(tch::Kind::BFloat16).ok()?;
        let secs = |a: &tch::Tensor| -> Option<f64> {
            let t0 = std::time::Instant::now();
            let _product = a.f_matmul(a).ok()?;
            Some(t0.elapsed().as_secs_f64())
        };
        let (_, _) = (secs(&fp32)?, secs(&bf16)?); // warm up
        let (mut best_fp32, mut best_bf16) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..7 {
            best_fp32 = best_fp32.min(secs(&fp32)?);
            best_bf16 = best_bf16.min(secs(&bf16)?);
        }
        Some(best_fp32 / best_bf16)
    })
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(Error::Config(format!("unknown precision '{other}' (known: fp32, bf16)"))),
        }
    }
}

extern "C" {
    fn llm_autocast_enter(cuda: i32, dtype: i32, was_enabled: *mut i32, was_dtype: *mut i32) -> i32;
    fn llm_autocast_exit(cuda: i32, was_enabled: i32, was_dtype: i32) -> i32;
    fn llm_autocast_is_enabled(cuda: i32) -> i32;
}

/// c10's `ScalarType::BFloat16` (libtorch's numbering, the one tch's `Kind` maps to).
const BFLOAT16: i32 = 15;

/// An autocast region of this thread (see the module docs), ended when dropped. Regions nest.
/// Not `Send`: autocast is a per-thread setting.
#[derive(Debug)]
pub struct Autocast {
    /// The device type it is on (`0` CPU, `1` CUDA) and the state to restore; `None` when
    /// it is no region (fp32).
    entered: Option<(i32, i32, i32)>,
    _thread: PhantomData<*const ()>,
}

impl Autocast {
    fn none() -> Self {
        Autocast { entered: None, _thread: PhantomData }
    }

    /// Autocast to bfloat16 on `device`'s type, whether or not it has the hardware.
    fn bf16(device: Device) -> Result<Self> {
        let cuda = device_type(device)
            .ok_or_else(|| Error::Config(format!("autocast is not available on {device:?}")))?;
        let (mut was_enabled, mut was_dtype) = (0, 0);
        // SAFETY: plain C calls with valid out-pointers; the shim catches libtorch's exceptions.
        if unsafe { llm_autocast_enter(cuda, BFLOAT16, &mut was_enabled, &mut was_dtype) } != 0 {
            return Err(Error::Config("libtorch refused to enter an autocast region".into()));
        }
        Ok(Autocast { entered: Some((cuda, was_enabled, was_dtype)), _thread: PhantomData })
    }

    /// Whether autocast is on for `device`'s type in this thread now.
    pub fn is_enabled(device: Device) -> bool {
        // SAFETY: a plain C call.
        device_type(device).is_some_and(|cuda| unsafe { llm_autocast_is_enabled(cuda) } == 1)
    }
}

/// The shim's code for `device`'s type: `0` the CPU, `1` CUDA; `None` for the others.
fn device_type(device: Device) -> Option<i32> {
    match device {
        Device::Cpu => Some(0),
        Device::Cuda(_) => Some(1),
        _ => None,
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        if let Some((cuda, was_enabled, was_dtype)) = self.entered {
            // SAFETY: a plain C call; the shim catches libtorch's exceptions (and there is
            // nothing better to do than carry on if it reports one).
            unsafe {
                llm_autocast_exit(cuda, was_enabled, was_dtype);
            }
        }
    }
}
