//! The chapters' "Try this" exercises, each run as the chapter states it (the ladder's and
//! the GPT's at the shorter budgets the chapters name), so an expected outcome the prose gives
//! cannot go stale. The numbers are the ones the chapters quote, with a tolerance of about
//! 0.01 in loss for the machine's arithmetic.

use crate::common::rng_lock;
use llm_from_scratch::data::{self, Split, TokenData};
use llm_from_scratch::device::seed;
use llm_from_scratch::generate::{self, generate_batch, Cache, Sampling};
use llm_from_scratch::model::ladder::Init;
use llm_from_scratch::model::{lecture_ladder, Bigram, Gpt, GptConfig, Ladder, LadderConfig, LanguageModel};
use llm_from_scratch::tokenizer::{
    BpeConfig, BpeTokenizer, CharTokenizer, Tokenizer, WordTokenizer, ENDOFTEXT,
};
use llm_from_scratch::train::{self, TrainConfig, Trainer};
use llm_from_scratch::Error;
use tch::{Device, Kind, Tensor};

fn shakespeare() -> (String, CharTokenizer, TokenData) {
    let text = data::tinyshakespeare().expect("Tiny Shakespeare (through LLM_DATA_MIRROR in make test)");
    let tok = CharTokenizer::from_text(&text);
    let data = TokenData::new(&tok.encode(&text).unwrap(), 0.9).unwrap();
    (text, tok, data)
}

fn assert_near(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual:.4}, the chapter says {expected} ± {tolerance}"
    );
}

/// The validation loss at the end of `run` for `model` (seeded with the run's seed first).
fn val_loss(model: &dyn LanguageModel, data: &TokenData, run: &TrainConfig) -> f64 {
    train::train(model, data, run, |_| {}).unwrap().last().unwrap().val_loss
}

#[test]
fn chapter_1() {
    let (text, tok, _) = shakespeare();
    // Lowercase the text first: 26 capitals fewer.
    assert_eq!(CharTokenizer::from_text(&text.to_lowercase()).vocab_size(), 39);
    assert_eq!(WordTokenizer::from_text(&text).vocab_size(), 16_276);
    assert_eq!(WordTokenizer::from_text(&text.to_lowercase()).vocab_size(), 15_186);
    // The only digit Tiny Shakespeare has is 3.
    assert_eq!(tok.encode("Hello, 3 worlds!").unwrap().len(), 16);
    assert!(matches!(tok.encode("Hello, 42 worlds!"), Err(Error::UnknownChar { ch: '4', position: 7, .. })));
    assert!(matches!(tok.decode(&[65]), Err(Error::UnknownId { id: 65, vocab_size: 65 })));
}

#[test]
fn chapter_2() {
    let (_, tok, data) = shakespeare();
    let _rng = rng_lock();
    let row = |seed_value: u64, block_size: usize| {
        seed(seed_value);
        let (x, _) = data.get_batch(Split::Train, 4, block_size, Device::Cpu).unwrap();
        let ids: Vec<i64> = Vec::try_from(x.get(0)).unwrap();
        (x.size(), tok.decode(&ids.iter().map(|&i| i as u32).collect::<Vec<_>>()).unwrap())
    };
    assert_eq!(row(1337, 16), (vec![4, 16], "IOLANUS:\nTush, t".to_string()));
    assert_eq!(row(42, 8).1, "s his lo");
    let ids = tok.encode(&data::tinyshakespeare().unwrap()).unwrap();
    let half = TokenData::new(&ids, 0.5).unwrap();
    assert_eq!((half.train.size()[0], half.val.size()[0]), (557_697, 557_697));
}

#[test]
fn chapter_3() {
    let (_, tok, data) = shakespeare();
    let _rng = rng_lock();
    let bigram = |lr: f64, steps: usize| {
        seed(1337);
        val_loss(&Bigram::new(65, Device::Cpu), &data, &TrainConfig { lr, steps, ..TrainConfig::default() })
    };
    assert_near(bigram(1e-3, 3000), 2.671, 0.01, "lr 1e-3");
    assert_near(bigram(1e-1, 3000), 2.527, 0.01, "lr 1e-1");
    assert_near(bigram(1e-2, 10_000), 2.489, 0.01, "10,000 steps");
    // The counts of every pair of the training text (+1 each), normalised: the best bigram.
    let ids = tok.encode(&data::tinyshakespeare().unwrap()).unwrap();
    let cut = ids.len() - data.val.size()[0] as usize;
    let mut counts = vec![1.0f64; 65 * 65];
    for pair in ids[..cut].windows(2) {
        counts[pair[0] as usize * 65 + pair[1] as usize] += 1.0;
    }
    let nll: f64 = ids[cut..]
        .windows(2)
        .map(|pair| {
            let row = &counts[pair[0] as usize * 65..][..65];
            -(row[pair[1] as usize] / row.iter().sum::<f64>()).ln()
        })
        .sum();
    assert_near(nll / (ids.len() - cut - 1) as f64, 2.482, 0.001, "the counts' validation loss");
}

