//! Link settings for every binary and test of this crate.
//!
//! - An rpath to libtorch's lib folder (exported by torch-sys as `DEP_TCH_LIBTORCH_LIB`), so
//!   `cargo test` and `cargo run` find `libtorch*.so` without `LD_LIBRARY_PATH`.
//! - `--no-as-needed` around `libtorch_cuda`: nothing in our code names a CUDA symbol, so the
//!   linker would drop the library and libtorch would then see no GPU.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
