//! Chapters 2 and 3: train/val splits and `(x, y)` batches, the bigram model, the training
//! loop and what it records (history files and plots).

use crate::common::{drawn_lines, rng_lock, shakespeare, TempDir};

use llm_from_scratch::data::{self, Split, TokenData};
use llm_from_scratch::generate::{self, Sampling};
use llm_from_scratch::model::{Bigram, LanguageModel};
use llm_from_scratch::tokenizer::{CharTokenizer, Tokenizer};
use llm_from_scratch::train::{self, EvalPoint, History, TrainConfig};
use llm_from_scratch::{device, Error};
use tch::{Device, Kind, Tensor};

fn to_vec(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.reshape([-1])).expect("int64 tensor")
}

/// `0..n` in a scrambled order (7919 is prime, so `i * 7919 mod n` is a permutation when `n`
/// is not a multiple of it): every value occurs once, so it says where in the data it sits.
fn scrambled_ids(n: u32) -> Vec<u32> {
    (0..n).map(|i| (i as u64 * 7919 % n as u64) as u32).collect()
}

/// Check that each row of `x` is a contiguous window of `split` and `y` that window shifted by
/// one. The values of `split` must be distinct.
fn assert_windows(split: &[i64], x: &Tensor, y: &Tensor) {
    let (b, t) = (x.size()[0] as usize, x.size()[1] as usize);
    let (x, y) = (to_vec(x), to_vec(y));
    for row in 0..b {
        let (xr, yr) = (&x[row * t..(row + 1) * t], &y[row * t..(row + 1) * t]);
        assert_eq!(&xr[1..], &yr[..t - 1], "row {row}: y is not x shifted by one");
        let start = split
            .iter()
            .position(|&v| v == xr[0])
            .unwrap_or_else(|| panic!("row {row}: {} is not in the split", xr[0]));
        assert!(start + t < split.len(), "row {row}: window runs off the split");
        assert_eq!(xr, &split[start..start + t], "row {row}: x is not a window");
        assert_eq!(yr, &split[start + 1..start + t + 1], "row {row}: y is not a window");
    }
}

/// A corpus whose next character is fully determined by the current one.
fn abc_data() -> (CharTokenizer, TokenData) {
    let text = "abc".repeat(400);
    let tok = CharTokenizer::from_text(&text);
    let data = TokenData::new(&tok.encode(&text).unwrap(), 0.9).unwrap();
    (tok, data)
}

fn small_config() -> TrainConfig {
    TrainConfig {
        steps: 200,
        batch_size: 32,
        block_size: 8,
        lr: 1e-2,
        eval_interval: 100,
        eval_iters: 20,
        ..TrainConfig::default()
    }
}

fn point(step: usize, train_loss: f64, val_loss: f64, tokens_per_sec: Option<f64>) -> EvalPoint {
    EvalPoint { step, train_loss, val_loss, lr: 0.01, tokens_per_sec, grad_norm: None }
}

fn sample_history() -> History {
    History {
        points: vec![
            point(0, 4.5, 4.625, None),
            point(100, 3.25, 3.375, Some(12345.67)),
            point(200, 2.5, 2.75, Some(20000.0)),
        ],
        ..History::default()
    }
}

// --- Corpora ------------------------------------------------------------------------------

#[test]
fn load_text_reads_a_file_or_the_txt_files_of_a_folder() {
    let _lock = rng_lock();
    let dir = TempDir::new("load_text");
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    write("b.txt", b"second\n");
    write("a.txt", "first, no newline: caf\u{e9}".as_bytes());
    write("notes.md", b"not a .txt file\n");
    assert_eq!(data::load_text(dir.join("b.txt")).unwrap(), "second\n");
    assert_eq!(data::load_text(dir.path()).unwrap(), "first, no newline: caf\u{e9}\nsecond\n");

    write("c.txt", b"ab\xffcd");
    match data::load_text(dir.join("c.txt")) {
        Err(Error::NotUtf8 { path, offset }) => assert_eq!((path, offset), (dir.join("c.txt"), 2)),
        other => panic!("expected Error::NotUtf8, got {other:?}"),
    }
    assert!(matches!(data::load_text(dir.path()), Err(Error::NotUtf8 { .. })));

    write("blank.txt", b" \n\t\n");
    assert!(matches!(data::load_text(dir.join("blank.txt")), Err(Error::EmptyCorpus(_))));
    assert!(matches!(data::load_text(dir.join("missing.txt")), Err(Error::Io { .. })));
    let empty = TempDir::new("load_text_empty");
    assert!(matches!(data::load_text(empty.path()), Err(Error::EmptyCorpus(_))));
}

