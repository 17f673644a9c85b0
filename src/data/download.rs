//! Datasets of the manifest, downloaded once, verified, and kept under `data/`.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Set to an `http(s)://` base URL or a local folder to download every dataset from there
/// instead of its public URL (the file is looked up by its manifest `file` name). CI points
/// it at a loopback server; it also serves a lab without internet.
pub const MIRROR_ENV: &str = "LLM_DATA_MIRROR";

/// Set to put downloads somewhere other than the project's `data/` folder.
pub const DATA_DIR_ENV: &str = "LLM_DATA_DIR";

/// Set to a JSON file of more entries in the manifest's format (a list of [`Dataset`]s): your
/// own datasets, e.g. a corpus of your own with its splits, by name like the built-in ones.
pub const MANIFEST_ENV: &str = "LLM_DATA_MANIFEST";

/// One entry of `data/datasets.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dataset {
    pub name: String,
    pub description: String,
    /// Where it is published, tried in order until one gives the right bytes (the sha256
    /// makes any of them safe): the original host first, then copies.
    pub urls: Vec<String>,
    /// File name in the cache folder (and on a mirror).
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// Entries fetched together with this one (e.g. a model's `config.json` beside its
    /// weights): [`fetch`] gets them first, [`cached`] needs them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub with: Vec<String>,
    /// For a zip archive of a corpus with its own splits (WikiText): the members holding the
    /// training, validation and test text, used as given instead of a 90/10 split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splits: Option<Splits<String>>,
}

/// A corpus' three parts: member names in an archive, paths, or texts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Splits<T> {
    pub train: T,
    pub valid: T,
    pub test: T,
}

impl<T> Splits<T> {
    pub fn map<U>(self, mut f: impl FnMut(T) -> Result<U>) -> Result<Splits<U>> {
        Ok(Splits { train: f(self.train)?, valid: f(self.valid)?, test: f(self.test)? })
    }
}

const MANIFEST: &str = include_str!("../../data/datasets.json");

/// Every dataset of the manifest, and those of `$LLM_DATA_MANIFEST`.
pub fn datasets() -> Result<Vec<Dataset>> {
    let mut all: Vec<Dataset> = serde_json::from_str(MANIFEST)
        .map_err(|source| Error::Json { context: "data/datasets.json".into(), source })?;
    if let Some(extra) = std::env::var_os(MANIFEST_ENV).filter(|v| !v.is_empty()) {
        let more: Vec<Dataset> = crate::io::read_json(Path::new(&extra))?;
        all.extend(more);
    }
    Ok(all)
}

/// The manifest entry called `name`. A URL is not a name: one of another scheme than
/// `http(s)://` is an error that says so (an `http(s)://` one is [`fetch_url`]'s).
pub fn dataset(name: &str) -> Result<Dataset> {
    if name.contains("://") {
        return Err(Error::Download { url: name.into(), reason: unsupported_scheme(name) });
    }
    let all = datasets()?;
    let known = all.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ");
    all.iter()
        .find(|d| d.name == name)
        .cloned()
        .ok_or_else(|| Error::UnknownDataset { name: name.into(), known })
}

