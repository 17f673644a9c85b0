//! Where tensors live, and how runs are made repeatable.
//!
//! CPU is the default everywhere and what CI runs. [`auto`] picks the first CUDA GPU when
//! there is one. Inside a notebook that needs one extra step: evcxr compiles each cell into
//! its own library without our linker flags, so the linker drops `libtorch_cuda` (nothing
//! names it directly) and libtorch then reports no GPU. [`auto`] loads it by hand first.

use tch::Device;

/// The first CUDA device if libtorch can see one, else the CPU.
pub fn auto() -> Device {
    load_libtorch_cuda();
    Device::cuda_if_available()
}

/// Parse a device name: `cpu`, `cuda`, `cuda:N` or `auto`.
pub fn parse(name: &str) -> crate::Result<Device> {
    let bad = || crate::Error::Config(format!("unknown device '{name}' (use cpu, cuda, cuda:N or auto)"));
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(auto()),
        _ => {
            let index = match name.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest.strip_prefix(':').and_then(|n| n.parse().ok()).ok_or_else(bad)?,
                None => return Err(bad()),
            };
            load_libtorch_cuda();
            if index < tch::Cuda::device_count() as usize {
                Ok(Device::Cuda(index))
            } else {
                Err(crate::Error::Config(format!(
                    "device '{name}' asked for, but libtorch sees {} CUDA device(s)",
                    tch::Cuda::device_count()
                )))
            }
        }
    }
}

/// SplitMix64's output function: a good 64-bit mixer. Seeds derived from a run's seed
/// ([`crate::train::step_seed`]) and the data's seeded shuffle ([`crate::data::shuffle`]) use it.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Seed libtorch's global generator: batches, initial weights, dropout and sampling all draw
/// from it, so the same seed gives the same numbers (on CPU; on a GPU, bit-exactness also
/// depends on the kernels). This is the generator `torch.manual_seed` seeds in PyTorch, so
/// the same seed draws the same batches as the Python lecture.
pub fn seed(seed: u64) {
    tch::manual_seed(seed as i64);
}

/// Whether `device` computes in bfloat16 in hardware, so that [`crate::precision::Precision::Bf16`]
/// trains faster than float32 there: a CPU with AVX512-BF16 or AMX-BF16 (x86) or BF16 (Arm),
/// a CUDA GPU of compute capability 8.0 (Ampere) or later. A CPU without them still runs
/// bfloat16, emulated, slower than float32.
pub fn bf16_supported(device: Device) -> bool {
    bf16_hardware(device).is_ok()
}

