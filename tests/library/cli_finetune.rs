//! `llm finetune classify|instruct`, `llm classify` and `llm chat`, run for real: a tiny GPT
//! pretrained by `llm train` on a small text, finetuned on messages and instructions the
//! tests write (with characters the text never had), in seconds.

use crate::common::{llm, TempDir, TINY};
use llm_from_scratch::app::run::{self, Run, Task};
use llm_from_scratch::model::{LanguageModel, ModelConfig, Tune};
use llm_from_scratch::tokenizer::Tokenizer;
use llm_from_scratch::train::Checkpoint;
use std::path::Path;
use std::process::Output;

fn ok(out: Output) -> (String, String) {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    (stdout.into_owned(), stderr.into_owned())
}

fn error(out: Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A GPT pretrained in `dir/pre` for 30 steps on lowercase words (no digits, no capitals, no
/// punctuation), with a context of `block_size` characters.
fn pretrained(dir: &TempDir, block_size: &str) {
    pretrained_with(dir, block_size, &[]);
}

/// [`pretrained`], with more flags for `llm train` (`--arch llama`).
fn pretrained_with(dir: &TempDir, block_size: &str, more: &[&str]) {
    let words = ["see", "you", "at", "the", "win", "cash", "now", "text", "call", "home", "later", "lah"];
    let text: String = (0..3000).map(|i| words[(i + i / 12) % words.len()]).collect::<Vec<_>>().join(" ");
    std::fs::write(dir.join("words.txt"), text).unwrap();
    let mut args = vec!["train", "--input", "words.txt", "--max-steps", "30", "--eval-interval", "30"];
    args.extend(TINY.chunks(2).filter(|pair| pair[0] != "--block-size").flatten());
    args.extend(["--block-size", block_size, "--run-dir", "pre"]);
    args.extend(more);
    ok(llm(dir.path(), &args));
}

/// 30 spam and 40 ham messages, label TAB text, as the SMS Spam Collection has them.
fn messages(dir: &TempDir) {
    let spam = (0..30).map(|i| format!("spam\tWIN £{i}00 CASH now! Txt WIN to 8{i}0{i}\r\n"));
    let ham = (0..40).map(|i| format!("ham\tOk, see you at {} lah.\r\n", i % 12));
    std::fs::write(dir.join("sms.tsv"), spam.chain(ham).collect::<String>()).unwrap();
}

/// 40 instruction records (every fourth with an input) in Raschka's JSON layout.
fn instructions(dir: &TempDir) {
    let records: Vec<serde_json::Value> = (0..40)
        .map(|i| {
            let input = if i % 4 == 0 { format!("{i}, {}", i + 1) } else { String::new() };
            serde_json::json!({"instruction": format!("Add one to {i}."), "input": input, "output": format!("{}", i + 1)})
        })
        .collect();
    std::fs::write(dir.join("instructions.json"), serde_json::to_string(&records).unwrap()).unwrap();
}

/// The short run's flags.
const SHORT: &[&str] =
    &["--max-steps", "6", "--eval-interval", "3", "--eval-iters", "2", "--lr", "1e-3", "--device", "cpu"];

fn results(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap()
}

#[test]
fn a_classifier_is_finetuned_measured_resumed_and_asked() {
    let dir = TempDir::new("cli-finetune-classify");
    pretrained(&dir, "16");
    messages(&dir);
    let mut args =
        vec!["finetune", "classify", "--init-from", "pre", "--input", "sms.tsv", "--run-dir", "cls"];
    args.extend(["--tune", "lora", "--lora-rank", "2", "--lora-alpha", "4"]);
    args.extend(SHORT);
    let (_, stderr) = ok(llm(dir.path(), &args));
    assert!(stderr.contains("LoRA rank 2, alpha 4, and the head train"), "{stderr}");
    assert!(stderr.contains("classify messages with `llm classify --run-dir cls`"), "{stderr}");

    // The folder: a classifier of the pretrained GPT, its vocabulary grown by the messages'
    // characters, accuracy before and after on each part of the split (30 + 30: 42 / 6 / 12).
    let (run, tokenizer) = Run::open(dir.join("cls")).unwrap();
    assert_eq!(run.config.task, Task::Classify { split_seed: 123 });
    let ModelConfig::Classifier(classifier) = &run.config.model else { panic!("{:?}", run.config.model) };
    assert_eq!((classifier.n_classes, classifier.tune), (2, Tune::Lora { rank: 2, alpha: 4.0 }));
    let (_, pre_tokenizer) = Run::open(dir.join("pre")).unwrap();
    assert!(pre_tokenizer.encode("£").is_err() && tokenizer.encode("WIN £100!").is_ok());
    assert_eq!(pre_tokenizer.encode("see you").unwrap(), tokenizer.encode("see you").unwrap());
    for when in ["before", "after"] {
        for part in ["train_accuracy", "val_accuracy", "test_accuracy"] {
            let accuracy = results(&dir.join("cls"))[when][part].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&accuracy), "{when} {part}: {accuracy}");
        }
    }
    // LoRA: the GPT's own weights are the pretrained ones still.
    let weights = |ckpt: &Path| {
        let model = run::load_model(&Checkpoint::load(ckpt).unwrap(), tch::Device::Cpu).unwrap();
        model.var_store().variables()
    };
    let (pre, cls) =
        (weights(&dir.join("pre/checkpoints/best")), weights(&dir.join("cls/checkpoints/latest")));
    let name = "transformer.h.0.attn.c_attn.weight";
    assert!(pre[name].equal(&cls[name]), "a frozen weight changed");
    assert!(cls.contains_key("transformer.h.0.attn.c_attn.lora_b") && cls.contains_key("classifier.weight"));

    // Resumed to more steps; what trains and the split may not change.
    let (_, stderr) = ok(llm(dir.path(), &["finetune", "classify", "--run-dir", "cls", "--max-steps", "9"]));
    assert!(stderr.contains("resuming cls at step 6"), "{stderr}");
    assert_eq!(Checkpoint::load(dir.join("cls/checkpoints/latest")).unwrap().step, 9);
    let err = error(llm(dir.path(), &["finetune", "classify", "--run-dir", "cls", "--tune", "all"]));
    assert!(err.contains("keeps what trains and its split"), "{err}");
    let err = error(llm(dir.path(), &["finetune", "instruct", "--run-dir", "cls"]));
    assert!(err.contains("is a run of `llm finetune classify`"), "{err}");
    let err = error(llm(dir.path(), &["train", "--run-dir", "cls"]));
    assert!(err.contains("continue it with `llm finetune classify --run-dir cls`"), "{err}");

    // Asked: one line per message, the class, its probability, the message.
    let (stdout, _) = ok(llm(
        dir.path(),
        &["classify", "--run-dir", "cls", "--text", "WIN £500 now!", "--text", "Ok lah."],
    ));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (line, text) in lines.iter().zip(["WIN £500 now!", "Ok lah."]) {
        let fields: Vec<&str> = line.split('\t').collect();
        assert!(["ham", "spam"].contains(&fields[0]) && fields[2] == text, "{line}");
        assert!((0.5..=1.0).contains(&fields[1].parse::<f64>().unwrap()), "{line}");
    }
    // A classifier writes no text.
    for args in [
        &["sample", "--run-dir", "cls"][..],
        &["eval", "--run-dir", "cls"],
        &["export", "--run-dir", "cls", "--out", "x"],
    ] {
        let err = error(llm(dir.path(), args));
        assert!(err.contains("classifier"), "{args:?}: {err}");
    }
}