// --- TokenData ----------------------------------------------------------------------------

#[test]
fn split_is_the_head_and_the_tail() {
    let _lock = rng_lock();
    let ids = scrambled_ids(1000);
    let data = TokenData::new(&ids, 0.9).unwrap();
    assert_eq!(data.train.size(), [900]);
    assert_eq!(data.val.size(), [100]);
    assert_eq!(data.train.kind(), Kind::Int64);
    let as_i64 = |s: &[u32]| s.iter().map(|&v| v as i64).collect::<Vec<_>>();
    assert_eq!(to_vec(data.get(Split::Train)), as_i64(&ids[..900]));
    assert_eq!(to_vec(data.get(Split::Val)), as_i64(&ids[900..]));
}

#[test]
fn split_of_tiny_shakespeare_matches_the_lecture() {
    let _lock = rng_lock();
    let text = shakespeare();
    let ids = CharTokenizer::from_text(&text).encode(&text).unwrap();
    assert_eq!(ids.len(), 1_115_394);
    let data = TokenData::new(&ids, 0.9).unwrap();
    assert_eq!(data.train.size(), [1_003_854]);
    assert_eq!(data.val.size(), [111_540]);
}

#[test]
fn bad_fractions_and_short_inputs_are_errors() {
    let _lock = rng_lock();
    let ids = scrambled_ids(1000);
    for fraction in [0.0, 1.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(TokenData::new(&ids, fraction), Err(Error::Config(_))),
            "fraction {fraction} was accepted"
        );
    }
    for len in [0, 1, 3, 10] {
        assert!(
            matches!(TokenData::new(&ids[..len], 0.9), Err(Error::EmptyCorpus(_))),
            "{len} tokens were split"
        );
    }
    assert!(TokenData::new(&ids[..11], 0.9).is_ok()); // 9 + 2
}

#[test]
fn parts_split_beforehand_are_kept_as_given() {
    let _lock = rng_lock();
    let ids = scrambled_ids(100);
    let data = TokenData::from_parts(&ids[..70], &ids[70..]).unwrap();
    assert_eq!((data.train.size(), data.val.size()), (vec![70], vec![30]));
    assert_eq!(to_vec(data.get(Split::Val))[0], ids[70] as i64);
    for (train, val) in [(0, 30), (70, 1), (1, 0)] {
        assert!(matches!(
            TokenData::from_parts(&ids[..train], &ids[70..70 + val]),
            Err(Error::EmptyCorpus(_))
        ));
    }
}

#[test]
fn batches_are_shifted_windows_of_their_split() {
    let _rng = rng_lock();
    let data = TokenData::new(&scrambled_ids(1000), 0.9).unwrap();
    for (split, batch, block) in [(Split::Train, 16, 8), (Split::Val, 4, 32), (Split::Val, 3, 99)] {
        let (x, y) = data.get_batch(split, batch, block, Device::Cpu).unwrap();
        assert_eq!(x.size(), [batch as i64, block as i64]);
        assert_eq!(y.size(), [batch as i64, block as i64]);
        assert_eq!((x.kind(), y.kind()), (Kind::Int64, Kind::Int64));
        assert_eq!(x.device(), Device::Cpu);
        assert_windows(&to_vec(data.get(split)), &x, &y);
    }
}

#[test]
fn batches_are_reproducible_from_the_seed() {
    let _rng = rng_lock();
    let data = TokenData::new(&scrambled_ids(1000), 0.9).unwrap();
    let batch = |seed| {
        device::seed(seed);
        let (x, y) = data.get_batch(Split::Train, 8, 16, Device::Cpu).unwrap();
        (to_vec(&x), to_vec(&y))
    };
    assert_eq!(batch(42), batch(42));
    assert_ne!(batch(42).0, batch(43).0);
}

#[test]
fn lecture_batch_is_reproduced_from_seed_1337() {
    let text = shakespeare();
    let _rng = rng_lock();
    let ids = CharTokenizer::from_text(&text).encode(&text).unwrap();
    let data = TokenData::new(&ids, 0.9).unwrap();
    device::seed(1337);
    let (x, y) = data.get_batch(Split::Train, 4, 8, Device::Cpu).unwrap();
    // `xb, yb = get_batch('train')` right after `torch.manual_seed(1337)` in "Let's build GPT".
    assert_eq!(
        to_vec(&x),
        [
            24, 43, 58, 5, 57, 1, 46, 43, //
            44, 53, 56, 1, 58, 46, 39, 58, //
            52, 58, 1, 58, 46, 39, 58, 1, //
            25, 17, 27, 10, 0, 21, 1, 54,
        ]
    );
    assert_eq!(to_vec(&y.select(1, 7)), [39, 1, 46, 39]);
}

