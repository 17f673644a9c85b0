//! Byte-level byte-pair encoding (BPE), the tokenizer of GPT-2 and of chapter 6.
//!
//! Text is UTF-8 bytes, so the 256 byte values are the first 256 tokens and *any* string can be
//! encoded: there is no unknown token. Training repeatedly finds the most frequent pair of
//! adjacent tokens and gives it a new id (a *merge*), until the vocabulary has the size asked
//! for. Encoding replays the merges, lowest id first; decoding concatenates the bytes of the
//! ids. Before any of that, a regular expression cuts the text into chunks (words with their
//! leading space, runs of digits, punctuation, whitespace), and merges never cross a chunk
//! boundary: so `" dog"`, `" dog."` and `" dog!"` share the token `" dog"` instead of each
//! spending vocabulary on its punctuation.
//!
//! What makes it fast (minbpe, the usual teaching version, takes minutes for 256 merges):
//!
//! - **Training** counts each distinct chunk once, with its frequency (Tiny Shakespeare's
//!   300,000 chunks are 15,000 distinct ones), keeps the count of every pair and the chunks it
//!   occurs in, and after a merge updates only the chunks that contain the merged pair. The
//!   next pair comes from a priority queue. Ties are broken deterministically: among equally
//!   frequent pairs, the one with the smaller first id wins, then the smaller second id.
//! - **Encoding** merges a chunk with a linked list of its tokens and a priority queue of its
//!   adjacent pairs (so a merge costs O(log n), not a rescan of the chunk), and a chunk seen
//!   before in the same text is copied from its first encoding.
//! - **Pre-splitting** with the GPT-2 pattern runs a plain automaton regex (the lookahead
//!   `\s+(?!\S)` it cannot express is done by hand), several times faster than the
//!   backtracking engine that other patterns need.

use super::Tokenizer;
use crate::{Error, Result};
use base64::Engine as _;
use rustc_hash::FxHashMap as HashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

/// GPT-2's pre-split pattern (as tiktoken writes it for `r50k_base`): contractions, a word
/// with its leading space, a number with its leading space, punctuation with its leading
/// space, and whitespace (a run of spaces gives its last space to the word after it).
pub const GPT2_PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";

/// GPT-4's pattern (`cl100k_base`): case-insensitive contractions, numbers of at most three
/// digits, and newlines kept apart from other whitespace.
pub const GPT4_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

/// GPT-2's only special token: the separator between documents.
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// How to train a [`BpeTokenizer`].
#[derive(Debug, Clone, PartialEq)]
pub struct BpeConfig {
    /// The size of the whole vocabulary: 256 bytes, the merges, and the special tokens.
    pub vocab_size: usize,
    /// The pre-split regular expression ([`GPT2_PATTERN`], [`GPT4_PATTERN`] or your own);
    /// `None` treats the whole text as one chunk (minbpe's `BasicTokenizer`).
    pub pattern: Option<String>,
    /// Special tokens, given the ids after the merges in this order.
    pub special_tokens: Vec<String>,
}

impl BpeConfig {
    /// `vocab_size` tokens, the GPT-2 pattern, no special tokens.
    pub fn new(vocab_size: usize) -> Self {
        Self { vocab_size, pattern: Some(GPT2_PATTERN.to_string()), special_tokens: Vec::new() }
    }

    /// The same with another pre-split pattern (`None`: no pre-splitting).
    pub fn pattern(mut self, pattern: Option<&str>) -> Self {
        self.pattern = pattern.map(str::to_string);
        self
    }

    /// The same with these special tokens (e.g. `["<|endoftext|>"]`).
    pub fn special_tokens(mut self, tokens: &[&str]) -> Self {
        self.special_tokens = tokens.iter().map(|t| t.to_string()).collect();
        self
    }
}

/// Which special tokens [`BpeTokenizer::encode_with_specials`] turns into their ids.
///
/// A special token in text that comes from users (a web page, a prompt) must not silently
/// become a control token: by default ([`Tokenizer::encode`]) finding one is an error, and
/// code that means it says so.
#[derive(Debug, Clone, Copy)]
pub enum Specials<'a> {
    /// None: special tokens are plain text, encoded as their bytes.
    AsText,
    /// These become their ids; finding any other special token is an error.
    Allow(&'a [&'a str]),
    /// All of them become their ids.
    AllowAll,
}

