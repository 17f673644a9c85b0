//! Link settings for every binary and test of this crate, and the one C++ file it compiles.
//!
//! - An rpath to libtorch's lib folder (exported by torch-sys as `DEP_TCH_LIBTORCH_LIB`), so
//!   `cargo test` and `cargo run` find `libtorch*.so` without `LD_LIBRARY_PATH`.
//! - `--no-as-needed` around `libtorch_cuda`: nothing in our code names a CUDA symbol, so the
//!   linker would drop the library and libtorch would then see no GPU.
//! - `csrc/autocast.cpp`, autocast on the CPU as well as CUDA (see `src/precision.rs`),
//!   compiled against the headers beside that lib folder, with torch-sys's flags.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    let include = Path::new(&lib).join("../include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into()); // torch-sys's default
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .file("csrc/autocast.cpp")
        .compile("llm_autocast");
}
