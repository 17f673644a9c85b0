//! `tokenizer.json`, the format of Hugging Face's `tokenizers` library (what `AutoTokenizer`
//! reads), for byte-level BPE: written from a [`BpeTokenizer`] ([`tokenizer_json`]) and read
//! back, with a folder's own ids ([`tokenizer_from_json`]). A model folder's files
//! ([`crate::model::hf`]) use these.

use super::bpe::{BpeTokenizer, GPT2_PATTERN};
use crate::{Error, Result};
use serde_json::{json, Value};
use std::collections::HashMap;

/// GPT-2's printable stand-ins for the 256 byte values (`bytes_to_unicode` in its
/// `encoder.py`): a byte-level BPE vocabulary written as text. Printable bytes stand for
/// themselves; the rest (control bytes, space, ...) take the characters from U+0100 on.
pub fn byte_to_unicode() -> [char; 256] {
    let printable =
        |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let mut table = ['\0'; 256];
    let mut next = 0x100;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).unwrap_or('\0')
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or('\0')
        };
    }
    table
}

/// `tokenizer.json` (the Rust `tokenizers` library's format, which `AutoTokenizer` reads) for
/// a byte-level BPE tokenizer: our pre-split pattern, then the byte-level alphabet, then the
/// merges in rank order, each id kept. Two merges that make the same bytes cannot be written
/// (the format keys tokens by their text): refused.
pub fn tokenizer_json(bpe: &BpeTokenizer) -> Result<Value> {
    let table = byte_to_unicode();
    // The text of our token `ours` (merges() number tokens the tokenizer's own way).
    let text = |ours: u32| -> Result<String> {
        Ok(bpe.token_bytes(bpe.outer_id(ours))?.iter().map(|&b| table[b as usize]).collect())
    };
    let n_tokens = 256 + bpe.merges().len();
    let mut vocab = serde_json::Map::new();
    for ours in 0..n_tokens as u32 {
        let id = bpe.outer_id(ours);
        if vocab.insert(text(ours)?, json!(id)).is_some_and(|earlier| earlier != json!(id)) {
            return Err(Error::Config(format!(
                "token {id} has the same bytes as an earlier one: the Hugging Face format cannot hold both"
            )));
        }
    }
    let merges =
        bpe.merges().iter().map(|&(a, b)| Ok(json!([text(a)?, text(b)?]))).collect::<Result<Vec<_>>>()?;
    let added: Vec<Value> = bpe
        .special_tokens()
        .iter()
        .map(|(token, id)| {
            json!({"id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let byte_level =
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    let pre_tokenizer = match bpe.pattern() {
        Some(pattern) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            byte_level,
        ]}),
        None => byte_level.clone(),
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    }))
}

