//! Tokenizers turn text into a sequence of integer ids and back.
//!
//! Chapter 1 builds the simplest one, [`CharTokenizer`] (one id per character, 65 of them for
//! Tiny Shakespeare), and a [`WordTokenizer`] beside it to show the trade-off: a bigger
//! vocabulary buys shorter sequences. Chapter 6 adds byte-level BPE behind the same trait.

mod char;
mod word;

pub use self::char::CharTokenizer;
pub use self::word::{split_words, WordTokenizer};

use crate::{Error, Result};
use std::path::Path;

pub(crate) use crate::io::read_json;

/// What every tokenizer of the course can do.
pub trait Tokenizer {
    /// Text to ids. Text the tokenizer cannot represent is an error, never a panic.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// Ids to text. An id outside the vocabulary is an error.
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// How many distinct ids there are: the model's embedding table has this many rows.
    fn vocab_size(&self) -> usize;
    /// The tokenizer as JSON, the form [`Tokenizer::save`] writes.
    fn to_json(&self) -> Result<String>;

    /// Write the tokenizer to a JSON file (atomically: a temporary file renamed into place).
    fn save(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(path, self.to_json()?.as_bytes())
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|source| Error::Json { context: "tokenizer".into(), source })
}