#[test]
fn block_size_must_fit_in_the_split() {
    let _lock = rng_lock();
    let data = TokenData::new(&scrambled_ids(1000), 0.9).unwrap(); // val: 100 tokens
    for block in [100, 101, 1000] {
        assert!(
            matches!(data.get_batch(Split::Val, 4, block, Device::Cpu), Err(Error::Config(_))),
            "block {block} was accepted"
        );
    }
    assert!(matches!(data.get_batch(Split::Train, 0, 8, Device::Cpu), Err(Error::Config(_))));
    assert!(matches!(data.get_batch(Split::Train, 4, 0, Device::Cpu), Err(Error::Config(_))));
}

// --- Bigram -------------------------------------------------------------------------------

#[test]
fn fresh_bigram_predicts_uniformly() {
    let _rng = rng_lock();
    device::seed(1337);
    let model = Bigram::new(65, Device::Cpu);
    assert_eq!(model.num_params(), 65 * 65);
    let x = Tensor::randint(65, [4, 8], (Kind::Int64, Device::Cpu));
    let y = Tensor::randint(65, [4, 8], (Kind::Int64, Device::Cpu));
    let (logits, loss) = model.forward(&x, Some(&y), false).unwrap();
    assert_eq!(logits.size(), [4, 8, 65]);
    let loss = loss.expect("a loss when targets are given").double_value(&[]);
    let uniform = 65f64.ln(); // 4.174
    assert!(
        (loss - uniform).abs() < 0.1,
        "initial loss {loss:.4} is not within 0.1 of ln(65) = {uniform:.4}"
    );
    let (_, no_loss) = model.forward(&x, None, false).unwrap();
    assert!(no_loss.is_none());
}

#[test]
fn bigram_rejects_out_of_vocabulary_ids() {
    let _rng = rng_lock();
    let model = Bigram::new(65, Device::Cpu);
    let ok = Tensor::from_slice(&[0i64, 64]).view([1, 2]);
    let bad = Tensor::from_slice(&[0i64, 65]).view([1, 2]);
    assert!(model.forward(&ok, Some(&ok), false).is_ok());
    assert!(matches!(model.forward(&bad, None, false), Err(Error::Torch(_))));
    assert!(matches!(model.forward(&ok, Some(&bad), false), Err(Error::Torch(_))));
    assert!(generate::generate(&model, &[0, 65], 1, &Sampling::default(), |_| Ok(())).is_err());
}

#[test]
fn bigram_loss_accepts_sampled_batches() {
    let _rng = rng_lock();
    let data = TokenData::new(&scrambled_ids(1000), 0.9).unwrap();
    let model = Bigram::new(1000, Device::Cpu);
    let (x, y) = data.get_batch(Split::Train, 4, 8, Device::Cpu).unwrap();
    let (logits, loss) = model.forward(&x, Some(&y), false).expect("loss on a get_batch batch");
    assert_eq!(logits.size(), [4, 8, 1000]);
    assert!(loss.unwrap().double_value(&[]).is_finite());
}

#[test]
fn generate_appends_valid_ids() {
    let _rng = rng_lock();
    let model = Bigram::new(65, Device::Cpu);
    let sample = |seed| {
        device::seed(seed);
        generate::generate(&model, &[0], 50, &Sampling::default(), |_| Ok(())).unwrap()
    };
    let ids = sample(1);
    assert_eq!(ids.len(), 50);
    assert!(ids.iter().all(|&id| id < 65), "{ids:?}");
    assert_eq!(sample(1), ids, "same seed, same sample");
    assert_ne!(sample(2), ids, "another seed, another sample");
}

// --- Training -----------------------------------------------------------------------------

