//! Chapter 6's byte-level BPE: lossless on any text, the same merges every time, exactly
//! GPT-2's ids (checked against tiktoken-rs), clear errors, and files that load back.

use crate::common::{shakespeare, TempDir};
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
        let oracle = tiktoken_rs::r50k_base().expect("tiktoken-rs r50k_base");
        let ranks = ranks_file(&oracle);
        let dir = TempDir::new("gpt2-ranks");
        let path = dir.join("r50k_base.tiktoken");
        std::fs::write(&path, ranks).expect("write ranks");
        (BpeTokenizer::gpt2(&path).expect("load GPT-2 ranks"), oracle)
    })
}

/// A ranks file in tiktoken's format (`base64(token bytes) rank` per line) from tiktoken-rs.
fn ranks_file(oracle: &tiktoken_rs::CoreBPE) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    (0..50256u32)
        .map(|rank| format!("{} {rank}\n", engine.encode(oracle.decode_bytes(&[rank]).unwrap())))
        .collect()
}

/// `llm data fetch gpt2-ranks` downloads OpenAI's file: the manifest's size and SHA-256 are
/// those of the copy inside tiktoken-rs, written back out in the same format.
#[test]
fn manifest_entry_for_gpt2_ranks_matches_tiktoken() {
    use sha2::Digest as _;
    let file = ranks_file(&gpt2().1);
    let entry = llm_from_scratch::data::dataset("gpt2-ranks").unwrap();
    assert_eq!(entry.size, file.len() as u64);
    let digest: String = sha2::Sha256::digest(file.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(entry.sha256, digest);
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
    let text = shakespeare();
    let (ours, oracle) = gpt2();
    let ids = ours.encode(text).unwrap();
    assert_eq!(ids.len(), 338_025);
    assert_eq!(ids, oracle.encode_ordinary(text));
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
        Err(Error::DisallowedSpecial { token, position }) => {
            assert_eq!((token.as_str(), position), (ENDOFTEXT, 3))
        }
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

/// The training tests' text: the first 200 KB of Tiny Shakespeare.
fn corpus() -> String {
    shakespeare()[..200_000].to_string()
}

#[test]
fn training_is_deterministic_and_reaches_the_vocab_size() {
    let text = corpus();
    let config = BpeConfig::new(600).special_tokens(&[ENDOFTEXT, "<pad>"]);
    let first = BpeTokenizer::train(&text, &config).unwrap();
    let second = BpeTokenizer::train(&text, &config).unwrap();
    assert_eq!(first.merges(), second.merges());
    assert_eq!(first.vocab_size(), 600);
    assert_eq!(first.merges().len(), 600 - 256 - 2);
    assert_eq!(first.special_id(ENDOFTEXT), Some(598));
    assert_eq!(first.special_id("<pad>"), Some(599));
    let ids = first.encode(&text).unwrap();
    assert!(ids.len() * 2 < text.len(), "{} tokens for {} bytes", ids.len(), text.len());
    assert_eq!(first.decode(&ids).unwrap(), text);
}

/// The library's trainer learns exactly the merges of the textbook algorithm (recount every
/// pair of every chunk, merge the most frequent, repeat), ties going to the smaller pair; with
/// the GPT-2 pre-split and without any (one long chunk), on text with overlapping runs.
#[test]
fn trainer_learns_the_same_merges_as_the_naive_algorithm() {
    let text = corpus()[..20_000].to_string() + "aaaaaaa bbbbbbbb abababab aaaa\n\n\n\n  !!!!!!";
    let n_merges = 60;
    for pattern in [Some(GPT2_PATTERN), None] {
        let tok = BpeTokenizer::train(&text, &BpeConfig::new(256 + n_merges).pattern(pattern)).unwrap();
        let mut chunks: Vec<Vec<u32>> =
            tok.split(&text).unwrap().iter().map(|c| c.bytes().map(u32::from).collect()).collect();
        let mut naive = Vec::new();
        for i in 0..n_merges {
            let mut counts = std::collections::HashMap::new();
            for chunk in &chunks {
                for p in chunk.windows(2) {
                    *counts.entry((p[0], p[1])).or_insert(0usize) += 1;
                }
            }
            let (&pair, _) = counts.iter().max_by_key(|(&pair, &n)| (n, std::cmp::Reverse(pair))).unwrap();
            for chunk in &mut chunks {
                let mut merged = Vec::with_capacity(chunk.len());
                let mut j = 0;
                while j < chunk.len() {
                    if j + 1 < chunk.len() && (chunk[j], chunk[j + 1]) == pair {
                        merged.push(256 + i as u32);
                        j += 2;
                    } else {
                        merged.push(chunk[j]);
                        j += 1;
                    }
                }
                *chunk = merged;
            }
            naive.push(pair);
        }
        assert_eq!(tok.merges(), naive.as_slice(), "pattern {pattern:?}");
    }
}

#[test]
fn merges_never_cross_the_pre_split_but_do_without_it() {
    let text = "the cat. the dog. the end. ".repeat(20);
    let split = BpeTokenizer::train(&text, &BpeConfig::new(300)).unwrap();
    let whole = BpeTokenizer::train(&text, &BpeConfig::new(300).pattern(None)).unwrap();
    let longest = |tok: &BpeTokenizer| {
        (256..tok.vocab_size() as u32)
            .map(|id| tok.token_bytes(id).unwrap().to_vec())
            .max_by_key(Vec::len)
            .unwrap()
    };
    // With the GPT-2 pattern no token holds a word and the punctuation after it...
    for id in 256..split.vocab_size() as u32 {
        let token = String::from_utf8_lossy(split.token_bytes(id).unwrap()).into_owned();
        assert!(!(token.contains('.') && token.chars().any(char::is_alphabetic)), "token {token:?}");
    }
    // ...while without it whole phrases become single tokens.
    assert!(longest(&whole).len() > longest(&split).len());
    // The pre-split stops early when every chunk is a single token.
    assert!(split.vocab_size() < 300);
}

#[test]
fn gpt4_pattern_splits_digits_in_threes_and_round_trips() {
    let tok = BpeTokenizer::train(&corpus(), &BpeConfig::new(400).pattern(Some(GPT4_PATTERN))).unwrap();
    assert_eq!(tok.split("1234567 I'M here\n\n").unwrap(), ["123", "456", "7", " I", "'M", " here", "\n\n"]);
    assert_eq!(tok.pattern(), Some(GPT4_PATTERN));
    assert_eq!(tok.decode(&tok.encode(MIXED).unwrap()).unwrap(), MIXED);
}

#[test]
fn decoding_half_a_character_is_lossy_by_default_and_an_error_when_strict() {
    let tok = BpeTokenizer::train("plain ascii text", &BpeConfig::new(260)).unwrap();
    let ids = tok.encode("🙂").unwrap(); // four bytes, no merges: four ids
    assert_eq!(ids.len(), 4);
    assert_eq!(tok.decode(&ids[..2]).unwrap(), "\u{FFFD}");
    assert_eq!(tok.decode_strict(&ids).unwrap(), "🙂");
    match tok.decode_strict(&ids[..3]) {
        Err(Error::NotUtf8Tokens { offset: 0, bytes: 3 }) => {}
        other => panic!("expected NotUtf8Tokens, got {other:?}"),
    }
    match tok.decode(&[tok.vocab_size() as u32]) {
        Err(Error::UnknownId { id, vocab_size }) => {
            assert_eq!((id, vocab_size), (tok.vocab_size() as u32, 260))
        }
        other => panic!("expected UnknownId, got {other:?}"),
    }
}

#[test]
fn vocab_size_below_bytes_plus_specials_is_rejected() {
    for (vocab, specials) in [(255, 0), (256, 1), (0, 0)] {
        let config = BpeConfig::new(vocab).special_tokens(&["<bos>", "<eos>"][..specials]);
        let err = BpeTokenizer::train("some text", &config).unwrap_err().to_string();
        assert!(err.contains("too small") && err.contains("256"), "{err}");
    }
    let err =
        BpeTokenizer::train("x", &BpeConfig::new(300).pattern(Some("(unclosed"))).unwrap_err().to_string();
    assert!(err.contains("not a valid regex"), "{err}");
}

#[test]
fn save_and_load_give_the_same_tokenizer_also_through_any_tokenizer() {
    let tok = BpeTokenizer::train(&corpus(), &BpeConfig::new(500).special_tokens(&[ENDOFTEXT])).unwrap();
    let dir = TempDir::new("bpe-save");
    let path = dir.join("tok.json");
    tok.save(&path).unwrap();
    let json = std::fs::read_to_string(&path).unwrap();
    assert!(json.contains("\"kind\": \"bpe\"") && json.contains("\"version\": 1"), "{}", &json[..200]);
    assert_eq!(BpeTokenizer::load(&path).unwrap(), tok);
    let any = AnyTokenizer::load(&path).unwrap();
    assert_eq!(any.kind(), "bpe");
    assert_eq!(any, AnyTokenizer::Bpe(tok.clone()));
    assert_eq!(any.encode(MIXED).unwrap(), tok.encode(MIXED).unwrap());

    // GPT-2's byte order survives a round trip too.
    let gpt2 = &gpt2().0;
    let path = dir.join("gpt2.json");
    gpt2.save(&path).unwrap();
    let loaded = BpeTokenizer::load(&path).unwrap();
    assert_eq!(loaded.encode(MIXED).unwrap(), gpt2.encode(MIXED).unwrap());
}

#[test]
fn corrupt_tokenizer_files_are_clear_errors() {
    let dir = TempDir::new("bpe-corrupt");
    let good =
        BpeTokenizer::train("hello hello world", &BpeConfig::new(262).special_tokens(&["<eos>"])).unwrap();
    let json: serde_json::Value = serde_json::from_str(&good.to_json().unwrap()).unwrap();
    let with = |key: &str, value: serde_json::Value| {
        let mut j = json.clone();
        j[key] = value;
        j.to_string()
    };
    let cases = [
        (with("version", 2.into()), "version 1, or 2 with ids"),
        (with("version", 3.into()), "(kind \"bpe\", version 3)"),
        (with("merges", serde_json::json!([[104, 101], [9999, 1]])), "does not exist yet"),
        (with("merges", serde_json::json!([[104, 101], [104, 101]])), "appears twice"),
        (with("byte_ids", serde_json::json!([0, 0])), "byte_ids"),
        (with("pattern", "(".into()), "not a valid regex"),
        (with("special_tokens", serde_json::json!([["<eos>", 7]])), "expected"),
        ("{\"kind\": \"bpe\", \"version\": 1, \"merg".to_string(), "EOF"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.join(&format!("bad{i}.json"));
        std::fs::write(&path, text).unwrap();
        let err = BpeTokenizer::load(&path).unwrap_err().to_string();
        assert!(err.contains(needle) && err.contains("bad"), "case {i}: {err}");
        assert!(AnyTokenizer::load(&path).is_err());
    }
    let err = BpeTokenizer::load(dir.join("missing.json")).unwrap_err().to_string();
    assert!(err.contains("missing.json"), "{err}");
}

#[test]
fn bad_tiktoken_ranks_are_clear_errors() {
    let cases = [
        ("not-base64! 0", "not base64"),
        ("IQ== zero", "not a number"),
        ("IQ== 1", "expected rank 0"),
        ("IQ== 0", "first 256 ranks"),
    ];
    for (text, needle) in cases {
        let err = BpeTokenizer::from_tiktoken(text, Some(GPT2_PATTERN), &[]).unwrap_err().to_string();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

/// A tokenizer trained once for the property tests.
fn small() -> &'static BpeTokenizer {
    static SMALL: OnceLock<BpeTokenizer> = OnceLock::new();
    SMALL.get_or_init(|| {
        BpeTokenizer::train(&corpus(), &BpeConfig::new(700).special_tokens(&[ENDOFTEXT])).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any string at all round-trips, through our small tokenizer and through GPT-2's, and
    /// GPT-2's ids are tiktoken's.
    #[test]
    fn any_text_round_trips(text in prop_oneof![
        any::<String>(),
        "[ \\t\\r\\n]{0,12}",
        // Whitespace runs before words, numbers and punctuation (the GPT-2 splitter's fix-up).
        "([ \\t\\r\\n\u{a0}\u{3000}]{0,4}[a1.'é]{0,2}){0,10}",
        "([a-zA-Z']{0,6}[ \\n\\r\\t]{0,3}[0-9]{0,4}[.,!?]{0,2}){0,8}",
        "(\\PC|\u{301}|\u{308}|🙂|👍🏽|\r\n){0,20}",
    ]) {
        let text = text.replace(ENDOFTEXT, "");
        let tok = small();
        prop_assert_eq!(tok.decode(&tok.encode(&text).unwrap()).unwrap(), text.clone());
        prop_assert_eq!(tok.decode_strict(&tok.encode(&text).unwrap()).unwrap(), text.clone());
        let (gpt2, oracle) = gpt2();
        let ids = gpt2.encode(&text).unwrap();
        prop_assert_eq!(&ids, &oracle.encode_ordinary(&text));
        prop_assert_eq!(gpt2.decode(&ids).unwrap(), text);
    }
}
