//! `data::download` and `data::fetch` against a real HTTP server on the loopback interface:
//! good downloads land byte for byte, and every failure leaves no file behind.

mod common;

use common::http::{Reply, Server};
use common::{shakespeare, wikitext_zip, TempDir, WIKI};
use llm_from_scratch::{data, Error};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};

// ---------------------------------------------------------------------------------------

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// 100 KiB of varied bytes: more than one 64 KiB read buffer.
fn payload() -> Vec<u8> {
    (0..100 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}

/// The server always answers with `reply`, whatever the path.
fn serve_always(reply: fn() -> Reply) -> Server {
    Server::start(move |_| reply())
}

#[test]
fn download_over_http_writes_exactly_the_served_bytes() {
    let body = payload();
    let served = body.clone();
    let server = Server::start(move |_| Reply::Body(served.clone()));
    let dir = TempDir::new("download_ok");
    let dest = dir.join("corpus.bin");

    data::download(&server.url("/files/corpus.bin"), &dest, Some(body.len() as u64), &sha256_hex(&body))
        .expect("download succeeds");

    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(dir.entries(), ["corpus.bin"], "no temporary file is left");
    assert_eq!(server.requests(), ["/files/corpus.bin"]);
}

#[test]
fn download_follows_redirects_and_reports_progress() {
    let body = payload();
    let served = body.clone();
    let server = Server::start(move |path| match path {
        "/resolve/main/corpus.bin" => Reply::Redirect("/cdn/corpus.bin".into()),
        "/cdn/corpus.bin" => Reply::Body(served.clone()),
        _ => Reply::Status(404),
    });
    let dir = TempDir::new("download_redirect");
    let dest = dir.join("corpus.bin");
    let mut progress = Vec::new();
    data::download_with_progress(
        &server.url("/resolve/main/corpus.bin"),
        &dest,
        None,
        &sha256_hex(&body),
        |done, total| progress.push((done, total)),
    )
    .expect("download through the redirect");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(server.requests(), ["/resolve/main/corpus.bin", "/cdn/corpus.bin"]);
    let n = body.len() as u64;
    assert!(progress.len() >= 2, "100 KiB comes in more than one chunk: {progress:?}");
    assert!(progress.windows(2).all(|w| w[0].0 < w[1].0), "{progress:?}");
    assert_eq!(progress.last(), Some(&(n, Some(n))), "the total is the server's Content-Length");
}

#[test]
fn download_accepts_an_uppercase_checksum_and_no_size() {
    let body = b"hello, loopback\n".to_vec();
    let served = body.clone();
    let server = Server::start(move |_| Reply::Body(served.clone()));
    let dir = TempDir::new("download_upper");
    let dest = dir.join("hello.txt");

    data::download(&server.url("/hello.txt"), &dest, None, &sha256_hex(&body).to_uppercase())
        .expect("download succeeds");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

#[test]
fn checksum_mismatch_is_an_error_and_leaves_no_file() {
    let body = payload();
    let served = body.clone();
    let server = Server::start(move |_| Reply::Body(served.clone()));
    let dir = TempDir::new("download_checksum");
    let wrong = "0".repeat(64);

    let err =
        data::download(&server.url("/corpus.bin"), &dir.join("corpus.bin"), Some(body.len() as u64), &wrong)
            .unwrap_err();

    match err {
        Error::Checksum { url, expected, actual, bytes } => {
            assert_eq!(url, server.url("/corpus.bin"));
            assert_eq!(expected, wrong);
            assert_eq!(actual, sha256_hex(&body));
            assert_eq!(bytes, body.len() as u64);
        }
        other => panic!("expected Error::Checksum, got {other:?}"),
    }
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn size_mismatch_is_an_error_and_leaves_no_file() {
    let body = payload();
    let served = body.clone();
    let server = Server::start(move |_| Reply::Body(served.clone()));
    let dir = TempDir::new("download_size");

    let err = data::download(
        &server.url("/corpus.bin"),
        &dir.join("corpus.bin"),
        Some(body.len() as u64 + 1),
        &sha256_hex(&body),
    )
    .unwrap_err();

    let expected_reason = format!("expected {} bytes, got {}", body.len() + 1, body.len());
    assert!(matches!(&err, Error::Download { reason, .. } if reason == &expected_reason), "got {err:?}");
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn http_404_is_an_error_and_leaves_no_file() {
    let server = serve_always(|| Reply::Status(404));
    let dir = TempDir::new("download_404");

    let err =
        data::download(&server.url("/missing.txt"), &dir.join("missing.txt"), Some(10), &"0".repeat(64))
            .unwrap_err();

    match &err {
        Error::Download { url, reason } => {
            assert_eq!(url, &server.url("/missing.txt"));
            assert!(reason.contains("404"), "reason: {reason}");
        }
        other => panic!("expected Error::Download, got {other:?}"),
    }
    assert!(err.to_string().contains("404"), "message: {err}");
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn connection_dropped_mid_body_is_an_error_and_leaves_no_file() {
    let body = payload();
    let declared = body.len();
    let half = body[..declared / 2].to_vec();
    let server = Server::start(move |_| Reply::Truncated { declared, body: half.clone() });
    let dir = TempDir::new("download_truncated");

    let err = data::download(
        &server.url("/corpus.bin"),
        &dir.join("corpus.bin"),
        Some(declared as u64),
        &sha256_hex(&body),
    )
    .unwrap_err();

    assert!(
        matches!(&err, Error::Download { reason, .. } if reason.starts_with("connection lost after")),
        "got {err:?}"
    );
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn unreachable_server_is_a_download_error() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = TempDir::new("download_refused");
    let err =
        data::download(&format!("http://127.0.0.1:{port}/x.txt"), &dir.join("x.txt"), None, &"0".repeat(64))
            .unwrap_err();
    assert!(matches!(err, Error::Download { .. }), "got {err:?}");
    let msg = err.to_string().to_lowercase(); // the cause, which reqwest keeps in its sources
    assert_eq!(msg.matches("connection refused").count(), 1, "{msg}");
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn a_bad_sha256_or_another_scheme_is_refused_before_any_request() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/book.txt"); // a request would be refused
    for (given, chars) in [("abc", 3), (&*"g".repeat(64), 64)] {
        let err = data::fetch_url(&url, Some(given), false).unwrap_err().to_string();
        let said = format!(
            "{given:?} is not one: it is 64 hex digits (sha256sum prints it), got {chars} characters"
        );
        assert!(err.contains(&said) && !err.contains("refused"), "{err}");
    }
    let refused = [
        data::dataset("ftp://example.com/book.txt").unwrap_err(),
        data::fetch("ftp://example.com/book.txt").unwrap_err(),
    ];
    for err in refused {
        let err = err.to_string();
        assert!(err.contains("the ftp:// scheme is not supported: only http:// and https://"), "{err}");
    }
    let err = data::fetch_url("ftp://example.com/book.txt", None, false).unwrap_err().to_string();
    assert!(err.contains("the ftp:// scheme is not supported"), "{err}");
}

#[test]
fn download_copies_a_local_file() {
    let src_dir = TempDir::new("download_local_src");
    let dest_dir = TempDir::new("download_local_dest");
    let body = payload();
    let source = src_dir.join("corpus.bin");
    std::fs::write(&source, &body).unwrap();
    let dest = dest_dir.join("copy.bin");

    data::download(source.to_str().unwrap(), &dest, Some(body.len() as u64), &sha256_hex(&body))
        .expect("local copy succeeds");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(dest_dir.entries(), ["copy.bin"]);

    // A bad checksum on a local source fails the same way, and leaves nothing.
    std::fs::remove_file(&dest).unwrap();
    let err = data::download(source.to_str().unwrap(), &dest, None, &"0".repeat(64)).unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "got {err:?}");
    assert!(dest_dir.entries().is_empty(), "left behind: {:?}", dest_dir.entries());
}

#[test]
fn download_of_a_missing_local_file_is_an_io_error_naming_it() {
    let dir = TempDir::new("download_local_missing");
    let source = dir.join("nope.txt");
    let err =
        data::download(source.to_str().unwrap(), &dir.join("out.txt"), None, &"0".repeat(64)).unwrap_err();
    match err {
        Error::Io { path, source: e } => {
            assert_eq!(path, source);
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(dir.entries().is_empty());
}

#[test]
fn manifest_lists_tinyshakespeare() {
    let all = data::datasets().unwrap();
    assert!(!all.is_empty());
    let ts = data::dataset("tinyshakespeare").expect("tinyshakespeare is in the manifest");
    assert_eq!(ts.file, "tinyshakespeare.txt");
    assert_eq!(ts.size, 1_115_394);
    assert_eq!(ts.sha256, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed");
    assert!(ts.urls[0].starts_with("https://"), "urls: {:?}", ts.urls);
    assert!(all.iter().any(|d| d.name == "tinyshakespeare"));
    // GPT-2's weights come with their config.json (and its tokenizer's ranks) into one folder.
    let gpt2 = data::dataset("gpt2").unwrap();
    assert_eq!((gpt2.file.as_str(), gpt2.size), ("gpt2/model.safetensors", 548_105_171));
    assert_eq!(gpt2.sha256, "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707");
    assert_eq!(gpt2.with, ["gpt2-config", "gpt2-ranks"]);
    // WikiText: its splits as given; the re-hosted copy first, a pinned copy of WikiText-2 after.
    let w2 = data::dataset("wikitext-2").unwrap();
    assert_eq!(
        (w2.size, w2.sha256.as_str()),
        (4_721_645, "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11")
    );
    assert_eq!(w2.urls[0], "https://wikitext.smerity.com/wikitext-2-raw-v1.zip");
    assert!(w2.urls[1].starts_with("https://huggingface.co/datasets/ggml-org/ci/resolve/927b3642"));
    assert_eq!(w2.splits.unwrap().valid, "wikitext-2-raw/wiki.valid.raw");
    let w103 = data::dataset("wikitext-103").unwrap();
    assert_eq!(w103.size, 191_984_949);
    assert_eq!(w103.splits.unwrap().train, "wikitext-103-raw/wiki.train.raw");
    assert_eq!(data::dataset("gpt2-config").unwrap().file, "gpt2/config.json");
    for d in &all {
        for companion in &d.with {
            assert!(data::dataset(companion).is_ok(), "{}: with {companion}, not in the manifest", d.name);
        }
    }
}

#[test]
fn unknown_dataset_is_an_error_listing_the_known_ones() {
    match data::dataset("nope") {
        Err(Error::UnknownDataset { name, known }) => {
            assert_eq!(name, "nope");
            assert!(known.contains("tinyshakespeare"), "known: {known}");
        }
        other => panic!("expected Error::UnknownDataset, got {other:?}"),
    }
}

/// Every test that sets `LLM_DATA_MIRROR` / `LLM_DATA_DIR` lives here: the environment is
/// shared by the test threads, so these cases run one after another in a single test.
#[test]
fn fetch_uses_the_mirror_and_the_data_dir_from_the_environment() {
    let ts = data::dataset("tinyshakespeare").unwrap();
    // The real bytes, fetched as every other test fetches them, before this test changes
    // where fetches go.
    let real = shakespeare().as_bytes().to_vec();
    let served = real.clone();
    let server = Server::start(move |path| match (path, &served) {
        ("/mirror/tinyshakespeare.txt", bytes) => Reply::Body(bytes.clone()),
        ("/short/tinyshakespeare.txt", _) => Reply::Body(b"not shakespeare".to_vec()),
        ("/corrupt/tinyshakespeare.txt", _) => Reply::Body(vec![b'x'; 1_115_394]),
        _ => Reply::Status(404),
    });
    let set_env = |mirror: &str, dir: &std::path::Path| {
        std::env::set_var(data::MIRROR_ENV, mirror);
        std::env::set_var("LLM_DATA_DIR", dir);
    };

    // A mirror with the wrong bytes: the manifest's size and sha256 catch them, and
    // nothing is left in the data dir.
    let dir = TempDir::new("fetch_corrupt");
    set_env(&server.url("/short/"), dir.path());
    assert_eq!(data::cache_dir(), dir.path());
    let err = data::fetch("tinyshakespeare").unwrap_err();
    assert!(
        matches!(&err, Error::Download { reason, .. } if reason == "expected 1115394 bytes, got 15"),
        "got {err:?}"
    );
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
    set_env(&server.url("/corrupt/"), dir.path());
    let err = data::fetch("tinyshakespeare").unwrap_err();
    assert!(
        matches!(&err, Error::Checksum { bytes: 1_115_394, expected, .. } if *expected == ts.sha256),
        "got {err:?}"
    );
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());

    // A mirror without the file: an HTTP error naming the mirror URL.
    set_env(&server.url("/empty"), dir.path());
    match data::fetch("tinyshakespeare").unwrap_err() {
        Error::Download { url, reason } => {
            assert_eq!(url, server.url("/empty/tinyshakespeare.txt"));
            assert!(reason.contains("404"), "reason: {reason}");
        }
        other => panic!("expected Error::Download, got {other:?}"),
    }
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());

    // An entry that comes with others fetches those first; none is cached here.
    assert_eq!(data::cached("gpt2").unwrap(), None);
    match data::fetch("gpt2").unwrap_err() {
        Error::Download { url, .. } => assert_eq!(url, server.url("/empty/gpt2/config.json")),
        other => panic!("expected Error::Download, got {other:?}"),
    }
    assert!(dir.entries().iter().all(|e| e == "gpt2"), "left behind: {:?}", dir.entries());

    // An unknown dataset fails before touching the network.
    let before = server.requests().len();
    assert!(matches!(data::fetch("nope"), Err(Error::UnknownDataset { .. })));
    assert_eq!(server.requests().len(), before);

    // A good HTTP mirror: downloaded once, then served from the cache.
    let dir = TempDir::new("fetch_http");
    set_env(&server.url("/mirror"), dir.path());
    let path = data::fetch("tinyshakespeare").expect("fetch from the HTTP mirror");
    assert_eq!(path, dir.join(&ts.file));
    assert_eq!(std::fs::read(&path).unwrap(), real);
    assert_eq!(dir.entries(), [ts.file.as_str()]);
    let downloads = || server.requests().iter().filter(|p| *p == "/mirror/tinyshakespeare.txt").count();
    assert_eq!(downloads(), 1);
    assert_eq!(data::fetch("tinyshakespeare").unwrap(), path);
    assert_eq!(downloads(), 1, "a verified cached file is not downloaded again");

    // A cached file that went bad is replaced.
    std::fs::write(&path, "truncated").unwrap();
    data::fetch("tinyshakespeare").expect("re-fetch");
    assert_eq!(downloads(), 2);
    assert_eq!(std::fs::read(&path).unwrap(), real);

    // `tinyshakespeare()` reads it as text.
    let text = data::tinyshakespeare().unwrap();
    assert_eq!(text.len(), 1_115_394);
    assert!(text.starts_with("First Citizen:\nBefore we proceed any further, hear me speak."));

    // A local folder as the mirror.
    let mirror = TempDir::new("fetch_local_mirror");
    std::fs::write(mirror.join(&ts.file), &real).unwrap();
    let dir = TempDir::new("fetch_local");
    set_env(mirror.path().to_str().unwrap(), dir.path());
    let path = data::fetch("tinyshakespeare").expect("fetch from a local mirror folder");
    assert_eq!(std::fs::read(&path).unwrap(), real);
    assert_eq!(dir.entries(), [ts.file.as_str()]);

    fetch_url_records_the_hash_and_refuses_a_changed_file();
    std::env::remove_var(data::MIRROR_ENV);
    a_corpus_with_splits_is_unpacked_from_the_first_source_that_has_it();
    std::env::remove_var("LLM_DATA_DIR");
}

/// `data::fetch_splits_of` and `load_splits` (part of the test above: they use `LLM_DATA_DIR`).
fn a_corpus_with_splits_is_unpacked_from_the_first_source_that_has_it() {
    let good = wikitext_zip(&WIKI);
    let partial = wikitext_zip(&WIKI[..2]);
    let (g, p) = (good.clone(), partial.clone());
    let server = Server::start(move |path| match path {
        "/s3/wikitext-2-raw-v1.zip" => Reply::Status(403), // the original host now refuses
        "/smerity/wikitext-2-raw-v1.zip" => Reply::Body(g.clone()),
        "/partial.zip" => Reply::Body(p.clone()),
        "/corrupt.zip" => Reply::Body(b"PK not really a zip".to_vec()),
        _ => Reply::Status(404),
    });
    let dir = TempDir::new("fetch_splits");
    std::env::set_var("LLM_DATA_DIR", dir.path());
    let entry = |urls: &[&str], body: &[u8]| data::Dataset {
        name: "tiny-wiki".into(),
        description: "a WikiText-shaped zip".into(),
        urls: urls.iter().map(|u| server.url(u)).collect(),
        file: "tiny-wiki.zip".into(),
        size: body.len() as u64,
        sha256: sha256_hex(body),
        with: vec![],
        splits: Some(data::Splits {
            train: WIKI[0].0.into(),
            valid: WIKI[1].0.into(),
            test: WIKI[2].0.into(),
        }),
    };
    let ds = entry(&["/s3/wikitext-2-raw-v1.zip", "/smerity/wikitext-2-raw-v1.zip"], &good);
    let paths = data::fetch_splits_of(&ds).unwrap();
    assert_eq!(paths.valid, dir.join("tiny-wiki/wiki.valid.raw"));
    for (path, (_, text)) in [&paths.train, &paths.valid, &paths.test].into_iter().zip(WIKI) {
        assert_eq!(std::fs::read_to_string(path).unwrap(), text);
    }
    assert_eq!(server.requests(), ["/s3/wikitext-2-raw-v1.zip", "/smerity/wikitext-2-raw-v1.zip"]);
    // Again: the unpacked files are used, nothing is downloaded.
    data::fetch_splits_of(&ds).unwrap();
    assert_eq!(server.requests().len(), 2);

    // A member missing, a file that is no zip, a hash no source gives: errors, nothing kept.
    let fresh = TempDir::new("fetch_splits_bad");
    std::env::set_var("LLM_DATA_DIR", fresh.path());
    let err = data::fetch_splits_of(&entry(&["/partial.zip"], &partial)).unwrap_err().to_string();
    assert!(err.contains("no member wikitext-2-raw/wiki.test.raw"), "{err}");
    std::fs::remove_file(fresh.join("tiny-wiki.zip")).unwrap();
    let err =
        data::fetch_splits_of(&entry(&["/corrupt.zip"], b"PK not really a zip")).unwrap_err().to_string();
    assert!(err.contains("not a readable zip archive"), "{err}");
    std::fs::remove_file(fresh.join("tiny-wiki.zip")).unwrap();
    let wrong = data::Dataset {
        sha256: "0".repeat(64),
        ..entry(&["/s3/wikitext-2-raw-v1.zip", "/smerity/wikitext-2-raw-v1.zip"], &good)
    };
    let err = data::fetch_splits_of(&wrong).unwrap_err().to_string();
    assert!(
        err.contains("every source failed") && err.contains("403") && err.contains("checksum mismatch"),
        "{err}"
    );
    assert!(fresh.entries().iter().all(|e| e == "tiny-wiki"), "left behind: {:?}", fresh.entries());

    // By name, through a manifest of one's own.
    let manifest = fresh.join("manifest.json");
    std::fs::write(
        &manifest,
        serde_json::to_string(&[entry(&["/smerity/wikitext-2-raw-v1.zip"], &good)]).unwrap(),
    )
    .unwrap();
    std::env::set_var(data::MANIFEST_ENV, &manifest);
    let texts = data::load_splits("tiny-wiki").unwrap();
    assert_eq!((texts.train.as_str(), texts.test.as_str()), (WIKI[0].1, WIKI[2].1));
    let err = data::load_splits("tinyshakespeare").unwrap_err().to_string();
    assert!(err.contains("without train/validation/test parts"), "{err}");
    std::env::remove_var(data::MANIFEST_ENV);
}

/// `data::fetch_url` (part of the test above: it sets `LLM_DATA_DIR`).
fn fetch_url_records_the_hash_and_refuses_a_changed_file() {
    let book = Arc::new(Mutex::new(b"It was the best of times.\n".to_vec()));
    let served = book.clone();
    let server = Server::start(move |path| match path {
        "/cache/epub/98/pg98.txt" => Reply::Body(served.lock().unwrap().clone()),
        _ => Reply::Status(404),
    });
    let dir = TempDir::new("fetch_url");
    std::env::set_var("LLM_DATA_DIR", dir.path());
    let url = server.url("/cache/epub/98/pg98.txt");
    let downloads = || server.requests().len();

    // First download: kept under urls/HOST/NAME, its SHA-256 recorded beside it.
    let path = data::fetch_url(&url, None, false).unwrap();
    assert!(path.starts_with(dir.join("urls")) && path.ends_with("pg98.txt"), "{}", path.display());
    assert_eq!(std::fs::read(&path).unwrap(), *book.lock().unwrap());
    let record = path.with_file_name("pg98.txt.sha256");
    assert_eq!(std::fs::read_to_string(&record).unwrap().trim(), sha256_hex(&book.lock().unwrap()));
    // Later: from the cache, no request.
    assert_eq!(data::fetch_url(&url, None, false).unwrap(), path);
    assert_eq!(downloads(), 1);
    // A local copy that went bad is fetched again, and must match the record.
    std::fs::write(&path, "damaged").unwrap();
    data::fetch_url(&url, None, false).unwrap();
    assert_eq!((downloads(), std::fs::read(&path).unwrap()), (2, book.lock().unwrap().clone()));

    // The file changed upstream: said, and refused; the copy and the record stay as they were.
    *book.lock().unwrap() = b"It was the worst of times.\n".to_vec();
    std::fs::remove_file(&path).unwrap();
    let err = data::fetch_url(&url, None, false).unwrap_err().to_string();
    assert!(err.contains("changed since it was first downloaded") && err.contains("with `refresh`"), "{err}");
    assert!(!path.exists());
    // Asked to refresh: the new file, and its hash recorded.
    data::fetch_url(&url, None, true).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"It was the worst of times.\n");
    assert_eq!(std::fs::read_to_string(&record).unwrap().trim(), sha256_hex(b"It was the worst of times.\n"));

    // A given SHA-256 is checked from the first download on; an unknown path is an HTTP error.
    let err = data::fetch_url(&url, Some(&"0".repeat(64)), false).unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"It was the worst of times.\n", "the good copy stays");
    let err = data::fetch_url(&server.url("/nothing.txt"), None, false).unwrap_err().to_string();
    assert!(err.contains("404"), "{err}");
    assert!(data::fetch_url("ftp://example.com/x.txt", None, false)
        .unwrap_err()
        .to_string()
        .contains("http://"));
}
