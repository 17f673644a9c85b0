//! `llm train --mlflow URI` against a real MLflow server, started here on 127.0.0.1 with a
//! store in a temp folder, and read back through MLflow's REST API; and against a URI where
//! no server is. The tests that need MLflow are ignored by a plain `cargo test`: `make test`
//! installs it (`bash scripts/mlflow.sh install`, into .venv-mlflow/) and runs them with
//! `cargo test --test mlflow -- --ignored`. `MLFLOW_BIN` may name another `mlflow` executable.

mod common;

use common::{TempDir, TINY};
use llm_from_scratch::data::TokenData;
use llm_from_scratch::model::{Bigram, LanguageModel};
use llm_from_scratch::report::LiveReport;
use llm_from_scratch::tokenizer::{CharTokenizer, Tokenizer};
use llm_from_scratch::train::{TrainConfig, Trainer};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to answer `/health` (a first start creates its database).
const STARTUP: Duration = Duration::from_secs(90);

/// One test at a time: two servers starting at once on two cores starve the runs they serve,
/// and the live report's test sets `MLFLOW_TRACKING_URI` for this process.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn my_turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// An `mlflow server` of its own, killed (with its worker processes) when dropped.
struct Server {
    child: Child,
    port: u16,
    store: TempDir,
    http: reqwest::blocking::Client,
}