/// A byte-level BPE tokenizer: 256 byte tokens, the learned merges, then special tokens.
#[derive(Debug, Clone)]
pub struct BpeTokenizer {
    /// The pre-split pattern, `None` for no pre-splitting.
    pattern: Option<String>,
    splitter: Splitter,
    /// The id of each byte value: `byte_ids[b]`. The identity for the tokenizers we train;
    /// GPT-2 numbers its byte tokens in another order.
    byte_ids: [u32; 256],
    /// Merge `i` turns the pair `merges[i]` into the id `256 + i`.
    merges: Vec<(u32, u32)>,
    /// The same, looked up by pair: the merged id, which is also the merge's priority.
    ranks: HashMap<(u32, u32), u32>,
    /// The bytes of every id, special tokens included.
    vocab: Vec<Vec<u8>>,
    /// Special tokens and their ids (as the world knows them: after [`Renumbering`]).
    specials: Vec<(String, u32)>,
    /// The ids another library gave these tokens, where they differ from ours (a
    /// `tokenizer.json` that numbers its special tokens first, say); `None` for every
    /// tokenizer trained or exported here, and for GPT-2's.
    renumbering: Option<Box<Renumbering>>,
}

/// Our ids (bytes, then merges in rank order, then special tokens) against a vocabulary's
/// own. Encoding works in ours and maps its output; decoding maps its input back.
#[derive(Debug, Clone, PartialEq)]
struct Renumbering {
    /// The outside id of each of our ids.
    outer: Vec<u32>,
    /// Our id of each outside id (the first, if two merges make the same bytes), `NO_TOKEN`
    /// where the vocabulary has no token with that id.
    inner: Vec<u32>,
}

const NO_TOKEN: u32 = u32::MAX;

impl Renumbering {
    /// The renumbering of `outer` (the outside id of each of our ids), `None` when it is the
    /// identity.
    fn new(outer: Vec<u32>) -> Option<Box<Self>> {
        if outer.iter().enumerate().all(|(i, &id)| id == i as u32) {
            return None;
        }
        let size = outer.iter().max().map_or(0, |&m| m as usize + 1);
        let mut inner = vec![NO_TOKEN; size];
        for (ours, &theirs) in outer.iter().enumerate().rev() {
            inner[theirs as usize] = ours as u32;
        }
        Some(Box::new(Self { outer, inner }))
    }
}

impl PartialEq for BpeTokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
            && self.byte_ids == other.byte_ids
            && self.merges == other.merges
            && self.specials == other.specials
            && self.renumbering == other.renumbering
    }
}

impl BpeTokenizer {
    /// Learn `config.vocab_size - 256 - specials` merges from `text`.
    ///
    /// Stops early, with a smaller vocabulary, if no pair occurs any more (every chunk is a
    /// single token). The same text and config always give the same merges.
    pub fn train(text: &str, config: &BpeConfig) -> Result<Self> {
        let base = 256 + config.special_tokens.len();
        if config.vocab_size < base {
            return Err(Error::Config(format!(
                "vocab_size {} is too small: it must be at least 256 (one token per byte) plus {} \
                 special token(s) = {base}",
                config.vocab_size,
                config.special_tokens.len()
            )));
        }
        let splitter = Splitter::new(config.pattern.as_deref())?;
        let chunks = count_chunks(text, &splitter)?;
        let merges = learn_merges(chunks, config.vocab_size - base);
        let specials = config.special_tokens.iter().map(String::as_str).collect::<Vec<_>>();
        Self::build(config.pattern.clone(), identity_bytes(), merges, &specials)
    }

