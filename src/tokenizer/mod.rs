//! Tokenizers turn text into a sequence of integer ids and back.
//!
//! Chapter 1 builds the simplest one, [`CharTokenizer`] (one id per character, 65 of them for
//! Tiny Shakespeare), and a [`WordTokenizer`] beside it to show the trade-off: a bigger
//! vocabulary buys shorter sequences. Chapter 6 adds byte-level BPE ([`BpeTokenizer`]), which
//! gets short sequences without ever meeting a character it cannot encode.
//! [`AnyTokenizer`] loads any of them from its JSON file by the file's `"kind"` field (a
//! checkpoint stores its tokenizer that way).

mod bpe;
mod char;
mod hf_json;
mod word;

pub use self::bpe::{BpeConfig, BpeTokenizer, Specials, ENDOFTEXT, GPT2_PATTERN, GPT4_PATTERN};
pub use self::char::CharTokenizer;
pub use self::hf_json::{byte_to_unicode, tokenizer_from_json, tokenizer_json};
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

/// Any tokenizer of the course, chosen by the `"kind"` field of its JSON file: what a
/// checkpoint stores and gives back, so code that loads a checkpoint needs not know which
/// tokenizer the run used.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyTokenizer {
    Char(CharTokenizer),
    Word(WordTokenizer),
    Bpe(BpeTokenizer),
}

impl AnyTokenizer {
    /// The kinds [`AnyTokenizer`] can load, as their files name them.
    pub const KINDS: &'static [&'static str] = &["char", "word", "bpe"];

    /// Parse a tokenizer file's text (the form [`Tokenizer::to_json`] writes).
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|source| Error::Json { context: "tokenizer".into(), source })
    }

    /// The same from an already parsed JSON value.
    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        serde_json::from_value(value).map_err(|source| Error::Json { context: "tokenizer".into(), source })
    }

    /// Load a tokenizer file of any kind.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        read_json(path.as_ref())
    }

    /// The `"kind"` of its file: `"char"`, `"word"` or `"bpe"`.
    pub fn kind(&self) -> &'static str {
        match self {
            AnyTokenizer::Char(_) => "char",
            AnyTokenizer::Word(_) => "word",
            AnyTokenizer::Bpe(_) => "bpe",
        }
    }

    fn inner(&self) -> &dyn Tokenizer {
        match self {
            AnyTokenizer::Char(t) => t,
            AnyTokenizer::Word(t) => t,
            AnyTokenizer::Bpe(t) => t,
        }
    }
}

impl Tokenizer for AnyTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner().encode(text)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner().decode(ids)
    }

    fn vocab_size(&self) -> usize {
        self.inner().vocab_size()
    }

    fn to_json(&self) -> Result<String> {
        self.inner().to_json()
    }
}

impl From<CharTokenizer> for AnyTokenizer {
    fn from(t: CharTokenizer) -> Self {
        AnyTokenizer::Char(t)
    }
}

impl From<BpeTokenizer> for AnyTokenizer {
    fn from(t: BpeTokenizer) -> Self {
        AnyTokenizer::Bpe(t)
    }
}

impl From<WordTokenizer> for AnyTokenizer {
    fn from(t: WordTokenizer) -> Self {
        AnyTokenizer::Word(t)
    }
}

impl serde::Serialize for AnyTokenizer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            AnyTokenizer::Char(t) => t.serialize(serializer),
            AnyTokenizer::Word(t) => t.serialize(serializer),
            AnyTokenizer::Bpe(t) => t.serialize(serializer),
        }
    }
}

impl<'de> serde::Deserialize<'de> for AnyTokenizer {
    /// Read the file as JSON, look at its `"kind"`, then parse it as that tokenizer (which
    /// checks the rest, version included).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(deserializer)?;
        let kind = match value.get("kind") {
            Some(serde_json::Value::String(kind)) => kind.clone(),
            Some(other) => {
                return Err(D::Error::custom(format!("tokenizer \"kind\" must be a string, got {other}")))
            }
            None => return Err(D::Error::custom("not a tokenizer file: it has no \"kind\" field")),
        };
        let parsed = match kind.as_str() {
            "char" => serde_json::from_value(value).map(AnyTokenizer::Char),
            "word" => serde_json::from_value(value).map(AnyTokenizer::Word),
            "bpe" => serde_json::from_value(value).map(AnyTokenizer::Bpe),
            _ => {
                return Err(D::Error::custom(format!(
                    "unknown tokenizer kind {kind:?} (known: {})",
                    Self::KINDS.join(", ")
                )))
            }
        };
        parsed.map_err(D::Error::custom)
    }
}
