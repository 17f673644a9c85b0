//! ■ in Jupyter, Ctrl-C on the command line: an interrupt stops training after the current
//! step and sampling after the current token, and the model, the optimizer state and the
//! history stay usable. One test, in a binary of its own: the interrupt flag is process-wide,
//! and the tests of one binary run on parallel threads.

mod tiny_model;

use llm_from_scratch::device;
use llm_from_scratch::generate::{generate, Sampling};
use llm_from_scratch::interrupt;
use llm_from_scratch::tokenizer::Tokenizer;
use llm_from_scratch::train::{TrainConfig, TrainEvent, Trainer};
use tiny_model::{text_data, weights, TinyModel};

#[test]
fn an_interrupt_stops_training_and_sampling_and_keeps_everything() {
    let (tok, data) = text_data();
    let config =
        TrainConfig { steps: 60, eval_interval: 20, log_interval: Some(5), ..TrainConfig::default() };
    let fresh = || {
        device::seed(3);
        let model = TinyModel::new(tok.vocab_size(), 16, 0.1);
        let trainer = Trainer::new(&model, config.clone()).unwrap();
        (model, trainer)
    };

    // A real SIGINT (what the kernel sends on ■) while step 25 is logged.
    let (model, mut trainer) = fresh();
    let mut events = Vec::new();
    trainer
        .run(&model, &data, |e| {
            events.push(e.clone());
            if matches!(e, TrainEvent::Log(l) if l.step == 25) {
                // SAFETY: raise(3) has no memory-safety preconditions.
                unsafe { libc::raise(libc::SIGINT) };
            }
        })
        .unwrap();
    // The process is still here, and the run stopped after that step, saying so.
    assert_eq!(trainer.step(), 26);
    assert_eq!(events.last(), Some(&TrainEvent::Stopped { step: 26, steps: 60 }));
    assert!(events.last().unwrap().to_string().starts_with("stopped at step 26 of 60:"));
    assert_eq!(interrupt::requested(), Some(interrupt::SIGINT));
    let steps: Vec<usize> = trainer.history().points.iter().map(|p| p.step).collect();
    assert_eq!(steps, [0, 20]);

    // The same trainer goes on (the next run forgets the old interrupt) and ends exactly where
    // an uninterrupted run does.
    trainer.run(&model, &data, |_| {}).unwrap();
    assert_eq!((trainer.step(), interrupt::requested()), (60, None));
    let (straight_model, mut straight) = fresh();
    straight.run(&straight_model, &data, |_| {}).unwrap();
    assert_eq!(weights(&model), weights(&straight_model));

    // Sampling stops after the token being made when the interrupt comes, and returns the
    // tokens so far; the next call is not stopped by it.
    let mut seen = 0;
    let stopped = generate(&model, &[0], 50, &Sampling::default(), |_| {
        seen += 1;
        if seen == 7 {
            interrupt::request();
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(stopped.len(), 7);
    assert_eq!(generate(&model, &[0], 20, &Sampling::default(), |_| Ok(())).unwrap().len(), 20);
}