    /// GPT-2's tokenizer from its ranks file (`r50k_base.tiktoken`, the dataset `gpt2-ranks`
    /// of `llm data fetch`): the GPT-2 pattern and `<|endoftext|>` = 50256.
    pub fn gpt2(ranks_file: impl AsRef<Path>) -> Result<Self> {
        let path = ranks_file.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_tiktoken(&text, Some(GPT2_PATTERN), &[ENDOFTEXT])
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// A tokenizer from tiktoken's format: one `base64(token bytes) rank` per line, ranks
    /// 0, 1, 2, ... with the 256 single bytes first. The merges are recovered from the ranks
    /// (each token is the merge of the two tokens that BPE splits it into with the merges
    /// before it); special tokens get the ids after the last rank.
    pub fn from_tiktoken(ranks: &str, pattern: Option<&str>, special_tokens: &[&str]) -> Result<Self> {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut tokens: Vec<Vec<u8>> = Vec::new();
        for (line_no, line) in ranks.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad =
                |why: &str| Error::Config(format!("tiktoken ranks, line {}: {why}: {line:?}", line_no + 1));
            let (token, rank) = line.split_once(' ').ok_or_else(|| bad("expected `base64 rank`"))?;
            let token = engine.decode(token).map_err(|_| bad("the token is not base64"))?;
            let rank: usize = rank.trim().parse().map_err(|_| bad("the rank is not a number"))?;
            if rank != tokens.len() {
                return Err(bad(&format!("expected rank {}", tokens.len())));
            }
            tokens.push(token);
        }
        if tokens.len() < 256 || tokens[..256].iter().any(|t| t.len() != 1) {
            return Err(Error::Config(
                "tiktoken ranks: the first 256 ranks must be the 256 single bytes".into(),
            ));
        }
        let mut byte_ids = [u32::MAX; 256];
        for (id, token) in tokens[..256].iter().enumerate() {
            byte_ids[token[0] as usize] = id as u32;
        }
        if byte_ids.contains(&u32::MAX) {
            return Err(Error::Config("tiktoken ranks: a byte value is missing from the first 256".into()));
        }
        // Recover merge i from token 256 + i: BPE with the merges before it must split the
        // token into exactly two parts.
        let mut partial = Self::build(None, byte_ids, Vec::new(), &[])?;
        let (mut scratch, mut parts) = (Scratch::default(), Vec::new());
        for (id, token) in tokens.iter().enumerate().skip(256) {
            parts.clear();
            partial.merge_chunk(token, &mut scratch, &mut parts);
            let &[left, right] = parts.as_slice() else {
                return Err(Error::Config(format!(
                    "tiktoken ranks: token {id} ({:?}) is not the merge of two earlier tokens",
                    String::from_utf8_lossy(token)
                )));
            };
            partial.add_merge(left, right);
        }
        Self::build(pattern.map(str::to_string), byte_ids, partial.merges, special_tokens)
    }

    /// Assemble a tokenizer and check that its parts fit together.
    fn build(
        pattern: Option<String>,
        byte_ids: [u32; 256],
        merges: Vec<(u32, u32)>,
        special_tokens: &[&str],
    ) -> Result<Self> {
        let splitter = Splitter::new(pattern.as_deref())?;
        let mut tokenizer = Self {
            pattern,
            splitter,
            byte_ids,
            merges: Vec::with_capacity(merges.len()),
            ranks: HashMap::default(),
            vocab: vec![Vec::new(); 256],
            specials: Vec::new(),
            renumbering: None,
        };
        for (b, &id) in byte_ids.iter().enumerate() {
            tokenizer.vocab[id as usize] = vec![b as u8];
        }
        for (i, &(left, right)) in merges.iter().enumerate() {
            let next = 256 + i as u32;
            if left >= next || right >= next {
                return Err(Error::Config(format!(
                    "merge {i} ({left}, {right}) uses an id that does not exist yet (ids so far: 0..{next})"
                )));
            }
            if tokenizer.ranks.contains_key(&(left, right)) {
                return Err(Error::Config(format!("merge {i} ({left}, {right}) appears twice")));
            }
            tokenizer.add_merge(left, right);
        }
        for &token in special_tokens {
            if token.is_empty() || tokenizer.specials.iter().any(|(t, _)| t == token) {
                return Err(Error::Config(format!("special token {token:?} is empty or appears twice")));
            }
            let id = tokenizer.vocab.len() as u32;
            tokenizer.specials.push((token.to_string(), id));
            tokenizer.vocab.push(token.as_bytes().to_vec());
        }
        Ok(tokenizer)
    }