#[test]
fn an_instruction_follower_is_finetuned_measured_and_chats() {
    let dir = TempDir::new("cli-finetune-instruct");
    pretrained(&dir, "200");
    instructions(&dir);
    let mut args = vec!["finetune", "instruct", "--init-from", "pre", "--input", "instructions.json"];
    args.extend(["--run-dir", "ins", "--held-out", "2", "--max-new-tokens", "5"]);
    args.extend(SHORT);
    let (_, stderr) = ok(llm(dir.path(), &args));
    assert!(stderr.contains("before: 2 held-out records: response loss"), "{stderr}");
    assert!(stderr.contains("ask it with `llm chat --run-dir ins`"), "{stderr}");

    // Raschka's split of 40: 34 to train on, 4 to test on, 2 to validate on.
    let (run, tokenizer) = Run::open(dir.join("ins")).unwrap();
    let Task::Instruct { end_id } = run.config.task else { panic!("{:?}", run.config.task) };
    assert_eq!(tokenizer.decode(&[end_id]).unwrap(), "\u{3}", "the end-of-text character, added");
    let results = results(&dir.join("ins"));
    let (before, after) = (&results["before"], &results["after"]);
    assert_eq!((before["records"].as_u64(), after["records"].as_u64()), (Some(2), Some(2)));
    // Trained on the responses, it predicts held-out ones better.
    assert!(after["response_loss"].as_f64() < before["response_loss"].as_f64(), "{results}");
    let responses: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ins/responses.json")).unwrap()).unwrap();
    assert_eq!(responses["after"][0]["instruction"], "Add one to 34.");
    assert_eq!(responses["after"][0]["output"], "35");

    // One question, or one per line of standard input.
    let (stdout, _) = ok(llm(
        dir.path(),
        &["chat", "--run-dir", "ins", "--prompt", "Add one to 3.", "--max-new-tokens", "4"],
    ));
    assert!(stdout.ends_with("[no end-of-text in 4 tokens]\n") || stdout.lines().count() == 1, "{stdout:?}");
    let err = error(llm(dir.path(), &["chat", "--run-dir", "pre", "--prompt", "hi"]));
    assert!(err.contains("is not an instruction follower's run"), "{err}");
}