#[test]
fn chapter_4() {
    let (_, tok, data) = shakespeare();
    let _rng = rng_lock();
    let run = TrainConfig { steps: 1000, lr: 1e-3, eval_interval: 1000, ..TrainConfig::default() };
    let loss = |rung: &LadderConfig| {
        seed(run.seed);
        val_loss(&Ladder::new(rung.clone(), Device::Cpu).unwrap(), &data, &run)
    };
    let rungs: Vec<LadderConfig> = lecture_ladder(tok.vocab_size()).into_iter().map(|(_, r)| r).collect();
    let (one_head, heads, residual, norm) = (&rungs[0], &rungs[1], &rungs[4], &rungs[5]);
    // ladder_steps = 1000: LayerNorm's gain nearly vanishes.
    assert_near(loss(one_head), 2.525, 0.01, "one head, 1000 steps");
    assert_near(loss(heads), 2.469, 0.01, "4 heads, 1000 steps");
    assert_near(loss(residual), 2.273, 0.01, "+ residual, 1000 steps");
    assert_near(loss(norm), 2.267, 0.01, "+ LayerNorm, 1000 steps");
    // 8 heads of 4 channels: worse than 4 of 8.
    assert_near(
        loss(&LadderConfig { gpt: GptConfig { n_head: 8, ..heads.gpt.clone() }, ..heads.clone() }),
        2.504,
        0.01,
        "8 heads",
    );
    // LayerNorm without the residual path: depth still does not train.
    assert_near(
        loss(&LadderConfig { residual: false, ..norm.clone() }),
        2.519,
        0.01,
        "LayerNorm, no residual",
    );
    // nanoGPT's init: far slower without LayerNorm, a little better with it.
    assert_near(
        loss(&LadderConfig { init: Init::Gpt, ..one_head.clone() }),
        3.047,
        0.01,
        "one head, GPT init",
    );
    assert_near(
        loss(&LadderConfig { init: Init::Gpt, ..norm.clone() }),
        2.229,
        0.01,
        "+ LayerNorm, GPT init",
    );
}

/// Chapter 5's run cut to 500 steps, for chapters 5 and 7 (chapter 7 trains this model).
#[test]
fn chapters_5_and_7() {
    let (_, tok, data) = shakespeare();
    let _rng = rng_lock();
    let run = TrainConfig { steps: 500, ..TrainConfig::cpu_small() };
    let train = |config: GptConfig, run: TrainConfig| {
        seed(run.seed);
        let model = Gpt::new(config, Device::Cpu).unwrap();
        let mut trainer = Trainer::new(&model, run).unwrap();
        trainer.run(&model, &data, |_| {}).unwrap();
        (trainer.history().last().unwrap().val_loss, model)
    };
    let (base, model) = train(GptConfig::cpu_small(), run.clone());
    assert_near(base, 2.292, 0.01, "500 steps");

    // Chapter 7, on this model: temperature, top-p, and top-k 1.
    let prompt = tok.encode("ROMEO:\n").unwrap();
    let distinct = |temperature: f64| {
        let sampling = Sampling { temperature, ..Sampling::default() };
        let mut ids =
            generate_batch(&model, &prompt, 500, &sampling, &[3], Cache::On, |_| Ok(())).unwrap().remove(0);
        ids.sort();
        ids.dedup();
        ids.len()
    };
    assert_eq!([distinct(0.5), distinct(1.0), distinct(1.5)], [35, 46, 61]);
    let context: Vec<i64> =
        tok.encode("ROMEO:\nBut soft, what li").unwrap().iter().map(|&i| i as i64).collect();
    let logits = model.next_logits(&Tensor::from_slice(&context).unsqueeze(0), None).unwrap().get(0);
    let kept = |temperature: f64, top_p: f64| {
        let sampling = Sampling { temperature, top_p: Some(top_p), ..Sampling::default() };
        generate::distribution(&logits, &sampling).unwrap().gt(0.0).sum(Kind::Int64).int64_value(&[])
    };
    assert_eq!([kept(1.0, 0.5), kept(1.0, 0.9), kept(1.0, 0.99)], [3, 12, 29]);
    assert_eq!([kept(0.5, 0.9), kept(2.0, 0.9)], [6, 32]);
    let greedy =
        generate_batch(&model, &prompt, 100, &Sampling::greedy(), &[1], Cache::On, |_| Ok(())).unwrap();
    let top_1 = Sampling { top_k: Some(1), ..Sampling::default() };
    for s in [1, 2, 3] {
        assert_eq!(
            generate_batch(&model, &prompt, 100, &top_1, &[s], Cache::On, |_| Ok(())).unwrap(),
            greedy
        );
    }

    // Chapter 5's knobs, each against the 500-step run above.
    assert_near(
        train(GptConfig::cpu_small(), TrainConfig { lr: 3e-3, ..run.clone() }).0,
        2.172,
        0.01,
        "lr 3e-3",
    );
    assert_near(
        train(GptConfig { n_layer: 2, ..GptConfig::cpu_small() }, run.clone()).0,
        2.307,
        0.01,
        "n_layer 2",
    );
    assert_near(
        train(GptConfig::cpu_small(), TrainConfig { grad_clip: None, ..run.clone() }).0,
        2.294,
        0.01,
        "no clipping",
    );
    assert_near(
        train(GptConfig { n_head: 1, ..GptConfig::cpu_small() }, run.clone()).0,
        2.294,
        0.01,
        "n_head 1",
    );
}

