//! Chapter 6's byte-level BPE: lossless on any text, the same merges every time, exactly
//! GPT-2's ids (checked against tiktoken-rs), clear errors, and files that load back.

mod common;

use common::{shakespeare_text, TempDir};
use llm_from_scratch::tokenizer::{
    AnyTokenizer, BpeConfig, BpeTokenizer, Specials, Tokenizer, ENDOFTEXT, GPT2_PATTERN, GPT4_PATTERN,
};
use llm_from_scratch::Error;
use proptest::prelude::*;
use std::sync::OnceLock;

/// Text that exercises every branch of the GPT-2 pattern and byte-level fallback.
const MIXED: &str = "Hello, world! It's 2026: we'll've done 1234567 things... don't   stop\n\n\
    \tTabs\tand  runs   of    spaces   \r\nWindows line\r\nendings.\n\
    Ünïcödé naïve café — 日本語のテキスト, Русский текст, ελληνικά, עברית, العربية, हिन्दी.\n\
    Emoji 🙂👍🏽 🇫🇷 👨‍👩‍👧 and combining e\u{301} a\u{308}\u{323}. CAPS'LL 'S 'D 3.14e-10 $100 #tag @user <html>\n   ";

/// GPT-2's tokenizer, rebuilt from tiktoken-rs's `r50k_base` through our tiktoken-format
/// reader: the ranks file is written out the way OpenAI publishes it.
fn gpt2() -> &'static (BpeTokenizer, tiktoken_rs::CoreBPE) {
    static GPT2: OnceLock<(BpeTokenizer, tiktoken_rs::CoreBPE)> = OnceLock::new();
    GPT2.get_or_init(|| {
        use base64::Engine as _;
        let oracle = tiktoken_rs::r50k_base().expect("tiktoken-rs r50k_base");
        let engine = base64::engine::general_purpose::STANDARD;
        let ranks: String = (0..50256u32)
            .map(|rank| format!("{} {rank}\n", engine.encode(oracle.decode_bytes(&[rank]).expect("rank"))))
            .collect();
        let dir = TempDir::new("gpt2-ranks");
        let path = dir.join("r50k_base.tiktoken");
        std::fs::write(&path, ranks).expect("write ranks");
        (BpeTokenizer::gpt2(&path).expect("load GPT-2 ranks"), oracle)
    })
}

#[test]
fn gpt2_ids_match_tiktoken_on_mixed_text() {
    let (ours, oracle) = gpt2();
    assert_eq!(ours.vocab_size(), 50257);
    assert_eq!(ours.special_id(ENDOFTEXT), Some(50256));
    for text in MIXED.split_inclusive('\n').chain([MIXED, "", " ", "\n\n\n", "     x", "a  \n  b"]) {
        let expected: Vec<u32> = oracle.encode_ordinary(text);
        assert_eq!(ours.encode(text).unwrap(), expected, "ids of {text:?}");
        assert_eq!(ours.decode(&expected).unwrap(), text);
    }
    // A known id: " world" is 995 in GPT-2.
    assert_eq!(ours.encode(" world").unwrap(), vec![995]);
}

#[test]
fn gpt2_ids_match_tiktoken_on_all_of_tiny_shakespeare() {
    let Some(text) = shakespeare_text("the GPT-2 Tiny Shakespeare comparison") else { return };
    let (ours, oracle) = gpt2();
    let ids = ours.encode(&text).unwrap();
    assert_eq!(ids.len(), 338_025);
    assert_eq!(ids, oracle.encode_ordinary(&text));
    assert_eq!(ours.decode(&ids).unwrap(), text);
}

#[test]
fn gpt2_special_token_handling_is_explicit() {
    let (ours, oracle) = gpt2();
    let text = "one<|endoftext|>two";
    // Allowed: the special token becomes its id, as tiktoken's encode_with_special_tokens.
    let allowed = ours.encode_with_specials(text, Specials::AllowAll).unwrap();
    assert_eq!(allowed, oracle.encode_with_special_tokens(text));
    assert!(allowed.contains(&50256));
    assert_eq!(ours.encode_with_specials(text, Specials::Allow(&[ENDOFTEXT])).unwrap(), allowed);
    // As text: its characters, like any other.
    let as_text = ours.encode_with_specials(text, Specials::AsText).unwrap();
    assert_eq!(as_text, oracle.encode_ordinary(text));
    assert!(!as_text.contains(&50256));
    // By default (the Tokenizer trait) it is an error that names it.
    match ours.encode(text) {
        Err(Error::DisallowedSpecial { token, position }) => assert_eq!((token.as_str(), position), (ENDOFTEXT, 3)),
        other => panic!("expected DisallowedSpecial, got {other:?}"),
    }
}

/// The Wikipedia example: "aaabdaaabac" merges "aa" into Z, then "ab" into Y (it ties with
/// "Za" and wins on the smaller first id), then "ZY" into X: "XdXac".
#[test]
fn wikipedia_example_learns_the_textbook_merges() {
    let tok = BpeTokenizer::train("aaabdaaabac", &BpeConfig::new(259).pattern(None)).unwrap();
    let [a, b, c, d] = [b'a', b'b', b'c', b'd'].map(u32::from);
    assert_eq!(tok.merges(), &[(a, a), (a, b), (256, 257)]);
    assert_eq!(tok.encode("aaabdaaabac").unwrap(), vec![258, d, 258, a, c]);
    assert_eq!(tok.vocab_size(), 259);
}
