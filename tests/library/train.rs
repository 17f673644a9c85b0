//! Chapter 5's training loop, piece by piece: AdamW against PyTorch, the learning-rate
//! schedule against nanoGPT, clipping by global norm, gradient accumulation, the trainer,
//! its configuration and what it records.

use crate::common::{drawn_lines, rng_lock, TempDir};

use crate::tiny_model::{self, text_data, TinyModel};
use llm_from_scratch::data::Split;
use llm_from_scratch::model::LanguageModel;
use llm_from_scratch::precision::Precision;
use llm_from_scratch::tokenizer::Tokenizer;
use llm_from_scratch::train::{
    self, backward_accumulated, clip_grad_norm, grad_norm, AdamW, AdamWConfig, EvalPoint, History, LogPoint,
    LrDecay, LrSchedule, TrainConfig, TrainEvent, Trainer,
};
use llm_from_scratch::{device, Error};
use tch::{nn, Device, Kind, Tensor};

fn to_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.detach().reshape([-1]).to_kind(Kind::Double)).unwrap()
}

fn assert_close(actual: &[f64], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol, "{what}[{i}]: {a} vs expected {e} (tolerance {tol})");
    }
}

/// Set the gradients of `params` to `grads` exactly: the gradient of `Σ p · g` is `g`.
fn set_grads(params: &[&Tensor], grads: &[Tensor]) {
    let loss = params.iter().zip(grads).map(|(p, g)| (*p * g).sum(Kind::Float)).reduce(|a, b| a + b).unwrap();
    loss.backward();
}

// --- AdamW --------------------------------------------------------------------------------

/// Three steps of AdamW on a matrix `w` (decayed) and a bias `b` (not decayed), against the
/// same three steps of `torch.optim.AdamW` (PyTorch 2.13, CPU, float32, `foreach=False`), made
/// with this script:
///
/// ```python
/// W = torch.tensor([[0.5, -1.0, 0.25], [2.0, 0.0, -0.75]], requires_grad=True)
/// b = torch.tensor([0.1, -0.2, 0.3], requires_grad=True)
/// opt = torch.optim.AdamW([{"params": [W], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}],
///                         lr=0.01, betas=(0.9, 0.99), eps=1e-8, foreach=False)
/// for gw, gb in GRADS:  # the three pairs below
///     opt.zero_grad(); ((W * gw).sum() + (b * gb).sum()).backward(); opt.step()
/// print(W, b, opt.state[W]["exp_avg"], opt.state[W]["exp_avg_sq"], ...)
/// ```
#[test]
fn adamw_matches_pytorch_with_decay_on_matrices_only() {
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().var_copy("w", &Tensor::from_slice(&[0.5f32, -1.0, 0.25, 2.0, 0.0, -0.75]).view([2, 3]));
    let b = vs.root().var_copy("b", &Tensor::from_slice(&[0.1f32, -0.2, 0.3]));
    let config = AdamWConfig { lr: 0.01, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1 };
    let mut opt = AdamW::new(&vs, config).unwrap();
    let names: Vec<(&str, bool)> = opt.params().iter().map(|p| (p.name.as_str(), p.decay)).collect();
    assert_eq!(names, [("b", false), ("w", true)], "sorted by name; only the 2-D tensor decays");

    let grads: [([f32; 6], [f32; 3]); 3] = [
        ([0.1, -0.2, 0.3, -0.4, 0.5, -0.6], [1.0, -2.0, 0.5]),
        ([-0.3, 0.1, 0.0, 0.2, 0.2, -0.1], [0.25, 0.5, -1.0]),
        ([0.05, 0.4, -0.2, 0.0, -0.3, 0.7], [-0.5, 0.0, 2.0]),
    ];
    for (gw, gb) in &grads {
        opt.zero_grad();
        set_grads(&[&w, &b], &[Tensor::from_slice(gw).view([2, 3]), Tensor::from_slice(gb)]);
        opt.step().unwrap();
    }
    assert_eq!(opt.step_count(), 3);
    #[rustfmt::skip]
    let expected_w = [0.4962254762649536, -0.9889202117919922, 0.2317979633808136, 2.0087168216705322, -0.02193269319832325, -0.730783998966217];
    let expected_b = [0.07868414372205734, -0.18165136873722076, 0.2894730567932129];
    assert_close(&to_f64(&w), &expected_w, 1e-6, "w");
    assert_close(&to_f64(&b), &expected_b, 1e-6, "b");

    let state = |name: &str| opt.params().iter().find(|p| p.name == name).unwrap();
    #[rustfmt::skip]
    let w_exp_avg = [-0.013899999670684338, 0.03280000016093254, 0.004300000611692667, -0.014400000683963299, 0.02850000374019146, 0.012399997562170029];
    #[rustfmt::skip]
    let w_exp_avg_sq = [0.0010140100494027138, 0.002091040136292577, 0.001282090088352561, 0.001964160241186619, 0.0037462501786649227, 0.008527359925210476];
    assert_close(&to_f64(&state("w").exp_avg), &w_exp_avg, 1e-7, "w exp_avg");
    assert_close(&to_f64(&state("w").exp_avg_sq), &w_exp_avg_sq, 1e-7, "w exp_avg_sq");
    assert_close(
        &to_f64(&state("b").exp_avg),
        &[0.05350000038743019, -0.11700000613927841, 0.15050001442432404],
        1e-7,
        "b exp_avg",
    );
    assert_close(
        &to_f64(&state("b").exp_avg_sq),
        &[0.012919750064611435, 0.04167900234460831, 0.0523502491414547],
        1e-7,
        "b exp_avg_sq",
    );

    // The state as named tensors, and back into a fresh optimizer.
    let tensors: std::collections::HashMap<String, Tensor> = opt.state_tensors().into_iter().collect();
    let mut keys: Vec<&String> = tensors.keys().collect();
    keys.sort();
    assert_eq!(keys, ["exp_avg.b", "exp_avg.w", "exp_avg_sq.b", "exp_avg_sq.w"]);
    let mut fresh = AdamW::new(&vs, config).unwrap();
    fresh.load_state(3, &tensors).unwrap();
    assert_eq!(fresh.step_count(), 3);
    assert_eq!(to_f64(&fresh.params()[1].exp_avg_sq), to_f64(&state("w").exp_avg_sq));
    let mut missing = tensors;
    missing.remove("exp_avg.w");
    match fresh.load_state(4, &missing) {
        Err(Error::Config(msg)) => assert!(msg.contains("exp_avg.w is missing"), "{msg}"),
        other => panic!("expected a Config error, got {other:?}"),
    }
    assert_eq!(fresh.step_count(), 3, "a failed load changes nothing");
}