#[test]
fn training_learns_a_deterministic_pattern() {
    let _rng = rng_lock();
    device::seed(1337);
    let (tok, data) = abc_data();
    let model = Bigram::new(tok.vocab_size(), Device::Cpu);
    let mut seen = Vec::new();
    let history = train::train(&model, &data, &small_config(), |p| seen.push(p.clone())).unwrap();

    assert_eq!(seen, history.points, "on_eval sees every point");
    let steps: Vec<usize> = history.points.iter().map(|p| p.step).collect();
    assert_eq!(steps, [0, 100, 200]);
    assert!(history.points.iter().all(|p| p.lr == 1e-2));
    assert!(history.points[0].tokens_per_sec.is_none());
    assert!(history.points[1..].iter().all(|p| p.tokens_per_sec.is_some_and(|t| t > 0.0)));

    // From ln(3) = 1.10 (uniform over a, b, c) down to about 0.13 after 200 steps.
    let val: Vec<f64> = history.points.iter().map(|p| p.val_loss).collect();
    assert!((val[0] - 3f64.ln()).abs() < 0.05, "initial val loss {:.4}, not ~ln(3)", val[0]);
    assert!(val[1] < 0.4 && val[2] < 0.2, "val losses {val:?} did not fall enough");
    assert!(history.last().unwrap().train_loss < 0.2);

    // The trained model predicts the pattern: after a comes b, after b c, after c a.
    let abc = Tensor::from_slice(&[0i64, 1, 2]).view([1, 3]);
    let (logits, _) = model.forward(&abc, None, false).unwrap();
    assert_eq!(to_vec(&logits.argmax(-1, false)), [1, 2, 0]);
}

#[test]
fn invalid_configs_are_rejected() {
    assert!(TrainConfig::default().validate().is_ok());
    assert!(small_config().validate().is_ok());
    let with = |f: fn(&mut TrainConfig)| {
        let mut c = small_config();
        f(&mut c);
        c
    };
    let bad = [
        ("steps", with(|c| c.steps = 0)),
        ("batch_size", with(|c| c.batch_size = 0)),
        ("block_size", with(|c| c.block_size = 0)),
        ("eval_interval", with(|c| c.eval_interval = 0)),
        ("eval_iters", with(|c| c.eval_iters = 0)),
        ("lr", with(|c| c.lr = 0.0)),
        ("lr", with(|c| c.lr = -1e-3)),
        ("lr", with(|c| c.lr = f64::NAN)),
        ("lr", with(|c| c.lr = f64::INFINITY)),
    ];
    let (_, data) = abc_data();
    let _rng = rng_lock();
    let model = Bigram::new(3, Device::Cpu);
    for (field, config) in bad {
        match config.validate() {
            Err(Error::Config(msg)) => assert!(msg.starts_with(field), "{field}: {msg}"),
            other => panic!("{config:?} gave {other:?}"),
        }
        let mut evals = 0;
        assert!(train::train(&model, &data, &config, |_| evals += 1).is_err());
        assert_eq!(evals, 0, "training started with {config:?}");
    }
}

// --- History and plots --------------------------------------------------------------------

#[test]
fn history_round_trips_through_json() {
    let _lock = rng_lock();
    let dir = TempDir::new("history_json");
    let path = dir.join("history.json");
    let history = sample_history();
    history.save(&path).unwrap();
    assert_eq!(History::load(&path).unwrap(), history);
    assert_eq!(dir.entries(), ["history.json"]);
    assert!(matches!(History::load(dir.join("missing.json")), Err(Error::Io { .. })));
}

#[test]
fn history_saves_csv_with_a_header() {
    let _lock = rng_lock();
    let dir = TempDir::new("history_csv");
    let path = dir.join("history.csv");
    sample_history().save(&path).unwrap();
    let csv = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        [
            "step,train_loss,val_loss,lr,tokens_per_sec,grad_norm",
            "0,4.5,4.625,0.01,,",
            "100,3.25,3.375,0.01,12345.7,",
            "200,2.5,2.75,0.01,20000.0,",
        ]
    );
    assert_eq!(csv, sample_history().to_csv());
}

#[test]
fn history_plot_is_a_png() {
    let _lock = rng_lock();
    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let figure = sample_history().plot("bigram loss").unwrap();
    let png = figure.png();
    assert_eq!(png[..8], PNG_SIGNATURE);
    let reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().expect("a decodable PNG");
    assert_eq!((reader.info().width, reader.info().height), (900, 500));
    assert_eq!(drawn_lines(png), 2, "the train and val curves");

    let dir = TempDir::new("history_plot");
    let path = dir.join("loss.png");
    figure.save(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), png);
    assert_eq!(dir.entries(), ["loss.png"]);

    assert!(matches!(History::default().plot("empty"), Err(Error::Plot(_))));
}