/// Where downloads go: `$LLM_DATA_DIR`, else the `data/` folder of this project.
pub fn cache_dir() -> PathBuf {
    std::env::var_os(DATA_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data"))
}

/// The local path of dataset `name`, downloading it first if it is not there yet (from
/// `$LLM_DATA_MIRROR` when set). A cached file is re-verified and replaced if it went bad.
pub fn fetch(name: &str) -> Result<PathBuf> {
    fetch_with_progress(name, |_, _, _| {})
}

/// [`fetch`], telling `on_bytes(file, bytes so far, total)` how each download is going (the
/// CLI draws a progress bar with it; a cached file reports nothing).
pub fn fetch_with_progress(name: &str, mut on_bytes: impl FnMut(&str, u64, Option<u64>)) -> Result<PathBuf> {
    fetch_reporting(name, &mut on_bytes)
}

fn fetch_reporting(name: &str, on_bytes: &mut dyn FnMut(&str, u64, Option<u64>)) -> Result<PathBuf> {
    let ds = dataset(name)?;
    for companion in &ds.with {
        fetch_reporting(companion, on_bytes)?;
    }
    fetch_entry(&ds, on_bytes)
}

/// [`fetch`] for a dataset entry that need not be in the manifest (its companions are not
/// fetched).
pub fn fetch_dataset(ds: &Dataset) -> Result<PathBuf> {
    fetch_entry(ds, &mut |_, _, _| {})
}

fn fetch_entry(ds: &Dataset, on_bytes: &mut dyn FnMut(&str, u64, Option<u64>)) -> Result<PathBuf> {
    let path = cache_dir().join(&ds.file);
    if path.is_file() && matches_checksum(&path, &ds.sha256)? {
        return Ok(path);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let sources = match std::env::var(MIRROR_ENV) {
        Ok(mirror) if !mirror.is_empty() => {
            if mirror.starts_with("http://") || mirror.starts_with("https://") {
                vec![format!("{}/{}", mirror.trim_end_matches('/'), ds.file)]
            } else {
                vec![Path::new(&mirror).join(&ds.file).display().to_string()]
            }
        }
        _ => ds.urls.clone(),
    };
    // Each source in turn; with one, its own error; with several, what each one said.
    let mut failures = Vec::new();
    for source in &sources {
        let progress = &mut *on_bytes;
        match download_with_progress(source, &path, Some(ds.size), &ds.sha256, |done, total| {
            progress(&ds.file, done, total)
        }) {
            Ok(()) => return Ok(path),
            Err(e) if sources.len() == 1 => return Err(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(Error::Download {
        url: sources.join(", "),
        reason: match failures.is_empty() {
            true => format!("the manifest entry '{}' lists no URL", ds.name),
            false => format!("every source failed: {}", failures.join("; ")),
        },
    })
}

/// The training, validation and test files of a dataset with [splits](Dataset::splits)
/// (WikiText), downloading its archive first if needed and unpacking the three members into
/// the folder `NAME/` of the cache (each through a temporary file renamed into place; a
/// member already unpacked is kept).
pub fn fetch_splits(name: &str) -> Result<Splits<PathBuf>> {
    fetch_splits_of(&dataset(name)?)
}

/// [`fetch_splits`] for a dataset entry that need not be in the manifest.
pub fn fetch_splits_of(ds: &Dataset) -> Result<Splits<PathBuf>> {
    let Some(members) = ds.splits.clone() else {
        return Err(Error::Config(format!(
            "dataset '{}' is one text, without train/validation/test parts: use data::fetch",
            ds.name
        )));
    };
    let archive = fetch_dataset(ds)?;
    let dir = cache_dir().join(&ds.name);
    let bad = |reason: String| Error::Archive { path: archive.clone(), reason };
    let dest_of = |member: &str| match Path::new(member).file_name() {
        Some(name) => Ok(dir.join(name)),
        None => Err(bad(format!("member {member:?} has no file name"))),
    };
    let unpacked = members.clone().map(|member| dest_of(&member))?;
    if [&unpacked.train, &unpacked.valid, &unpacked.test].iter().all(|path| path.is_file()) {
        return Ok(unpacked);
    }
    let file = std::fs::File::open(&archive).map_err(|e| Error::io(&archive, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(format!("not a readable zip archive: {e}")))?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    members.map(|member| {
        let dest = dest_of(&member)?;
        if dest.is_file() {
            return Ok(dest);
        }
        let mut entry = zip.by_name(&member).map_err(|e| bad(format!("no member {member} ({e})")))?;
        let partial = TempFile(crate::io::temp_path_for(&dest));
        let mut out = std::fs::File::create(&partial.0).map_err(|e| Error::io(&partial.0, e))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| bad(format!("member {member}: {e}")))?;
        out.sync_all().map_err(|e| Error::io(&partial.0, e))?;
        partial.persist(&dest)?;
        Ok(dest)
    })
}

/// The texts of a dataset with [splits](Dataset::splits), as given (WikiText's
/// `wiki.train.raw`, `wiki.valid.raw`, `wiki.test.raw`).
pub fn load_splits(name: &str) -> Result<Splits<String>> {
    fetch_splits(name)?.map(|path| super::load_text(path))
}

/// The local path of dataset `name` if it (and every entry it comes [with](Dataset::with))
/// is already downloaded and verified; `None` otherwise. Never downloads.
pub fn cached(name: &str) -> Result<Option<PathBuf>> {
    let ds = dataset(name)?;
    for companion in &ds.with {
        if cached(companion)?.is_none() {
            return Ok(None);
        }
    }
    let path = cache_dir().join(&ds.file);
    Ok((path.is_file() && matches_checksum(&path, &ds.sha256)?).then_some(path))
}

/// Any file on the web, by URL (a seed project: "change this URL to train on another book"):
/// downloaded once into `urls/HOST/NAME` under [`cache_dir`], and its SHA-256 recorded beside
/// it (`NAME.sha256`). Later calls use the file if it still has that hash; if it went missing
/// or bad it is downloaded again, and must come back with the same hash: a file that changed
/// upstream is an error that says so, unless `refresh` (take the new one and record its
/// hash). With `sha256` the download must have that hash, the first time too.
pub fn fetch_url(url: &str, sha256: Option<&str>, refresh: bool) -> Result<PathBuf> {
    fetch_url_with_progress(url, sha256, refresh, |_, _| {})
}

/// [`fetch_url`], reporting progress as [`download_with_progress`] does.
pub fn fetch_url_with_progress(
    url: &str,
    sha256: Option<&str>,
    refresh: bool,
    on_bytes: impl FnMut(u64, Option<u64>),
) -> Result<PathBuf> {
    let fail = |reason: String| Error::Download { url: url.to_owned(), reason };
    if let Some(given) = sha256.filter(|s| s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit())) {
        return Err(fail(format!(
            "the SHA-256 {given:?} is not one: it is 64 hex digits (sha256sum prints it), got {} characters",
            given.chars().count()
        )));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| fail(unsupported_scheme(url)))?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let safe = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
    };
    let name = match path.rsplit('/').next().map(safe) {
        Some(name) if !name.is_empty() && name != "." && name != ".." => name,
        _ => "index".into(),
    };
    let dir = cache_dir().join("urls").join(safe(host));
    let file = dir.join(&name);
    let record = dir.join(format!("{name}.sha256"));
    let recorded = std::fs::read_to_string(&record).ok().map(|s| s.trim().to_ascii_lowercase());
    let expected = match (sha256, refresh) {
        (Some(given), _) => Some(given.to_ascii_lowercase()),
        (None, true) => None,
        (None, false) => recorded.clone(),
    };
    if let Some(expected) = &expected {
        if file.is_file() && matches_checksum(&file, expected)? {
            return Ok(file);
        }
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let actual = match transfer(url, &file, None, expected.as_deref(), on_bytes) {
        Err(Error::Checksum { expected, actual, .. }) if sha256.is_none() => {
            return Err(fail(format!(
                "the file changed since it was first downloaded (recorded sha256 {expected}, now {actual}): \
                 fetch it with `refresh` to take the new one"
            )))
        }
        other => other?,
    };
    crate::io::write_atomic(&record, format!("{actual}\n").as_bytes())?;
    Ok(file)
}

fn matches_checksum(path: &Path, sha256: &str) -> Result<bool> {
    Ok(crate::io::sha256_file(path)? == sha256.to_ascii_lowercase())
}

/// Copy `source` (an `http(s)://` URL or a local path) to `dest`, checking its size (when
/// given) and sha256 on the way. The bytes go to a temporary file beside `dest` that is
/// renamed into place only once verified: after any failure (HTTP error, dropped connection,
/// wrong checksum) nothing is left under `dest` or beside it.
/// HTTP redirects are followed (up to 10).
pub fn download(source: &str, dest: &Path, size: Option<u64>, sha256: &str) -> Result<()> {
    download_with_progress(source, dest, size, sha256, |_, _| {})
}

/// [`download`], calling `on_bytes(bytes so far, total)` after every chunk (`total`: the
/// expected size, else what the server announces).
pub fn download_with_progress(
    source: &str,
    dest: &Path,
    size: Option<u64>,
    sha256: &str,
    on_bytes: impl FnMut(u64, Option<u64>),
) -> Result<()> {
    transfer(source, dest, size, Some(sha256), on_bytes).map(|_| ())
}

/// The download itself: checked against `sha256` when given; returns the SHA-256 of what
/// arrived.
fn transfer(
    source: &str,
    dest: &Path,
    size: Option<u64>,
    sha256: Option<&str>,
    mut on_bytes: impl FnMut(u64, Option<u64>),
) -> Result<String> {
    let fail = |reason: String| Error::Download { url: source.to_owned(), reason };
    let mut total = size;
    let mut reader: Box<dyn Read> = if source.starts_with("http://") || source.starts_with("https://") {
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(30 * 60))
            .build()
            .map_err(|e| fail(with_causes(&e)))?;
        let response = client.get(source).send().map_err(|e| fail(with_causes(&e)))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        total = size.or(response.content_length());
        Box::new(response)
    } else {
        Box::new(std::fs::File::open(source).map_err(|e| Error::io(source, e))?)
    };

    let partial = TempFile(crate::io::temp_path_for(dest));
    let mut out = std::fs::File::create(&partial.0).map_err(|e| Error::io(&partial.0, e))?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| fail(format!("connection lost after {bytes} bytes: {}", with_causes(&e))))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::io(&partial.0, e))?;
        bytes += n as u64;
        on_bytes(bytes, total);
    }
    if let Some(size) = size.filter(|&s| s != bytes) {
        return Err(fail(format!("expected {size} bytes, got {bytes}")));
    }
    let actual = crate::io::hex(&hasher.finalize());
    if let Some(sha256) = sha256.filter(|s| s.to_ascii_lowercase() != actual) {
        return Err(Error::Checksum { url: source.into(), expected: sha256.into(), actual, bytes });
    }
    out.sync_all().map_err(|e| Error::io(&partial.0, e))?;
    drop(out);
    partial.persist(dest)?;
    Ok(actual)
}

/// Why `url` cannot be fetched: its scheme, when it has one, is not `http(s)://`.
fn unsupported_scheme(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _)) => {
            format!("the {scheme}:// scheme is not supported: only http:// and https:// URLs can be fetched")
        }
        None => "not a URL: only http:// and https:// URLs can be fetched".into(),
    }
}

/// An error and what caused it, each cause once: reqwest's "error sending request for url
/// (…)" says why only in its sources ("Connection refused", a DNS failure).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = c.source();
    }
    text
}

/// A file removed when dropped, unless [`TempFile::persist`] renamed it into place.
struct TempFile(PathBuf);

impl TempFile {
    fn persist(self, dest: &Path) -> Result<()> {
        std::fs::rename(&self.0, dest).map_err(|e| Error::io(dest, e))
        // `self` drops here: removing the old path is a no-op once renamed.
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