/// A byte-level BPE `tokenizer.json` (what `transformers` saves for GPT-2, what the
/// `tokenizers` library's `ByteLevelBPETokenizer` writes, what [`crate::model::hf::export`] writes) as a
/// [`BpeTokenizer`] with the file's own ids, whatever order they come in (special tokens
/// first, say). What ours would tokenize differently is refused by name: a normalizer, a
/// pre-tokenizer other than byte-level (alone, with GPT-2's split, after one `Split` by a
/// regex, or after `Digits` one by one as in SmolLM2's), a prefix space, byte fallback, word
/// prefixes or suffixes, `ignore_merges`, tokens
/// around the text, and vocabulary entries that no merge makes.
pub fn tokenizer_from_json(json: &Value) -> Result<BpeTokenizer> {
    let refuse = |why: String| Error::Config(why);
    let kind = |v: &Value| v.get("type").and_then(Value::as_str).unwrap_or("?").to_owned();
    let set = |v: &Value, key: &str| {
        v.get(key).is_some_and(|x| !x.is_null() && x != &json!(false) && x != &json!(""))
    };
    let model = json.get("model").ok_or_else(|| refuse("no \"model\": not a tokenizer.json".into()))?;
    if kind(model) != "BPE" {
        return Err(refuse(format!("model type {:?}: only byte-level BPE is read here", kind(model))));
    }
    for key in ["byte_fallback", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges"] {
        if set(model, key) {
            return Err(refuse(format!("model.{key} = {}: ours has no such setting", model[key])));
        }
    }
    if model.get("dropout").and_then(Value::as_f64).is_some_and(|p| p > 0.0) {
        return Err(refuse(format!("model.dropout = {}: ours has no BPE dropout", model["dropout"])));
    }
    if let Some(normalizer) = json.get("normalizer").filter(|v| !v.is_null()) {
        return Err(refuse(format!(
            "normalizer {:?}: ours changes no text before splitting it",
            kind(normalizer)
        )));
    }
    if let Some(post) = json.get("post_processor").filter(|v| !v.is_null()) {
        // transformers 5 writes a template of the text alone ("single": [$A]): it adds nothing.
        let text_alone = || {
            post.get("single").and_then(Value::as_array).is_some_and(|single| {
                single.len() == 1 && single[0].get("Sequence").is_some_and(|s| s["id"] == "A")
            })
        };
        match kind(post).as_str() {
            "ByteLevel" => {}
            "TemplateProcessing" if text_alone() => {}
            other => {
                return Err(refuse(format!(
                    "post_processor {other:?} adds tokens around the text; ours adds none"
                )))
            }
        }
    }
    match json.get("decoder").filter(|v| !v.is_null()).map(kind).as_deref() {
        None | Some("ByteLevel") => {}
        Some(other) => {
            return Err(refuse(format!("decoder {other:?}: a byte-level BPE decodes with ByteLevel")))
        }
    }
    let pattern = pre_split_pattern(json.get("pre_tokenizer").unwrap_or(&Value::Null))?;

    // The vocabulary, by text, and the 256 byte tokens in it.
    let vocab: HashMap<&str, u32> = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| refuse("model.vocab is not an object of token -> id".into()))?
        .iter()
        .map(|(text, id)| {
            let id = id.as_u64().and_then(|i| u32::try_from(i).ok());
            id.map(|id| (text.as_str(), id)).ok_or_else(|| refuse(format!("model.vocab: {text:?} has no id")))
        })
        .collect::<Result<_>>()?;
    let table = byte_to_unicode();
    let id_of = |text: &str| vocab.get(text).copied();
    let mut byte_ids = [0; 256];
    for (b, id) in byte_ids.iter_mut().enumerate() {
        *id = id_of(&table[b].to_string()).ok_or_else(|| {
            refuse(format!("the vocabulary lacks byte {b:#04x} ({:?}): not a byte-level BPE", table[b]))
        })?;
    }
    // The merges, as "left right" or ["left", "right"], each with the id of what it makes.
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| refuse("model.merges is not a list".into()))?
        .iter()
        .enumerate()
        .map(|(i, merge)| {
            let pair = match merge {
                Value::String(s) => s.split_once(' '),
                Value::Array(pair) => match pair.as_slice() {
                    [Value::String(a), Value::String(b)] => Some((a.as_str(), b.as_str())),
                    _ => None,
                },
                _ => None,
            };
            let (a, b) = pair.ok_or_else(|| refuse(format!("merge {i} is not \"left right\": {merge}")))?;
            let merged = format!("{a}{b}");
            let find = |t: &str| {
                id_of(t).ok_or_else(|| {
                    refuse(format!("merge {i} ({a:?}, {b:?}): {t:?} is not in the vocabulary"))
                })
            };
            Ok((find(a)?, find(b)?, find(&merged)?))
        })
        .collect::<Result<Vec<_>>>()?;
    // Every added token is special here: matched in the text before BPE, as `tokenizers` does.
    let mut specials = Vec::new();
    for token in json.get("added_tokens").and_then(Value::as_array).into_iter().flatten() {
        let content = token.get("content").and_then(Value::as_str);
        let id = token.get("id").and_then(Value::as_u64).and_then(|i| u32::try_from(i).ok());
        let (Some(content), Some(id)) = (content, id) else {
            return Err(refuse(format!("added token without content or id: {token}")));
        };
        for key in ["lstrip", "rstrip", "single_word"] {
            if set(token, key) {
                return Err(refuse(format!("added token {content:?} has {key}: ours are matched exactly")));
            }
        }
        specials.push((content, id));
    }
    let bpe = BpeTokenizer::from_vocab(pattern.as_deref(), byte_ids, &merges, &specials)?;
    // Each vocabulary entry must be a token ours can make: a byte, a merge, an added token.
    let byte_of: HashMap<char, u8> = table.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
    for (&text, &id) in &vocab {
        if specials.contains(&(text, id)) {
            continue;
        }
        let bytes: Option<Vec<u8>> = text.chars().map(|c| byte_of.get(&c).copied()).collect();
        if bytes.as_deref() != bpe.token_bytes(id).ok() {
            return Err(refuse(format!(
                "vocabulary token {text:?} (id {id}) is neither a byte, nor made by a merge, nor an added token"
            )));
        }
    }
    Ok(bpe)
}

