//! Experiment tracking with MLflow: a run's settings and curves, live in a browser tab.
//!
//! [MLflow](https://mlflow.org) is an open-source tracking server. A training run sends it
//! three kinds of things: **params** (the settings, as text: `train.lr = 0.001`), **metrics**
//! (numbers against the step: loss, learning rate, tokens/s) and **artifacts** (files: the
//! config, the loss plot). Its web UI draws every metric as a curve while the run goes on, and
//! puts runs side by side to compare. `make mlflow` starts one on <http://127.0.0.1:5000>; set
//! `MLFLOW_TRACKING_URI=http://127.0.0.1:5000` (or pass `llm train --mlflow URI`) and train.
//!
//! The metrics are named so the UI explains itself, and every run's description (its
//! overview's note) says what they are:
//!
//! | metric                          | what                                                          |
//! |---------------------------------|---------------------------------------------------------------|
//! | `loss/train`, `loss/val`        | the estimates: mean cross-entropy over `eval_iters` batches of each split, every `eval_interval` steps |
//! | `loss/batch`                    | the loss of the one batch of a step, every `log_interval` steps (noisier) |
//! | `lr`, `grad_norm`, `tokens_per_sec` | from the log lines; from the estimates in a run without log lines |
//!
//! Losses are in nats per token (natural log; divide by ln 2 ≈ 0.693 for bits).
//!
//! A [`Tracker`] is one MLflow run. It speaks MLflow's REST API 2.0, JSON over HTTP:
//!
//! | what                          | request                                                        |
//! |-------------------------------|----------------------------------------------------------------|
//! | find the experiment by name   | `GET  /api/2.0/mlflow/experiments/get-by-name`                  |
//! | … or create it                | `POST /api/2.0/mlflow/experiments/create`                       |
//! | start the run                 | `POST /api/2.0/mlflow/runs/create`                              |
//! | params and metrics            | `POST /api/2.0/mlflow/runs/log-batch`                           |
//! | a file                        | `PUT  /api/2.0/mlflow-artifacts/artifacts/<exp>/<run>/artifacts/<path>` |
//! | end the run                   | `POST /api/2.0/mlflow/runs/update`                              |
//!
//! Files go through the server's artifact proxy (`mlflow server` serves artifacts by default):
//! a run's `artifact_uri` is then `mlflow-artifacts:/<exp>/<run>/artifacts`, and a file is
//! uploaded by a `PUT` of its bytes under that path.
//!
//! Tracking must never cost the training anything. Only [`Tracker::start`] waits for the server
//! (it needs the run's id). Every other call puts its request on a queue and returns at once;
//! one background thread sends them, with short timeouts (1 s to connect, 5 s a request), and
//! merges the metrics that wait into one `log-batch`. When the queue is full (the server is
//! slower than the training) an update is dropped and counted ([`Tracker::lost`]). The first
//! failure prints one warning to stderr, and nothing after it: training goes on.
//! [`Tracker::finish`] (or dropping the tracker) ends the run as `FINISHED`, `KILLED` or
//! `FAILED` and waits a few seconds at most for the queue to drain, so a dead server never
//! holds the process.