    /// A tokenizer from a vocabulary that another library numbered (a Hugging Face
    /// `tokenizer.json`: see [`crate::tokenizer::tokenizer_from_json`]): `byte_ids[b]` is the
    /// id of byte `b`, `merges` are `(left, right, merged)` ids in rank order, and `specials`
    /// the special tokens with their ids. Encoding gives these ids and decoding takes them.
    pub fn from_vocab(
        pattern: Option<&str>,
        byte_ids: [u32; 256],
        merges: &[(u32, u32, u32)],
        specials: &[(&str, u32)],
    ) -> Result<Self> {
        let mut sorted = byte_ids;
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::Config("two byte values have the same id".into()));
        }
        // Ours number the bytes as theirs do when theirs are 0..=255 (GPT-2's), else in order.
        let our_bytes = if sorted == identity_bytes() { byte_ids } else { identity_bytes() };
        let mut ours_of: HashMap<u32, u32> = HashMap::default(); // their id -> ours, as made
        let mut outer = vec![0; 256];
        for b in 0..256 {
            ours_of.insert(byte_ids[b], our_bytes[b]);
            outer[our_bytes[b] as usize] = byte_ids[b];
        }
        let mut our_merges = Vec::with_capacity(merges.len());
        for (i, &(left, right, merged)) in merges.iter().enumerate() {
            let ours = |id: u32| {
                ours_of.get(&id).copied().ok_or_else(|| {
                    Error::Config(format!(
                        "merge {i} ({left}, {right} -> {merged}) uses id {id}, which is neither a byte nor made \
                         by an earlier merge"
                    ))
                })
            };
            our_merges.push((ours(left)?, ours(right)?));
            ours_of.entry(merged).or_insert(256 + i as u32);
            outer.push(merged);
        }
        outer.extend(specials.iter().map(|&(_, id)| id));
        let names: Vec<&str> = specials.iter().map(|&(token, _)| token).collect();
        Self::build(pattern.map(str::to_string), our_bytes, our_merges, &names)?.renumber(outer)
    }

    /// Give our ids the outside ids `outer` (one per token, ours in order). Two tokens may
    /// share an id only if they are merges that make the same bytes.
    fn renumber(mut self, outer: Vec<u32>) -> Result<Self> {
        // The inverse table has an entry per id up to the largest: ids far past the token
        // count would make it huge (a vocabulary numbers its tokens densely, a few gaps aside).
        if let Some(&id) = outer.iter().find(|&&id| id as usize >= 2 * outer.len() + 1024) {
            return Err(Error::Config(format!(
                "id {id} for a vocabulary of {} tokens: ids must be dense",
                outer.len()
            )));
        }
        if outer.len() != self.vocab.len() {
            return Err(Error::Config(format!(
                "{} ids for {} tokens (256 bytes, {} merges, {} special)",
                outer.len(),
                self.vocab.len(),
                self.merges.len(),
                self.specials.len()
            )));
        }
        let first_special = 256 + self.merges.len();
        let mut first_with: HashMap<u32, usize> = HashMap::default();
        for (ours, &theirs) in outer.iter().enumerate() {
            let first = *first_with.entry(theirs).or_insert(ours);
            if first != ours && (self.vocab[first] != self.vocab[ours] || ours >= first_special) {
                return Err(Error::Config(format!(
                    "id {theirs} is both {:?} and {:?}",
                    String::from_utf8_lossy(&self.vocab[first]),
                    String::from_utf8_lossy(&self.vocab[ours])
                )));
            }
        }
        for (special, &id) in self.specials.iter_mut().zip(&outer[first_special..]) {
            special.1 = id;
        }
        self.renumbering = Renumbering::new(outer);
        Ok(self)
    }

    fn add_merge(&mut self, left: u32, right: u32) {
        let id = 256 + self.merges.len() as u32;
        self.merges.push((left, right));
        self.ranks.insert((left, right), id);
        let bytes = [self.vocab[left as usize].as_slice(), self.vocab[right as usize].as_slice()].concat();
        self.vocab.push(bytes);
    }

    /// Load a tokenizer saved by [`Tokenizer::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        super::read_json(path.as_ref())
    }

    /// The learned merges: merge `i` makes id `256 + i` from the pair. (In the tokenizer's
    /// own numbering: a vocabulary numbered elsewhere ([`BpeTokenizer::from_vocab`]) gives
    /// its tokens other ids outside.)
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    /// The pre-split pattern (`None`: the text is one chunk).
    pub fn pattern(&self) -> Option<&str> {
        self.pattern.as_deref()
    }

    /// The special tokens and their ids.
    pub fn special_tokens(&self) -> &[(String, u32)] {
        &self.specials
    }

    /// The id of a special token, if it is one.
    pub fn special_id(&self, token: &str) -> Option<u32> {
        self.specials.iter().find(|(t, _)| t == token).map(|&(_, id)| id)
    }

    /// The bytes of a token (a special token's are its text).
    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        let ours = match &self.renumbering {
            None => Some(id),
            Some(r) => r.inner.get(id as usize).copied().filter(|&ours| ours != NO_TOKEN),
        };
        ours.and_then(|ours| self.vocab.get(ours as usize))
            .map(Vec::as_slice)
            .ok_or(Error::UnknownId { id, vocab_size: self.vocab_size() })
    }

    /// The id of our token `ours` outside (the same, unless the vocabulary was numbered
    /// elsewhere).
    pub(crate) fn outer_id(&self, ours: u32) -> u32 {
        self.renumbering.as_ref().map_or(ours, |r| r.outer[ours as usize])
    }

    /// The chunks the pre-split pattern cuts `text` into.
    pub fn split<'t>(&self, text: &'t str) -> Result<Vec<&'t str>> {
        let mut chunks = Vec::new();
        self.splitter.for_each_chunk(text, |c| chunks.push(c))?;
        Ok(chunks)
    }

    /// Encode text, special tokens included, as plain text. (It fails only if a custom
    /// pattern makes the backtracking regex engine give up on the text.)
    pub fn encode_ordinary(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3);
        // Each distinct chunk is merged once; later copies come from its first encoding.
        let mut seen: HashMap<&str, (usize, usize)> = HashMap::default();
        let mut scratch = Scratch::default();
        self.splitter.for_each_chunk(text, |chunk| {
            if let Some(&(start, end)) = seen.get(chunk) {
                out.extend_from_within(start..end);
            } else {
                let start = out.len();
                self.merge_chunk(chunk.as_bytes(), &mut scratch, &mut out);
                seen.insert(chunk, (start, out.len()));
            }
        })?;
        if let Some(r) = &self.renumbering {
            out.iter_mut().for_each(|id| *id = r.outer[*id as usize]);
        }
        Ok(out)
    }

    /// Encode text, turning the special tokens that `specials` allows into their ids.
    pub fn encode_with_specials(&self, text: &str, specials: Specials) -> Result<Vec<u32>> {
        if matches!(specials, Specials::AsText) || self.specials.is_empty() {
            return self.encode_ordinary(text);
        }
        let allowed = |token: &str| match specials {
            Specials::AllowAll => true,
            Specials::Allow(list) => list.contains(&token),
            Specials::AsText => false,
        };
        let mut out = Vec::new();
        let mut rest = 0;
        for (position, token, id) in self.find_specials(text) {
            if !allowed(token) {
                return Err(Error::DisallowedSpecial { token: token.to_string(), position });
            }
            out.extend(self.encode_ordinary(&text[rest..position])?);
            out.push(id);
            rest = position + token.len();
        }
        out.extend(self.encode_ordinary(&text[rest..])?);
        Ok(out)
    }

    /// Where special tokens occur in `text`: (byte offset, token, id), left to right, the
    /// longest token first where two start at the same place, never overlapping.
    fn find_specials<'s>(&'s self, text: &str) -> Vec<(usize, &'s str, u32)> {
        let mut found: Vec<(usize, &str, u32)> = self
            .specials
            .iter()
            .flat_map(|(token, id)| {
                text.match_indices(token.as_str()).map(move |(at, _)| (at, token.as_str(), *id))
            })
            .collect();
        found.sort_by_key(|&(at, token, _)| (at, Reverse(token.len())));
        let mut end = 0;
        found.retain(|&(at, token, _)| {
            let keep = at >= end;
            if keep {
                end = at + token.len();
            }
            keep
        });
        found
    }

    /// The bytes the ids stand for.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(bytes)
    }

    /// Decode, failing where the bytes are not valid UTF-8 (ids that end or start in the
    /// middle of a character). [`Tokenizer::decode`] puts U+FFFD there instead.
    pub fn decode_strict(&self, ids: &[u32]) -> Result<String> {
        String::from_utf8(self.decode_bytes(ids)?).map_err(|e| Error::NotUtf8Tokens {
            offset: e.utf8_error().valid_up_to(),
            bytes: e.as_bytes().len(),
        })
    }

    /// BPE on one chunk: start from its bytes and apply the lowest-ranked merge present
    /// (the leftmost one on ties) until none applies. Appends the ids to `out`.
    fn merge_chunk(&self, bytes: &[u8], scratch: &mut Scratch, out: &mut Vec<u32>) {
        if bytes.len() < 2 {
            out.extend(bytes.iter().map(|&b| self.byte_ids[b as usize]));
            return;
        }
        // A doubly linked list of the chunk's tokens: ids[i], prev[i], next[i] (NONE at the
        // ends), and a min-heap of (merge rank, left position) for the adjacent pairs. An entry
        // whose pair has changed since it was pushed is stale and skipped when popped.
        const NONE: usize = usize::MAX;
        const GONE: u32 = u32::MAX;
        let Scratch { ids, prev, next, heap } = scratch;
        ids.clear();
        ids.extend(bytes.iter().map(|&b| self.byte_ids[b as usize]));
        let n = ids.len();
        prev.clear();
        prev.extend((0..n).map(|i| i.wrapping_sub(1)));
        next.clear();
        next.extend((1..=n).map(|i| if i == n { NONE } else { i }));
        heap.clear();
        for i in 0..n - 1 {
            if let Some(&rank) = self.ranks.get(&(ids[i], ids[i + 1])) {
                heap.push(Reverse((rank, i)));
            }
        }
        while let Some(Reverse((rank, i))) = heap.pop() {
            let j = next[i];
            if j == NONE || ids[i] == GONE || self.ranks.get(&(ids[i], ids[j])) != Some(&rank) {
                continue; // stale
            }
            // Merge j into i: i takes the new id, j leaves the list.
            ids[i] = rank;
            ids[j] = GONE;
            next[i] = next[j];
            if next[j] != NONE {
                prev[next[j]] = i;
            }
            if prev[i] != NONE {
                if let Some(&r) = self.ranks.get(&(ids[prev[i]], rank)) {
                    heap.push(Reverse((r, prev[i])));
                }
            }
            if next[i] != NONE {
                if let Some(&r) = self.ranks.get(&(rank, ids[next[i]])) {
                    heap.push(Reverse((r, i)));
                }
            }
        }
        out.extend(ids.iter().copied().filter(|&id| id != GONE));
    }
}