#[test]
fn a_llama_is_finetuned_to_follow_instructions_but_makes_no_classifier() {
    let dir = TempDir::new("cli-finetune-llama");
    pretrained_with(&dir, "200", &["--arch", "llama"]);
    instructions(&dir);
    let mut args = vec!["finetune", "instruct", "--init-from", "pre", "--input", "instructions.json"];
    args.extend(["--run-dir", "ins", "--held-out", "2", "--max-new-tokens", "5"]);
    args.extend(SHORT);
    ok(llm(dir.path(), &args));
    let (run, tokenizer) = Run::open(dir.join("ins")).unwrap();
    let ModelConfig::Llama(config) = &run.config.model else { panic!("{:?}", run.config.model) };
    assert_eq!(config.vocab_size, tokenizer.vocab_size(), "grown by the instructions' characters");
    let results = results(&dir.join("ins"));
    assert!(
        results["after"]["response_loss"].as_f64() < results["before"]["response_loss"].as_f64(),
        "{results}"
    );
    let (stdout, _) = ok(llm(
        dir.path(),
        &["chat", "--run-dir", "ins", "--prompt", "Add one to 3.", "--max-new-tokens", "4"],
    ));
    assert!(!stdout.is_empty());

    // A classifier is built on a GPT, and a Llama has no dropout: both refused, nothing written.
    messages(&dir);
    let mut args =
        vec!["finetune", "classify", "--init-from", "pre", "--input", "sms.tsv", "--run-dir", "spam"];
    args.extend(SHORT);
    let err = error(llm(dir.path(), &args));
    assert!(err.contains("pre holds a llama: a classifier is built on a GPT here"), "{err}");
    let mut args = vec!["finetune", "instruct", "--init-from", "pre", "--input", "instructions.json"];
    args.extend(["--run-dir", "drop", "--dropout", "0.1"]);
    let err = error(llm(dir.path(), &args));
    assert!(err.contains("--dropout is not a setting of a llama's model"), "{err}");
    assert!(!dir.join("spam").exists() && !dir.join("drop").exists());
}

