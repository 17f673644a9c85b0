//! `llm train`, `sample`, `eval` and `runs compare`, run for real on a small corpus with a
//! tiny model (1 block, 16 channels, 16 tokens of context), so the file runs in seconds.

use crate::common::{drawn_lines, llm, llm_command as command, TempDir, TINY};
use llm_from_scratch::model::ModelConfig;
use llm_from_scratch::train::Checkpoint;
use sha2::Digest;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A small corpus (about 30 kB) written into the test's folder.
fn corpus(dir: &TempDir) -> String {
    let lines = [
        "First Citizen: Before we proceed any further, hear me speak.",
        "All: Speak, speak.",
        "First Citizen: You are all resolved rather to die than to famish?",
        "All: Resolved. resolved.",
        "Second Citizen: One word, good citizens.",
    ];
    let text: String = (0..120).map(|i| format!("{} ({i})\n", lines[i % lines.len()])).collect();
    std::fs::write(dir.join("corpus.txt"), text).unwrap();
    "corpus.txt".into()
}

/// `llm train`, the tiny model's flags (those not set by `extra`), then `extra`.
fn train_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train"];
    for pair in TINY.chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend_from_slice(pair);
        }
    }
    args.extend_from_slice(extra);
    args
}

/// The step of a checkpoint folder (loaded and verified by the library).
fn checkpoint_step(path: &Path) -> usize {
    Checkpoint::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).step
}

/// The estimates of a run folder's `metrics.jsonl`, in order.
fn estimates(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "eval")
        .collect()
}

fn eval_steps(run: &Path) -> Vec<usize> {
    estimates(run).iter().map(|v| v["step"].as_u64().unwrap() as usize).collect()
}

fn val_losses(run: &Path) -> Vec<f64> {
    estimates(run).iter().map(|v| v["val_loss"].as_f64().unwrap()).collect()
}

