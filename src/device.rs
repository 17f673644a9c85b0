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