#[test]
fn adamw_skips_parameters_without_gradients_and_rejects_bad_settings() {
    let vs = nn::VarStore::new(Device::Cpu);
    let used = vs.root().var_copy("used", &Tensor::from_slice(&[1.0f32, 2.0]));
    let unused = vs.root().var_copy("unused", &Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2]));
    let mut opt = AdamW::new(&vs, AdamWConfig { weight_decay: 0.5, ..Default::default() }).unwrap();
    set_grads(&[&used], &[Tensor::from_slice(&[1.0f32, -1.0])]);
    opt.step().unwrap();
    assert_eq!(to_f64(&unused), [3.0, 4.0], "no gradient: neither updated nor decayed");
    // Step 1 of Adam moves each coordinate by lr against the sign of its gradient.
    assert_close(&to_f64(&used), &[1.0 - 1e-3, 2.0 + 1e-3], 1e-6, "used");

    for bad in [
        AdamWConfig { lr: 0.0, ..Default::default() },
        AdamWConfig { beta1: 1.0, ..Default::default() },
        AdamWConfig { beta2: -0.1, ..Default::default() },
        AdamWConfig { eps: 0.0, ..Default::default() },
        AdamWConfig { weight_decay: -1.0, ..Default::default() },
        AdamWConfig { lr: 1.0, weight_decay: 1.0, ..Default::default() },
    ] {
        assert!(matches!(AdamW::new(&vs, bad), Err(Error::Config(_))), "{bad:?} was accepted");
    }
}

// --- Learning-rate schedule ---------------------------------------------------------------

/// nanoGPT's `get_lr` (train.py) with `learning_rate=1e-3, warmup_iters=100,
/// lr_decay_iters=2000, min_lr=1e-4`, evaluated in Python at these iterations.
const NANOGPT_LR: [(usize, f64); 12] = [
    (0, 9.900990099009901e-06),
    (1, 1.9801980198019803e-05),
    (50, 0.000504950495049505),
    (99, 0.0009900990099009901),
    (100, 0.001),
    (101, 0.0009999993848585915),
    (575, 0.0008681980515339464),
    (1050, 0.00055),
    (1999, 0.00010000061514140841),
    (2000, 0.0001),
    (2001, 0.0001),
    (5000, 0.0001),
];

#[test]
fn schedule_is_nanogpts_get_lr() {
    let config = TrainConfig::cpu_small();
    let schedule = config.schedule();
    assert_eq!(schedule, LrSchedule { lr: 1e-3, warmup_steps: 100, decay_steps: Some(2000), min_lr: 1e-4 });
    for (step, expected) in NANOGPT_LR {
        let lr = config.lr_at(step);
        assert!((lr - expected).abs() <= 1e-15 * expected, "step {step}: {lr} vs nanoGPT {expected}");
    }
}

#[test]
fn schedule_without_decay_is_constant_after_warmup() {
    let default = TrainConfig::default();
    for step in [0, 1, 1500, 2999, 3000, 10_000] {
        assert_eq!(default.lr_at(step), 1e-2, "chapter 3's lr is constant");
    }
    let warm = LrSchedule { lr: 0.1, warmup_steps: 9, decay_steps: None, min_lr: 0.0 };
    assert_eq!(warm.lr_at(0), 0.01);
    assert_eq!(warm.lr_at(4), 0.05);
    assert_eq!(warm.lr_at(9), 0.1);
    assert_eq!(warm.lr_at(1000), 0.1);
    assert_eq!(LrSchedule::constant(3e-4).lr_at(123), 3e-4);
    // Plain cosine, no warmup: lr at 0, halfway in between at the middle, min_lr at the end.
    let cosine = LrSchedule { lr: 1.0, warmup_steps: 0, decay_steps: Some(100), min_lr: 0.5 };
    assert_eq!(cosine.lr_at(0), 1.0);
    assert!((cosine.lr_at(50) - 0.75).abs() < 1e-15);
    assert_eq!(cosine.lr_at(100), 0.5);
}

