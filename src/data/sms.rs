//! The SMS Spam Collection (Almeida & Gómez Hidalgo, CC BY 4.0), chapter 10's classification
//! data: 5,574 text messages, each labelled `ham` (4,827) or `spam` (747).
//!
//! The file has one message a line, `label<TAB>text`, with Windows line ends. [`balanced_split`]
//! makes the split Raschka's chapter 6 trains on: as many ham messages as there are spam (747
//! each, the ham drawn at random), shuffled, then 70% to train, 10% to validate and 20% to test,
//! all from one seed. Balanced, a classifier cannot score well by always answering "ham"
//! (86.6% of the whole file): 50% is the floor.

use crate::device::splitmix64;
use crate::{Error, Result};

/// One labelled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sms {
    pub text: String,
    pub spam: bool,
}

/// The collection, downloaded on first use (`sms-spam` in the manifest).
pub fn sms_spam() -> Result<Vec<Sms>> {
    let path = super::fetch("sms-spam")?;
    parse_sms(&super::load_text(&path)?, &path.display().to_string())
}

/// The messages of a file in the collection's format (`ham` or `spam`, a tab, the text; `\n` or
/// `\r\n` line ends; `source` names it in errors). A line without a tab, a label other than
/// `ham` or `spam`, an empty text and a file without messages are errors naming the line.
pub fn parse_sms(text: &str, source: &str) -> Result<Vec<Sms>> {
    let mut messages = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let bad = |why: String| Error::Config(format!("{source}, line {}: {why}", i + 1));
        let (label, message) =
            line.split_once('\t').ok_or_else(|| bad("no tab between the label and the text".into()))?;
        let spam = match label {
            "ham" => false,
            "spam" => true,
            other => return Err(bad(format!("the label is {other:?}: it must be ham or spam"))),
        };
        if message.trim().is_empty() {
            return Err(bad("the message is empty".into()));
        }
        messages.push(Sms { text: message.to_owned(), spam });
    }
    if messages.is_empty() {
        return Err(Error::EmptyCorpus(format!("{source} holds no messages")));
    }
    Ok(messages)
}

/// A balanced split of labelled messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsSplits {
    pub train: Vec<Sms>,
    pub val: Vec<Sms>,
    pub test: Vec<Sms>,
}

/// Raschka's split: every spam message and as many ham messages drawn at random, shuffled
/// together, then the first 70% to `train`, the next 10% to `val`, the rest to `test`. The
/// draw and the shuffle come from `seed` alone ([`shuffle`]): one seed, one split, on every
/// machine. An error when either label is missing.
pub fn balanced_split(messages: &[Sms], seed: u64) -> Result<SmsSplits> {
    let (mut spam, mut ham): (Vec<Sms>, Vec<Sms>) = messages.iter().cloned().partition(|m| m.spam);
    if spam.is_empty() || ham.is_empty() {
        return Err(Error::Config(format!(
            "a balanced split needs both labels: {} spam and {} ham messages",
            spam.len(),
            ham.len()
        )));
    }
    let n = spam.len().min(ham.len());
    shuffle(&mut ham, seed);
    shuffle(&mut spam, seed ^ 1);
    let mut all: Vec<Sms> = ham.into_iter().take(n).chain(spam.into_iter().take(n)).collect();
    shuffle(&mut all, seed ^ 2);
    let n_train = all.len() * 7 / 10;
    let n_val = all.len() / 10;
    let test = all.split_off(n_train + n_val);
    let val = all.split_off(n_train);
    Ok(SmsSplits { train: all, val, test })
}

/// Shuffle `items` in place (Fisher–Yates), the draws from SplitMix64 seeded with `seed`:
/// the same order for the same seed, whatever the machine or the libtorch version.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    // SplitMix64's stream: its k-th number mixes seed + k · 0x9E37_79B9_7F4A_7C15.
    let draw = |k: u64| splitmix64(seed.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    for (k, i) in (1..items.len()).rev().enumerate() {
        let j = (draw(k as u64) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
