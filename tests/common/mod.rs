//! Helpers shared by the integration tests (each test file uses a subset of them).
#![allow(dead_code)]

pub mod http;

use std::path::{Path, PathBuf};

/// A fresh, empty directory under the system temp dir, named after the process id and the
/// test, and removed again when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("llm_from_scratch-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The names of everything in the directory (hidden files included), sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read temp dir")
            .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The shared copy of Tiny Shakespeare, if this checkout has one beside it.
pub fn shakespeare_path() -> Option<PathBuf> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/tinyshakespeare.txt"));
    path.is_file().then_some(path)
}

/// The text of Tiny Shakespeare, or `None` (with a note on stderr saying what is skipped).
pub fn shakespeare_text(skipping: &str) -> Option<String> {
    match shakespeare_path() {
        Some(path) => Some(std::fs::read_to_string(path).expect("read tinyshakespeare.txt")),
        None => {
            eprintln!("../shared/data/tinyshakespeare.txt is absent: skipping {skipping}");
            None
        }
    }
}

/// `llm train` flags for a tiny model and a short run (1 block, 16 channels, 16 tokens of
/// context, no warmup), so command-line tests train in seconds; tests add to them.
pub const TINY: &[&str] = &[
    "--warmup",
    "0",
    "--n-layer",
    "1",
    "--n-head",
    "2",
    "--n-embd",
    "16",
    "--block-size",
    "16",
    "--batch-size",
    "4",
    "--eval-iters",
    "2",
    "--log-interval",
    "5",
    "--device",
    "cpu",
];
