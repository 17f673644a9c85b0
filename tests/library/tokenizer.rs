//! The tokenizers of chapter 1: exact round trips, the lecture's numbers, clear errors,
//! and JSON files that load back into the same tokenizer.

use crate::common::{shakespeare, TempDir};
use llm_from_scratch::tokenizer::{split_words, CharTokenizer, Tokenizer, WordTokenizer};
use llm_from_scratch::Error;
use std::path::Path;

/// Tiny Shakespeare's 65 characters, in order (the first is the newline).
const SHAKESPEARE_CHARS: &str = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

const UNICODE_TEXT: &str = "naïve café — 日本語 🙂\n";

/// The first lines of Tiny Shakespeare.
const OPENING: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n\
First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n\
First Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n\nAll:\nWe know't, we know't.\n\n\
First Citizen:\nLet us kill him, and we'll have corn at our own price.\nIs't a verdict?\n\n\
All:\nNo more talking on't; let it be done: away, away!\n";

/// Inputs whose word pieces are easy to get wrong.
const TRICKY: &[&str] = &[
    "  leading and trailing  ",
    "multiple   spaces between",
    "windows\r\nline\r\nendings\r\n",
    "tabs\tand\t\ttabs\t",
    "Hello, world! What?! -- yes... (no)",
    "don't can't 'tis o'er rock 'n' roll",
    "naïve café — 日本語 🙂 Ünïcödé",
    "\n\nFirst Citizen:\nBefore we proceed any further, hear me speak.\n\n",
    " ",
    "x",
];

fn round_trip(tok: &impl Tokenizer, text: &str) -> String {
    let ids = tok.encode(text).expect("encode");
    assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
    tok.decode(&ids).expect("decode")
}

/// Save `tok` with the trait's `save` and load it back with `load`.
fn save_and_load<T: Tokenizer>(tok: &T, test: &str, load: fn(&Path) -> Result<T, Error>) -> T {
    let dir = TempDir::new(test);
    let path = dir.join("tokenizer.json");
    tok.save(&path).expect("save");
    assert_eq!(dir.entries(), ["tokenizer.json"], "no temporary file is left");
    load(&path).expect("load")
}

/// Write `json` to a file and try to load it as a char tokenizer.
fn load_char_json(json: &str, test: &str) -> Result<CharTokenizer, Error> {
    let dir = TempDir::new(test);
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, json).unwrap();
    CharTokenizer::load(&path)
}

fn assert_json_error(result: Result<impl std::fmt::Debug, Error>, needle: &str) {
    match result {
        Err(Error::Json { source, .. }) => {
            assert!(source.to_string().contains(needle), "{needle:?} not in {source}")
        }
        other => panic!("expected Error::Json containing {needle:?}, got {other:?}"),
    }
}

/// The pieces `tok` encodes `text` into, read back one id at a time.
fn decoded_pieces(tok: &WordTokenizer, text: &str) -> Vec<String> {
    tok.encode(text).unwrap().iter().map(|&id| tok.decode(&[id]).unwrap()).collect()
}

// --- CharTokenizer -----------------------------------------------------------------------

#[test]
fn char_round_trips_ascii_and_unicode() {
    for text in ["hello world", "First Citizen:\nSpeak, speak.\n", UNICODE_TEXT] {
        let tok = CharTokenizer::from_text(text);
        assert_eq!(round_trip(&tok, text), text);
        assert_eq!(tok.encode(text).unwrap().len(), text.chars().count());
    }
}

#[test]
fn char_vocabulary_is_the_sorted_distinct_characters() {
    let tok = CharTokenizer::from_text(UNICODE_TEXT);
    let chars = tok.chars();
    assert!(chars.windows(2).all(|w| w[0] < w[1]), "{chars:?}");
    assert_eq!(tok.vocab_size(), chars.len());
    // n a ï v e ' ' c f é — 日 本 語 🙂 \n
    assert_eq!(chars.len(), 15);
    assert_eq!(chars.first(), Some(&'\n'));
    assert_eq!(chars.last(), Some(&'🙂'));
    for c in UNICODE_TEXT.chars() {
        assert!(chars.contains(&c));
    }
}

