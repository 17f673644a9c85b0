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
