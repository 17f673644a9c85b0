//! Chapter 10's ground: the SMS Spam Collection and its balanced split, padded batches, a
//! classifier whose scores the padding cannot change, and instruction records batched with
//! the loss on their responses only.

use crate::common::rng_lock;
use llm_from_scratch::data::{
    self, balanced_split, pad, parse_instructions, parse_sms, Instruction, InstructionData, LabelledData,
    Sms, IGNORE,
};
use llm_from_scratch::device;
use llm_from_scratch::model::{Classifier, ClassifierConfig, Gpt, GptConfig, LanguageModel, Tune};
use llm_from_scratch::tokenizer::{CharTokenizer, Tokenizer};
use llm_from_scratch::train::{self, Checkpoint, TrainConfig, Trainer};
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
    let classifier = Classifier::new(Gpt::new(config, Device::Cpu).unwrap(), 2, Tune::All).unwrap();
    let short = vec![3u32, 1, 4, 1, 5];
    let long = vec![9u32, 2, 6, 5, 3, 5, 8, 9, 7, 9];
    let scores = |seqs: &[Vec<u32>], pad_id: u32| {
        let batch = pad(seqs, pad_id, Device::Cpu).unwrap();
        tch::no_grad(|| classifier.classify(&batch, false).unwrap())
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
    // As the trainer sees it: the label at each row's last real token, every other target
    // ignored, so the loss is the cross-entropy of `classify`'s scores against the labels.
    let rows = [(short.clone(), 0usize), (long.clone(), 1)];
    let (x, y) = LabelledData::collate(&[&rows[0], &rows[1]], 0, 16, Device::Cpu).unwrap();
    assert_eq!(
        Vec::<i64>::try_from(&y.get(0)).unwrap(),
        [[IGNORE; 4].as_slice(), &[0], &[IGNORE; 5]].concat()
    );
    let loss = tch::no_grad(|| classifier.loss(&x, &y, false).unwrap().double_value(&[]));
    let labels = Tensor::from_slice(&[0i64, 1]);
    let by_hand = together.cross_entropy_for_logits(&labels).double_value(&[]);
    assert!((loss - by_hand).abs() < 1e-5, "{loss} vs {by_hand}");
    assert!((loss - 2f64.ln()).abs() < 0.1, "a fresh head scores near chance: {loss}");
    assert!(pad(&[short, vec![]], 0, Device::Cpu).is_err());
    assert!(Classifier::new(
        Gpt::new(GptConfig { vocab_size: 20, ..GptConfig::cpu_small() }, Device::Cpu).unwrap(),
        1,
        Tune::All
    )
    .is_err());
}

#[test]
fn a_grown_vocabulary_keeps_what_the_model_knew() {
    let _lock = rng_lock();
    device::seed(5);
    for tie_weights in [false, true] {
        // Untied with a head bias (the lecture's), or tied without (GPT-2's).
        let lm_head_bias = !tie_weights;
        let config =
            GptConfig { vocab_size: 12, n_layer: 1, tie_weights, lm_head_bias, ..GptConfig::cpu_small() };
        let model = Gpt::new(config, Device::Cpu).unwrap();
        let grown = model.with_vocab_size(15).unwrap();
        assert_eq!((grown.config.vocab_size, grown.wte.size()), (15, vec![15, 128]));
        // Three new rows of the embedding, and of an untied head and its bias.
        let new_rows = if tie_weights { 3 * 128 } else { 3 * 128 * 2 + 3 };
        assert_eq!(grown.num_params() - model.num_params(), new_rows);
        // Old ids in, the old tokens' logits out, unchanged; the new tokens have their own.
        let idx = Tensor::from_slice(&[1i64, 7, 3, 11]).view([1, 4]);
        let logits = |m: &Gpt, idx: &Tensor| tch::no_grad(|| m.forward(idx, None, false).unwrap().0);
        let (before, after) = (logits(&model, &idx), logits(&grown, &idx));
        assert_eq!(after.size(), [1, 4, 15]);
        assert!(before.allclose(&after.narrow(2, 0, 12), 1e-6, 1e-6, false), "tied: {tie_weights}");
        assert_eq!(logits(&grown, &Tensor::from_slice(&[14i64]).view([1, 1])).size(), [1, 1, 15]);
        let err = grown.with_vocab_size(14).unwrap_err().to_string();
        assert!(err.contains("can grow, not shrink: 14 tokens asked, the model has 15"), "{err}");
    }
}