#[test]
fn schedule_plots_as_a_png() {
    let figure = TrainConfig::cpu_small().schedule().plot(2000, "warmup + cosine").unwrap();
    let reader = png::Decoder::new(std::io::Cursor::new(figure.png())).read_info().expect("a PNG");
    assert_eq!((reader.info().width, reader.info().height), (900, 500));
    assert_eq!(drawn_lines(figure.png()), 1, "the learning rate");
}

// --- Gradient clipping --------------------------------------------------------------------

fn two_params_with_grads(ga: &[f32], gb: &[f32]) -> (nn::VarStore, Vec<Tensor>) {
    let vs = nn::VarStore::new(Device::Cpu);
    let a = vs.root().zeros("a", &[ga.len() as i64]);
    let b = vs.root().zeros("b", &[gb.len() as i64]);
    set_grads(&[&a, &b], &[Tensor::from_slice(ga), Tensor::from_slice(gb)]);
    (vs, vec![a, b])
}

#[test]
fn clipping_scales_the_global_norm_down_to_max_norm() {
    // Gradients (3) and (4, 0): global norm 5, though neither tensor alone is above 4.
    let (_vs, params) = two_params_with_grads(&[3.0], &[4.0, 0.0]);
    assert_eq!(grad_norm(&params).unwrap().double_value(&[]), 5.0);
    let before = clip_grad_norm(&params, 1.0).unwrap();
    assert_eq!(before.double_value(&[]), 5.0, "the pre-clip norm is returned");
    assert_eq!(before.device(), Device::Cpu);
    let after = grad_norm(&params).unwrap().double_value(&[]);
    assert!((after - 1.0).abs() < 1e-6, "norm after clipping: {after}");
    // Same direction: every entry scaled by the same factor 1/5.
    assert_close(&to_f64(&params[0].grad()), &[0.6], 1e-6, "a.grad");
    assert_close(&to_f64(&params[1].grad()), &[0.8, 0.0], 1e-6, "b.grad");
}

#[test]
fn clipping_leaves_small_gradients_unchanged() {
    let (_vs, params) = two_params_with_grads(&[0.3], &[0.4, 0.0]);
    let before = clip_grad_norm(&params, 1.0).unwrap().double_value(&[]);
    assert!((before - 0.5).abs() < 1e-7);
    assert_eq!(to_f64(&params[0].grad()), [0.30000001192092896], "untouched, bit for bit");
    assert_eq!(to_f64(&params[1].grad()), [0.4000000059604645, 0.0]);
    // Unlike clipping by value: clamping each entry to [-0.35, 0.35] would turn (0.3, 0.4)
    // into (0.3, 0.35), another direction, although the norm 0.5 is small.
}

// --- Gradient accumulation ----------------------------------------------------------------

fn grads_of(model: &TinyModel) -> Vec<(String, Vec<f64>)> {
    let mut grads: Vec<(String, Vec<f64>)> =
        model.vs.trainable_variables_named().into_iter().map(|(n, t)| (n, to_f64(&t.grad()))).collect();
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    grads
}

trait Named {
    fn trainable_variables_named(&self) -> Vec<(String, Tensor)>;
}

impl Named for nn::VarStore {
    fn trainable_variables_named(&self) -> Vec<(String, Tensor)> {
        self.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect()
    }
}

fn assert_same_grads(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)], tol: f64) {
    assert_eq!(a.len(), b.len());
    for ((name, ga), (_, gb)) in a.iter().zip(b) {
        assert!(ga.iter().any(|g| *g != 0.0), "{name} has no gradient");
        assert_close(ga, gb, tol, name);
    }
}

#[test]
fn accumulating_k_micro_batches_gives_the_gradient_of_one_k_times_larger_batch() {
    let _rng = rng_lock();
    let (tok, data) = text_data();
    device::seed(3);
    let model = TinyModel::new(tok.vocab_size(), 16, 0.0);
    let (x, y) = data.get_batch(Split::Train, 32, 8, Device::Cpu).unwrap();

    let whole = backward_accumulated(&model, &x, &y, 1, true, Precision::Fp32).unwrap().double_value(&[]);
    let whole_grads = grads_of(&model);
    for p in model.vs.trainable_variables() {
        let _ = p.grad().zero_();
    }
    let accumulated =
        backward_accumulated(&model, &x, &y, 4, true, Precision::Fp32).unwrap().double_value(&[]);
    assert!((whole - accumulated).abs() < 1e-6, "mean loss {whole} vs {accumulated}");
    assert_same_grads(&grads_of(&model), &whole_grads, 1e-5);

    assert!(
        matches!(backward_accumulated(&model, &x, &y, 5, true, Precision::Fp32), Err(Error::Config(_))),
        "32 = 5 × ?"
    );
    assert!(matches!(backward_accumulated(&model, &x, &y, 0, true, Precision::Fp32), Err(Error::Config(_))));
}

