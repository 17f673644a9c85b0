//! Beyond one machine, for real: `llm train` → `llm export` → two processes of PyTorch's
//! DistributedDataParallel (`torchrun`, gloo on the loopback interface) continue the
//! training → `llm` reads the result back, and `transformers` agrees with it.

use crate::common::{TempDir, TINY};
use crate::hf::{ids_of, logits, max_diff, oracle, tensor_of};
use llm_from_scratch::model::hf;
use llm_from_scratch::tokenizer::{AnyTokenizer, Tokenizer};
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tch::Device;

/// Run `cmd` in `dir` with its output in files there; kill it (and every process it
/// started) past `limit`. Fails the test, with the command's output, unless it succeeds.
fn bounded(mut cmd: Command, dir: &Path, what: &str, limit: Duration) -> String {
    let (out, err) = (dir.join(format!("{what}.out")), dir.join(format!("{what}.err")));
    let mut child = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .process_group(0) // its own group, so a timeout kills torchrun's workers too
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            // SAFETY: kill(2) on the process group we created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (std::fs::read_to_string(out).unwrap(), std::fs::read_to_string(err).unwrap());
    match status {
        Some(s) if s.success() => stdout,
        Some(s) => panic!("{what} failed ({s}):\n{stdout}\n{stderr}"),
        None => panic!("{what} ran past {limit:?}:\n{stdout}\n{stderr}"),
    }
}

fn llm(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llm"));
    cmd.args(args);
    cmd
}

/// The number after `before` in `text`.
fn number_after(text: &str, before: &str) -> f64 {
    let rest =
        &text[text.find(before).unwrap_or_else(|| panic!("no {before:?} in:\n{text}")) + before.len()..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || ".-e".contains(c))).unwrap_or(rest.len());
    rest[..end].trim_end_matches('.').parse().unwrap_or_else(|_| panic!("no number after {before:?}: {rest}"))
}

#[test]
fn a_run_continues_on_two_ddp_processes_and_comes_back_the_same_in_llm_and_transformers() {
    let dir = TempDir::new("ddp-round-trip");
    let lines = ["First Citizen: Before we proceed any further, hear me speak.", "All: Speak, speak."];
    let corpus: String = (0..300).map(|i| format!("{}\n", lines[i % 2])).collect();
    std::fs::write(dir.join("corpus.txt"), &corpus).unwrap();
    let minute = Duration::from_secs(60);

    // 1. Here: a byte-level BPE, a tiny run with accumulation, its export.
    let tokenizer =
        ["tokenizer", "train", "--input", "corpus.txt", "--vocab-size", "300", "--out", "bpe.json"];
    bounded(llm(&tokenizer), dir.path(), "tokenizer", minute);
    let mut train =
        vec!["train", "--input", "corpus.txt", "--tokenizer-path", "bpe.json", "--run-dir", "run"];
    train.extend_from_slice(TINY);
    train.extend_from_slice(&["--max-steps", "20", "--grad-accum", "2", "--eval-interval", "20"]);
    bounded(llm(&train), dir.path(), "train", minute);
    bounded(llm(&["export", "--run-dir", "run", "--out", "hf"]), dir.path(), "export", minute);
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("hf/llm_training.json")).unwrap()).unwrap();
    assert_eq!(settings["train"]["grad_accum"], 2);

    // 2. There: two processes continue it with DDP, on the loopback interface only.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut ddp = Command::new(root.join(".venv/bin/torchrun"));
    ddp.args(["--standalone", "--nproc_per_node", "2"])
        .arg(root.join("scripts/train_ddp.py"))
        .args(["--model", "hf", "--data", "corpus.txt", "--steps", "20", "--out", "hf-ddp"])
        .env("GLOO_SOCKET_IFNAME", "lo")
        .env("OMP_NUM_THREADS", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error");
    let log = bounded(ddp, dir.path(), "torchrun", minute);
    // The export's batch 4 x accumulation 2, split over the processes: 1 micro-batch each.
    assert!(log.contains("global batch 4 x 1 accumulation x 2 processes = 8 sequences"), "{log}");
    assert_eq!(number_after(&log, "processes' weights differ by at most "), 0.0, "{log}");
    let (before, after) = (number_after(&log, "batch: loss "), number_after(&log, "before, "));
    assert!(after < before, "the fixed batch's loss went from {before} to {after}:\n{log}");

    // 3. Back here: the same logits as transformers' (to 1e-4), and the same greedy text.
    let folder = dir.join("hf-ddp");
    assert!(!folder.join(hf::LLM_TOKENIZER_FILE).exists(), "read back through the folder's tokenizer.json");
    let (prompt, n) = ("First Citizen:", 10);
    let theirs: Value =
        serde_json::from_str(&oracle(&["generate", folder.to_str().unwrap(), prompt, &n.to_string()]))
            .unwrap();
    let model = hf::load(&folder, Device::Cpu).unwrap();
    let Some(AnyTokenizer::Bpe(bpe)) = hf::load_tokenizer(&folder).unwrap() else {
        panic!("no BPE tokenizer")
    };
    let ids = bpe.encode(prompt).unwrap();
    assert_eq!(ids, ids_of(&theirs["ids"]));
    let gap = max_diff(&logits(&model, &ids), &tensor_of(&theirs["logits"]));
    assert!(gap < 1e-4, "logits differ from transformers' by {gap}");
    let sample =
        ["sample", "--model", "hf-ddp", "--prompt", prompt, "--max-new-tokens", "10", "--top-k", "1"];
    let printed = bounded(llm(&sample), dir.path(), "sample", minute);
    assert_eq!(
        printed.strip_suffix('\n'),
        Some(format!("{prompt}{}", theirs["text"].as_str().unwrap()).as_str())
    );
    // And `llm eval --model` measures the continued training: a lower loss on the corpus.
    let eval = |model: &str| {
        let out =
            bounded(llm(&["eval", "--model", model, "--input", "corpus.txt"]), dir.path(), "eval", minute);
        number_after(&out, "loss ")
    };
    let (exported, continued) = (eval("hf"), eval("hf-ddp"));
    assert!(continued < exported, "llm eval: {exported} exported, {continued} after DDP");
}
