//! Chapter 10's ground: the SMS Spam Collection and its balanced split, padded batches, and a
//! classifier whose scores the padding cannot change.

use crate::common::rng_lock;
use llm_from_scratch::data::{self, balanced_split, pad, parse_sms, Sms};
use llm_from_scratch::device;
use llm_from_scratch::model::{Classifier, Gpt, GptConfig};
use tch::{Device, Tensor};

fn messages() -> Vec<Sms> {
    data::sms_spam().unwrap_or_else(|e| {
        panic!(
            "the SMS Spam Collection could not be fetched ({e}); `make test` serves ../shared/data \
             through LLM_DATA_MIRROR, or give this machine network access"
        )
    })
}

#[test]
fn the_collection_reads_and_splits_as_raschka_does_from_one_seed() {
    let all = messages();
    let spam = all.iter().filter(|m| m.spam).count();
    assert_eq!((all.len(), spam), (5_574, 747));
    assert!(all[0].text.starts_with("Go until jurong point") && !all[0].spam);
    assert!(all.iter().all(|m| !m.text.ends_with('\r')), "CRLF line ends are stripped");

    // 747 of each label; 70 / 10 / 20: Raschka's 1,045, 149 and 300.
    let split = balanced_split(&all, 123).unwrap();
    assert_eq!((split.train.len(), split.val.len(), split.test.len()), (1_045, 149, 300));
    let spam_in = |part: &[Sms]| part.iter().filter(|m| m.spam).count();
    assert_eq!(spam_in(&split.train) + spam_in(&split.val) + spam_in(&split.test), 747);
    for (part, n) in [(&split.train, 1_045), (&split.test, 300)] {
        let share = spam_in(part) as f64 / n as f64;
        assert!((0.4..0.6).contains(&share), "a shuffled part holds about half spam: {share:.2}");
    }
    // One seed, one split; another seed, another.
    assert_eq!(balanced_split(&all, 123).unwrap(), split);
    assert_ne!(balanced_split(&all, 124).unwrap().train, split.train);
}

#[test]
fn a_bad_message_file_is_refused_naming_the_line() {
    let err = |text: &str| parse_sms(text, "sms.tsv").unwrap_err().to_string();
    assert!(err("ham\tfine\r\nspammy\tbuy now\r\n").contains("sms.tsv, line 2: the label is \"spammy\""));
    assert!(err("ham\tfine\nno tab here\n").contains("line 2: no tab"));
    assert!(err("spam\t  \n").contains("line 1: the message is empty"));
    assert!(err("\n\n").contains("holds no messages"));
    let two = parse_sms("ham\tOk lar...\r\nspam\tWIN a prize\r\n", "sms.tsv").unwrap();
    assert_eq!(
        two,
        [Sms { text: "Ok lar...".into(), spam: false }, Sms { text: "WIN a prize".into(), spam: true }]
    );
    let one = balanced_split(&two[..1], 1).unwrap_err().to_string();
    assert!(one.contains("needs both labels: 0 spam and 1 ham"), "{one}");
}

#[test]
fn padding_never_changes_a_classifiers_scores() {
    let _lock = rng_lock();
    device::seed(11);
    let config = GptConfig {
        vocab_size: 20,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 32,
        ..GptConfig::cpu_small()
    };
    let classifier = Classifier::new(Gpt::new(config, Device::Cpu).unwrap(), 2).unwrap();
    let short = vec![3u32, 1, 4, 1, 5];
    let long = vec![9u32, 2, 6, 5, 3, 5, 8, 9, 7, 9];
    let scores = |seqs: &[Vec<u32>], pad_id: u32| {
        let batch = pad(seqs, pad_id, Device::Cpu).unwrap();
        tch::no_grad(|| classifier.forward(&batch, false).unwrap())
    };
    let together = scores(&[short.clone(), long.clone()], 0); // the short one padded by 5
    let apart =
        Tensor::cat(&[scores(std::slice::from_ref(&short), 0), scores(std::slice::from_ref(&long), 0)], 0);
    let other_pad = scores(&[short.clone(), long.clone()], 19);
    let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    assert_eq!(together.size(), [2, 2]);
    assert!(diff(&together, &apart) < 1e-5, "padded vs alone: {}", diff(&together, &apart));
    assert!(diff(&together, &other_pad) < 1e-5, "pad id 0 vs 19: {}", diff(&together, &other_pad));
    // Not a constant: the two messages score differently.
    assert!(diff(&together.get(0), &together.get(1)) > 1e-4);

    let batch = pad(&[short.clone(), long.clone()], 0, Device::Cpu).unwrap();
    assert_eq!(Vec::<i64>::try_from(&batch.lengths).unwrap(), [5, 10]);
    assert_eq!(Vec::<bool>::try_from(&batch.mask.get(0)).unwrap(), [[true; 5], [false; 5]].concat());
    let labels = Tensor::from_slice(&[0i64, 1]);
    let loss = classifier.loss(&batch, &labels, false).unwrap().double_value(&[]);
    assert!((loss - 2f64.ln()).abs() < 0.1, "a fresh head scores near chance: {loss}");
    assert!(pad(&[short, vec![]], 0, Device::Cpu).is_err());
    assert!(Classifier::new(
        Gpt::new(GptConfig { vocab_size: 20, ..GptConfig::cpu_small() }, Device::Cpu).unwrap(),
        1
    )
    .is_err());
}