#[test]
fn bad_finetuning_data_and_flags_are_refused_before_anything_is_written() {
    let dir = TempDir::new("cli-finetune-bad");
    pretrained(&dir, "16");
    let refused = |args: &[&str], file: (&str, &str), says: &str| {
        std::fs::write(dir.join(file.0), file.1).unwrap();
        let mut all = args.to_vec();
        all.extend(["--run-dir", "new", "--init-from", "pre", "--input", file.0]);
        let err = error(llm(dir.path(), &all));
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!dir.join("new").exists(), "{args:?} left a run folder");
    };
    let good_sms = "spam\tWIN\nham\tok\n";
    refused(
        &["finetune", "classify"],
        ("sms.tsv", "ham\tok\nspammy\tbuy now\n"),
        "line 2: the label is \"spammy\"",
    );
    refused(&["finetune", "classify"], ("empty.tsv", ""), "empty.tsv holds no text");
    refused(
        &["finetune", "instruct"],
        ("bad.json", r#"[{"instruction": "Say hi.", "input": ""}]"#),
        "record 0: missing field `output`",
    );
    refused(&["finetune", "instruct"], ("empty.json", "[]"), "holds no records");
    refused(&["finetune", "classify", "--n-layer", "3"], ("sms.tsv", good_sms), "drop --n-layer");
    refused(&["finetune", "classify", "--preset", "lecture"], ("sms.tsv", good_sms), "drop --preset");
    refused(
        &["finetune", "classify", "--tune", "lora", "--lora-rank", "0"],
        ("sms.tsv", good_sms),
        "--lora-rank must be at least 1",
    );
    // The tiny model's 16 characters hold no Alpaca prompt.
    instructions(&dir);
    refused(
        &["finetune", "instruct"],
        ("instructions.json", &std::fs::read_to_string(dir.join("instructions.json")).unwrap()),
        "longer than the model's context (16 tokens)",
    );
    let err = error(llm(
        dir.path(),
        &["finetune", "instruct", "--run-dir", "new", "--init-from", "pre", "--held-out", "0"],
    ));
    assert!(err.contains("--held-out") && !dir.join("new").exists(), "{err}");
    let err = error(llm(dir.path(), &["finetune", "classify", "--run-dir", "new", "--input", "sms.tsv"]));
    assert!(err.contains("give --init-from RUN|DIR|gpt2"), "{err}");
}

#[test]
fn a_bpe_model_finetunes_with_its_own_vocabulary() {
    let dir = TempDir::new("cli-finetune-bpe");
    let words = "see you at the win cash now text call home later lah ".repeat(300);
    std::fs::write(dir.join("words.txt"), words).unwrap();
    let mut args = vec!["train", "--input", "words.txt", "--tokenizer", "bpe", "--vocab-size", "270"];
    args.extend(["--max-steps", "4", "--eval-interval", "4", "--run-dir", "pre"]);
    args.extend(TINY.chunks(2).flatten());
    ok(llm(dir.path(), &args));
    messages(&dir);
    // Byte-level BPE encodes the messages as they are: the vocabulary and the embedding stay.
    let mut args =
        vec!["finetune", "classify", "--init-from", "pre", "--input", "sms.tsv", "--run-dir", "cls"];
    args.extend(SHORT);
    ok(llm(dir.path(), &args));
    let (run, tokenizer) = Run::open(dir.join("cls")).unwrap();
    assert_eq!((tokenizer.kind(), run.config.model.vocab_size()), ("bpe", 270));
    // Without <|endoftext|>, it has nothing to end a response with.
    instructions(&dir);
    let err = error(llm(
        dir.path(),
        &["finetune", "instruct", "--init-from", "pre", "--input", "instructions.json", "--run-dir", "ins"],
    ));
    assert!(err.contains("bpe tokenizer has no <|endoftext|> to end a response with"), "{err}");
}
