//! BPE speed, side by side in one process on Tiny Shakespeare: our trainer against Hugging
//! Face `tokenizers` (byte-level BPE, the same GPT-2 pre-split), and our GPT-2 encoder against
//! `tiktoken-rs` (`r50k_base`). Each number is the best of several runs.
//!
//! Run with `make bench` (or `cargo run --release --example bpe_bench`).

use llm_from_scratch::tokenizer::{BpeConfig, BpeTokenizer, Tokenizer};
use std::time::Instant;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

/// The best wall time of `runs` calls of `f`, in seconds, and the last result.
fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut result = None;
    for _ in 0..runs {
        let start = Instant::now();
        result = Some(f());
        best = best.min(start.elapsed().as_secs_f64());
    }
    (best, result.expect("runs > 0"))
}

fn hf_train(path: &str, vocab_size: usize) -> tokenizers::Tokenizer {
    let mut tokenizer = tokenizers::Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let mut trainer: tokenizers::models::TrainerWrapper = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer.train_from_files(&mut trainer, vec![path.to_string()]).expect("tokenizers: train");
    tokenizer
}

fn row(what: &str, ours: f64, theirs: f64, unit: &str) {
    println!(
        "| {what:<44} | {ours:>9.3} {unit:<4} | {theirs:>9.3} {unit:<4} | {:>5.2}× |",
        ours_vs(ours, theirs, unit)
    );
}

/// How many times better ours is: shorter for seconds, larger for MB/s.
fn ours_vs(ours: f64, theirs: f64, unit: &str) -> f64 {
    if unit == "s" {
        theirs / ours
    } else {
        ours / theirs
    }
}

fn main() -> llm_from_scratch::Result<()> {
    // Quick (what `make test` runs, so this cannot rot): one run of each, vocab 512 only, the
    // encoders on the first 100 kB.
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = |n: usize| if quick { 1 } else { n };
    let path = llm_from_scratch::data::fetch("tinyshakespeare")?;
    let mut text = std::fs::read_to_string(&path).expect("read Tiny Shakespeare");
    let path = path.to_string_lossy().into_owned();
    println!(
        "Tiny Shakespeare: {} bytes; {} threads available",
        text.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!("| {:<44} | {:>14} | {:>14} | {:>6} |", "", "ours", "theirs", "ratio");
    println!("|{:-<46}|{:-<16}|{:-<16}|{:-<8}|", "", "", "", "");

    let mut trained = None;
    for vocab_size in if quick { vec![512] } else { vec![512, 4096] } {
        let (ours, tok) =
            best_of(runs(3), || BpeTokenizer::train(&text, &BpeConfig::new(vocab_size)).expect("train"));
        let (theirs, hf) = best_of(runs(3), || hf_train(&path, vocab_size));
        assert_eq!(tok.vocab_size(), vocab_size);
        assert_eq!(hf.get_vocab_size(true), vocab_size);
        row(&format!("train, vocab {vocab_size} (tokenizers)"), ours, theirs, "s");
        trained = Some((tok, hf));
    }

    let (tok, hf) = trained.expect("trained");
    if quick {
        text.truncate(text.floor_char_boundary(100_000));
    }
    let mb = text.len() as f64 / 1e6;
    let (ours, ids) = best_of(runs(5), || tok.encode(&text).expect("encode"));
    let (theirs, encoding) =
        best_of(runs(5), || hf.encode(text.as_str(), false).expect("tokenizers: encode"));
    row(&format!("encode, vocab {} (tokenizers)", tok.vocab_size()), mb / ours, mb / theirs, "MB/s");
    println!("|   tokens: ours {} vs tokenizers {}", ids.len(), encoding.get_ids().len());

    let oracle = tiktoken_rs::r50k_base().expect("tiktoken-rs r50k_base");
    let gpt2 = {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::STANDARD;
        let ranks: String = (0..50256u32)
            .map(|r| format!("{} {r}\n", engine.encode(oracle.decode_bytes(&[r]).expect("rank"))))
            .collect();
        BpeTokenizer::from_tiktoken(
            &ranks,
            Some(llm_from_scratch::tokenizer::GPT2_PATTERN),
            &["<|endoftext|>"],
        )?
    };
    let (ours, ids) = best_of(runs(5), || gpt2.encode_ordinary(&text).expect("encode"));
    let (theirs, expected) = best_of(runs(5), || oracle.encode_ordinary(&text));
    assert_eq!(ids, expected, "GPT-2 ids differ from tiktoken's");
    row("encode, GPT-2 r50k_base (tiktoken-rs)", mb / ours, mb / theirs, "MB/s");
    println!("|   tokens: {} (both)", ids.len());
    Ok(())
}