#[test]
fn train_resume_sample_and_eval() {
    let dir = TempDir::new("cli-train-resume");
    let input = corpus(&dir);
    let out = llm(
        dir.path(),
        &train_args(&["--input", &input, "--max-steps", "10", "--eval-interval", "5", "--run-dir", "run"]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Not a terminal: plain nanoGPT-style log lines.
    let stdout = text(&out.stdout);
    assert!(stdout.contains("step 5: train loss") && stdout.contains("step 10: train loss"), "{stdout}");
    let run = dir.join("run");
    for file in ["config.json", "tokenizer.json", "metrics.jsonl", "loss.png", "lr.png"] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    assert_eq!(checkpoint_step(&run.join("checkpoints/latest")), 10);
    assert!(checkpoint_step(&run.join("checkpoints/best")) <= 10);
    assert_eq!(eval_steps(&run), [0, 5, 10]);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!((config["model"]["n_embd"].as_u64(), config["train"]["steps"].as_u64()), (Some(16), Some(10)));

    // Resume from the folder alone, longer: it continues at step 10.
    let out = llm(dir.path(), &["train", "--resume", "--run-dir", "run", "--max-steps", "15"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("at step 10"), "{}", text(&out.stderr));
    assert_eq!(checkpoint_step(&run.join("checkpoints/latest")), 15);
    assert_eq!(eval_steps(&run), [0, 5, 10, 15]);

    // The same seed samples the same text; another seed another. The KV cache changes the
    // speed, not the text (30 tokens go past the run's block of 16).
    let sample = |seed: &str, extra: &[&str]| {
        let mut args = vec![
            "sample",
            "--run-dir",
            "run",
            "--prompt",
            "All:",
            "--max-new-tokens",
            "30",
            "--device",
            "cpu",
        ];
        args.extend_from_slice(&["--seed", seed]);
        args.extend_from_slice(extra);
        let out = llm(dir.path(), &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        (text(&out.stdout), text(&out.stderr))
    };
    let (a, cached) = sample("7", &[]);
    assert!(a.starts_with("All:") && a.trim_end().chars().count() >= 30, "{a:?}");
    assert!(cached.contains("30 tokens in") && cached.contains("tokens/s (KV cache)"), "{cached}");
    let (b, uncached) = sample("7", &["--no-cache"]);
    assert_eq!(a, b);
    assert!(uncached.contains("tokens/s (no cache)"), "{uncached}");
    assert_ne!(a, sample("8", &[]).0);
    // --top-k keeps the k most likely tokens or `all` of them; 0 would keep none.
    assert!(sample("7", &["--top-k", "all"]).0.starts_with("All:"));
    let out = llm(dir.path(), &["sample", "--run-dir", "run", "--top-k", "0", "--device", "cpu"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--top-k") && text(&out.stderr).contains("at least 1"),
        "{}",
        text(&out.stderr)
    );
    // Three samples in one batch: sample i is the one seed 7 + i gives alone.
    let (three, stderr) = sample("7", &["--num-samples", "3"]);
    assert!(stderr.contains("90 tokens in"), "{stderr}");
    let three: Vec<&str> = three.split("\n---------------\n").collect();
    assert_eq!(three.len(), 3, "{three:?}");
    for (i, seed) in ["7", "8", "9"].iter().enumerate() {
        assert_eq!(three[i].trim_end(), sample(seed, &[]).0.trim_end(), "sample {i}");
    }

    // Eval on the run's validation split, and on the whole text (both splits): every window
    // of it, against the run's own estimate at the same step from a few random windows.
    let recorded = estimates(&run).pop().unwrap();
    assert_eq!(recorded["step"], 15);
    let (train_loss, val_loss) =
        (recorded["train_loss"].as_f64().unwrap(), recorded["val_loss"].as_f64().unwrap());
    for (extra, expected) in
        [(&[][..], val_loss), (&["--input", "corpus.txt"][..], 0.9 * train_loss + 0.1 * val_loss)]
    {
        let mut args = vec!["eval", "--checkpoint", "run/checkpoints/latest", "--device", "cpu"];
        args.extend_from_slice(extra);
        let out = llm(dir.path(), &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let line = text(&out.stdout);
        let loss: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!((loss - expected).abs() < EVAL_TOLERANCE, "{line} (the run's estimate: {expected:.4})");
        assert!(
            line.contains("perplexity") && line.contains("bits per character") && line.contains("step 15"),
            "{line}"
        );
    }

    // Compare two runs in one plot: a second, shorter run at another learning rate.
    let out = llm(
        dir.path(),
        &train_args(&["--input", &input, "--max-steps", "5", "--lr", "1e-2", "--run-dir", "run2"]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = llm(dir.path(), &["runs", "compare", "run", "run2", "--out", "cmp.png"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "cmp.png");
    assert_eq!(drawn_lines(&std::fs::read(dir.join("cmp.png")).unwrap()), 2, "one line a run");
}

/// How far `llm eval`, which reads every window of a text, may be from the run's estimate
/// at the same step, which averaged 2 batches of 4 random windows: 0.05 nats.
const EVAL_TOLERANCE: f64 = 0.05;

#[test]
fn early_stopping_keeps_the_best_checkpoint_and_says_so() {
    let dir = TempDir::new("cli-early-stop");
    let input = corpus(&dir);
    // Too small a learning rate to improve: the estimates wander, and the run ends early.
    let out = llm(
        dir.path(),
        &train_args(&[
            "--input",
            &input,
            "--max-steps",
            "400",
            "--eval-interval",
            "4",
            "--eval-iters",
            "2",
            "--lr",
            "1e-12",
            "--early-stop-patience",
            "2",
            "--run-dir",
            "run",
        ]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stdout.contains("early stop at step"), "{stdout}");
    assert!(stderr.contains("stopped early: no new best in 2 estimates"), "{stderr}");
    let run = dir.join("run");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(last["kind"], "early_stop");
    let stopped_at = last["step"].as_u64().unwrap() as usize;
    assert!(stopped_at < 400);
    assert_eq!(checkpoint_step(&run.join("checkpoints/latest")), stopped_at);
    assert_eq!(checkpoint_step(&run.join("checkpoints/best")), last["best_step"].as_u64().unwrap() as usize);
}

#[test]
fn a_text_by_url_is_fetched_once_and_pinned_by_its_hash() {
    use crate::common::http::{Reply, Server};
    use std::sync::{Arc, Mutex};
    let dir = TempDir::new("cli-input-url");
    corpus(&dir);
    let book = Arc::new(Mutex::new(std::fs::read(dir.join("corpus.txt")).unwrap()));
    let served = book.clone();
    let server = Server::start(move |path| match path {
        "/books/corpus.txt" => Reply::Body(served.lock().unwrap().clone()),
        _ => Reply::Status(404),
    });
    let url = server.url("/books/corpus.txt");
    let out = llm(dir.path(), &["data", "fetch", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = std::path::PathBuf::from(text(&out.stdout).trim());
    assert_eq!(std::fs::read(&path).unwrap(), *book.lock().unwrap());

    let out = llm(
        dir.path(),
        &train_args(&["--input-url", &url, "--max-steps", "2", "--eval-interval", "2", "--run-dir", "run"]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run/config.json")).unwrap()).unwrap();
    let sha =
        sha2::Sha256::digest(&*book.lock().unwrap()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(config["data"]["input_url"]["url"], url.as_str());
    assert_eq!(config["data"]["input_url"]["sha256"], sha.as_str());
    assert_eq!(server.requests().len(), 1, "the run used the copy fetched before");

    // The book changed upstream and the local copy is gone: resuming refuses to train on
    // other text; `llm data fetch --refresh` takes the new one.
    book.lock().unwrap().extend_from_slice(b"A new last line.\n");
    std::fs::remove_file(&path).unwrap();
    let out = llm(dir.path(), &["train", "--resume", "--run-dir", "run", "--max-steps", "4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("changed since this run first downloaded it"),
        "{}",
        text(&out.stderr)
    );
    let out = llm(dir.path(), &["data", "fetch", &url]);
    assert!(text(&out.stderr).contains("--refresh"), "{}", text(&out.stderr));
    let out = llm(dir.path(), &["data", "fetch", &url, "--refresh"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&path).unwrap().ends_with("A new last line.\n"));
}

#[test]
fn a_corpus_with_its_own_splits_trains_and_validates_on_them() {
    use crate::common::http::{Reply, Server};
    use crate::common::{wikitext_zip, WIKI};
    let dir = TempDir::new("cli-wikitext");
    let zip = wikitext_zip(&WIKI);
    let served = zip.clone();
    let server = Server::start(move |path| match path {
        "/wikitext-2-raw-v1.zip" => Reply::Body(served.clone()),
        _ => Reply::Status(404),
    });
    // A manifest entry of one's own in WikiText-2's layout (the real one is 4.7 MB away).
    let sha = sha2::Sha256::digest(&zip).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let entry = serde_json::json!([{
        "name": "tiny-wiki", "description": "WikiText-2's layout in miniature",
        "urls": [server.url("/wikitext-2-raw-v1.zip")], "file": "tiny-wiki.zip", "size": zip.len(), "sha256": sha,
        "splits": {"train": WIKI[0].0, "valid": WIKI[1].0, "test": WIKI[2].0}
    }]);
    std::fs::write(dir.join("manifest.json"), entry.to_string()).unwrap();
    let run = |args: &[&str]| {
        let mut llm = command(dir.path(), args);
        // From the entry's own URL: not the test mirror `make test` may have set.
        llm.env("LLM_DATA_MANIFEST", dir.join("manifest.json"))
            .env_remove("LLM_DATA_MIRROR")
            .output()
            .unwrap()
    };
    let out = run(&train_args(&[
        "--dataset",
        "tiny-wiki",
        "--max-steps",
        "2",
        "--eval-interval",
        "2",
        "--run-dir",
        "run",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let train_chars = WIKI[0].1.chars().count();
    assert!(text(&out.stderr).contains(&format!("{train_chars} training tokens")), "{}", text(&out.stderr));
    // The validation split is the corpus' own, not the last tenth of it.
    let out = run(&["eval", "--run-dir", "run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let valid_chars = WIKI[1].1.chars().count() - 1; // every character but the first is predicted
    assert!(
        text(&out.stdout)
            .contains(&format!("({valid_chars} tokens, {valid_chars} characters of the validation split")),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_config_file_is_read_and_flags_override_it() {
    let dir = TempDir::new("cli-train-config");
    corpus(&dir);
    std::fs::write(
        dir.join("run.toml"),
        "input = \"corpus.txt\"\nn_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 16\nbatch_size = 4\n\
         eval_iters = 2\nmax_steps = 100\nwarmup = 0\neval_interval = 3\ndevice = \"cpu\"\nd_ff = 40\n",
    )
    .unwrap();
    let out = llm(
        dir.path(),
        &[
            "train",
            "--config",
            "run.toml",
            "--max-steps",
            "3",
            "--position",
            "sinusoidal",
            "--run-dir",
            "run",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("(sinusoidal positions)"), "{}", text(&out.stderr));
    let json = |path: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(path)).unwrap()).unwrap()
    };
    let config = json("run/config.json");
    assert_eq!(config["train"]["steps"], 3);
    assert_eq!(config["train"]["eval_interval"], 3);
    assert_eq!(config["data"]["input"], dir.join("corpus.txt").display().to_string());
    // The model's choices are in the run's config and in its checkpoint.
    assert_eq!((&config["model"]["position"], &config["model"]["d_ff"]), (&"sinusoidal".into(), &40.into()));
    let checkpoint = json("run/checkpoints/latest/checkpoint.json");
    assert_eq!(checkpoint["model_config"]["position"], "sinusoidal");
    let out = llm(dir.path(), &["train", "--run-dir", "run", "--resume", "--position", "learned"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--position learned (the run has sinusoidal)"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(dir.join("typo.json"), r#"{"n_layers": 2}"#).unwrap();
    let out = llm(dir.path(), &["train", "--config", "typo.json", "--run-dir", "run2"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown field `n_layers`"), "{}", text(&out.stderr));
    assert!(!dir.join("run2").exists());
}

#[test]
fn bad_inputs_are_rejected_before_any_work() {
    let dir = TempDir::new("cli-train-bad");
    let input = corpus(&dir);
    let cases: &[(&[&str], &str)] = &[
        (&["--n-embd", "30", "--n-head", "4"], "--n-embd (30) must be divisible by --n-head (4)"),
        (&["--n-head", "3"], "--n-embd (16) must be divisible by --n-head (3)"),
        (&["--block-size", "0"], "--block-size must be at least 1"),
        (&["--lr", "0"], "--lr must be a positive number"),
        (&["--lr=-1"], "--lr must be a positive number"),
        (&["--max-steps", "10", "--warmup", "10"], "--warmup (10) must be fewer than --max-steps (10)"),
        (&["--dataset", "no-such-corpus"], "unknown dataset 'no-such-corpus'"),
        (&["--tokenizer-path", "missing.json"], "--tokenizer-path"),
        (
            &["--tokenizer", "bpe", "--vocab-size", "200"],
            "--vocab-size 200: invalid configuration: vocab_size 200 is too small",
        ),
        (&["--text-files", "no-such-dir"], "--text-files"),
        (&["--device", "tpu"], "unknown device 'tpu'"),
        (&["--max-steps", "5", "--max-epochs", "1"], "--max-steps or --max-epochs, not both"),
        // 206 billion parameters: refused with the numbers before anything is allocated.
        (
            &["--n-layer", "64", "--n-embd", "16384", "--n-head", "16", "--device", "cpu"],
            "training this model needs about",
        ),
    ];
    for (extra, message) in cases {
        let mut own = vec!["--run-dir", "run"];
        if !extra.iter().any(|a| a.starts_with("--dataset") || a.starts_with("--text-files")) {
            own.extend_from_slice(&["--input", &input]);
        }
        if !extra.contains(&"--max-steps") {
            own.extend_from_slice(&["--max-steps", "5"]);
        }
        own.extend_from_slice(extra);
        let args = train_args(&own);
        let out = llm(dir.path(), &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(stderr.contains(message), "{extra:?}: expected {message:?} in {stderr}");
        assert_eq!(dir.entries(), ["corpus.txt"], "{extra:?} left something behind");
    }
    // Resuming with a different model is refused, and the run is left as it was.
    let out = llm(
        dir.path(),
        &train_args(&["--input", &input, "--max-steps", "2", "--eval-interval", "2", "--run-dir", "run"]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = std::fs::read(dir.join("run/config.json")).unwrap();
    let out =
        llm(dir.path(), &["train", "--resume", "--run-dir", "run", "--n-embd", "32", "--max-steps", "4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--n-embd 32 (the run has 16)"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(dir.join("run/config.json")).unwrap(), before);
    assert_eq!(checkpoint_step(&dir.join("run/checkpoints/latest")), 2);
    // --resume of a folder that is not a run.
    let out = llm(dir.path(), &["train", "--resume", "--run-dir", "nothing-here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("does not exist"), "{}", text(&out.stderr));
    assert!(!dir.join("nothing-here").exists());
}

/// Start a long `llm train` in the background, saving a checkpoint every 2 steps.
fn start_long_run(dir: &TempDir, input: &str) -> Child {
    let args =
        train_args(&["--input", input, "--max-steps", "1000000", "--eval-interval", "2", "--run-dir", "run"]);
    command(dir.path(), &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start llm train")
}

/// Wait until the run's latest checkpoint reaches `step`, and return its step.
fn wait_for_checkpoint(child: &mut Child, latest: &Path, step: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("llm train ended early: {status}");
        }
        // A checkpoint caught between the two renames of a save is simply read again.
        if let Ok(ckpt) = Checkpoint::load(latest) {
            if ckpt.step >= step {
                return ckpt.step;
            }
        }
        assert!(Instant::now() < deadline, "no checkpoint at step {step} within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn kill_9_loses_at_most_the_steps_since_the_last_checkpoint() {
    let dir = TempDir::new("cli-train-kill");
    let input = corpus(&dir);
    let latest = dir.join("run/checkpoints/latest");
    let mut child = start_long_run(&dir, &input);
    let seen = wait_for_checkpoint(&mut child, &latest, 6);
    // A second process on the folder is refused while the first trains in it, and says which.
    let out = llm(dir.path(), &["train", "--resume", "--run-dir", "run", "--max-steps", "2000000"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let busy = format!("another process (PID {}) is training in it", child.id());
    assert!(text(&out.stderr).contains(&busy), "{}", text(&out.stderr));
    std::thread::sleep(Duration::from_millis(30)); // into a later step
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // The last checkpoint is whole and loads; resume continues from its step (the killed
    // process's lock went with it).
    let step = checkpoint_step(&latest);
    assert!(step >= seen && step % 2 == 0, "step {step}");
    let target = (step + 4).to_string();
    let out = llm(dir.path(), &["train", "--resume", "--run-dir", "run", "--max-steps", &target]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("at step {step}")), "{}", text(&out.stderr));
    assert_eq!(checkpoint_step(&latest), step + 4);
    // metrics.jsonl was rewritten from the checkpoint: every estimate once, in order.
    let steps = eval_steps(&dir.join("run"));
    assert_eq!(steps, (0..=step + 4).step_by(2).collect::<Vec<_>>());
}

#[test]
fn resuming_a_folder_without_a_checkpoint_starts_as_a_fresh_run_would() {
    let dir = TempDir::new("cli-train-no-checkpoint");
    let input = corpus(&dir);
    for run in ["fresh", "resumed"] {
        let out = llm(dir.path(), &train_args(&["--input", &input, "--max-steps", "4", "--run-dir", run]));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // As a run killed before its first checkpoint leaves it.
    std::fs::remove_dir_all(dir.join("resumed/checkpoints")).unwrap();
    std::fs::create_dir(dir.join("resumed/checkpoints")).unwrap();
    let out = llm(dir.path(), &["train", "--resume", "--run-dir", "resumed"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("at step 0"), "{}", text(&out.stderr));
    let weights = |run: &str| {
        let path = dir.join(run).join("checkpoints/latest/model.safetensors");
        let mut named = tch::Tensor::read_safetensors(&path).unwrap();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    };
    let (fresh, resumed) = (weights("fresh"), weights("resumed"));
    assert_eq!(fresh.len(), resumed.len());
    for ((name, a), (_, b)) in fresh.iter().zip(&resumed) {
        assert!(a.equal(b), "{name} differs: the resumed run did not start from the seeded weights");
    }
}

#[test]
fn sigint_and_sigterm_save_a_checkpoint_and_say_how_to_resume() {
    for (signal, code) in [("-INT", 130), ("-TERM", 143)] {
        let dir = TempDir::new(&format!("cli-train-signal{signal}"));
        let input = corpus(&dir);
        let latest = dir.join("run/checkpoints/latest");
        let mut child = start_long_run(&dir, &input);
        wait_for_checkpoint(&mut child, &latest, 2);
        let kill = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
        assert!(kill.success());
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains("llm train --resume --run-dir run"), "{stderr}");
        // The checkpoint is at the step it stopped at, which need not be an evaluation's.
        // Of the run's steps, not of the piece between two estimates; in the command line's
        // words only (a notebook's "train again with the same trainer" means nothing here).
        let step = checkpoint_step(&latest);
        assert!(stderr.contains(&format!("stopped at step {step} of 1000000 (")), "{stderr}");
        let stdout = text(&out.stdout);
        assert!(!stdout.contains("stopped at") && !stderr.contains("trainer"), "{stdout}\n{stderr}");
    }
}

#[test]
fn init_from_starts_a_new_run_from_a_trained_gpt2_folder() {
    let dir = TempDir::new("cli-train-init-from");
    let input = corpus(&dir);
    let first = [
        "--input",
        &input,
        "--max-steps",
        "150",
        "--eval-interval",
        "150",
        "--eval-iters",
        "20",
        "--run-dir",
        "first",
    ];
    let out = llm(dir.path(), &train_args(&first));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = llm(dir.path(), &["export", "--run-dir", "first", "--out", "hf"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A new run from the export: its weights, sizes and tokenizer, this run's training.
    let second = [
        "train",
        "--init-from",
        "hf",
        "--input",
        &input,
        "--max-steps",
        "4",
        "--eval-interval",
        "4",
        "--eval-iters",
        "20",
        "--warmup",
        "0",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--run-dir",
        "second",
    ];
    let out = llm(dir.path(), &second);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (trained, started) = (val_losses(&dir.join("first")), val_losses(&dir.join("second")));
    assert!(trained[1] < trained[0] - 0.5, "the first run learned: {trained:?}");
    assert!(
        (started[0] - trained[1]).abs() < 0.1,
        "step 0 of the second run is where the first ended: {started:?} vs {trained:?}"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("second/config.json")).unwrap()).unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("first/config.json")).unwrap()).unwrap();
    assert_eq!(config["init_from"], "hf");
    assert_eq!(
        (&config["model"]["n_embd"], &config["model"]["n_layer"]),
        (&saved["model"]["n_embd"], &saved["model"]["n_layer"])
    );
    assert_eq!(
        std::fs::read(dir.join("second/tokenizer.json")).unwrap(),
        std::fs::read(dir.join("first/tokenizer.json")).unwrap()
    );

    // What --init-from cannot be given with, each refused before anything is written.
    let refused = |args: &[&str], says: &str| {
        let out = llm(dir.path(), args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{args:?}: {stderr}");
    };
    refused(&["train", "--init-from", "hf", "--resume", "--run-dir", "second"], "cannot be used with");
    refused(
        &["train", "--init-from", "hf", "--input", &input, "--run-dir", "second"],
        "starts a new run, and second holds one already",
    );
    refused(
        &["train", "--init-from", "hf", "--input", &input, "--n-layer", "3", "--run-dir", "third"],
        "takes the model's sizes and tokenizer from there: drop --n-layer",
    );
    refused(
        &["train", "--init-from", "nowhere", "--input", &input, "--run-dir", "third"],
        "nowhere: no such folder or file",
    );
    assert!(!dir.join("third").exists());
}

/// A run folder written by the code before `model/layers` (commit 6a6001f, `llm train --input
/// corpus.txt --max-steps 10 --eval-interval 5` with the tiny model's flags; its latest
/// checkpoint only), copied to `dir/run`, its corpus beside it.
fn run_from_before_the_layers(dir: &TempDir) -> std::path::PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run_before_layers");
    let run = dir.join("run");
    std::fs::create_dir_all(run.join("checkpoints/latest")).unwrap();
    for file in ["config.json", "tokenizer.json", "metrics.jsonl"] {
        std::fs::copy(fixture.join(file), run.join(file)).unwrap();
    }
    for file in ["checkpoint.json", "model.safetensors", "optimizer.safetensors"] {
        let name = format!("checkpoints/latest/{file}");
        std::fs::copy(fixture.join(&name), run.join(&name)).unwrap();
    }
    std::fs::copy(fixture.join("corpus.txt"), dir.join("corpus.txt")).unwrap();
    // The folder names its corpus by absolute path: this machine's copy.
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    config["data"]["input"] = dir.join("corpus.txt").to_string_lossy().into_owned().into();
    std::fs::write(run.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    run
}

#[test]
fn a_run_folder_from_before_the_layers_samples_evaluates_and_resumes_as_it_did() {
    let dir = TempDir::new("cli-old-run");
    let run = run_from_before_the_layers(&dir);
    // What the code that wrote it printed for the same commands.
    let out = llm(
        dir.path(),
        &[
            "sample",
            "--run-dir",
            "run",
            "--prompt",
            "All:",
            "--max-new-tokens",
            "24",
            "--device",
            "cpu",
            "--seed",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "All:alyFFmtS7oBdFYF1gpht()R.\n");
    let out = llm(dir.path(), &["eval", "--run-dir", "run", "--device", "cpu"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("loss 3.8173 nats/token"), "{}", text(&out.stdout));

    // It resumes at step 10 and goes on to 15.
    let out = llm(dir.path(), &["train", "--resume", "--run-dir", "run", "--max-steps", "15"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("at step 10"), "{}", text(&out.stderr));
    assert_eq!(checkpoint_step(&run.join("checkpoints/latest")), 15);
    assert_eq!(eval_steps(&run), [0, 5, 10, 15]);
    // From here on its model says its architecture, in the folder and in the checkpoint.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["arch"], "gpt");
    let checkpoint = Checkpoint::load(run.join("checkpoints/latest")).unwrap();
    assert_eq!(checkpoint.model_config["arch"], "gpt");
    let old = Checkpoint::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run_before_layers/checkpoints/latest"),
    );
    let old: ModelConfig = old.unwrap().model_config().unwrap();
    assert_eq!(old, checkpoint.model_config::<ModelConfig>().unwrap());
}

#[test]
fn a_llama_trains_resumes_and_samples_from_the_command_line() {
    let dir = TempDir::new("cli-train-llama");
    let input = corpus(&dir);
    let first = [
        "--arch",
        "llama",
        "--n-kv-head",
        "1",
        "--input",
        &input,
        "--max-steps",
        "8",
        "--eval-interval",
        "4",
        "--run-dir",
        "llama",
    ];
    let out = llm(dir.path(), &train_args(&first));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("(Llama-style, 1 of 2 heads for keys and values)"),
        "{}",
        text(&out.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("llama/config.json")).unwrap()).unwrap();
    assert_eq!(
        (config["model"]["arch"].as_str(), config["model"]["n_kv_head"].as_u64()),
        (Some("llama"), Some(1))
    );
    // SwiGLU's width from the tiny model's 16 channels: 2/3 of 4 × 16, rounded up.
    assert_eq!(config["model"]["intermediate_size"].as_u64(), Some(43));
    let out = llm(dir.path(), &["train", "--resume", "--run-dir", "llama", "--max-steps", "12"]);
    assert!(
        out.status.success() && checkpoint_step(&dir.join("llama/checkpoints/latest")) == 12,
        "{}",
        text(&out.stderr)
    );
    let sampled =
        llm(dir.path(), &["sample", "--run-dir", "llama", "--max-new-tokens", "20", "--device", "cpu"]);
    assert!(
        sampled.status.success() && text(&sampled.stdout).chars().count() >= 20,
        "{}",
        text(&sampled.stderr)
    );
    // Exported, the folder carries the run's tokenizer: sampled from there, the same text.
    let out = llm(dir.path(), &["export", "--run-dir", "llama", "--out", "llama-hf"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out =
        llm(dir.path(), &["sample", "--model", "llama-hf", "--max-new-tokens", "20", "--device", "cpu"]);
    assert_eq!(text(&out.stdout), text(&sampled.stdout), "{}", text(&out.stderr));
    // And a new run trains on from the folder: a Llama of its sizes, with its tokenizer.
    let again = [
        "train",
        "--init-from",
        "llama-hf",
        "--input",
        &input,
        "--max-steps",
        "4",
        "--warmup",
        "0",
        "--eval-interval",
        "2",
    ];
    let out = llm(dir.path(), &[&again[..], &["--run-dir", "again", "--device", "cpu"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("again/config.json")).unwrap()).unwrap();
    assert_eq!(
        (config["model"]["arch"].as_str(), config["model"]["n_kv_head"].as_u64()),
        (Some("llama"), Some(1))
    );
    assert_eq!(config["init_from"].as_str(), Some("llama-hf"));
    let out = llm(dir.path(), &[&again[..], &["--run-dir", "no", "--dropout", "0.1"]].concat());
    assert!(
        text(&out.stderr).contains("--dropout is not a setting of a llama's model")
            && !dir.join("no").exists(),
        "{}",
        text(&out.stderr)
    );
    // A Llama's flags on a GPT, a GPT's on a Llama, and another arch on resume are refused.
    for (args, says) in [
        (&["--n-kv-head", "2", "--run-dir", "a"][..], "--n-kv-head is not a setting of a gpt's model"),
        (
            &["--arch", "llama", "--position", "sinusoidal", "--run-dir", "b"],
            "--position is not a setting of a llama's model",
        ),
        (&["--arch", "llama", "--n-kv-head", "3", "--run-dir", "c"], "multiple of n_kv_head (3)"),
    ] {
        let out = llm(dir.path(), &train_args(&[&["--input", &input][..], args].concat()));
        assert!(!out.status.success() && text(&out.stderr).contains(says), "{args:?}: {}", text(&out.stderr));
    }
    let out = llm(dir.path(), &["train", "--resume", "--run-dir", "llama", "--arch", "gpt"]);
    assert!(text(&out.stderr).contains("--arch gpt (the run has llama)"), "{}", text(&out.stderr));
}