/// [`bf16_supported`] with its reason: what `device` has that computes in bfloat16
/// (`"AVX512-BF16"`, `"compute capability 9.0"`), or why not.
pub fn bf16_hardware(device: Device) -> Result<String, String> {
    match device {
        Device::Cpu => {
            static CPU: std::sync::OnceLock<Option<&str>> = std::sync::OnceLock::new(); // read once
            let found = CPU.get_or_init(|| {
                cpu_bf16_instructions(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
            });
            found.map(str::to_owned).ok_or_else(|| {
                "this CPU has no bfloat16 instructions (AVX512-BF16 or AMX-BF16 on x86, BF16 on Arm \
                 in /proc/cpuinfo), so libtorch would emulate them, slower than float32"
                    .to_owned()
            })
        }
        Device::Cuda(index) => match cuda_capability(index) {
            Some(capability) => cuda_bf16(capability),
            None => Err(format!("libtorch sees no CUDA device {index}")),
        },
        other => Err(format!("{other:?} is not a device this course trains on")),
    }
}

/// The bfloat16 instructions a CPU's `/proc/cpuinfo` lists (the best of them), if any.
pub fn cpu_bf16_instructions(cpuinfo: &str) -> Option<&'static str> {
    let flags: std::collections::HashSet<&str> = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags") || l.starts_with("Features"))
        .filter_map(|l| l.split_once(':'))
        .flat_map(|(_, flags)| flags.split_whitespace())
        .collect();
    [("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("bf16", "BF16")]
        .into_iter()
        .find(|(flag, _)| flags.contains(flag))
        .map(|(_, name)| name)
}

/// Whether a GPU of compute capability `major.minor` has bfloat16 tensor cores (8.0, Ampere,
/// and later), as [`bf16_hardware`] says it.
pub fn cuda_bf16((major, minor): (i32, i32)) -> Result<String, String> {
    if major >= 8 {
        Ok(format!("compute capability {major}.{minor}"))
    } else {
        Err(format!("a GPU of compute capability {major}.{minor}; bfloat16 needs 8.0 (Ampere) or later"))
    }
}

/// The compute capability of CUDA device `index`, from the CUDA runtime libtorch loaded.
fn cuda_capability(index: usize) -> Option<(i32, i32)> {
    load_libtorch_cuda();
    if index >= tch::Cuda::device_count().max(0) as usize {
        return None;
    }
    type GetAttribute = unsafe extern "C" fn(*mut i32, i32, i32) -> i32;
    // SAFETY: dlsym with a valid C string; the symbol, when present, is the CUDA runtime's
    // `cudaError_t cudaDeviceGetAttribute(int*, cudaDeviceAttr, int)`.
    let get: GetAttribute = unsafe {
        let symbol = libc::dlsym(libc::RTLD_DEFAULT, c"cudaDeviceGetAttribute".as_ptr());
        if symbol.is_null() {
            return None;
        }
        std::mem::transmute::<*mut libc::c_void, GetAttribute>(symbol)
    };
    let (mut major, mut minor) = (0, 0);
    // cudaDevAttrComputeCapabilityMajor is 75, ...Minor 76; cudaSuccess is 0.
    // SAFETY: valid out-pointers, a device index libtorch counts.
    let ok = unsafe { get(&mut major, 75, index as i32) == 0 && get(&mut minor, 76, index as i32) == 0 };
    ok.then_some((major, minor))
}

/// Bytes of memory a new allocation on `device` can count on, if known: on the CPU the
/// kernel's `MemAvailable` (Linux; elsewhere the physical memory). `None` for a GPU (libtorch
/// does not say; its own out-of-memory error is then the check).
pub fn available_memory(device: Device) -> Option<u64> {
    if device != Device::Cpu {
        return None;
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let available_kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    match available_kb {
        Some(kb) => Some(kb * 1024),
        // SAFETY: sysconf only reads system constants.
        None => match unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) } {
            (pages, size) if pages > 0 && size > 0 => Some(pages as u64 * size as u64),
            _ => None,
        },
    }
}

/// This process's resident memory and its peak since the start (or since
/// [`reset_peak_memory`]), in bytes: Linux's `VmRSS` and `VmHWM`; `None` elsewhere. On the CPU
/// that is what training really takes, libtorch's own pages included.
pub fn resident_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((kb("VmRSS:")? * 1024, kb("VmHWM:")? * 1024))
}

/// Start [`resident_memory`]'s peak again from the memory resident now (Linux: `5` written
/// to `/proc/self/clear_refs`), after handing the allocator's freed memory back to the system
/// (glibc's `malloc_trim`), so that what is allocated next shows in the peak; false where
/// that cannot be done.
pub fn reset_peak_memory() -> bool {
    // SAFETY: malloc_trim only returns free memory to the system.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `n` bytes as `12.3 GB` (decimal: as memory sizes are sold).
pub fn format_bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1} GB", n as f64 / 1e9),
        n => format!("{:.1} MB", n as f64 / 1e6),
    }
}

/// `dlopen` libtorch_cuda with global symbols, if it exists; harmless on a CPU-only install.
fn load_libtorch_cuda() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let name = c"libtorch_cuda.so";
        // SAFETY: dlopen with a valid C string; a null result only means "not there".
        unsafe {
            libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        }
    });
}
