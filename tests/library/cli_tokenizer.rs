//! `llm tokenizer train|encode|decode`, and `llm train --tokenizer bpe`, run for real.

use crate::common::{TempDir, TINY};
use llm_from_scratch::tokenizer::{AnyTokenizer, Tokenizer};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn llm(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llm"))
        .args(args)
        .current_dir(dir)
        .env("LLM_DATA_DIR", dir.join("no-downloads-here"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run llm");
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "llm failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failure(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "expected exit 1: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_corpus(dir: &TempDir) {
    let text: String = (0..200)
        .map(|i| format!("To be, or not to be ({i}): that is the question. Naïve café 🙂\n"))
        .collect();
    std::fs::write(dir.join("corpus.txt"), text).unwrap();
}

#[test]
fn train_encode_decode_round_trip() {
    let dir = TempDir::new("cli-tok");
    write_corpus(&dir);
    let out = llm(
        dir.path(),
        &[
            "tokenizer",
            "train",
            "--input",
            "corpus.txt",
            "--vocab-size",
            "300",
            "--out",
            "tok.json",
            "--special",
            "<|endoftext|>",
        ],
        None,
    );
    let report = stdout(&out);
    assert!(report.contains("300 tokens (43 merges)"), "{report}");
    let tok = match AnyTokenizer::load(dir.join("tok.json")).unwrap() {
        AnyTokenizer::Bpe(t) => t,
        other => panic!("expected a bpe tokenizer, got {}", other.kind()),
    };
    assert_eq!(tok.special_id("<|endoftext|>"), Some(299));

    let text = "To be, or not to be: 日本語 🙂!";
    let ids =
        stdout(&llm(dir.path(), &["tokenizer", "encode", "--tokenizer", "tok.json", "--text", text], None));
    let expected: Vec<String> = tok.encode(text).unwrap().iter().map(u32::to_string).collect();
    assert_eq!(ids.trim(), expected.join(" "));
    // Decode from arguments, and from standard input (what `encode | decode` does).
    let mut args = vec!["tokenizer", "decode", "--tokenizer", "tok.json"];
    args.extend(expected.iter().map(String::as_str));
    assert_eq!(stdout(&llm(dir.path(), &args, None)), text);
    assert_eq!(
        stdout(&llm(dir.path(), &["tokenizer", "decode", "--tokenizer", "tok.json"], Some(&ids))),
        text
    );
    // Text from standard input, special tokens only when allowed.
    let special = "the end<|endoftext|>";
    let err = failure(&llm(dir.path(), &["tokenizer", "encode", "--tokenizer", "tok.json"], Some(special)));
    assert!(err.contains("special token \"<|endoftext|>\""), "{err}");
    let ids = stdout(&llm(
        dir.path(),
        &["tokenizer", "encode", "--tokenizer", "tok.json", "--allow-special"],
        Some(special),
    ));
    assert!(ids.trim().ends_with(" 299"), "{ids}");
    // Half a character: U+FFFD by default, an error with --strict.
    let smile: Vec<String> = tok.encode("🙂").unwrap().iter().map(u32::to_string).collect();
    let half = &smile[..1];
    let mut args = vec!["tokenizer", "decode", "--tokenizer", "tok.json"];
    args.extend(half.iter().map(String::as_str));
    assert_eq!(stdout(&llm(dir.path(), &args, None)), "\u{FFFD}");
    args.push("--strict");
    assert!(failure(&llm(dir.path(), &args, None)).contains("not valid UTF-8"));
}

#[test]
fn bad_tokenizer_inputs_are_clear_errors() {
    let dir = TempDir::new("cli-tok-bad");
    write_corpus(&dir);
    let train = |input: &str, vocab: &str, specials: &[&str]| {
        let mut args =
            vec!["tokenizer", "train", "--input", input, "--vocab-size", vocab, "--out", "tok.json"];
        for s in specials {
            args.extend(["--special", s]);
        }
        failure(&llm(dir.path(), &args, None))
    };
    let err = train("missing.txt", "300", &[]);
    assert!(err.contains("missing.txt"), "{err}");
    let err = train("corpus.txt", "200", &[]);
    assert!(err.contains("vocab_size 200 is too small"), "{err}");
    let err = train("corpus.txt", "257", &["<bos>", "<eos>"]);
    assert!(err.contains("plus 2 special token(s) = 258"), "{err}");
    assert!(!dir.join("tok.json").exists(), "a failed training left a file");

    std::fs::write(dir.join("corrupt.json"), "{\"kind\": \"bpe\", \"version\": 1, \"merges\": [[1, 2")
        .unwrap();
    let err = failure(&llm(
        dir.path(),
        &["tokenizer", "encode", "--tokenizer", "corrupt.json", "--text", "x"],
        None,
    ));
    assert!(err.contains("corrupt.json"), "{err}");
    let err = failure(&llm(dir.path(), &["tokenizer", "decode", "--tokenizer", "nope.json", "1"], None));
    assert!(err.contains("nope.json"), "{err}");
}

#[test]
fn llm_train_learns_a_bpe_tokenizer_for_the_run() {
    let dir = TempDir::new("cli-train-bpe");
    write_corpus(&dir);
    let mut args = vec![
        "train",
        "--input",
        "corpus.txt",
        "--tokenizer",
        "bpe",
        "--vocab-size",
        "280",
        "--max-steps",
        "4",
        "--eval-interval",
        "2",
        "--run-dir",
        "run",
    ];
    args.extend_from_slice(TINY);
    let out = llm(dir.path(), &args, None);
    let report = stdout(&out) + &String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("bpe tokenizer (280 tokens)"), "{report}");
    let tok = AnyTokenizer::load(dir.join("run/tokenizer.json")).unwrap();
    assert_eq!((tok.kind(), tok.vocab_size()), ("bpe", 280));
    let sample = stdout(&llm(
        dir.path(),
        &["sample", "--run-dir", "run", "--prompt", "To be", "--max-new-tokens", "10", "--seed", "1"],
        None,
    ));
    assert!(sample.starts_with("To be"), "{sample}");

    // Exported to the Hugging Face layout, the folder samples the same text, tokenizer and all.
    let out = llm(dir.path(), &["export", "--run-dir", "run", "--out", "hf"], None);
    assert_eq!(stdout(&out).trim(), "hf");
    assert!(String::from_utf8_lossy(&out.stderr).contains("GPT2LMHeadModel.from_pretrained"));
    for file in
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "llm_tokenizer.json"]
    {
        assert!(dir.join("hf").join(file).is_file(), "{file} missing");
    }
    let again = stdout(&llm(
        dir.path(),
        &["sample", "--model", "hf", "--prompt", "To be", "--max-new-tokens", "10", "--seed", "1"],
        None,
    ));
    assert_eq!(again, sample);
    // Exporting again replaces the export; a folder that is not one is refused.
    assert!(llm(dir.path(), &["export", "--run-dir", "run", "--out", "hf"], None).status.success());
    let err = failure(&llm(dir.path(), &["export", "--run-dir", "run", "--out", "run"], None));
    assert!(err.contains("not a model folder written by export"), "{err}");
}

#[test]
fn the_gpt2_tokenizer_by_name_is_tiktokens() {
    // The ranks are fetched through the mirror, as every download: a folder holding the file
    // OpenAI publishes, rewritten here from tiktoken-rs (the same bytes: the manifest's
    // sha256 checks it).
    use base64::Engine as _;
    let dir = TempDir::new("cli-tok-gpt2");
    let oracle = tiktoken_rs::r50k_base().unwrap();
    let engine = base64::engine::general_purpose::STANDARD;
    let ranks: String = (0..50256u32)
        .map(|rank| format!("{} {rank}\n", engine.encode(oracle.decode_bytes(&[rank]).unwrap())))
        .collect();
    std::fs::create_dir(dir.join("mirror")).unwrap();
    std::fs::write(dir.join("mirror/r50k_base.tiktoken"), ranks).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_llm"))
            .args(args)
            .env("LLM_DATA_DIR", dir.join("data"))
            .env("LLM_DATA_MIRROR", dir.join("mirror"))
            .output()
            .unwrap()
    };
    let prompt = "Hello, I'm a language model,";
    let ids = stdout(&run(&["tokenizer", "encode", "--tokenizer", "gpt2", "--text", prompt]));
    let want: Vec<String> = oracle.encode_ordinary(prompt).iter().map(u32::to_string).collect();
    assert_eq!(ids.trim(), want.join(" "));
    assert_eq!(ids.trim(), "15496 11 314 1101 257 3303 2746 11");
    let text = stdout(&run(&["tokenizer", "decode", "--tokenizer", "gpt2", "15496", "11", "314", "1101"]));
    assert_eq!(text, "Hello, I'm");
}
