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

/// Seed libtorch's global generator: batches, initial weights, dropout and sampling all draw
/// from it, so the same seed gives the same numbers (on CPU; on a GPU, bit-exactness also
/// depends on the kernels). This is the generator `torch.manual_seed` seeds in PyTorch, so
/// the same seed draws the same batches as the Python lecture.
pub fn seed(seed: u64) {
    tch::manual_seed(seed as i64);
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