impl Server {
    fn start(test: &str) -> Server {
        let mlflow = std::env::var_os("MLFLOW_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-mlflow/bin/mlflow"));
        assert!(
            mlflow.is_file(),
            "{} not found: install MLflow with `bash scripts/mlflow.sh install` (or set MLFLOW_BIN)",
            mlflow.display()
        );
        let store = TempDir::new(test);
        let port = free_port();
        let log = std::fs::File::create(store.join("server.log")).expect("server log");
        let child = Command::new(&mlflow)
            .args(["server", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", store.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(store.join("artifacts"))
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log)
            .process_group(0) // its uvicorn worker too, for the kill
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", mlflow.display()));
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let mut server = Server { child, port, store, http };
        let started = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("mlflow server ended ({status}) before it answered:\n{}", server.log());
            }
            let health = server.http.get(format!("{}/health", server.uri())).send();
            if health.is_ok_and(|r| r.status().is_success()) {
                eprintln!("mlflow server up in {:.1} s", started.elapsed().as_secs_f64());
                return server;
            }
            assert!(
                started.elapsed() < STARTUP,
                "mlflow server not up within {} s; its log:\n{}",
                STARTUP.as_secs(),
                server.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.store.join("server.log")).unwrap_or_default()
    }

    /// SIGKILL to the server and its workers: it is gone at once, as in a crash.
    fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }

    fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Value {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.uri());
        let response = self.http.get(&url).query(query).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        json_of(&url, response)
    }

    fn post(&self, endpoint: &str, body: &Value) -> Value {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.uri());
        let response = self
            .http
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        json_of(&url, response)
    }

    /// The runs of the experiment called `name` (none if there is no such experiment yet).
    fn runs(&self, experiment: &str) -> Vec<Value> {
        let url = format!("{}/api/2.0/mlflow/experiments/get-by-name", self.uri());
        let found = self.http.get(&url).query(&[("experiment_name", experiment)]).send().unwrap();
        if !found.status().is_success() {
            return Vec::new();
        }
        let id = json_of(&url, found)["experiment"]["experiment_id"].clone();
        let runs = self.post("runs/search", &json!({"experiment_ids": [id]}));
        runs["runs"].as_array().cloned().unwrap_or_default()
    }

    /// `(step, value)` of every point of a metric, in step order.
    fn history(&self, run_id: &str, key: &str) -> Vec<(u64, f64)> {
        let reply = self.get("metrics/get-history", &[("run_id", run_id), ("metric_key", key)]);
        let mut points: Vec<(u64, f64)> = reply["metrics"]
            .as_array()
            .map(|ms| {
                ms.iter().map(|m| (m["step"].as_u64().unwrap(), m["value"].as_f64().unwrap())).collect()
            })
            .unwrap_or_default();
        points.sort_by(|a, b| a.partial_cmp(b).unwrap());
        points
    }

    /// A file of a run, downloaded through the artifact proxy.
    fn artifact(&self, artifact_uri: &str, path: &str) -> Vec<u8> {
        let root = artifact_uri.strip_prefix("mlflow-artifacts:/").expect("a proxied artifact_uri");
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{root}/{path}", self.uri());
        let response = self.http.get(&url).send().unwrap();
        assert!(response.status().is_success(), "GET {url}: {}", response.status());
        response.bytes().unwrap().to_vec()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn json_of(url: &str, response: reqwest::blocking::Response) -> Value {
    let status = response.status();
    let text = response.text().unwrap();
    assert!(status.is_success(), "{url}: {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

/// A port nothing listens on (free a moment ago).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap()
}

/// `llm train` in `dir` with the tiny model's flags, then `extra`; no MLflow settings from the
/// environment of whoever runs the tests.
fn train(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llm"));
    cmd.arg("train")
        .args(TINY)
        .args(extra)
        .current_dir(dir)
        .env("LLM_DATA_DIR", dir.join("no-downloads-here"))
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("MLFLOW_EXPERIMENT_NAME");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A small corpus (about 30 kB) in the test's folder.
fn corpus(dir: &TempDir) -> &'static str {
    let lines = ["First Citizen: Before we proceed any further, hear me speak.", "All: Speak, speak."];
    let text: String = (0..400).map(|i| format!("{} ({i})\n", lines[i % lines.len()])).collect();
    std::fs::write(dir.join("corpus.txt"), text).unwrap();
    "corpus.txt"
}

fn warnings(stderr: &str) -> usize {
    stderr.matches("warning: MLflow").count()
}

/// The `(step, value)` of one metric of the run folder's `metrics.jsonl`.
fn jsonl(run: &Path, kind: &str, key: &str) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .filter_map(|v| Some((v["step"].as_u64().unwrap(), v[key].as_f64()?))) // null: no metric
        .collect()
}

#[test]
#[ignore = "needs MLflow: make test installs it (scripts/mlflow.sh install) and runs this with --ignored"]
fn a_short_run_logs_its_params_curves_and_plots() {
    let _turn = my_turn();
    let server = Server::start("mlflow-server-short");
    let dir = TempDir::new("mlflow-short");
    let input = corpus(&dir);
    let uri = server.uri();
    let args =
        ["--input", input, "--max-steps", "10", "--eval-interval", "5", "--run-dir", "run", "--mlflow", &uri];
    let out = train(dir.path(), &args).env("MLFLOW_EXPERIMENT_NAME", "cli-test").output().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(warnings(&stderr), 0, "{stderr}");

    // One run in the experiment $MLFLOW_EXPERIMENT_NAME names, named after the folder, ended.
    let runs = server.runs("cli-test");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let info = &runs[0]["info"];
    assert_eq!(
        (info["run_name"].as_str(), info["status"].as_str()),
        (Some("run"), Some("FINISHED")),
        "{info}"
    );
    assert!(info["end_time"].as_i64() >= info["start_time"].as_i64(), "{info}");
    let run_id = info["run_id"].as_str().unwrap();

    // The resolved configuration as params.
    let params: std::collections::HashMap<String, String> = runs[0]["data"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["key"].as_str().unwrap().to_string(), p["value"].as_str().unwrap().to_string()))
        .collect();
    for (key, value) in
        [("model.n_embd", "16"), ("model.n_layer", "1"), ("train.steps", "10"), ("tokenizer", "char")]
    {
        assert_eq!(params.get(key).map(String::as_str), Some(value), "{key} in {params:?}");
    }
    assert!(params["data.input"].ends_with("corpus.txt") && params["run_dir"].ends_with("run"), "{params:?}");
    assert!(params["num_params"].parse::<usize>().unwrap() > 1000, "{params:?}");

    // The estimates at the steps the run evaluates at, the log lines at the log steps, with
    // the very numbers the run folder's metrics.jsonl has.
    let run = dir.join("run");
    // The estimates as loss/train and loss/val, a batch's loss as loss/batch, so the UI says
    // which is which; the rates once per step, from the log lines only (the estimates at the
    // same steps would give a second, different value: a jump in the chart).
    let val_loss = server.history(run_id, "loss/val");
    assert_eq!(val_loss.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 5, 10]);
    assert_eq!(val_loss, jsonl(&run, "eval", "val_loss"));
    assert_eq!(server.history(run_id, "loss/train"), jsonl(&run, "eval", "train_loss"));
    let loss = server.history(run_id, "loss/batch");
    assert_eq!(loss.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 5]);
    assert_eq!(loss, jsonl(&run, "log", "loss"));
    for key in ["lr", "grad_norm", "tokens_per_sec"] {
        let points = server.history(run_id, key);
        let from_log_lines = jsonl(&run, "log", key);
        assert_eq!(points.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 5], "{key}: one value per log line");
        assert_eq!(points, from_log_lines, "{key}");
    }
    for old in ["val_loss", "train_loss", "loss"] {
        assert!(server.history(run_id, old).is_empty(), "{old} is no metric any more");
    }
    // The units, where the run's overview shows them: its description.
    let tags = runs[0]["data"]["tags"].as_array().unwrap();
    let note = tags.iter().find(|t| t["key"] == "mlflow.note.content").expect("a description");
    assert!(note["value"].as_str().unwrap().contains("nats per token"), "{note}");

    // config.json as written, and the last loss.png drawn.
    let listed = server.get("artifacts/list", &[("run_id", run_id)]);
    let mut files: Vec<&str> =
        listed["files"].as_array().unwrap().iter().filter_map(|f| f["path"].as_str()).collect();
    files.sort();
    assert_eq!(files, ["config.json", "loss.png", "lr.png"]);
    let artifact_uri = info["artifact_uri"].as_str().unwrap();
    assert_eq!(server.artifact(artifact_uri, "config.json"), std::fs::read(run.join("config.json")).unwrap());
    let png = server.artifact(artifact_uri, "loss.png");
    assert!(png.starts_with(b"\x89PNG"));
    assert_eq!(png, std::fs::read(run.join("loss.png")).unwrap());

    // Resumed, longer: a second MLflow run, whose curves start with the checkpoint's history.
    let args = ["--resume", "--run-dir", "run", "--max-steps", "15", "--mlflow", &uri];
    let out = train(dir.path(), &args).env("MLFLOW_EXPERIMENT_NAME", "cli-test").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runs = server.runs("cli-test");
    let resumed = runs.iter().find(|r| r["info"]["run_id"] != run_id).expect("a second run");
    let resumed_id = resumed["info"]["run_id"].as_str().unwrap();
    assert_eq!(server.history(resumed_id, "loss/val"), jsonl(&run, "eval", "val_loss"));
    assert_eq!(jsonl(&run, "eval", "val_loss").iter().map(|p| p.0).collect::<Vec<_>>(), [0, 5, 10, 15]);
}