/// SmolLM2's and StarCoder's pre-tokenizer, `Sequence[Digits(individual_digits), ByteLevel]`,
/// as one regex: every digit (Unicode `N`) a piece of its own, and GPT-2's pattern on the text
/// between two digits as if it were the whole text. The only difference that makes is at a run
/// of whitespace before a digit, which `(?![^\s\p{N}])` ends as the end of the text would:
/// `"a  1"` splits as `"a"`, `"  "`, `"1"`, where GPT-2 alone gives `"a"`, `" "`, `" 1"`.
const DIGITS_THEN_GPT2_PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++|\p{N}| ?[^\s\p{L}\p{N}]++|\s+(?![^\s\p{N}])|\s+";

/// The pre-split regex of a byte-level `pre_tokenizer`: GPT-2's for `ByteLevel` with
/// `use_regex`, the `Split`'s before a `ByteLevel` without, [`DIGITS_THEN_GPT2_PATTERN`] for
/// `Digits` (one by one) before a `ByteLevel` with, `None` for a `ByteLevel` alone.
fn pre_split_pattern(pre: &Value) -> Result<Option<String>> {
    let refuse = |why: String| Error::Config(format!("pre_tokenizer: {why}"));
    let kind = |v: &Value| v.get("type").and_then(Value::as_str).unwrap_or("?").to_owned();
    let flag = |v: &Value, key: &str, default: bool| v.get(key).and_then(Value::as_bool).unwrap_or(default);
    let byte_level = |v: &Value| -> Result<bool> {
        if kind(v) != "ByteLevel" {
            return Err(refuse(format!("{:?} where a byte-level BPE has ByteLevel", kind(v))));
        }
        if flag(v, "add_prefix_space", true) {
            return Err(refuse("ByteLevel with add_prefix_space: ours adds no space before the text".into()));
        }
        Ok(flag(v, "use_regex", true))
    };
    let steps: Vec<&Value> = match kind(pre).as_str() {
        "Sequence" => pre.get("pretokenizers").and_then(Value::as_array).into_iter().flatten().collect(),
        _ => vec![pre],
    };
    match steps.as_slice() {
        [level] => Ok(byte_level(level)?.then(|| GPT2_PATTERN.to_owned())),
        [split, level] if kind(split) == "Split" => {
            let regex = split.get("pattern").and_then(|p| p.get("Regex")).and_then(Value::as_str);
            let behavior = split.get("behavior").and_then(Value::as_str);
            match (regex, behavior, flag(split, "invert", false), byte_level(level)?) {
                (Some(regex), Some("Isolated"), false, false) => Ok(Some(regex.to_owned())),
                _ => Err(refuse(format!(
                    "a Split other than by a Regex, Isolated, not inverted, before a ByteLevel without its own regex: {split}"
                ))),
            }
        }
        [digits, level] if kind(digits) == "Digits" => {
            match (flag(digits, "individual_digits", false), byte_level(level)?) {
                (true, true) => Ok(Some(DIGITS_THEN_GPT2_PATTERN.to_owned())),
                _ => Err(refuse(format!(
                    "Digits other than one by one, or before a ByteLevel without its regex: {digits}"
                ))),
            }
        }
        _ => Err(refuse(format!(
            "{} steps; ours reads ByteLevel, or one Split or Digits then ByteLevel",
            steps.len()
        ))),
    }
}
