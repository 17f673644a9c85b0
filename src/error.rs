use std::path::PathBuf;

/// Everything the library can fail with. Each variant says what to look at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: not valid UTF-8 text (first bad byte at offset {offset})")]
    NotUtf8 { path: PathBuf, offset: usize },

    #[error("the corpus is empty: {0}")]
    EmptyCorpus(String),

    #[error("unknown dataset '{name}' (known: {known})")]
    UnknownDataset { name: String, known: String },

    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },

    #[error("archive {path}: {reason}")]
    Archive { path: PathBuf, reason: String },

    #[error("checksum mismatch for {url}: expected sha256 {expected}, got {actual} ({bytes} bytes)")]
    Checksum { url: String, expected: String, actual: String, bytes: u64 },

    #[error("character {ch:?} (U+{code:04X}) at position {position} is not in the vocabulary")]
    UnknownChar { ch: char, code: u32, position: usize },

    #[error("{piece:?} at position {position} is not in the vocabulary")]
    UnknownWord { piece: String, position: usize },

    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    UnknownId { id: u32, vocab_size: usize },

    #[error(
        "the text contains the special token {token:?} (at byte {position}): allow it explicitly \
         (encode_with_specials) or encode it as plain text (encode_ordinary)"
    )]
    DisallowedSpecial { token: String, position: usize },

    #[error(
        "the decoded bytes are not valid UTF-8 at byte {offset} of {bytes}: the ids start or end in \
         the middle of a character"
    )]
    NotUtf8Tokens { offset: usize, bytes: usize },

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("{context}: {source}")]
    Json { context: String, source: serde_json::Error },

    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    #[error("Hugging Face model {path}: {reason}")]
    Hf { path: PathBuf, reason: String },

    #[error("plot: {0}")]
    Plot(String),

    #[error("run folder {path}: {reason}")]
    Run { path: PathBuf, reason: String },

    #[error("dump {path}: {reason}")]
    Dump { path: PathBuf, reason: String },

    #[error("MLflow at {uri}: {reason}")]
    Tracking { uri: String, reason: String },

    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
