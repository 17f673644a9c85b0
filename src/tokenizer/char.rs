//! One token per Unicode character: the tokenizer of chapter 1.

use super::Tokenizer;
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// The sorted set of characters of a corpus; a character's id is its rank in that set
/// (or, [`CharTokenizer::extended`], its place after them).
///
/// Only characters seen when it was built can be encoded: anything else is
/// [`Error::UnknownChar`]. (Real tokenizers avoid that dead end with an unknown-token id or,
/// like GPT-2's byte-level BPE, by falling back to the raw UTF-8 bytes.)
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "CharFile", into = "CharFile")]
pub struct CharTokenizer {
    chars: Vec<char>,
    ids: HashMap<char, u32>,
}

impl CharTokenizer {
    /// The vocabulary of `text`: its distinct characters, sorted by code point.
    pub fn from_text(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Self::from_chars(chars)
    }

    fn from_chars(chars: Vec<char>) -> Self {
        let ids = chars.iter().enumerate().map(|(i, &c)| (c, i as u32)).collect();
        Self { chars, ids }
    }

    /// This vocabulary and the characters of `text` it lacks, appended in code-point order:
    /// every id it had stays the same, so a model trained with it keeps its embedding rows
    /// and gets new ones ([`crate::model::Gpt::with_vocab_size`]). For finetuning on text
    /// with characters the pretraining text never had.
    pub fn extended(&self, text: &str) -> Self {
        let mut new: Vec<char> = text.chars().filter(|c| !self.ids.contains_key(c)).collect();
        new.sort_unstable();
        new.dedup();
        Self::from_chars(self.chars.iter().copied().chain(new).collect())
    }

    /// The vocabulary, in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        super::read_json(path.as_ref())
    }
}

impl Tokenizer for CharTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .enumerate()
            .map(|(position, ch)| {
                self.ids.get(&ch).copied().ok_or(Error::UnknownChar { ch, code: ch as u32, position })
            })
            .collect()
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        ids.iter()
            .map(|&id| {
                self.chars
                    .get(id as usize)
                    .copied()
                    .ok_or(Error::UnknownId { id, vocab_size: self.chars.len() })
            })
            .collect()
    }

    fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    fn to_json(&self) -> Result<String> {
        super::to_json(self)
    }
}

/// The file format: `{"kind": "char", "version": 1, "chars": "\n !$&',-.3:;?AB..."}`.
#[derive(serde::Serialize, serde::Deserialize)]
struct CharFile {
    kind: String,
    version: u32,
    chars: String,
}

impl From<CharTokenizer> for CharFile {
    fn from(t: CharTokenizer) -> Self {
        CharFile { kind: "char".into(), version: 1, chars: t.chars.iter().collect() }
    }
}

impl TryFrom<CharFile> for CharTokenizer {
    type Error = String;
    fn try_from(file: CharFile) -> Result<Self, String> {
        if file.kind != "char" || file.version != 1 {
            return Err(format!(
                "not a char tokenizer v1 file (kind {:?}, version {})",
                file.kind, file.version
            ));
        }
        // Sorted when built from a text; an extended vocabulary has its new characters after.
        let chars: Vec<char> = file.chars.chars().collect();
        let distinct: std::collections::HashSet<char> = chars.iter().copied().collect();
        if chars.is_empty() || distinct.len() != chars.len() {
            return Err("the characters must be non-empty and distinct".into());
        }
        Ok(Self::from_chars(chars))
    }
}