#[test]
fn an_extended_char_vocabulary_keeps_every_id_and_adds_the_new_characters() {
    let tok = CharTokenizer::from_text("hello world");
    let text = "hello, world 42!";
    assert!(tok.encode(text).is_err());
    let extended = tok.extended(text);
    assert_eq!(extended.chars()[..tok.vocab_size()], *tok.chars());
    assert_eq!(extended.chars()[tok.vocab_size()..], ['!', ',', '2', '4']);
    assert_eq!(extended.encode("hello world").unwrap(), tok.encode("hello world").unwrap());
    assert_eq!(extended.decode(&extended.encode(text).unwrap()).unwrap(), text);
    assert_eq!(extended.extended(text), extended); // nothing new the second time
    let saved: CharTokenizer = serde_json::from_str(&extended.to_json().unwrap()).unwrap();
    assert_eq!(saved, extended);
}

#[test]
fn char_encodes_hii_there_as_in_the_lecture() {
    let tok = CharTokenizer::from_text(shakespeare());
    assert_eq!(tok.vocab_size(), 65);
    assert_eq!(tok.chars().iter().collect::<String>(), SHAKESPEARE_CHARS);
    let ids = tok.encode("hii there").unwrap();
    assert_eq!(ids, [46, 47, 47, 1, 58, 46, 43, 56, 43]);
    assert_eq!(tok.decode(&ids).unwrap(), "hii there");
}

#[test]
fn char_unknown_character_is_an_error_with_its_position_in_chars() {
    let tok = CharTokenizer::from_text("abcé");
    // 'é' is two bytes: the position counts characters, not bytes.
    match tok.encode("aé日c") {
        Err(Error::UnknownChar { ch, code, position }) => {
            assert_eq!((ch, code, position), ('日', 0x65E5, 2));
        }
        other => panic!("expected Error::UnknownChar, got {other:?}"),
    }
    let err = tok.encode("abcz").unwrap_err();
    assert_eq!(err.to_string(), "character 'z' (U+007A) at position 3 is not in the vocabulary");
}

#[test]
fn char_out_of_range_id_is_an_error() {
    let tok = CharTokenizer::from_text("abc");
    assert_eq!(tok.decode(&[0, 1, 2]).unwrap(), "abc");
    match tok.decode(&[0, 3]) {
        Err(Error::UnknownId { id, vocab_size }) => assert_eq!((id, vocab_size), (3, 3)),
        other => panic!("expected Error::UnknownId, got {other:?}"),
    }
    assert!(matches!(tok.decode(&[u32::MAX]), Err(Error::UnknownId { id: u32::MAX, .. })));
}

#[test]
fn char_save_and_load_give_an_equal_tokenizer() {
    let tok = CharTokenizer::from_text(UNICODE_TEXT);
    let loaded = save_and_load(&tok, "char_save_load", |p| CharTokenizer::load(p));
    assert_eq!(loaded, tok);
    assert_eq!(loaded.encode(UNICODE_TEXT).unwrap(), tok.encode(UNICODE_TEXT).unwrap());

    let json: serde_json::Value = serde_json::from_str(&tok.to_json().unwrap()).unwrap();
    assert_eq!(json["kind"], "char");
    assert_eq!(json["version"], 1);
    assert_eq!(json["chars"], tok.chars().iter().collect::<String>());
}

