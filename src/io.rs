//! Small file helpers shared by everything that saves state.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Write `bytes` to `path` through a temporary file beside it, so an interrupted write never
/// leaves a truncated file under the real name.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path_for(path);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    result
        .map_err(|e| Error::io(&tmp, e))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// A hidden name beside `path`, unique to this process and call, for writing before a rename.
pub(crate) fn temp_path_for(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

/// Read and parse a JSON file, naming the file in any error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json { context: path.display().to_string(), source })
}

/// The SHA-256 of a file's bytes, in lowercase hex.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(hex(&hasher.finalize()))
}

/// A tensor that does not fit where named tensors are loaded into a model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mismatch {
    /// Wanted and not there: its name, and the shape wanted.
    Missing(String, Vec<i64>),
    /// There with another shape: its name, the shape wanted, the shape found.
    Shape(String, Vec<i64>, Vec<i64>),
    /// There and not wanted.
    Unexpected(String),
}

/// The named shapes `want` (in the order to report them) against those `found`: what is
/// missing or mis-shaped, in `want`'s order, then what is not wanted, in name order. The one
/// comparison behind loading a checkpoint ([`crate::train::Checkpoint::load_weights`]) and a
/// Hugging Face file ([`crate::model::hf::load_weights`]).
pub(crate) fn shape_mismatches(
    want: &[(String, Vec<i64>)],
    found: &HashMap<String, Vec<i64>>,
) -> Vec<Mismatch> {
    let mut mismatches: Vec<Mismatch> = want
        .iter()
        .filter_map(|(name, shape)| match found.get(name) {
            None => Some(Mismatch::Missing(name.clone(), shape.clone())),
            Some(other) if other != shape => {
                Some(Mismatch::Shape(name.clone(), shape.clone(), other.clone()))
            }
            Some(_) => None,
        })
        .collect();
    let mut unexpected: Vec<&String> = found.keys().filter(|n| !want.iter().any(|(w, _)| w == *n)).collect();
    unexpected.sort();
    mismatches.extend(unexpected.into_iter().map(|n| Mismatch::Unexpected(n.clone())));
    mismatches
}

/// Bytes as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Flush a directory's entries to disk (best effort: some filesystems refuse).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A directory removed with everything in it when dropped (after a swap, that is the old
/// contents of the destination): a checkpoint or an export is written into one, then swapped
/// into place.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn create(path: PathBuf) -> Result<Self> {
        std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Self(path))
    }

    /// Put this directory at `dest`. If `dest` exists it is exchanged atomically with this
    /// one where the platform can, and the old contents are deleted when `self` drops.
    pub(crate) fn swap_into(self, dest: &Path) -> Result<()> {
        if !dest.exists() {
            return std::fs::rename(&self.0, dest).map_err(|e| Error::io(dest, e));
            // `self` drops: the temporary name no longer exists, nothing to remove.
        }
        if exchange(&self.0, dest).is_ok() {
            return Ok(()); // `self` now names the old contents, removed on drop
        }
        // No atomic exchange here: move the old one aside, the new one in, then drop the old.
        let aside = temp_path_for(dest);
        std::fs::rename(dest, &aside).map_err(|e| Error::io(dest, e))?;
        if let Err(e) = std::fs::rename(&self.0, dest) {
            let _ = std::fs::rename(&aside, dest);
            return Err(Error::io(dest, e));
        }
        let _ = std::fs::remove_dir_all(&aside);
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(any(target_os = "linux", target_vendor = "apple"))]
fn c_path(path: &Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Atomically exchange two paths (both must exist).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let (a, b) = (c_path(a)?, c_path(b)?);
    // SAFETY: two valid NUL-terminated paths; renameat2 only reads them.
    let rc = unsafe {
        libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(target_vendor = "apple")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let (a, b) = (c_path(a)?, c_path(b)?);
    // SAFETY: two valid NUL-terminated paths; renamex_np only reads them.
    let rc = unsafe { libc::renamex_np(a.as_ptr(), b.as_ptr(), libc::RENAME_SWAP) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(any(target_os = "linux", target_vendor = "apple")))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "no atomic exchange on this platform"))
}