#[test]
#[ignore = "needs MLflow: make test installs it (scripts/mlflow.sh install) and runs this with --ignored"]
fn a_server_that_dies_mid_run_costs_one_warning_and_no_training() {
    let _turn = my_turn();
    let mut server = Server::start("mlflow-server-dies");
    let dir = TempDir::new("mlflow-dies");
    let input = corpus(&dir);
    let uri = server.uri();
    let args = [
        "--input",
        input,
        "--max-steps",
        "3000",
        "--eval-interval",
        "1000",
        "--run-dir",
        "run",
        "--mlflow",
        &uri,
    ];
    let mut child = train(dir.path(), &args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();

    // Once the first metric is in, the server goes away.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "llm train ended before its first metric reached MLflow"
        );
        let runs = server.runs("llm-from-scratch");
        let run_id = runs.first().and_then(|r| r["info"]["run_id"].as_str());
        if run_id.is_some_and(|id| !server.history(id, "loss/batch").is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no metric in MLflow within 60 s; server log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    assert!(
        child.try_wait().unwrap().is_none(),
        "llm train finished before the server was stopped: train longer"
    );

    let out = wait_bounded(child, Duration::from_secs(300));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("done: 3000 steps"), "{stderr}");
    assert_eq!(warnings(&stderr), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("warning: MLflow at {uri}: ")) && stderr.contains("Training goes on"),
        "{stderr}"
    );
}

