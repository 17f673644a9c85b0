// Autocast for any device, CPU included: what `torch.autocast(device_type, dtype=...)` does on
// entering and leaving its region, as two C functions for src/precision.rs (tch 0.26 reaches
// only the deprecated CUDA-only switch, `at::autocast::set_enabled`). Built by build.rs
// against the headers of the libtorch that torch-sys links.
//
// Inside a region, libtorch's dispatcher casts the inputs of the ops on autocast's lists: to
// the region's dtype for matmuls, linear layers and scaled_dot_product_attention, to float32
// for losses and other ops that need the range. Everything else runs in its inputs' dtype.

#include <ATen/autocast_mode.h>

namespace {
at::DeviceType device_type(int cuda) { return cuda ? at::kCUDA : at::kCPU; }
}  // namespace

extern "C" {

// Enter a region casting to `dtype` (a c10::ScalarType code: 15 is BFloat16) on the CPU
// (`cuda` 0) or CUDA (1). The state it replaces goes to `*was_enabled` and `*was_dtype`, for
// llm_autocast_exit. 0 on success; 1 (and nothing changed) if libtorch threw.
int llm_autocast_enter(int cuda, int dtype, int* was_enabled, int* was_dtype) {
  try {
    auto device = device_type(cuda);
    *was_enabled = at::autocast::is_autocast_enabled(device);
    *was_dtype = static_cast<int>(at::autocast::get_autocast_dtype(device));
    at::autocast::set_autocast_enabled(device, true);
    at::autocast::set_autocast_dtype(device, static_cast<at::ScalarType>(dtype));
    at::autocast::increment_nesting();
    return 0;
  } catch (...) {
    return 1;
  }
}

// Leave the region: the outermost exit drops the cached casts of the weights (as
// torch.autocast does), then the state from before llm_autocast_enter is restored.
int llm_autocast_exit(int cuda, int was_enabled, int was_dtype) {
  try {
    auto device = device_type(cuda);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(device, was_enabled != 0);
    at::autocast::set_autocast_dtype(device, static_cast<at::ScalarType>(was_dtype));
    return 0;
  } catch (...) {
    return 1;
  }
}

// Whether autocast is on for the device in this thread.
int llm_autocast_is_enabled(int cuda) {
  try {
    return at::autocast::is_autocast_enabled(device_type(cuda)) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}
}