#[test]
fn chapter_6() {
    let (text, _, _) = shakespeare();
    let per_char = |bpe: &BpeTokenizer| bpe.encode(&text).unwrap().len() as f64 / text.len() as f64;
    assert_near(
        per_char(&BpeTokenizer::train(&text, &BpeConfig::new(1024)).unwrap()),
        0.412,
        0.0005,
        "vocab 1024",
    );
    // No pre-splitting: merges cross the spaces between words.
    let unsplit = BpeTokenizer::train(&text, &BpeConfig::new(512).pattern(None)).unwrap();
    let first: Vec<String> = (256..260).map(|id| unsplit.decode(&[id]).unwrap()).collect();
    assert_eq!(first, ["e ", "th", "t ", "s "]);
    let inner_space = |bpe: &BpeTokenizer| {
        (256..512).filter(|&id| bpe.decode(&[id]).unwrap().trim_start().contains(' ')).count()
    };
    assert_eq!(inner_space(&unsplit), 83);
    assert_eq!(inner_space(&BpeTokenizer::train(&text, &BpeConfig::new(512)).unwrap()), 0);
    assert_near(per_char(&unsplit), 0.509, 0.0005, "unsplit, vocab 512");
    // A special token takes the last id of the vocabulary, in place of a merge.
    let with_special = BpeTokenizer::train(&text, &BpeConfig::new(512).special_tokens(&[ENDOFTEXT])).unwrap();
    assert_eq!((with_special.vocab_size(), with_special.merges().len()), (512, 255));
    assert_eq!(with_special.special_id(ENDOFTEXT), Some(511));
}

#[test]
fn chapter_8() {
    let gpt2 = GptConfig::gpt2();
    assert_eq!(GptConfig::gpt2_medium().num_params(), 354_823_168);
    assert_eq!(GptConfig { tie_weights: false, ..gpt2.clone() }.num_params(), 163_037_184);
    let gb = |batch: usize| gpt2.training_bytes(batch, 1024) as f64 / 1e9;
    assert_near(gb(8), 41.4, 0.05, "GPT-2 training memory, 8 × 1024");
    assert_near(gb(1), 6.9, 0.05, "GPT-2 training memory, 1 × 1024");
}

#[test]
fn chapter_9() {
    // 1. GPT-2's FLOPs per token at its context of 1,024: 6·N + 12·L·C·T.
    let gpt2 = GptConfig::gpt2();
    let n = gpt2.num_params() - gpt2.block_size * gpt2.n_embd; // without the position embeddings
    assert_eq!(n, 123_653_376);
    let attention = 12 * gpt2.n_layer * gpt2.n_embd * gpt2.block_size;
    let flops = 6 * n + attention;
    assert_eq!(flops, 855_166_464);
    assert_eq!((100.0 * attention as f64 / flops as f64).round(), 13.0);
    assert_eq!(format!("{:.1e}", 1e6 * flops as f64), "8.6e14");
    assert!(1e6 * flops as f64 / 200e9 > 3600.0, "over an hour at 200 GFLOP/s");

    // 2. The smallest update that survives: 2⁻⁷ next to 1 in bfloat16, 2⁻²³ in float32.
    let round = |x: f64, kind: Kind| Tensor::from(x).to_kind(kind).to_kind(Kind::Double).double_value(&[]);
    assert_eq!(round(1.0 + 2f64.powi(-8), Kind::BFloat16), 1.0);
    assert_eq!(round(1.0 + 2f64.powi(-7), Kind::BFloat16), 1.0 + 2f64.powi(-7));
    assert_eq!(round(1.0 + 2f64.powi(-23), Kind::Float), 1.0 + 2f64.powi(-23));

    // 3. Padding to a multiple of 64.
    let padded = |v: usize| v.div_ceil(64) * 64;
    assert_eq!(padded(50_257), 50_304);
    assert_eq!((padded(50_257) - 50_257) * 768, 36_096);
    assert_eq!(padded(32_000), 32_000);

    // 4. Deeper accumulation: the memory of one window at a time.
    let ladder = GptConfig {
        n_layer: 4,
        n_head: 4,
        n_embd: 256,
        block_size: 128,
        dropout: 0.0,
        ..GptConfig::shakespeare_char()
    };
    let mb = |batch: usize| (ladder.training_bytes(batch, 128) as f64 / 1e6).round();
    assert_eq!((mb(1), mb(16)), (74.0, 422.0));
    assert_eq!((16 * ladder.num_params()) as f64 / 1e6, 51.15904);
    assert_eq!((mb(16) / mb(1)).round(), 6.0, "about a sixth");
}