#[test]
fn instruction_records_read_and_write_the_alpaca_template() {
    let records = data::instruction_data().unwrap_or_else(|e| {
        panic!("the instruction data could not be fetched ({e}); make test serves ../shared/data through LLM_DATA_MIRROR")
    });
    assert_eq!(records.len(), 1_100);
    assert_eq!(records[0].input, "freind --> friend");
    let prompt = records[0].prompt();
    assert!(prompt.starts_with("Below is an instruction that describes a task."), "{prompt}");
    assert!(prompt.ends_with(
        "### Instruction:\nEvaluate the following phrase by transforming it into the spelling given.\n\n\
         ### Input:\nfreind --> friend\n\n### Response:\n"
    ));
    let no_input = records.iter().find(|r| r.input.is_empty()).unwrap();
    assert!(!no_input.prompt().contains("### Input:"));

    let err = |json: &str| parse_instructions(json, "data.json").unwrap_err().to_string();
    assert!(err(r#"[{"instruction": "a", "output": "b"}, {"instruction": "c"}]"#)
        .contains("data.json, record 1: missing field `output`"));
    assert!(
        err(r#"[{"instruction": "a", "output": " "}]"#).contains("record 0: an empty instruction or output")
    );
    assert!(err("[]").contains("holds no records"));
    assert!(err("{").contains("not a JSON list"));
}

#[test]
fn only_the_responses_targets_count_in_the_loss() {
    let _lock = rng_lock();
    device::seed(2);
    // Two records, as tokens: a prompt of 4 and of 2, a response of 3 and of 4 (end included).
    let a = (vec![1u32, 2, 3, 4, 10, 11, 0], 4);
    let b = (vec![5u32, 6, 12, 13, 14, 0], 2);
    let (x, y) = InstructionData::collate(&[&a, &b], 0, 64, Device::Cpu).unwrap();
    assert_eq!(x.size(), [2, 6]); // the longest record less one, not the context
    let ignore = IGNORE;
    assert_eq!(Vec::<i64>::try_from(&y.get(0)).unwrap(), [ignore, ignore, ignore, 10, 11, 0]);
    assert_eq!(Vec::<i64>::try_from(&y.get(1)).unwrap(), [ignore, 12, 13, 14, 0, ignore]);
    assert_eq!(Vec::<i64>::try_from(&x.get(1)).unwrap(), [5, 6, 12, 13, 14, 0]);

    let config = GptConfig {
        vocab_size: 16,
        block_size: 8,
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
        ..GptConfig::cpu_small()
    };
    let gpt = Gpt::new(config, Device::Cpu).unwrap();
    let loss = tch::no_grad(|| gpt.loss(&x, &y, false).unwrap().double_value(&[]));
    // By hand: the mean of -log p(target) over the 7 response targets alone.
    let logits = tch::no_grad(|| gpt.forward(&x, None, false).unwrap().0);
    let logp = logits.log_softmax(-1, tch::Kind::Float);
    let mut total = 0.0;
    for (row, pos, target) in
        [(0, 3, 10), (0, 4, 11), (0, 5, 0), (1, 1, 12), (1, 2, 13), (1, 3, 14), (1, 4, 0)]
    {
        total -= logp.get(row).get(pos).get(target).double_value(&[]);
    }
    assert!((loss - total / 7.0).abs() < 1e-5, "masked loss {loss} vs by hand {}", total / 7.0);
    // The prompt's targets and the padding contribute nothing: other prompt tokens to predict
    // and another pad id leave the loss as it was.
    let other_pad = InstructionData::collate(&[&a, &b], 9, 64, Device::Cpu).unwrap();
    let loss_other_pad =
        tch::no_grad(|| gpt.loss(&other_pad.0, &other_pad.1, false).unwrap().double_value(&[]));
    assert!((loss - loss_other_pad).abs() < 1e-6);
    let a_other_prompt = (vec![1u32, 2, 7, 4, 10, 11, 0], 4); // a prompt target that is ignored
    let (x2, y2) = InstructionData::collate(&[&a_other_prompt, &b], 0, 64, Device::Cpu).unwrap();
    assert_eq!(y2, y);
    assert!(x2 != x);
    // Cut to the context: at most max_len inputs.
    let (x3, _) = InstructionData::collate(&[&a, &b], 0, 4, Device::Cpu).unwrap();
    assert_eq!(x3.size(), [2, 4]);
    // A prompt longer than the context leaves no response to learn: refused, not a NaN loss.
    let err = InstructionData::collate(&[&a, &b], 0, 3, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("a record's prompt has 4 tokens, and the context 3"), "{err}");
}

#[test]
fn the_trainer_finetunes_on_instruction_batches() {
    let _lock = rng_lock();
    let records: Vec<Instruction> = (0..40)
        .map(|i| Instruction {
            instruction: format!("Say {i}."),
            input: String::new(),
            output: format!("{i}"),
        })
        .collect();
    let text: String = records.iter().map(|r| r.prompt() + &r.output).collect();
    let tok = CharTokenizer::from_text(&(text + "|"));
    let end = tok.encode("|").unwrap()[0];
    let data = InstructionData::new(&records[..32], &records[32..], &tok, end).unwrap();
    device::seed(1);
    let config = GptConfig {
        vocab_size: tok.vocab_size(),
        block_size: 160,
        n_layer: 1,
        n_head: 2,
        n_embd: 32,
        ..GptConfig::cpu_small()
    };
    let gpt = Gpt::new(config, Device::Cpu).unwrap();
    let run = TrainConfig {
        steps: 60,
        batch_size: 8,
        block_size: 160,
        lr: 3e-3,
        eval_interval: 60,
        eval_iters: 4,
        ..TrainConfig::default()
    };
    let history = train::train(&gpt, &data, &run, |_| {}).unwrap();
    let (first, last) = (&history.points[0], history.last().unwrap());
    assert!(
        last.val_loss < first.val_loss - 1.0,
        "the response loss falls: {} -> {}",
        first.val_loss,
        last.val_loss
    );
}

#[test]
fn the_trainer_trains_a_classifier_to_tell_sequences_apart() {
    let _lock = rng_lock();
    // Label 1 when token 7 occurs anywhere in the sequence: the last token must look back.
    device::seed(3);
    let draw = |n: usize| -> Vec<(Vec<u32>, usize)> {
        let lens = Tensor::randint_low(3, 13, [n as i64], (tch::Kind::Int64, Device::Cpu));
        (0..n)
            .map(|i| {
                let len = lens.int64_value(&[i as i64]);
                let ids =
                    Vec::<i64>::try_from(Tensor::randint_low(1, 10, [len], (tch::Kind::Int64, Device::Cpu)))
                        .unwrap();
                let ids: Vec<u32> = ids.iter().map(|&t| t as u32).collect();
                let label = ids.contains(&7) as usize;
                (ids, label)
            })
            .collect()
    };
    let (train_rows, val_rows) = (draw(400), draw(100));
    let data = LabelledData::new(train_rows, val_rows.clone(), 0).unwrap();
    let config = GptConfig {
        vocab_size: 10,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 32,
        ..GptConfig::cpu_small()
    };
    let classifier = Classifier::new(Gpt::new(config.clone(), Device::Cpu).unwrap(), 2, Tune::All).unwrap();
    // The three ways to train, by their trainable parameters: everything; the last block, the
    // final norm and the head; LoRA adapters (and the head, which is new).
    let blocks = config.num_params() - config.vocab_size * 32 - config.block_size * 32 - 32; // less wte, wpe, ln_f
    let head = 32 * 2 + 2;
    assert_eq!(classifier.num_params(), config.num_params() + head);
    let last_block =
        Classifier::new(Gpt::new(config.clone(), Device::Cpu).unwrap(), 2, Tune::LastBlock).unwrap();
    assert_eq!(last_block.num_params(), blocks / 2 + 32 + head);
    let lora = Classifier::new(
        Gpt::new(config.clone(), Device::Cpu).unwrap(),
        2,
        Tune::Lora { rank: 4, alpha: 8.0 },
    )
    .unwrap();
    let adapters = 4 * (32 + 96) + 4 * (32 + 32) + 4 * (32 + 128) + 4 * (128 + 32); // per block
    assert_eq!(lora.num_params(), 2 * adapters + head);
    let before = classifier.accuracy(&val_rows, 0, 32).unwrap();
    let run = TrainConfig {
        steps: 300,
        batch_size: 16,
        block_size: 16,
        lr: 3e-3,
        eval_interval: 300,
        eval_iters: 4,
        ..TrainConfig::default()
    };
    train::train(&classifier, &data, &run, |_| {}).unwrap();
    let after = classifier.accuracy(&val_rows, 0, 32).unwrap();
    assert!(after > 0.9 && after > before + 0.2, "validation accuracy {before:.2} -> {after:.2}");
    assert!(LabelledData::new(vec![], val_rows, 0).is_err());
}

#[test]
fn a_lora_classification_run_resumes_exactly_from_its_checkpoint() {
    let _lock = rng_lock();
    let dir = crate::common::TempDir::new("classifier-resume");
    device::seed(4);
    let rows = |n: i64| -> Vec<(Vec<u32>, usize)> {
        let ids = Tensor::randint_low(1, 10, [n, 6], (tch::Kind::Int64, Device::Cpu));
        (0..n)
            .map(|i| {
                let row: Vec<u32> =
                    Vec::<i64>::try_from(ids.get(i)).unwrap().iter().map(|&t| t as u32).collect();
                let label = row.contains(&7) as usize;
                (row, label)
            })
            .collect()
    };
    let data = LabelledData::new(rows(64), rows(16), 0).unwrap();
    let config = ClassifierConfig {
        gpt: GptConfig {
            vocab_size: 10,
            block_size: 8,
            n_layer: 2,
            n_head: 2,
            n_embd: 16,
            dropout: 0.1,
            ..GptConfig::cpu_small()
        },
        n_classes: 2,
        tune: Tune::Lora { rank: 2, alpha: 4.0 },
    };
    let run = TrainConfig {
        steps: 20,
        batch_size: 8,
        block_size: 8,
        lr: 1e-2,
        eval_interval: 10,
        eval_iters: 2,
        ..TrainConfig::default()
    };
    let tok = CharTokenizer::from_text("0123456789");
    let weights = |c: &Classifier| -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = c.gpt.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    // Straight through.
    device::seed(9);
    let straight = config.build(Device::Cpu).unwrap();
    let mut trainer = Trainer::new(&straight, run.clone()).unwrap();
    trainer.run(&straight, &data, |_| {}).unwrap();
    // In two pieces, through a checkpoint, into a classifier built afresh.
    device::seed(9);
    let first = config.build(Device::Cpu).unwrap();
    let mut trainer = Trainer::new(&first, run.clone()).unwrap();
    trainer.train_until(&first, &data, 10, |_| {}).unwrap();
    trainer.save_checkpoint(dir.join("ckpt"), &first, &first.config(), &tok).unwrap();
    let checkpoint = Checkpoint::load(dir.join("ckpt")).unwrap();
    let rebuilt: ClassifierConfig = checkpoint.model_config().unwrap();
    assert_eq!(rebuilt, config);
    device::seed(1234); // other fresh weights: the checkpoint's must replace them all
    let mut second = rebuilt.build(Device::Cpu).unwrap();
    let mut trainer = checkpoint.resume(&mut second).unwrap();
    trainer.train_until(&second, &data, 20, |_| {}).unwrap();
    for ((name, a), (_, b)) in weights(&straight).iter().zip(weights(&second)) {
        assert!(a.equal(&b), "{name} differs after resuming");
    }
    assert_eq!(second.num_params(), straight.num_params());
}

#[test]
fn an_instruction_run_resumes_exactly_from_its_checkpoint() {
    let _lock = rng_lock();
    let dir = crate::common::TempDir::new("instruct-resume");
    let records: Vec<Instruction> = (0..12)
        .map(|i| Instruction {
            instruction: format!("Add {i}."),
            input: format!("{i}"),
            output: format!("{}", i + 1),
        })
        .collect();
    let text: String = records.iter().map(|r| r.prompt() + &r.output).collect();
    let tok = CharTokenizer::from_text(&(text + "|"));
    let end = tok.encode("|").unwrap()[0];
    let data = InstructionData::new(&records[..9], &records[9..], &tok, end).unwrap();
    let config = GptConfig {
        vocab_size: tok.vocab_size(),
        block_size: 192,
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
        dropout: 0.1,
        ..GptConfig::cpu_small()
    };
    let run = TrainConfig {
        steps: 12,
        batch_size: 4,
        block_size: 192,
        eval_interval: 6,
        eval_iters: 2,
        ..TrainConfig::default()
    };
    device::seed(5);
    let straight = Gpt::new(config.clone(), Device::Cpu).unwrap();
    let mut whole = Trainer::new(&straight, run.clone()).unwrap();
    whole.run(&straight, &data, |_| {}).unwrap();
    device::seed(5);
    let first = Gpt::new(config.clone(), Device::Cpu).unwrap();
    let mut trainer = Trainer::new(&first, run.clone()).unwrap();
    trainer.train_until(&first, &data, 6, |_| {}).unwrap();
    trainer.save_checkpoint(dir.join("ckpt"), &first, &config, &tok).unwrap();
    let checkpoint = Checkpoint::load(dir.join("ckpt")).unwrap();
    device::seed(77);
    let mut second = Gpt::new(checkpoint.model_config().unwrap(), Device::Cpu).unwrap();
    let mut resumed = checkpoint.resume(&mut second).unwrap();
    resumed.train_until(&second, &data, 12, |_| {}).unwrap();
    for (name, a) in straight.vs.variables() {
        assert!(a.equal(&second.vs.variables()[&name]), "{name} differs after resuming");
    }
    let losses = |t: &Trainer| t.history().points.iter().map(|p| p.val_loss).collect::<Vec<_>>();
    assert_eq!(losses(&resumed), losses(&whole), "the estimates, before and after the cut");
}