#[test]
fn trainer_with_grad_accum_steps_like_a_larger_batch() {
    let _rng = rng_lock();
    let (tok, data) = text_data();
    let step_once = |batch_size, grad_accum| {
        device::seed(11);
        let model = TinyModel::new(tok.vocab_size(), 16, 0.0);
        let config = TrainConfig {
            batch_size,
            grad_accum,
            eval_interval: 1000,
            eval_iters: 1,
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::new(&model, config).unwrap();
        trainer.train_until(&model, &data, 1, |_| {}).unwrap();
        assert_eq!(trainer.step(), 1);
        grads_of(&model) // the gradients of the step just taken are still there
    };
    assert_same_grads(&step_once(8, 4), &step_once(32, 1), 1e-5);
}

// --- The trainer --------------------------------------------------------------------------

fn tiny_config() -> TrainConfig {
    TrainConfig {
        steps: 120,
        batch_size: 8,
        block_size: 16,
        grad_accum: 2,
        lr: 1e-2,
        warmup_steps: 10,
        lr_decay: LrDecay::Cosine,
        min_lr: 1e-3,
        weight_decay: 0.1,
        beta2: 0.99,
        grad_clip: Some(1.0),
        eval_interval: 50,
        eval_iters: 4,
        log_interval: Some(20),
        seed: 5,
        ..TrainConfig::default()
    }
}

#[test]
fn trainer_reports_estimates_and_log_lines_and_learns() {
    let _rng = rng_lock();
    let (tok, data) = text_data();
    device::seed(1);
    let model = TinyModel::new(tok.vocab_size(), 32, 0.1);
    let config = tiny_config();
    let mut trainer = Trainer::new(&model, config.clone()).unwrap();
    let mut events = Vec::new();
    trainer.run(&model, &data, |e| events.push(e.clone())).unwrap();
    assert_eq!(trainer.step(), 120);

    // Progress comes after the first step, then at most every PROGRESS_EVERY, and after the
    // last: how many depends on the machine's speed, so it is checked apart from the rest.
    let progress: Vec<_> = events
        .iter()
        .filter_map(|e| if let TrainEvent::Progress(p) = e { Some(p.clone()) } else { None })
        .collect();
    assert_eq!((progress[0].step, progress[0].until), (1, 120), "{progress:?}");
    assert_eq!(progress.last().map(|p| p.step), Some(120), "the line ends at the last step: {progress:?}");
    assert!(progress.windows(2).all(|w| w[0].step < w[1].step && w[1].until == 120), "{progress:?}");
    assert!(
        progress.iter().all(|p| p.loss.is_finite() && p.secs_left.is_none_or(|s| s >= 0.0)),
        "{progress:?}"
    );
    let order: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Started(s) => Some(format!("start {}..{} of {}", s.step, s.until, s.steps)),
            TrainEvent::Eval(p) => Some(format!("eval {}", p.step)),
            TrainEvent::Log(l) => Some(format!("log {}", l.step)),
            TrainEvent::Stopped { step, .. } => Some(format!("stopped {step}")),
            TrainEvent::EarlyStopped(e) => Some(format!("early stop {}", e.step)),
            TrainEvent::Progress(_) => None,
        })
        .collect();
    // Where the time went: every step, estimates a part of it.
    let times = trainer.times();
    assert_eq!(times.steps, 120);
    assert!(0.0 < times.eval_secs && times.eval_secs < times.total_secs, "{times:?}");
    assert!(times.ms_per_step_without_estimates() < times.ms_per_step(), "{times}");
    assert_eq!(
        order,
        [
            "start 0..120 of 120",
            "eval 0",
            "log 0",
            "log 20",
            "log 40",
            "eval 50",
            "log 60",
            "log 80",
            "eval 100",
            "log 100",
            "eval 120"
        ]
    );
    // The start says what trains, where and how: the first line of a run.
    let started = events[0].to_string();
    assert_eq!(
        started,
        format!(
            "training steps 0..120 of 120: {} parameters on Cpu, fp32",
            llm_from_scratch::plot::thousands(model.num_params() as u64)
        )
    );
    let history = trainer.history().clone();
    assert_eq!(history.points.iter().map(|p| p.step).collect::<Vec<_>>(), [0, 50, 100, 120]);
    assert_eq!(history.logs.iter().map(|l| l.step).collect::<Vec<_>>(), [0, 20, 40, 60, 80, 100]);
    for p in &history.points {
        assert_eq!(p.lr, config.lr_at(p.step), "eval lr at {}", p.step);
    }
    for l in &history.logs {
        assert_eq!(l.lr, config.lr_at(l.step), "log lr at {}", l.step);
        assert!(l.loss.is_finite() && l.grad_norm > 0.0, "{l:?}");
    }
    assert!(history.points[0].grad_norm.is_none() && history.points[0].tokens_per_sec.is_none());
    assert!(history.points[1..].iter().all(|p| p.grad_norm.is_some_and(|n| n > 0.0)));
    assert!(history.points[1..].iter().all(|p| p.tokens_per_sec.is_some_and(|t| t > 0.0)));

    let (first, last) = (&history.points[0], history.last().unwrap());
    assert!((first.val_loss - (tok.vocab_size() as f64).ln()).abs() < 1.5, "{first:?}");
    assert!(
        last.val_loss < first.val_loss - 1.0,
        "val loss {} -> {}: not learning",
        first.val_loss,
        last.val_loss
    );

    // Nothing more to do, and no second estimate at the same step.
    trainer.run(&model, &data, |e| panic!("unexpected {e:?}")).unwrap();
    assert_eq!(trainer.history().points.len(), 4);
    assert_eq!(&trainer.evaluate(&model, &data).unwrap(), last, "the recorded estimate");
    assert_eq!(trainer.history().points.len(), 4);

    // Weights changed after training (as loading others in a notebook does): the estimate is
    // of the model as it is now, and the history keeps what training recorded.
    let recorded = last.clone();
    tch::no_grad(|| {
        for mut t in model.var_store().trainable_variables() {
            let _ = t.f_zero_().unwrap();
        }
    });
    let now = trainer.evaluate(&model, &data).unwrap();
    assert_eq!(now.step, recorded.step);
    assert!(
        (now.val_loss - (tok.vocab_size() as f64).ln()).abs() < 1e-4,
        "all-zero weights: uniform, {now:?}"
    );
    assert_eq!(trainer.history().points.len(), 4);
    assert_eq!(trainer.history().last(), Some(&recorded));
}

