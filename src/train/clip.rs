//! Gradient clipping by global norm.

use crate::Result;
use tch::{Kind, Tensor};

/// The global L2 norm of the gradients of `params`: `sqrt(Σ ‖g‖²)` over every gradient,
/// as a 0-d tensor on the parameters' device (nothing is read back to the CPU). Parameters
/// without a gradient are skipped; with none at all the norm is 0.
pub fn grad_norm(params: &[Tensor]) -> Result<Tensor> {
    let _no_grad = tch::no_grad_guard();
    let norms = params
        .iter()
        .map(Tensor::grad)
        .filter(Tensor::defined)
        .map(|g| g.f_norm()?.f_to_kind(Kind::Float))
        .collect::<Result<Vec<_>, _>>()?;
    if norms.is_empty() {
        return Ok(Tensor::zeros([], (Kind::Float, params.first().map_or(tch::Device::Cpu, |p| p.device()))));
    }
    Ok(Tensor::f_stack(&norms, 0)?.f_norm()?) // the norm of the per-tensor norms
}

/// Clip the gradients of `params` by their global norm: when the norm of all the gradients
/// together exceeds `max_norm`, scale every gradient by `max_norm / (norm + 1e-6)`, so the
/// update keeps its direction and only gets shorter. Returns the norm *before* clipping, a
/// 0-d tensor on the device (read it back only when you log it). This is PyTorch's
/// `torch.nn.utils.clip_grad_norm_`, and like it the scale factor is `min(1, max_norm /
/// (norm + 1e-6))` applied unconditionally on the device, so no step waits for the
/// device to say whether the norm was above the threshold.
///
/// Clipping by *value* (`clamp` every gradient entry into `[-c, c]`, as tch's min-gpt example
/// does) is different: it acts on each entry alone, so it changes the direction of the
/// update — a gradient `(10, 0.1)` clipped at 1 becomes `(1, 0.1)` — and it clips large
/// entries even when the gradient as a whole is small. Clipping by norm only rescales, and
/// only on the rare steps whose gradient is unusually large (a loss spike), which is why
/// GPT training uses it (nanoGPT: `grad_clip = 1.0`).
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> Result<Tensor> {
    let norm = grad_norm(params)?;
    let _no_grad = tch::no_grad_guard();
    let scale = ((&norm + 1e-6).f_reciprocal()? * max_norm).f_clamp_max(1.0)?; // [] on the device
    for param in params {
        let mut grad = param.grad();
        if grad.defined() {
            let _ = grad.f_mul_(&scale.f_to_kind(grad.kind())?)?;
        }
    }
    Ok(norm)
}