/// Buffers reused across the chunks of one encode call.
#[derive(Default)]
struct Scratch {
    ids: Vec<u32>,
    prev: Vec<usize>,
    next: Vec<usize>,
    heap: BinaryHeap<Reverse<(u32, usize)>>,
}

fn identity_bytes() -> [u32; 256] {
    std::array::from_fn(|b| b as u32)
}

/// How text is cut into chunks before merging.
#[derive(Debug, Clone)]
enum Splitter {
    /// No pre-splitting: the text is one chunk.
    Whole,
    /// Any pattern, through fancy-regex (which has lookaround and possessive quantifiers).
    Fancy(fancy_regex::Regex),
    /// [`GPT2_PATTERN`] without its lookahead, as a plain (automaton-based, several times
    /// faster) regex, plus what the lookahead did written out by hand: the same chunks, as
    /// the tests check against tiktoken.
    Gpt2(regex::Regex),
}

/// GPT-2's pattern with `\s+(?!\S)|\s` reduced to `\s+`; [`Splitter::for_each_chunk`] then
/// gives the last whitespace character of a run back to the text after it.
const GPT2_PLAIN: &str = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

impl Splitter {
    fn new(pattern: Option<&str>) -> Result<Self> {
        let invalid = |p: &str, e: &dyn std::fmt::Display| {
            Error::Config(format!("the pre-split pattern {p:?} is not a valid regex: {e}"))
        };
        Ok(match pattern {
            None => Splitter::Whole,
            Some(GPT2_PATTERN) => {
                Splitter::Gpt2(regex::Regex::new(GPT2_PLAIN).map_err(|e| invalid(GPT2_PLAIN, &e))?)
            }
            Some(p) => Splitter::Fancy(fancy_regex::Regex::new(p).map_err(|e| invalid(p, &e))?),
        })
    }

