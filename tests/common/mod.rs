//! Helpers shared by the integration tests (each test file uses a subset of them).
#![allow(dead_code)]

pub mod http;

use std::sync::{Mutex, MutexGuard};

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

/// The text of Tiny Shakespeare, fetched once per test binary the way the chapters fetch it
/// (`data::tinyshakespeare`: from `LLM_DATA_MIRROR` where one is set, as `make test` sets it,
/// else from its public URL) and cached in the data folder. A corpus that cannot be had fails
/// the test that needs it, saying so: no test skips.
pub fn shakespeare() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        llm_from_scratch::data::tinyshakespeare().unwrap_or_else(|e| {
            panic!(
                "Tiny Shakespeare could not be fetched ({e}); `make test` serves ../shared/data \
                 through LLM_DATA_MIRROR, or give this machine network access"
            )
        })
    })
}

/// How many of the plot palette's colours (all but its grey) a PNG chart draws as lines:
/// those whose pixels reach across more than half the image's width (a legend's swatch is 24
/// pixels wide, so a series listed in the legend but not drawn does not count), checked to be
/// the palette's first colours, in order. A blank chart, or one with a series missing, has
/// fewer.
pub fn drawn_lines(png: &[u8]) -> usize {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().expect("a decodable PNG");
    let mut rgb = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut rgb).expect("the PNG's pixels");
    assert_eq!(info.color_type, png::ColorType::Rgb, "the charts are RGB");
    let width = info.width as usize;
    // The palette's grey is left out: anti-aliased text has greys of every shade.
    let spans: Vec<usize> = llm_from_scratch::plot::COLORS
        .iter()
        .filter(|c| !(c.0 == c.1 && c.1 == c.2))
        .map(|c| {
            let xs = rgb[..info.buffer_size()]
                .chunks_exact(3)
                .enumerate()
                .filter(|(_, px)| *px == [c.0, c.1, c.2])
                .map(|(i, _)| i % width);
            let (lo, hi) = xs.fold((usize::MAX, 0), |(lo, hi), x| (lo.min(x), hi.max(x)));
            hi.saturating_sub(lo)
        })
        .collect();
    let drawn = spans.iter().take_while(|&&span| span > width / 2).count();
    assert!(
        spans[drawn..].iter().all(|&span| span <= width / 2),
        "lines drawn out of palette order: {spans:?}"
    );
    drawn
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

/// A zip in WikiText's layout, with these members and texts.
pub fn wikitext_zip(members: &[(&str, &str)]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, text) in members {
        zip.start_file(*name, options).unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A WikiText-2 in miniature: its three members and their texts.
pub const WIKI: [(&str, &str); 3] = [
    (
        "wikitext-2-raw/wiki.train.raw",
        " = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 is a tactical role @-@ playing game .\n",
    ),
    (
        "wikitext-2-raw/wiki.valid.raw",
        " = Homarus gammarus = \n\n Homarus gammarus is a species of clawed lobster .\n",
    ),
    ("wikitext-2-raw/wiki.test.raw", " = Robert Boulter = \n\n Robert Boulter is an English film actor .\n"),
];

/// Seeding, batches, initial weights and dropout all use libtorch's one global generator,
/// and the tests of a binary run on parallel threads: every test that draws from it holds
/// this lock, so a seed is followed by exactly the draws of its own test.
pub fn rng_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `llm` with `args`, run in `dir`, its data folder one that holds nothing (a test that
/// downloads says so through `LLM_DATA_MIRROR`), ready to run or spawn.
#[allow(dead_code)] // the test binaries without command-line tests
pub fn llm_command(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_llm"));
    cmd.args(args).current_dir(dir).env("LLM_DATA_DIR", dir.join("no-downloads-here"));
    cmd
}

/// [`llm_command`], run to its end.
#[allow(dead_code)]
pub fn llm(dir: &Path, args: &[&str]) -> std::process::Output {
    llm_command(dir, args).output().expect("run llm")
}