use crate::train::{TrainConfig, TrainEvent};
use crate::{Error, Result};
use reqwest::blocking::{Client, Response};
use reqwest::Url;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The tracking server's address, as MLflow's own client reads it.
pub const URI_VAR: &str = "MLFLOW_TRACKING_URI";
/// The experiment's name, when set (it wins over the name the program gives).
pub const EXPERIMENT_VAR: &str = "MLFLOW_EXPERIMENT_NAME";
/// The experiment runs go to when neither the program nor [`EXPERIMENT_VAR`] names one.
pub const DEFAULT_EXPERIMENT: &str = "llm-from-scratch";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Tracker::finish`] waits for the queue to drain and the run to be ended.
const FINISH_WAIT: Duration = Duration::from_secs(5);
/// Updates waiting to be sent before new ones are dropped.
const QUEUE_CAPACITY: usize = 1000;
/// MLflow's limits: characters of a param's value, params and metrics per `log-batch`.
const MAX_PARAM_VALUE: usize = 6000;
const MAX_PARAMS_PER_BATCH: usize = 100;
const MAX_METRICS_PER_BATCH: usize = 1000;

/// How a run ended, as MLflow records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// It did all its steps.
    Finished,
    /// It was stopped (Ctrl-C, SIGTERM).
    Killed,
    /// It ended with an error.
    Failed,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Finished => "FINISHED",
            RunStatus::Killed => "KILLED",
            RunStatus::Failed => "FAILED",
        }
    }
}

/// One MLflow run, logged to from a background thread. See the [module docs](crate::track).
///
/// Cheap calls that never block: [`Tracker::log_params`], [`Tracker::log_event`],
/// [`Tracker::log_artifact`]. A notebook gets one from its [`LiveReport`](crate::report::LiveReport)
/// (with `MLFLOW_TRACKING_URI` set), or starts one and hands it the events itself:
/// `trainer.run(&model, &data, |e| tracker.log_event(e))`.
pub struct Tracker {
    uri: String,
    experiment_id: String,
    run_id: String,
    /// Where the run's files go under the artifact proxy (`<exp>/<run>/artifacts`), or `None`
    /// when its `artifact_uri` is not `mlflow-artifacts:` (the server does not proxy them).
    artifact_root: Option<String>,
    artifact_uri: String,
    /// The queue to the sender thread; `None` once the run is finished.
    queue: Mutex<Option<Sender<Job>>>,
    /// The sender thread says here that it has ended the run.
    ended: Mutex<Option<Receiver<()>>>,
    shared: Arc<Shared>,
    /// Whether `lr`, `grad_norm` and `tokens_per_sec` come with the estimates (a run without
    /// log lines) rather than with the log lines (see [`Tracker::rates_with_estimates`]).
    rates_with_estimates: AtomicBool,
}

/// The description of every run (MLflow shows it as the run's note): what the metrics are.
const RUN_NOTE: &str = "Losses are cross-entropy in nats per token (divide by ln 2 = 0.693 for bits). \
loss/train and loss/val: estimates, the mean over eval_iters batches of each split every eval_interval \
steps. loss/batch: the loss of the one training batch of a step, every log_interval steps (noisier). \
lr, grad_norm (before clipping) and tokens_per_sec: at the log lines, or at the estimates in a run \
without log lines.";

/// What the caller and the sender thread both see.
struct Shared {
    uri: String,
    /// Updates queued and not yet taken by the sender thread.
    queued: AtomicUsize,
    /// Updates dropped (queue full) or whose request failed.
    lost: AtomicUsize,
    warned: AtomicBool,
}

impl Shared {
    /// Print the tracker's one warning (later calls print nothing).
    fn warn(&self, problem: &str) {
        if !self.warned.swap(true, Ordering::SeqCst) {
            eprintln!(
                "warning: MLflow at {}: {problem}. Training goes on; later MLflow problems of this run are not reported.",
                self.uri
            );
        }
    }
}

/// A request for the sender thread.
enum Job {
    Metrics(Vec<Value>),
    Params(Vec<Value>),
    Artifact { path: String, bytes: Vec<u8> },
    End { status: RunStatus, end_time: i64 },
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("uri", &self.uri)
            .field("experiment_id", &self.experiment_id)
            .field("run_id", &self.run_id)
            .field("lost", &self.lost())
            .finish()
    }
}

impl Tracker {
    /// Start a run named `run_name` (MLflow makes up a name for `None`) in the experiment
    /// `experiment` of the server at `uri` (`http://` or `https://`), creating the experiment
    /// if there is none of that name. This is the one call that waits for the server: an error
    /// says why the run could not be started (the server is down, the URI is wrong).
    pub fn start(uri: &str, experiment: &str, run_name: Option<&str>) -> Result<Tracker> {
        let uri = uri.trim_end_matches('/').to_string();
        let fail = |reason: String| Error::Tracking { uri: uri.clone(), reason };
        let api = Api::new(&uri).map_err(fail)?;
        let experiment_id = api.experiment_id(experiment).map_err(fail)?;
        let mut tags = vec![
            json!({"key": "mlflow.source.name", "value": "llm-from-scratch"}),
            json!({"key": "mlflow.note.content", "value": RUN_NOTE}),
        ];
        if let Ok(user) = std::env::var("USER") {
            tags.push(json!({"key": "mlflow.user", "value": user}));
        }
        let mut request = json!({"experiment_id": experiment_id, "start_time": now_ms(), "tags": tags});
        if let Some(name) = run_name {
            request["run_name"] = json!(name);
        }
        let reply = api.post("runs/create", &request).map_err(fail)?;
        let info = &reply["run"]["info"];
        let run_id = text(&info["run_id"], "runs/create: no run.info.run_id in the reply").map_err(fail)?;
        let artifact_uri = info["artifact_uri"].as_str().unwrap_or_default().to_string();
        Tracker::with_run(api, experiment_id, run_id, artifact_uri).map_err(fail)
    }

    /// The tracker of the server [`URI_VAR`] names, or `None` if it is unset or empty. A URI
    /// that is not `http(s)://`, or a server that cannot start the run, is a warning on stderr
    /// and `None`: whatever the tracking does, training goes on. The experiment is
    /// [`EXPERIMENT_VAR`]'s if set, else `experiment`.
    pub fn from_env(experiment: &str, run_name: Option<&str>) -> Option<Tracker> {
        let uri = std::env::var(URI_VAR).ok().filter(|u| !u.trim().is_empty())?;
        Tracker::start_or_warn(uri.trim(), experiment, run_name)
    }

    /// [`Tracker::start`], with a failure turned into a warning on stderr and `None`. The
    /// experiment is [`EXPERIMENT_VAR`]'s if set, else `experiment`.
    pub fn start_or_warn(uri: &str, experiment: &str, run_name: Option<&str>) -> Option<Tracker> {
        let named = std::env::var(EXPERIMENT_VAR).ok().filter(|e| !e.trim().is_empty());
        let experiment = named.as_deref().map_or(experiment, str::trim);
        match Tracker::start(uri, experiment, run_name) {
            Ok(tracker) => Some(tracker),
            Err(e) => {
                eprintln!("warning: {e}. Training goes on without MLflow tracking.");
                None
            }
        }
    }

    /// The run's parameters (flatten a config with [`params_of`]). Values longer than MLflow
    /// takes are cut to 6000 characters. MLflow keeps the first value of a key: logging a key
    /// again with another value fails (the warning says so).
    pub fn log_params(&self, params: &[(String, String)]) {
        for chunk in params.chunks(MAX_PARAMS_PER_BATCH) {
            let batch = chunk
                .iter()
                .map(|(key, value)| {
                    let value: String = value.chars().take(MAX_PARAM_VALUE).collect();
                    json!({"key": key, "value": value})
                })
                .collect();
            self.enqueue(Job::Params(batch));
        }
    }

    /// The run for a training run of `config`, of a model of `num_params` parameters, on the
    /// server [`URI_VAR`] names (`None` without one): in [`EXPERIMENT_VAR`]'s experiment or
    /// the [`DEFAULT_EXPERIMENT`], with the settings and the size as its params. The one place
    /// a run is attached from the environment; a notebook's [`LiveReport`](crate::report::LiveReport)
    /// calls it when its run starts.
    pub fn for_training(config: &TrainConfig, num_params: usize) -> Option<Tracker> {
        let tracker = Tracker::from_env(DEFAULT_EXPERIMENT, None)?;
        let mut params = params_of(config);
        params.push(("num_params".into(), num_params.to_string()));
        tracker.log_params(&params);
        tracker.rates_with_estimates(config.log_interval.is_none());
        Some(tracker)
    }

    /// Take `lr`, `grad_norm` and `tokens_per_sec` from the estimates (`true`: a run without
    /// log lines) or from the log lines (`false`), never both: at a step with an estimate and
    /// a log line they differ (other spans of time, other steps' gradients), and two values
    /// at one step draw a jump. Until this is called, from the estimates.
    pub fn rates_with_estimates(&self, yes: bool) {
        self.rates_with_estimates.store(yes, Ordering::Relaxed);
    }

    /// A training event as metrics at its step: a loss estimate as `loss/train` and
    /// `loss/val`, a log line as `loss/batch`, `lr`, `grad_norm` and `tokens_per_sec` (those
    /// three from the estimates instead, see [`Tracker::rates_with_estimates`]). The rest
    /// are no metrics.
    pub fn log_event(&self, event: &TrainEvent) {
        let metrics = event_metrics(event, self.rates_with_estimates.load(Ordering::Relaxed), now_ms());
        if !metrics.is_empty() {
            self.enqueue(Job::Metrics(metrics));
        }
    }

    /// Upload `bytes` as the run's file `path` (`loss.png`, or `plots/loss.png`); a file
    /// uploaded again under the same path replaces the old one.
    pub fn log_artifact(&self, path: &str, bytes: Vec<u8>) {
        if self.artifact_root.is_none() {
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            self.shared.warn(&format!(
                "cannot upload {path}: the run's artifacts go to {:?}, not through the server \
                 (start it with artifact serving, the default of `mlflow server`)",
                self.artifact_uri
            ));
            return;
        }
        self.enqueue(Job::Artifact { path: path.to_string(), bytes });
    }

    /// End the run with `status` (and the time now), after what is queued; then wait up to
    /// 5 s for that to reach the server. Later calls, and logging after this, do nothing.
    pub fn finish(&self, status: RunStatus) {
        let Some(queue) = lock(&self.queue).take() else { return };
        let _ = queue.send(Job::End { status, end_time: now_ms() });
        drop(queue);
        if let Some(ended) = lock(&self.ended).take() {
            if let Err(RecvTimeoutError::Timeout) = ended.recv_timeout(FINISH_WAIT) {
                self.shared.warn(&format!(
                    "the end of the run was not confirmed within {} s ({} updates still queued)",
                    FINISH_WAIT.as_secs(),
                    self.shared.queued.load(Ordering::Relaxed)
                ));
            }
        }
    }

    /// The server's URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The experiment's id on the server.
    pub fn experiment_id(&self) -> &str {
        &self.experiment_id
    }

    /// The run's id on the server (the UI shows it at `#/experiments/<exp>/runs/<run>`).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Updates that did not reach the server: dropped because the queue was full, or failed.
    pub fn lost(&self) -> usize {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// A tracker for a run that exists, with its sender thread started.
    fn with_run(
        api: Api,
        experiment_id: String,
        run_id: String,
        artifact_uri: String,
    ) -> std::result::Result<Tracker, String> {
        let shared = Arc::new(Shared {
            uri: api.uri.clone(),
            queued: AtomicUsize::new(0),
            lost: AtomicUsize::new(0),
            warned: AtomicBool::new(false),
        });
        let artifact_root = proxied_artifact_root(&artifact_uri);
        let (queue, jobs) = mpsc::channel();
        let (ended_tx, ended) = mpsc::channel();
        let worker = Worker {
            api,
            run_id: run_id.clone(),
            artifact_root: artifact_root.clone(),
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("mlflow".into())
            .spawn(move || worker.serve(jobs, ended_tx))
            .map_err(|e| format!("cannot start the thread that sends to MLflow: {e}"))?;
        Ok(Tracker {
            uri: shared.uri.clone(),
            experiment_id,
            run_id,
            artifact_root,
            artifact_uri,
            queue: Mutex::new(Some(queue)),
            ended: Mutex::new(Some(ended)),
            shared,
            rates_with_estimates: AtomicBool::new(true),
        })
    }

    /// Queue `job`, or drop and count it if the queue is full or the run finished.
    fn enqueue(&self, job: Job) {
        let queue = lock(&self.queue);
        let Some(queue) = queue.as_ref() else { return };
        if self.shared.queued.load(Ordering::Relaxed) >= QUEUE_CAPACITY {
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            self.shared.warn(&format!(
                "the server is slower than the training: {QUEUE_CAPACITY} updates wait, dropping new ones"
            ));
            return;
        }
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        if queue.send(job).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Tracker {
    /// A tracker dropped without [`Tracker::finish`] ends its run as finished (failed while
    /// panicking).
    fn drop(&mut self) {
        self.finish(if std::thread::panicking() { RunStatus::Failed } else { RunStatus::Finished });
    }
}

/// A config (any `Serialize`, as JSON) as MLflow params: nested fields joined with dots
/// (`model.n_layer`), strings as they are, everything else as its JSON text.
pub fn params_of(value: &impl serde::Serialize) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(fields) => {
                for (key, field) in fields {
                    let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    walk(&key, field, out);
                }
            }
            Value::String(s) => out.push((prefix.to_string(), s.clone())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    match serde_json::to_value(value) {
        Ok(value @ Value::Object(_)) => walk("", &value, &mut out),
        Ok(other) => walk("value", &other, &mut out),
        Err(e) => out.push(("params_error".into(), e.to_string())),
    }
    out
}

/// The metrics of one event, stamped `timestamp` (ms since 1970); the rates (`lr`,
/// `grad_norm`, `tokens_per_sec`) with the estimates if `rates_with_estimates`, else with the
/// log lines.
fn event_metrics(event: &TrainEvent, rates_with_estimates: bool, timestamp: i64) -> Vec<Value> {
    let (step, mut values): (usize, Vec<(&str, Option<f64>)>) = match event {
        TrainEvent::Eval(p) => {
            (p.step, vec![("loss/train", Some(p.train_loss)), ("loss/val", Some(p.val_loss))])
        }
        TrainEvent::Log(l) => (l.step, vec![("loss/batch", Some(l.loss))]),
        // Not a measurement; the run stays open, as a trainer continues after a stop.
        TrainEvent::Started(_)
        | TrainEvent::Stopped { .. }
        | TrainEvent::EarlyStopped(_)
        | TrainEvent::Progress(_) => return Vec::new(),
    };
    match event {
        TrainEvent::Eval(p) if rates_with_estimates => values.extend([
            ("lr", Some(p.lr)),
            ("grad_norm", p.grad_norm),
            ("tokens_per_sec", p.tokens_per_sec),
        ]),
        TrainEvent::Log(l) if !rates_with_estimates => values.extend([
            ("lr", Some(l.lr)),
            ("grad_norm", Some(l.grad_norm)),
            ("tokens_per_sec", l.tokens_per_sec),
        ]),
        _ => {}
    }
    values
        .into_iter()
        .filter_map(|(key, value)| {
            value.map(|v| json!({"key": key, "value": metric_value(v), "timestamp": timestamp, "step": step}))
        })
        .collect()
}

/// A metric's value in MLflow's JSON: a number, or protobuf's spelling of a non-finite one
/// (JSON has no NaN; a diverged loss should still show).
fn metric_value(v: f64) -> Value {
    match v {
        v if v.is_nan() => json!("NaN"),
        v if v == f64::INFINITY => json!("Infinity"),
        v if v == f64::NEG_INFINITY => json!("-Infinity"),
        v => json!(v),
    }
}

/// `<exp>/<run>/artifacts` from a run's `artifact_uri` of `mlflow-artifacts:/<exp>/<run>/artifacts`
/// (or `mlflow-artifacts://host:port/...`), the path the artifact proxy serves it under.
fn proxied_artifact_root(artifact_uri: &str) -> Option<String> {
    let rest = artifact_uri.strip_prefix("mlflow-artifacts:")?;
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => &authority_and_path[authority_and_path.find('/')?..],
        None => rest,
    };
    let path = path.trim_matches('/');
    (!path.is_empty()).then(|| path.to_string())
}

/// Milliseconds since 1970, MLflow's timestamps.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn text(value: &Value, missing: &str) -> std::result::Result<String, String> {
    value.as_str().map(str::to_string).ok_or_else(|| missing.to_string())
}

/// The HTTP side: one client with short timeouts, and the server's base URI.
struct Api {
    client: Client,
    uri: String,
}

impl Api {
    fn new(uri: &str) -> std::result::Result<Api, String> {
        let url = Url::parse(uri).map_err(|e| format!("not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "only http:// and https:// tracking servers are supported (got a {}: URI); \
                 start one with `make mlflow` and use http://127.0.0.1:5000",
                url.scheme()
            ));
        }
        let client = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(Api { client, uri: uri.to_string() })
    }

    fn endpoint(&self, name: &str) -> String {
        format!("{}/api/2.0/mlflow/{name}", self.uri)
    }

    fn post(&self, name: &str, body: &Value) -> std::result::Result<Value, String> {
        let request = self.client.post(self.endpoint(name)).header("Content-Type", "application/json");
        reply(name, request.body(body.to_string()).send())
    }

    /// The id of the experiment called `name`, created if there is none.
    fn experiment_id(&self, name: &str) -> std::result::Result<String, String> {
        let get = || {
            let sent = self
                .client
                .get(self.endpoint("experiments/get-by-name"))
                .query(&[("experiment_name", name)])
                .send();
            reply("experiments/get-by-name", sent).and_then(|r| {
                text(&r["experiment"]["experiment_id"], "experiments/get-by-name: no experiment id")
            })
        };
        match get() {
            Err(e) if e.contains("RESOURCE_DOES_NOT_EXIST") => {
                match self.post("experiments/create", &json!({"name": name})) {
                    Ok(r) => text(&r["experiment_id"], "experiments/create: no experiment_id in the reply"),
                    Err(e) if e.contains("RESOURCE_ALREADY_EXISTS") => get(), // created meanwhile
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    fn put_artifact(&self, root: &str, path: &str, bytes: Vec<u8>) -> std::result::Result<(), String> {
        let base = format!("{}/api/2.0/mlflow-artifacts/artifacts", self.uri);
        let mut url = Url::parse(&base).map_err(|e| format!("{base}: {e}"))?;
        url.path_segments_mut()
            .map_err(|()| format!("{base} cannot have a path"))?
            .extend(root.split('/').chain(path.split('/')).filter(|s| !s.is_empty()));
        let sent = self.client.put(url).header("Content-Type", "application/octet-stream").body(bytes).send();
        reply(&format!("upload of {path}"), sent).map(|_| ())
    }
}

/// The JSON of a successful reply, or what went wrong: the connection, or MLflow's
/// `error_code` and `message`.
fn reply(what: &str, sent: reqwest::Result<Response>) -> std::result::Result<Value, String> {
    let response = sent.map_err(|e| format!("{what}: {}", describe(e)))?;
    let status = response.status();
    let body = response.text().map_err(|e| format!("{what}: reading the reply: {e}"))?;
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    match (value["error_code"].as_str(), value["message"].as_str()) {
        (Some(code), Some(message)) => Err(format!("{what}: {code}: {message}")),
        _ => Err(format!("{what}: HTTP {status}: {}", body.chars().take(200).collect::<String>())),
    }
}

/// reqwest's error, without the URL (the warning names the server) and with its root cause
/// ("error sending request: Connection refused (os error 111)").
fn describe(e: reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = &e;
    while let Some(cause) = root.source() {
        root = cause;
    }
    let root = root.to_string();
    let top = e.without_url().to_string();
    if top.contains(&root) {
        top
    } else {
        format!("{top}: {root}")
    }
}

/// The background thread's side: takes the jobs in order and sends them.
struct Worker {
    api: Api,
    run_id: String,
    artifact_root: Option<String>,
    shared: Arc<Shared>,
}

impl Worker {
    fn serve(self, jobs: Receiver<Job>, ended: mpsc::Sender<()>) {
        let mut held = None; // a job taken while merging metrics, to do next
        loop {
            let job = match held.take() {
                Some(job) => job,
                None => match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
            };
            let (taken, result) = match job {
                Job::Metrics(mut metrics) => {
                    // Merge the metrics waiting behind this one: one request instead of many.
                    let mut taken = 1;
                    loop {
                        match jobs.try_recv() {
                            Ok(Job::Metrics(more)) if metrics.len() + more.len() <= MAX_METRICS_PER_BATCH => {
                                metrics.extend(more);
                                taken += 1;
                            }
                            Ok(other) => {
                                held = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    (taken, self.log_batch(json!({"run_id": self.run_id, "metrics": metrics})))
                }
                Job::Params(params) => (1, self.log_batch(json!({"run_id": self.run_id, "params": params}))),
                Job::Artifact { path, bytes } => {
                    let root = self.artifact_root.as_deref().unwrap_or_default();
                    (1, self.api.put_artifact(root, &path, bytes))
                }
                Job::End { status, end_time } => {
                    let update =
                        json!({"run_id": self.run_id, "status": status.as_str(), "end_time": end_time});
                    if let Err(e) = self.api.post("runs/update", &update) {
                        self.shared.warn(&e);
                    }
                    let _ = ended.send(());
                    return;
                }
            };
            // (A held job is counted when it is done, in the next round.)
            self.shared.queued.fetch_sub(taken, Ordering::Relaxed);
            if let Err(e) = result {
                self.shared.lost.fetch_add(taken, Ordering::Relaxed);
                self.shared.warn(&e);
            }
        }
    }

    fn log_batch(&self, body: Value) -> std::result::Result<(), String> {
        self.api.post("runs/log-batch", &body).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{EvalPoint, LogPoint};
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn configs_flatten_into_dotted_params() {
        let config =
            json!({"model": {"n_layer": 4, "dropout": 0.0}, "data": {"input": "/t.txt"}, "seed": null});
        let mut params = params_of(&config);
        params.sort();
        let expected =
            [("data.input", "/t.txt"), ("model.dropout", "0.0"), ("model.n_layer", "4"), ("seed", "null")];
        assert_eq!(params, expected.map(|(k, v)| (k.to_string(), v.to_string())));
        let train = params_of(&TrainConfig::cpu_small());
        assert!(train.contains(&("lr_decay".into(), "cosine".into())), "{train:?}");
        assert!(train.contains(&("log_interval".into(), "10".into())), "{train:?}");
    }

    #[test]
    fn events_become_metrics_at_their_step() {
        let eval = TrainEvent::Eval(EvalPoint {
            step: 250,
            train_loss: 1.5,
            val_loss: 1.75,
            lr: 1e-3,
            tokens_per_sec: None,
            grad_norm: Some(0.5),
        });
        let keys = |metrics: &[Value]| -> Vec<String> {
            metrics.iter().filter_map(|m| m["key"].as_str().map(str::to_owned)).collect()
        };
        let metrics = event_metrics(&eval, true, 7);
        assert_eq!(keys(&metrics), ["loss/train", "loss/val", "lr", "grad_norm"]);
        assert!(metrics.iter().all(|m| m["step"] == 250 && m["timestamp"] == 7));
        assert_eq!(metrics[1]["value"], 1.75);
        assert_eq!(
            keys(&event_metrics(&eval, false, 7)),
            ["loss/train", "loss/val"],
            "the rates come with the log lines"
        );

        let log = TrainEvent::Log(LogPoint {
            step: 10,
            loss: f64::NAN,
            lr: 1e-4,
            grad_norm: f64::INFINITY,
            tokens_per_sec: Some(5000.0),
        });
        assert_eq!(keys(&event_metrics(&log, true, 8)), ["loss/batch"], "the rates come with the estimates");
        let metrics = event_metrics(&log, false, 8);
        let pairs: Vec<(String, Value)> = metrics
            .iter()
            .map(|m| (m["key"].as_str().unwrap_or_default().to_string(), m["value"].clone()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("loss/batch".to_string(), json!("NaN")),
                ("lr".to_string(), json!(1e-4)),
                ("grad_norm".to_string(), json!("Infinity")),
                ("tokens_per_sec".to_string(), json!(5000.0)),
            ]
        );
    }

    #[test]
    fn artifacts_go_through_the_proxy_only() {
        let root = |uri: &str| proxied_artifact_root(uri);
        assert_eq!(root("mlflow-artifacts:/1/abc/artifacts").as_deref(), Some("1/abc/artifacts"));
        assert_eq!(
            root("mlflow-artifacts://127.0.0.1:5000/1/abc/artifacts").as_deref(),
            Some("1/abc/artifacts")
        );
        assert_eq!(root("file:///tmp/mlruns/1/abc/artifacts"), None);
        assert_eq!(root("s3://bucket/1/abc/artifacts"), None);
        assert_eq!(root(""), None);
    }

    #[test]
    fn only_http_servers_are_tried() {
        for (uri, expected) in [("file:./mlruns", "got a file: URI"), ("databricks", "not a URL")] {
            let err = Tracker::start(uri, "x", None).unwrap_err().to_string();
            assert!(err.starts_with(&format!("MLflow at {uri}: ")) && err.contains(expected), "{err}");
        }
    }

    #[test]
    fn a_server_that_is_not_there_is_an_error_at_once() {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap();
        let uri = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        let err = Tracker::start(&uri, "x", Some("run")).unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
        assert!(err.contains(&uri) && err.contains("experiments/get-by-name"), "{err}");
    }

    /// A server that takes connections and never answers: logging still returns at once,
    /// what does not fit in the queue is dropped and counted, and finishing gives up in time.
    #[test]
    fn a_server_that_hangs_never_holds_the_training() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap(); // accepts (backlog), never replies
        let uri = format!("http://{}", listener.local_addr().unwrap());
        let api = Api::new(&uri).unwrap();
        let tracker =
            Tracker::with_run(api, "1".into(), "abc".into(), "mlflow-artifacts:/1/abc/artifacts".into())
                .unwrap();
        let event =
            TrainEvent::Log(LogPoint { step: 0, loss: 1.0, lr: 1e-3, grad_norm: 1.0, tokens_per_sec: None });
        let start = Instant::now();
        for _ in 0..3 * QUEUE_CAPACITY {
            tracker.log_event(&event);
        }
        tracker.log_artifact("loss.png", vec![0; 1 << 20]);
        assert!(start.elapsed() < Duration::from_secs(1), "logging took {:?}", start.elapsed());
        assert!(tracker.lost() >= QUEUE_CAPACITY, "lost {}", tracker.lost());

        let start = Instant::now();
        tracker.finish(RunStatus::Finished);
        let waited = start.elapsed();
        assert!(waited >= FINISH_WAIT && waited < FINISH_WAIT + Duration::from_secs(2), "{waited:?}");
        let lost = tracker.lost();
        tracker.log_event(&event); // after the end: nothing
        tracker.finish(RunStatus::Failed); // a second end: nothing, at once
        assert_eq!(tracker.lost(), lost);
        assert!(tracker.shared.warned.load(Ordering::SeqCst));
    }
}
