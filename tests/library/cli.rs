//! The `llm` binary, run for real.

use std::process::Command;

fn llm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_llm"))
        .args(args)
        .env("LLM_DATA_DIR", std::env::temp_dir())
        .output()
        .unwrap()
}

#[test]
fn data_list_shows_the_manifest() {
    let out = llm(&["data", "list"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tinyshakespeare") && stdout.contains("1115394"), "{stdout}");
}

#[test]
fn fetching_an_unknown_dataset_fails_with_a_clear_message() {
    let out = llm(&["data", "fetch", "no-such-corpus"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown dataset 'no-such-corpus'") && stderr.contains("tinyshakespeare"),
        "{stderr}"
    );
}

#[test]
fn an_os_error_is_said_once() {
    let out = llm(&["sample", "--checkpoint", "/no/such/checkpoint", "--device", "cpu"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/no/such/checkpoint"), "{stderr}");
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}

#[test]
fn what_cannot_be_loaded_or_fetched_is_named_with_its_reason() {
    // A model folder that is not there: named, not as a bare "config.json".
    let out = llm(&["sample", "--model", "no-such-model-dir", "--prompt", "a"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no-such-model-dir: no such folder or file"), "{stderr}");
    // A scheme we cannot fetch is said to be one, not an unknown dataset.
    let out = llm(&["data", "fetch", "ftp://example.com/book.txt"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the ftp:// scheme is not supported") && !stderr.contains("unknown dataset"),
        "{stderr}"
    );
    // A --sha256 that is no SHA-256 is refused before any request (nothing listens there).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/book.txt");
    let out = llm(&["data", "fetch", &url, "--sha256", "abc123"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"abc123\" is not one: it is 64 hex digits") && !stderr.contains("refused"),
        "{stderr}"
    );
    // A download that fails says why, once.
    let out = llm(&["data", "fetch", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert_eq!(stderr.matches("connection refused").count(), 1, "{stderr}");
}