/// The output of `child`, which must end within `limit` (else it is killed and the test fails).
fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("llm train still running after {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// No MLflow needed: where no server listens, or with a URI MLflow's REST API cannot serve,
/// the run trains all the same, after one warning.
#[test]
fn no_server_there_is_one_warning_and_the_run_trains() {
    let _turn = my_turn();
    let dir = TempDir::new("mlflow-none");
    let input = corpus(&dir);
    let uri = format!("http://127.0.0.1:{}", free_port());
    let common = ["--input", input, "--max-steps", "4", "--eval-interval", "2"];
    let out = train(dir.path(), &common).args(["--run-dir", "a", "--mlflow", &uri]).output().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(warnings(&stderr), 1, "{stderr}");
    assert!(stderr.contains(&uri) && stderr.contains("Training goes on without MLflow"), "{stderr}");
    assert!(stderr.contains("done: 4 steps"), "{stderr}");

    let out = train(dir.path(), &common)
        .args(["--run-dir", "b"])
        .env("MLFLOW_TRACKING_URI", "file:./mlruns")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(warnings(&stderr), 1, "{stderr}");
    assert!(stderr.contains("only http:// and https://"), "{stderr}");
    assert!(!dir.join("mlruns").exists());
}

/// The notebooks' way: no flag, just `MLFLOW_TRACKING_URI` (and here `MLFLOW_EXPERIMENT_NAME`)
/// set when the run starts; the live report attaches the MLflow run, and dropping it ends it.
#[test]
#[ignore = "needs MLflow: make test installs it (scripts/mlflow.sh install) and runs this with --ignored"]
fn a_notebooks_live_report_logs_to_the_server_the_environment_names() {
    let _turn = my_turn();
    let server = Server::start("mlflow-server-trainer");
    let text: String = (0..200).map(|i| format!("All: Speak, speak. ({i})\n")).collect();
    let tokenizer = CharTokenizer::from_text(&text);
    let data = TokenData::new(&tokenizer.encode(&text).unwrap(), 0.9).unwrap();
    let model = Bigram::new(tokenizer.vocab_size(), tch::Device::Cpu);
    let config = TrainConfig {
        steps: 20,
        eval_interval: 10,
        eval_iters: 2,
        log_interval: Some(4),
        ..Default::default()
    };
    let mut trainer = Trainer::new(&model, config).unwrap();
    let mut live = LiveReport::new("a notebook's run");
    // Safe here: every test of this file holds the turn, and none reads the environment meanwhile.
    std::env::set_var("MLFLOW_TRACKING_URI", server.uri());
    std::env::set_var("MLFLOW_EXPERIMENT_NAME", "notebook");
    let trained = trainer.train_until(&model, &data, 12, |e| live.show(e)); // in two pieces, as a notebook does
    std::env::remove_var("MLFLOW_TRACKING_URI");
    std::env::remove_var("MLFLOW_EXPERIMENT_NAME");
    trained.unwrap();
    trainer.train_until(&model, &data, 20, |e| live.show(e)).unwrap();
    let run_id = live.tracker().expect("a tracker from MLFLOW_TRACKING_URI").run_id().to_string();
    drop(live); // ends the MLflow run, after what is queued

    let runs = server.runs("notebook");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["info"]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["info"]["status"], "FINISHED");
    let params: Vec<(&str, &str)> = runs[0]["data"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["key"].as_str().unwrap(), p["value"].as_str().unwrap()))
        .collect();
    for param in [("steps", "20"), ("lr", "0.01"), ("log_interval", "4"), ("grad_clip", "null")] {
        assert!(params.contains(&param), "{param:?} not in {params:?}");
    }
    assert!(params.contains(&("num_params", model.num_params().to_string().as_str())), "{params:?}");
    let steps = |key| server.history(&run_id, key).iter().map(|p| p.0).collect::<Vec<_>>();
    assert_eq!(steps("loss/val"), [0, 10, 20]);
    assert_eq!(steps("loss/batch"), [0, 4, 8, 12, 16]);
    assert_eq!(steps("lr"), [0, 4, 8, 12, 16], "the rates from the log lines only");
}
