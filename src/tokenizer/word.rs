//! One token per word: the other end of the vocabulary-size trade-off.

use super::Tokenizer;
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// Splits text into words (a run of letters, digits and apostrophes, with the single space
/// before it attached, as GPT-2 does), runs of other whitespace, and single punctuation
/// marks. Every piece of the corpus gets an id, so the text round-trips exactly, but the
/// vocabulary is large (16,276 for Tiny Shakespeare against 65 characters) and any
/// word never seen in training cannot be encoded at all.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "WordFile", into = "WordFile")]
pub struct WordTokenizer {
    words: Vec<String>,
    ids: HashMap<String, u32>,
}

/// The pieces `text` splits into; concatenated, they give `text` back.
pub fn split_words(text: &str) -> Vec<&str> {
    let is_word = |c: char| c.is_alphanumeric() || c == '\'';
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let word_at = |i: usize| chars.get(i).is_some_and(|&(_, c)| is_word(c));
    let mut pieces = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        let c = chars[i].1;
        i += 1;
        if is_word(c) || (c == ' ' && word_at(i)) {
            while word_at(i) {
                i += 1;
            }
        } else if c.is_whitespace() {
            // A run of whitespace, leaving a last ' ' before a word to that word.
            while i < chars.len() && chars[i].1.is_whitespace() && !(chars[i].1 == ' ' && word_at(i + 1)) {
                i += 1;
            }
        }
        let end = chars.get(i).map_or(text.len(), |&(byte, _)| byte);
        pieces.push(&text[chars[start].0..end]);
    }
    pieces
}

impl WordTokenizer {
    /// The vocabulary of `text`: its distinct pieces, sorted.
    pub fn from_text(text: &str) -> Self {
        let mut words: Vec<String> = split_words(text).into_iter().map(str::to_owned).collect();
        words.sort_unstable();
        words.dedup();
        Self::from_words(words)
    }

    fn from_words(words: Vec<String>) -> Self {
        let ids = words.iter().enumerate().map(|(i, w)| (w.clone(), i as u32)).collect();
        Self { words, ids }
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        super::read_json(path.as_ref())
    }
}

impl Tokenizer for WordTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut position = 0;
        split_words(text)
            .into_iter()
            .map(|piece| {
                let id = self
                    .ids
                    .get(piece)
                    .copied()
                    .ok_or_else(|| Error::UnknownWord { piece: piece.into(), position });
                position += piece.chars().count();
                id
            })
            .collect()
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        ids.iter()
            .map(|&id| {
                self.words
                    .get(id as usize)
                    .map(String::as_str)
                    .ok_or(Error::UnknownId { id, vocab_size: self.words.len() })
            })
            .collect()
    }

    fn vocab_size(&self) -> usize {
        self.words.len()
    }

    fn to_json(&self) -> Result<String> {
        super::to_json(self)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct WordFile {
    kind: String,
    version: u32,
    words: Vec<String>,
}

impl From<WordTokenizer> for WordFile {
    fn from(t: WordTokenizer) -> Self {
        WordFile { kind: "word".into(), version: 1, words: t.words }
    }
}

impl TryFrom<WordFile> for WordTokenizer {
    type Error = String;
    fn try_from(file: WordFile) -> Result<Self, String> {
        if file.kind != "word" || file.version != 1 {
            return Err(format!(
                "not a word tokenizer v1 file (kind {:?}, version {})",
                file.kind, file.version
            ));
        }
        if file.words.is_empty() || file.words.windows(2).any(|w| w[0] >= w[1]) {
            return Err("the words must be non-empty, sorted and distinct".into());
        }
        Ok(Self::from_words(file.words))
    }
}