#[test]
fn early_stopping_ends_the_run_after_patience_estimates_without_a_new_best() {
    let _rng = rng_lock();
    let (tok, data) = text_data();
    // A learning rate too small to move anything: the estimates only wander with their
    // batches, so a new best soon stops coming.
    let config = TrainConfig {
        steps: 400,
        lr: 1e-12,
        warmup_steps: 0,
        lr_decay: LrDecay::None,
        min_lr: 0.0,
        eval_interval: 4,
        eval_iters: 2,
        log_interval: None,
        early_stop_patience: Some(2),
        ..tiny_config()
    };
    device::seed(3);
    let model = TinyModel::new(tok.vocab_size(), 16, 0.0);
    let mut trainer = Trainer::new(&model, config.clone()).unwrap();
    let mut stops = Vec::new();
    trainer
        .run(&model, &data, |e| {
            if let TrainEvent::EarlyStopped(stop) = e {
                stops.push(stop.clone())
            }
        })
        .unwrap();
    let stop = trainer.early_stop().expect("stopped early");
    assert_eq!(stops, [stop.clone()]);
    assert!(trainer.step() < config.steps, "ran all {} steps", trainer.step());
    let points = &trainer.history().points;
    let best = points.iter().map(|p| p.val_loss).fold(f64::INFINITY, f64::min);
    assert_eq!(stop.best_val_loss, best);
    assert_eq!((stop.step, stop.estimates_since), (trainer.step(), 2));
    assert_eq!(points[points.len() - 3].step, stop.best_step);
    assert!(points[points.len() - 2..].iter().all(|p| p.val_loss >= best));
    assert!(TrainEvent::EarlyStopped(stop.clone())
        .to_string()
        .starts_with(&format!("early stop at step {}", stop.step)));

    // Once stopped, it stays stopped: another call trains nothing.
    let step = trainer.step();
    trainer.run(&model, &data, |_| {}).unwrap();
    assert_eq!(trainer.step(), step);

    // Without patience the same run goes to the end; a patience of 0 is refused.
    let mut all =
        Trainer::new(&model, TrainConfig { steps: 40, early_stop_patience: None, ..config.clone() }).unwrap();
    all.run(&model, &data, |_| {}).unwrap();
    assert_eq!((all.step(), all.early_stop()), (40, None));
    let err =
        Trainer::new(&model, TrainConfig { early_stop_patience: Some(0), ..config }).unwrap_err().to_string();
    assert!(err.contains("early_stop_patience must be at least 1"), "{err}");
}

#[test]
fn training_in_pieces_is_training_at_once() {
    let _rng = rng_lock();
    let (tok, data) = text_data();
    let run = |pieces: &[usize]| {
        device::seed(2);
        let model = TinyModel::new(tok.vocab_size(), 16, 0.2);
        let mut trainer = Trainer::new(&model, tiny_config()).unwrap();
        for &until in pieces {
            trainer.train_until(&model, &data, until, |_| {}).unwrap();
        }
        // Estimates in between pieces do not shift the batches of the steps after them.
        trainer.evaluate(&model, &data).unwrap();
        (tiny_model::weights(&model), without_throughput(trainer.history()))
    };
    let at_once = run(&[120]);
    assert_eq!(run(&[37, 50, 51, 99, 120]), at_once);
}