    /// Call `f` on each chunk of `text` in order. Text a custom pattern does not match is
    /// its own chunk, so no byte is ever dropped.
    fn for_each_chunk<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) -> Result<()> {
        match self {
            Splitter::Whole => {
                if !text.is_empty() {
                    f(text);
                }
            }
            Splitter::Fancy(regex) => {
                let mut end = 0;
                for m in regex.find_iter(text) {
                    let m = m.map_err(|e| {
                        Error::Config(format!("the pre-split pattern failed on this text: {e}"))
                    })?;
                    if m.start() > end {
                        f(&text[end..m.start()]);
                    }
                    if !m.as_str().is_empty() {
                        f(m.as_str());
                    }
                    end = m.end();
                }
                if end < text.len() {
                    f(&text[end..]);
                }
            }
            Splitter::Gpt2(regex) => {
                // The plain pattern matches every character, so matches follow each other.
                let mut at = 0;
                while let Some(m) = regex.find_at(text, at) {
                    let chunk = m.as_str();
                    at = m.end();
                    let Some((last, ch)) = chunk.char_indices().last() else { break };
                    if !ch.is_whitespace() || at == text.len() {
                        f(chunk); // a word, number, punctuation, or whitespace that ends the text
                        continue;
                    }
                    // Whitespace before more text: `\s+(?!\S)` keeps all of the run but its
                    // last character, which goes with the next word if it is a space, and
                    // is a chunk of its own otherwise.
                    if last > 0 {
                        f(&chunk[..last]);
                    }
                    if ch == ' ' && last > 0 {
                        at = m.start() + last;
                    } else {
                        f(&chunk[last..]);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Each distinct chunk of `text` and how often it occurs.
fn count_chunks<'t>(text: &'t str, splitter: &Splitter) -> Result<HashMap<&'t str, u64>> {
    let mut counts: HashMap<&str, u64> = HashMap::default();
    splitter.for_each_chunk(text, |chunk| *counts.entry(chunk).or_insert(0) += 1)?;
    Ok(counts)
}

/// The training loop: `n_merges` merges learned from chunk counts.
fn learn_merges(chunks: HashMap<&str, u64>, n_merges: usize) -> Vec<(u32, u32)> {
    type Pair = (u32, u32);
    // Each distinct chunk as a list of token ids, with its count. Sorted so that the order of
    // work never depends on hashing (the result does not either: counts are sums).
    let mut chunks: Vec<(&str, u64)> = chunks.into_iter().collect();
    chunks.sort_unstable();
    let mut words: Vec<Vec<u32>> = chunks.iter().map(|(c, _)| c.bytes().map(u32::from).collect()).collect();
    let counts: Vec<i64> = chunks.iter().map(|&(_, n)| n as i64).collect();

    // How often each pair occurs, and in which words (a word may be listed more than once, or
    // after it lost the pair: such entries are checked when used).
    let mut pair_counts: HashMap<Pair, i64> = HashMap::default();
    let mut where_: HashMap<Pair, Vec<u32>> = HashMap::default();
    for (w, word) in words.iter().enumerate() {
        for pair in word.windows(2) {
            let pair = (pair[0], pair[1]);
            *pair_counts.entry(pair).or_insert(0) += counts[w];
            where_.entry(pair).or_default().push(w as u32);
        }
    }
    // The most frequent pair on top; on ties the smallest (first id, then second id).
    let mut queue: BinaryHeap<(i64, Reverse<Pair>)> =
        pair_counts.iter().map(|(&pair, &count)| (count, Reverse(pair))).collect();

    let mut merges = Vec::with_capacity(n_merges);
    let mut touched: Vec<Pair> = Vec::new();
    let mut occurrences: Vec<usize> = Vec::new();
    while merges.len() < n_merges {
        let Some((count, Reverse(pair))) = queue.pop() else { break };
        if pair_counts.get(&pair) != Some(&count) {
            continue; // stale: the count changed since this entry was pushed
        }
        if count <= 0 {
            break;
        }
        let new_id = 256 + merges.len() as u32;
        merges.push(pair);
        pair_counts.remove(&pair);

        let mut in_words = where_.remove(&pair).unwrap_or_default();
        in_words.dedup(); // pushed in word order, so copies are adjacent
        touched.clear();
        for w in in_words {
            let word = &mut words[w as usize];
            // Where the pair occurs, left to right without overlaps (as merge_in_place merges).
            occurrences.clear();
            let mut i = 0;
            while i + 1 < word.len() {
                if (word[i], word[i + 1]) == pair {
                    occurrences.push(i);
                    i += 2;
                } else {
                    i += 1;
                }
            }
            let c = counts[w as usize];
            // Only the pairs next to an occurrence change: the neighbours (x, a) and (b, y) go,
            // (x, new) and (new, y) come; between two adjacent occurrences (b, a) goes and
            // (new, new) comes. The merged pair itself was dropped from the counts above.
            let mut change = |p: Pair, delta: i64| {
                if p == pair {
                    return;
                }
                *pair_counts.entry(p).or_insert(0) += delta;
                touched.push(p);
                if delta > 0 {
                    let list = where_.entry(p).or_default();
                    if list.last() != Some(&w) {
                        list.push(w);
                    }
                }
            };
            for (k, &i) in occurrences.iter().enumerate() {
                let after_previous = k > 0 && occurrences[k - 1] + 2 == i;
                let before_next = occurrences.get(k + 1) == Some(&(i + 2));
                if after_previous {
                    change((new_id, new_id), c);
                } else if i > 0 {
                    change((word[i - 1], pair.0), -c);
                    change((word[i - 1], new_id), c);
                }
                if before_next {
                    change((pair.1, pair.0), -c);
                } else if i + 2 < word.len() {
                    change((pair.1, word[i + 2]), -c);
                    change((new_id, word[i + 2]), c);
                }
            }
            if !occurrences.is_empty() {
                merge_in_place(word, pair, new_id);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for p in &touched {
            match pair_counts.get(p) {
                Some(&c) if c > 0 => queue.push((c, Reverse(*p))),
                Some(_) => {
                    pair_counts.remove(p);
                }
                None => {}
            }
        }
    }
    merges
}

/// Replace each occurrence of `pair` in `ids`, left to right, by `new_id`.
fn merge_in_place(ids: &mut Vec<u32>, pair: (u32, u32), new_id: u32) {
    let mut write = 0;
    let mut read = 0;
    while read < ids.len() {
        if read + 1 < ids.len() && (ids[read], ids[read + 1]) == pair {
            ids[write] = new_id;
            read += 2;
        } else {
            ids[write] = ids[read];
            read += 1;
        }
        write += 1;
    }
    ids.truncate(write);
}

impl Tokenizer for BpeTokenizer {
    /// Encode text; a special token in it is an error ([`Error::DisallowedSpecial`]): use
    /// [`BpeTokenizer::encode_with_specials`] to allow them, or
    /// [`BpeTokenizer::encode_ordinary`] to treat them as text.
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with_specials(text, Specials::Allow(&[]))
    }

    /// Decode; bytes that are not valid UTF-8 (ids cut in the middle of a character) become
    /// U+FFFD, as in GPT-2. [`BpeTokenizer::decode_strict`] makes that an error.
    fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    fn vocab_size(&self) -> usize {
        self.renumbering.as_ref().map_or(self.vocab.len(), |r| r.inner.len())
    }

    fn to_json(&self) -> Result<String> {
        super::to_json(&BpeFile::from(self))
    }
}

/// The file format, readable and versioned:
///
/// ```json
/// {"kind": "bpe", "version": 1, "pattern": "'(?:[sdmt]|ll|ve|re)| ?\\p{L}++|...",
///  "byte_ids": null, "merges": [[32, 116], [104, 101], ...],
///  "special_tokens": [["<|endoftext|>", 4095]]}
/// ```
///
/// `byte_ids` is `null` when byte `b` has id `b` (every tokenizer we train), else the 256 ids.
/// Version 2 adds `ids`, the outside id of each token (bytes, merges, special tokens), for a
/// vocabulary numbered elsewhere ([`BpeTokenizer::from_vocab`]); the merges and `byte_ids`
/// stay in the tokenizer's own numbering.
#[derive(serde::Serialize, serde::Deserialize)]
struct BpeFile {
    kind: String,
    version: u32,
    pattern: Option<String>,
    byte_ids: Option<Vec<u32>>,
    merges: Vec<(u32, u32)>,
    special_tokens: Vec<(String, u32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ids: Option<Vec<u32>>,
}

impl From<&BpeTokenizer> for BpeFile {
    fn from(t: &BpeTokenizer) -> Self {
        BpeFile {
            kind: "bpe".into(),
            version: if t.renumbering.is_some() { 2 } else { 1 },
            pattern: t.pattern.clone(),
            byte_ids: (t.byte_ids != identity_bytes()).then(|| t.byte_ids.to_vec()),
            merges: t.merges.clone(),
            special_tokens: t.specials.clone(),
            ids: t.renumbering.as_ref().map(|r| r.outer.clone()),
        }
    }
}

impl TryFrom<BpeFile> for BpeTokenizer {
    type Error = String;
    fn try_from(file: BpeFile) -> Result<Self, String> {
        if file.kind != "bpe" || !matches!((file.version, &file.ids), (1, None) | (2, Some(_))) {
            return Err(format!(
                "not a bpe tokenizer file of version 1, or 2 with ids (kind {:?}, version {})",
                file.kind, file.version
            ));
        }
        let byte_ids = match file.byte_ids {
            None => identity_bytes(),
            Some(ids) => {
                let mut sorted = ids.clone();
                sorted.sort_unstable();
                if sorted != (0..256).collect::<Vec<u32>>() {
                    return Err("byte_ids must hold each of the ids 0..=255 once".into());
                }
                std::array::from_fn(|b| ids[b])
            }
        };
        let names: Vec<&str> = file.special_tokens.iter().map(|(t, _)| t.as_str()).collect();
        let mut tokenizer = BpeTokenizer::build(file.pattern.clone(), byte_ids, file.merges, &names)
            .map_err(|e| e.to_string())?;
        if let Some(ids) = file.ids {
            tokenizer = tokenizer.renumber(ids).map_err(|e| e.to_string())?;
        }
        // Special tokens take the ids after the merges, in order (or the ids `ids` gives them).
        for ((token, id), (_, expected)) in file.special_tokens.iter().zip(&tokenizer.specials) {
            if id != expected {
                return Err(format!("special token {token:?} has id {id}, expected {expected}"));
            }
        }
        Ok(tokenizer)
    }
}

impl serde::Serialize for BpeTokenizer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        BpeFile::from(self).serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for BpeTokenizer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BpeFile::deserialize(deserializer)?.try_into().map_err(serde::de::Error::custom)
    }
}