#[test]
fn char_bad_files_are_clear_errors() {
    assert_json_error(load_char_json("{\"kind\": \"char\", ", "char_truncated"), "EOF");
    assert_json_error(load_char_json("not json at all", "char_garbage"), "expected");
    let file = |chars: &str| format!(r#"{{"kind": "char", "version": 1, "chars": {chars:?}}}"#);
    assert!(load_char_json(&file("abc"), "char_good").is_ok());
    // An extended vocabulary keeps its old ids and has its new characters after them.
    assert_eq!(load_char_json(&file("bca"), "char_extended").unwrap().encode("abc").unwrap(), [2, 0, 1]);
    for (chars, test) in [("abbc", "char_duplicate"), ("", "char_empty")] {
        assert_json_error(load_char_json(&file(chars), test), "non-empty and distinct");
    }
    assert_json_error(
        load_char_json(r#"{"kind": "word", "version": 1, "chars": "abc"}"#, "char_kind"),
        "not a char tokenizer",
    );
    assert_json_error(
        load_char_json(r#"{"kind": "char", "version": 2, "chars": "abc"}"#, "char_version"),
        "version 2",
    );
}

#[test]
fn char_missing_file_is_an_io_error_naming_it() {
    let dir = TempDir::new("char_missing");
    let path = dir.join("nope.json");
    match CharTokenizer::load(&path) {
        Err(Error::Io { path: p, source }) => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

// --- WordTokenizer -----------------------------------------------------------------------

#[test]
fn word_pieces_concatenate_back_to_tricky_inputs() {
    for &text in TRICKY {
        let pieces = split_words(text);
        assert_eq!(pieces.concat(), text);
        assert!(pieces.iter().all(|p| !p.is_empty()), "{pieces:?}");
        let tok = WordTokenizer::from_text(text);
        assert_eq!(round_trip(&tok, text), text);
        assert_eq!(decoded_pieces(&tok, text), pieces, "one id per piece");
    }
    assert!(split_words("").is_empty());
}

#[test]
fn word_pieces_attach_one_space_to_the_following_word() {
    let text = "Hello,  world! don't\r\n\tstop 日本語 🙂 ";
    assert_eq!(
        split_words(text),
        ["Hello", ",", " ", " world", "!", " don't", "\r\n\t", "stop", " 日本語", " ", "🙂", " "]
    );
}

#[test]
fn word_tokens_are_fewer_than_char_tokens() {
    /// (word tokens, word vocabulary, char tokens, char vocabulary) of `text`.
    fn counts(text: &str) -> (usize, usize, usize, usize) {
        let (words, chars) = (WordTokenizer::from_text(text), CharTokenizer::from_text(text));
        let word_ids = words.encode(text).unwrap();
        assert_eq!(words.decode(&word_ids).unwrap(), text);
        (word_ids.len(), words.vocab_size(), chars.encode(text).unwrap().len(), chars.vocab_size())
    }
    // Fewer, longer tokens from a larger vocabulary.
    assert_eq!(counts(OPENING), (117, 65, 421, 44));
    assert_eq!(counts(shakespeare()), (285_094, 16_276, 1_115_394, 65));
}

#[test]
fn word_unknown_word_is_an_error_with_its_char_position() {
    let tok = WordTokenizer::from_text("the café sat");
    assert_eq!(tok.encode("the café").unwrap().len(), 2);
    match tok.encode("the café dog") {
        Err(Error::UnknownWord { piece, position }) => {
            assert_eq!(piece, " dog");
            assert_eq!(position, 8); // "the" + " café": 8 characters (9 bytes)
        }
        other => panic!("expected Error::UnknownWord, got {other:?}"),
    }
    assert!(matches!(tok.decode(&[tok.vocab_size() as u32]), Err(Error::UnknownId { .. })));
}

#[test]
fn word_save_and_load_give_an_equal_tokenizer() {
    let text = TRICKY.concat();
    let tok = WordTokenizer::from_text(&text);
    let loaded = save_and_load(&tok, "word_save_load", |p| WordTokenizer::load(p));
    assert_eq!(loaded, tok);
    assert_eq!(round_trip(&loaded, &text), text);

    let json: serde_json::Value = serde_json::from_str(&tok.to_json().unwrap()).unwrap();
    assert_eq!(json["kind"], "word");
    assert_eq!(json["words"].as_array().unwrap().len(), tok.vocab_size());
}

#[test]
fn word_bad_files_are_clear_errors() {
    let dir = TempDir::new("word_bad_files");
    let path = dir.join("words.json");
    let load = |json: &str| {
        std::fs::write(&path, json).unwrap();
        WordTokenizer::load(&path)
    };
    assert!(load(r#"{"kind": "word", "version": 1, "words": [" a", "b"]}"#).is_ok());
    assert_json_error(load(r#"{"kind": "word", "version": 1, "words": ["b", "a"]}"#), "sorted and distinct");
    assert_json_error(load(r#"{"kind": "word", "version": 1, "words": ["a", "a"]}"#), "sorted and distinct");
    // A char tokenizer's file is not a word tokenizer's.
    let chars = CharTokenizer::from_text("abc").to_json().unwrap();
    assert!(matches!(load(&chars), Err(Error::Json { .. })));
}