/// The history without its timings (which differ from run to run).
pub fn without_throughput(history: &History) -> History {
    let mut h = history.clone();
    h.points.iter_mut().for_each(|p| p.tokens_per_sec = None);
    h.logs.iter_mut().for_each(|l| l.tokens_per_sec = None);
    h
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let _rng = rng_lock();
    let (tok, data) = text_data();
    let run = |seed| {
        device::seed(9);
        let model = TinyModel::new(tok.vocab_size(), 16, 0.1);
        let config = TrainConfig { steps: 30, seed, ..tiny_config() };
        let history = train::train(&model, &data, &config, |_| {}).unwrap();
        history.last().unwrap().train_loss
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    assert_ne!(train::step_seed(1, 0), train::step_seed(1, 1));
    assert_ne!(train::step_seed(1, 0), train::eval_seed(1, 0));
    assert_ne!(train::step_seed(1, 0), train::step_seed(2, 0));
}

#[test]
fn trainer_rejects_a_block_size_other_than_the_model_context() {
    struct Short(TinyModel);
    impl LanguageModel for Short {
        fn forward(
            &self,
            i: &Tensor,
            t: Option<&Tensor>,
            train: bool,
        ) -> llm_from_scratch::Result<(Tensor, Option<Tensor>)> {
            self.0.forward(i, t, train)
        }
        fn var_store(&self) -> &nn::VarStore {
            &self.0.vs
        }
        fn var_store_mut(&mut self) -> &mut nn::VarStore {
            &mut self.0.vs
        }
        fn block_size(&self) -> Option<usize> {
            Some(8)
        }
    }
    let _rng = rng_lock();
    let model = Short(TinyModel::new(5, 4, 0.0));
    let config = TrainConfig { block_size: 16, ..TrainConfig::default() };
    match Trainer::new(&model, config) {
        Err(Error::Config(msg)) => {
            assert!(msg.contains("block_size 16 is longer") && msg.contains("set it to 8"), "{msg}")
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
    // Shorter windows than the context would leave positions untrained: refused as well.
    let config = TrainConfig { block_size: 4, ..TrainConfig::default() };
    match Trainer::new(&model, config) {
        Err(Error::Config(msg)) => {
            assert!(
                msg.contains("block_size 4 is shorter")
                    && msg.contains("positions 4..8 would never be trained"),
                "{msg}"
            )
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
    assert!(Trainer::new(&model, TrainConfig { block_size: 8, ..TrainConfig::default() }).is_ok());
}

#[test]
fn events_print_like_nanogpt() {
    let eval = TrainEvent::Eval(EvalPoint {
        step: 250,
        train_loss: 1.98766,
        val_loss: 2.05432,
        lr: 1e-3,
        tokens_per_sec: Some(12345.6),
        grad_norm: Some(0.4567),
    });
    assert_eq!(
        eval.to_string(),
        "step 250: train loss 1.9877, val loss 2.0543, lr 1.00e-3, grad norm 0.457, 12346 tokens/s"
    );
    let log = TrainEvent::Log(LogPoint {
        step: 10,
        loss: 3.21449,
        lr: 1e-4,
        grad_norm: 1.2344,
        tokens_per_sec: None,
    });
    assert_eq!(log.to_string(), "iter 10: loss 3.2145, lr 1.00e-4, grad norm 1.234");
}

// --- Configuration ------------------------------------------------------------------------

#[test]
fn presets_are_the_documented_runs() {
    let d = TrainConfig::default();
    assert_eq!(
        (d.steps, d.batch_size, d.block_size, d.lr, d.eval_interval, d.eval_iters),
        (3000, 32, 8, 1e-2, 300, 200)
    );
    assert_eq!((d.warmup_steps, d.lr_decay, d.grad_clip, d.grad_accum), (0, LrDecay::None, None, 1));
    assert_eq!((d.beta1, d.beta2, d.weight_decay), (0.9, 0.999, 0.01));

    let c = TrainConfig::cpu_small();
    assert_eq!((c.steps, c.batch_size, c.block_size, c.lr), (2000, 12, 64, 1e-3));
    assert_eq!((c.beta1, c.beta2, c.weight_decay), (0.9, 0.99, 0.1));
    assert_eq!((c.warmup_steps, c.lr_decay, c.min_lr), (100, LrDecay::Cosine, 1e-4));
    assert_eq!(c.schedule().decay_steps, Some(2000));
    assert_eq!((c.grad_clip, c.eval_interval, c.eval_iters, c.grad_accum), (Some(1.0), 250, 20, 1));
    assert_eq!(c.tokens_per_step(), 12 * 64);

    let g = TrainConfig::shakespeare_char();
    assert_eq!((g.steps, g.batch_size, g.block_size, g.schedule().decay_steps), (5000, 64, 256, Some(5000)));
    assert_eq!(g.eval_iters, 200);
    let l = TrainConfig::lecture();
    assert_eq!((l.steps, l.batch_size, l.block_size, l.lr, l.eval_interval), (5000, 64, 256, 3e-4, 500));
    assert_eq!((l.warmup_steps, l.lr_decay, l.grad_clip), (0, LrDecay::None, None));
    for config in [d, c, g, l] {
        config.validate().unwrap();
    }
}

#[test]
fn every_field_is_validated_with_a_message_naming_it() {
    let with = |f: fn(&mut TrainConfig)| {
        let mut c = TrainConfig::cpu_small();
        f(&mut c);
        c
    };
    let bad = [
        ("steps", with(|c| c.steps = 0)),
        ("batch_size", with(|c| c.batch_size = 0)),
        ("block_size", with(|c| c.block_size = 0)),
        ("grad_accum", with(|c| c.grad_accum = 0)),
        ("eval_interval", with(|c| c.eval_interval = 0)),
        ("eval_iters", with(|c| c.eval_iters = 0)),
        ("lr", with(|c| c.lr = 0.0)),
        ("lr", with(|c| c.lr = f64::NAN)),
        ("min_lr", with(|c| c.min_lr = -1e-4)),
        ("min_lr", with(|c| c.min_lr = f64::INFINITY)),
        ("min_lr", with(|c| c.min_lr = 1e-2)), // above lr, with decay on
        ("lr_decay", with(|c| c.lr_decay = LrDecay::CosineUntil(100))), // == warmup_steps
        ("lr_decay", with(|c| c.lr_decay = LrDecay::CosineUntil(50))),
        ("warmup_steps", with(|c| c.steps = 100)), // == warmup_steps
        ("warmup_steps", with(|c| c.steps = 50)),
        ("weight_decay", with(|c| c.weight_decay = -0.1)),
        ("weight_decay", with(|c| c.weight_decay = f64::NAN)),
        ("weight_decay", with(|c| c.weight_decay = 1000.0)), // lr × wd = 1
        ("beta1", with(|c| c.beta1 = 1.0)),
        ("beta1", with(|c| c.beta1 = -0.5)),
        ("beta2", with(|c| c.beta2 = 1.5)),
        ("grad_clip", with(|c| c.grad_clip = Some(0.0))),
        ("grad_clip", with(|c| c.grad_clip = Some(f64::NAN))),
        ("log_interval", with(|c| c.log_interval = Some(0))),
    ];
    for (field, config) in bad {
        match config.validate() {
            Err(Error::Config(msg)) => assert!(msg.starts_with(field), "{field}: {msg}"),
            other => panic!("{field}: {config:?} gave {other:?}"),
        }
    }
    // What is allowed: no decay with any min_lr, a decay that ends after the run, no clipping.
    let fine = [
        with(|c| c.lr_decay = LrDecay::None),
        with(|c| {
            c.lr_decay = LrDecay::None;
            c.min_lr = 1.0
        }),
        with(|c| c.lr_decay = LrDecay::CosineUntil(5000)),
        with(|c| c.steps = 101),
        with(|c| c.grad_clip = None),
        with(|c| c.log_interval = None),
        with(|c| c.weight_decay = 0.0),
        with(|c| c.beta1 = 0.0),
    ];
    for config in fine {
        assert!(config.validate().is_ok(), "{config:?}");
    }
}

#[test]
fn config_round_trips_through_json() {
    for lr_decay in [LrDecay::None, LrDecay::Cosine, LrDecay::CosineUntil(1500)] {
        let config =
            TrainConfig { grad_clip: None, log_interval: None, lr_decay, ..TrainConfig::cpu_small() };
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<TrainConfig>(&json).unwrap(), config);
    }
}

#[test]
fn configs_saved_before_lr_decay_still_load() {
    // Checkpoints written before `lr_decay` have `lr_decay_steps`: null or the cosine's end.
    let mut old = serde_json::to_value(TrainConfig::cpu_small()).unwrap();
    let fields = old.as_object_mut().unwrap();
    fields.remove("lr_decay");
    for (saved, decay) in
        [(serde_json::json!(2000), LrDecay::CosineUntil(2000)), (serde_json::json!(null), LrDecay::None)]
    {
        fields.insert("lr_decay_steps".into(), saved);
        let config: TrainConfig = serde_json::from_value(serde_json::Value::Object(fields.clone())).unwrap();
        assert_eq!(config.lr_decay, decay);
    }
}

#[test]
fn the_schedule_follows_a_shortened_run() {
    // Chapter 5's preset cut to 500 steps: the cosine is 500 steps long, not 2000.
    let short = TrainConfig { steps: 500, ..TrainConfig::cpu_small() };
    short.validate().unwrap();
    assert_eq!(short.lr_at(500), short.min_lr); // the rate after the last step
    assert!((short.lr_at(499) - short.min_lr).abs() < 2e-8, "{}", short.lr_at(499)); // the last step
    assert!((short.lr_at(300) - (1e-4 + 0.5 * 9e-4)).abs() < 1e-12); // halfway down the cosine
                                                                     // An explicit decay length stays possible.
    let fixed = TrainConfig { steps: 500, lr_decay: LrDecay::CosineUntil(2000), ..TrainConfig::cpu_small() };
    assert_eq!(fixed.lr_at(500), TrainConfig::cpu_small().lr_at(500));
    // Warmup as long as the run is refused with a message, never silently dropped.
    let e = TrainConfig { steps: 6, ..TrainConfig::cpu_small() }.validate().unwrap_err().to_string();
    assert!(e.contains("warmup_steps (100) must be fewer than steps (6)"), "{e}");
    // And a trained run ends at min_lr: the last estimate reports the rate after the last step.
    let _rng = rng_lock();
    let (tok, data) = text_data();
    device::seed(1);
    let model = TinyModel::new(tok.vocab_size(), 16, 0.0);
    let mut trainer =
        Trainer::new(&model, TrainConfig { steps: 30, eval_interval: 10, ..tiny_config() }).unwrap();
    trainer.run(&model, &data, |_| {}).unwrap();
    let last = trainer.history().last().unwrap();
    assert_eq!((last.step, last.lr), (30, 1e-3));
}

// --- History ------------------------------------------------------------------------------

fn sample_history() -> History {
    let eval = |step, train_loss, val_loss, lr, tps, norm| EvalPoint {
        step,
        train_loss,
        val_loss,
        lr,
        tokens_per_sec: tps,
        grad_norm: norm,
    };
    History {
        points: vec![
            eval(0, 4.174, 4.1812345678901234, 9.900990099009901e-06, None, None),
            eval(250, 2.5, 2.55, 0.0009, Some(12345.6), Some(0.8765432101234)),
            eval(500, 2.1, 2.2, 0.0005, Some(20000.0), Some(0.5)),
        ],
        logs: vec![
            LogPoint { step: 0, loss: 4.2, lr: 9.900990099009901e-06, grad_norm: 2.5, tokens_per_sec: None },
            LogPoint {
                step: 10,
                loss: 3.9,
                lr: 0.000108910891089,
                grad_norm: 1.5,
                tokens_per_sec: Some(5000.0),
            },
        ],
    }
}

#[test]
fn history_round_trips_through_json_with_its_log_lines() {
    let dir = TempDir::new("train_history_json");
    let path = dir.join("history.json");
    let history = sample_history();
    history.save(&path).unwrap();
    assert_eq!(History::load(&path).unwrap(), history);
    assert_eq!(dir.entries(), ["history.json"]);
    // A history saved before the log lines and gradient norms existed still loads.
    let old = r#"{"points": [{"step": 0, "train_loss": 4.0, "val_loss": 4.1, "lr": 0.01, "tokens_per_sec": null}]}"#;
    std::fs::write(&path, old).unwrap();
    let loaded = History::load(&path).unwrap();
    assert_eq!((loaded.points[0].grad_norm, loaded.logs.len()), (None, 0));
}

#[test]
fn history_round_trips_through_csv() {
    let dir = TempDir::new("train_history_csv");
    let path = dir.join("history.csv");
    let history = sample_history();
    history.save(&path).unwrap();
    let csv = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        [
            "step,train_loss,val_loss,lr,tokens_per_sec,grad_norm",
            "0,4.174,4.181234567890123,0.000009900990099009901,,",
            "250,2.5,2.55,0.0009,12345.6,0.8765432101234",
            "500,2.1,2.2,0.0005,20000.0,0.5",
        ]
    );
    // Every number comes back exactly (the log lines live in JSON only).
    let loaded = History::load(&path).unwrap();
    assert_eq!(loaded, History { logs: Vec::new(), ..history.clone() });
    assert_eq!(History::from_csv(&history.to_csv()).unwrap(), loaded);

    // Chapter 3's CSV, without the grad_norm column, still reads.
    let old = "step,train_loss,val_loss,lr,tokens_per_sec\n0,4.5,4.625,0.01,\n100,3.25,3.375,0.01,12345.7\n";
    let old = History::from_csv(old).unwrap();
    assert_eq!(old.points.len(), 2);
    assert_eq!((old.points[1].tokens_per_sec, old.points[1].grad_norm), (Some(12345.7), None));

    assert_eq!(
        history.logs_to_csv().lines().collect::<Vec<_>>(),
        [
            "step,loss,lr,grad_norm,tokens_per_sec",
            "0,4.2,0.000009900990099009901,2.5,",
            "10,3.9,0.000108910891089,1.5,5000.0"
        ]
    );
}

#[test]
fn bad_history_csv_is_a_clear_error() {
    let err = |text: &str| match History::from_csv(text) {
        Err(Error::Config(msg)) => msg,
        other => panic!("expected a Config error for {text:?}, got {other:?}"),
    };
    assert!(err("").contains("empty"));
    assert!(err("step,train_loss,lr\n").contains("'val_loss'"));
    assert!(err("step,train_loss,val_loss,lr\n0,1,2\n").contains("line 2: 3 fields"));
    assert!(err("step,train_loss,val_loss,lr\n0,1,2,3\n1,x,2,3\n").contains("line 3: train_loss: \"x\""));
    assert!(err("step,train_loss,val_loss,lr\n-1,1,2,3\n").contains("step"));
    let dir = TempDir::new("train_history_bad_csv");
    let path = dir.join("h.csv");
    std::fs::write(&path, "nonsense").unwrap();
    match History::load(&path) {
        Err(Error::Config(msg)) => assert!(msg.starts_with(&path.display().to_string()), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn history_plots_loss_and_learning_rate_as_pngs() {
    let history = sample_history();
    for (figure, lines) in
        [(history.plot("loss").unwrap(), 2), (history.plot_lr("learning rate").unwrap(), 1)]
    {
        let reader = png::Decoder::new(std::io::Cursor::new(figure.png())).read_info().expect("a PNG");
        assert_eq!((reader.info().width, reader.info().height), (900, 500));
        assert_eq!(drawn_lines(figure.png()), lines);
    }
    let dir = TempDir::new("train_history_lr_png");
    let path = dir.join("lr.png");
    history.plot_lr("lr").unwrap().save(&path).unwrap();
    assert_eq!(drawn_lines(&std::fs::read(&path).unwrap()), 1);
    assert!(matches!(History::default().plot_lr("empty"), Err(Error::Plot(_))));
}

#[test]
fn a_diverged_runs_nan_losses_survive_a_round_trip_through_json() {
    // JSON has no NaN: serde_json writes null, which must read back as NaN (a checkpoint of a
    // run whose loss went NaN has to load, to be looked at or resumed with a lower lr).
    let point = |loss: f64| EvalPoint {
        step: 5,
        train_loss: loss,
        val_loss: loss,
        lr: 1e-3,
        tokens_per_sec: None,
        grad_norm: None,
    };
    let log = LogPoint { step: 4, loss: f64::NAN, lr: 1e-3, grad_norm: f64::NAN, tokens_per_sec: Some(10.0) };
    let history = History { points: vec![point(2.5), point(f64::NAN)], logs: vec![log] };
    let json = serde_json::to_string(&history).unwrap();
    assert!(json.contains("\"val_loss\":null"), "{json}");
    let back: History = serde_json::from_str(&json).unwrap();
    assert_eq!(back.points[0], point(2.5));
    assert!(back.points[1].train_loss.is_nan() && back.points[1].val_loss.is_nan());
    assert!(back.logs[0].loss.is_nan() && back.logs[0].grad_norm.is_nan() && back.logs[0].step == 4);
}
