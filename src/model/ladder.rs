//! The lecture's ladder (chapter 4): the GPT's block built up one piece at a time, so a
//! reader can train each step and see what it buys.
//!
//! ```text
//! idx ─ wte + wpe ─ n_layer × [ attn ─ (mlp) ] ─ (ln_f) ─ lm_head ─ logits
//!   attn:  a = attn(ln_1?(x));  x = residual ? x + a : a
//!   mlp:   m = mlp(ln_2?(x));   x = residual ? x + m : m
//! ```
//!
//! [`LadderConfig`] is a [`GptConfig`] plus three switches (the MLP, the residual additions,
//! the LayerNorms) and a choice of initial weights; with all three switches on, a [`Ladder`]
//! computes what chapter 5's [`super::Gpt`] of that config computes (the same variables,
//! by the same names: copied into a `Gpt`, they give the same logits). [`lecture_ladder`]
//! lists the rungs in the lecture's order, at its small size (32 channels, 8 tokens of
//! context).
//!
//! **Initial weights.** The lecture's ladder ran with PyTorch's default initialisation
//! ([`Init::PyTorch`]): embeddings `N(0, 1)`, every Linear's weight and bias uniform in
//! `±1/√fan_in`. Its `gpt.py` adds nanoGPT's `N(0, 0.02)` later ("not covered in the original
//! GPT video"), and that init ([`Init::Gpt`]) is made for the finished block: without the
//! LayerNorms, signals that start 50 times smaller than the embeddings' `N(0, 1)` make the
//! lower rungs train far more slowly.
//!
//! One difference from the lecture's code: attention here is the fused
//! [`CausalSelfAttention`] (chapter 4 checks it equals the lecture's per-head form), so even
//! the one-head rung has its output projection `c_proj`.

use super::gpt::GptConfig;
use super::layers::embedding::{embed, embedding, lm_head};
use super::layers::{CausalSelfAttention, LayerNorm, Mlp, Position};
use super::lm::{cross_entropy, LanguageModel};
use crate::{Error, Result};
use tch::{nn, Tensor};

/// How a [`Ladder`]'s weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// PyTorch's defaults, as in the lecture's ladder: embeddings `N(0, 1)`; each Linear's
    /// weight and bias uniform in `±1/√fan_in` (`nn.Linear`'s Kaiming-uniform with `a = √5`);
    /// LayerNorm weight one, bias zero.
    PyTorch,
    /// The GPT's (nanoGPT's `_init_weights`, see [`crate::model::gpt`]).
    Gpt,
}

/// A GPT config, which of the block's pieces are in, and how the weights start.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderConfig {
    /// Sizes, dropout, biases, activation and head, as for a GPT.
    pub gpt: GptConfig,
    /// Each block has the feed-forward MLP after its attention.
    pub mlp: bool,
    /// Each piece's output is added to its input (`x + f(x)`) instead of replacing it.
    pub residual: bool,
    /// A LayerNorm before each piece (pre-norm) and one before the head.
    pub layer_norm: bool,
    pub init: Init,
}

/// The rungs of the lecture's ladder, each its predecessor plus one change: one head of 32
/// channels; 4 heads of 8; + the MLP; 3 blocks; + residual connections; + LayerNorm;
/// + dropout 0.2. The lecture's model ([`GptConfig::lecture`]: ReLU, biases, an untied and
/// biased head) at 32 channels and 8 tokens of context, for `vocab_size` tokens, with the
/// lecture's initial weights ([`Init::PyTorch`]).
pub fn lecture_ladder(vocab_size: usize) -> Vec<(&'static str, LadderConfig)> {
    let gpt = GptConfig {
        vocab_size,
        block_size: 8,
        n_embd: 32,
        n_head: 1,
        n_layer: 1,
        dropout: 0.0,
        ..GptConfig::lecture()
    };
    let mut rung = LadderConfig { gpt, mlp: false, residual: false, layer_norm: false, init: Init::PyTorch };
    let mut rungs = vec![("one head", rung.clone())];
    let mut climb = |name: &'static str, change: &dyn Fn(&mut LadderConfig)| {
        change(&mut rung);
        rungs.push((name, rung.clone()));
    };
    climb("4 heads", &|r| r.gpt.n_head = 4);
    climb("+ MLP", &|r| r.mlp = true);
    climb("3 blocks", &|r| r.gpt.n_layer = 3);
    climb("+ residual", &|r| r.residual = true);
    climb("+ LayerNorm", &|r| r.layer_norm = true);
    climb("+ dropout 0.2", &|r| r.gpt.dropout = 0.2);
    rungs
}

/// One block of a rung: attention, then the MLP if the rung has one.
#[derive(Debug)]
pub struct LadderBlock {
    pub ln_1: Option<LayerNorm>,
    pub attn: CausalSelfAttention,
    pub ln_2: Option<LayerNorm>,
    pub mlp: Option<Mlp>,
}

/// A model of one rung. Variable names are the GPT's (`transformer.h.0.attn.c_attn.weight`, …).
pub struct Ladder {
    pub vs: nn::VarStore,
    pub config: LadderConfig,
    pub wte: Tensor, // [V, C]
    pub wpe: Tensor, // [block_size, C]
    pub blocks: Vec<LadderBlock>,
    pub ln_f: Option<LayerNorm>,
    pub lm_head: Tensor,              // [V, C] (the same tensor as wte when tied)
    pub lm_head_bias: Option<Tensor>, // [V]
}

impl std::fmt::Debug for Ladder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        write!(
            f,
            "Ladder: {} parameters; {} × {} heads, {} channels, MLP {}, residual {}, LayerNorm {}, dropout {}",
            crate::plot::thousands(self.num_params() as u64),
            c.gpt.n_layer,
            c.gpt.n_head,
            c.gpt.n_embd,
            c.mlp,
            c.residual,
            c.layer_norm,
            c.gpt.dropout
        )
    }
}

impl Ladder {
    /// A fresh model, its weights drawn from libtorch's global generator as `config.init`
    /// says (seed it first to repeat a run). With [`Init::Gpt`] they are drawn in the GPT's
    /// order: seeded alike, the rung with every piece in starts with the weights of
    /// `Gpt::new(config.gpt)`.
    pub fn new(config: LadderConfig, device: tch::Device) -> Result<Self> {
        let g = &config.gpt;
        if g.position != Position::Learned {
            return Err(Error::Config("the ladder uses learned positions only".into()));
        }
        g.validate()?;
        let vs = nn::VarStore::new(device);
        let tr = vs.root() / "transformer";
        let wte = embedding(&(&tr / "wte"), g.vocab_size, g.n_embd); // [V, C]
        let wpe = embedding(&(&tr / "wpe"), g.block_size, g.n_embd); // [block_size, C]
        let norm = |path: nn::Path| config.layer_norm.then(|| LayerNorm::new(&path, g.n_embd, g.bias));
        let blocks = (0..g.n_layer)
            .map(|i| {
                let p = &tr / "h" / i;
                Ok(LadderBlock {
                    ln_1: norm(&p / "ln_1"),
                    attn: CausalSelfAttention::new(&(&p / "attn"), g)?,
                    ln_2: if config.mlp { norm(&p / "ln_2") } else { None }, // only the MLP reads it
                    mlp: config.mlp.then(|| Mlp::new(&(&p / "mlp"), &g.mlp())),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_f = norm(&tr / "ln_f");
        let (lm_head, lm_head_bias) = lm_head(&(vs.root() / "lm_head"), &wte, g.tie_weights, g.lm_head_bias);
        if config.init == Init::PyTorch {
            pytorch_init(&vs)?;
        }
        Ok(Self { vs, config, wte, wpe, blocks, ln_f, lm_head, lm_head_bias })
    }

    /// `x + f(x)` with residual connections, else `f(x)`.
    fn add(&self, x: &Tensor, fx: Tensor) -> Tensor {
        if self.config.residual {
            x + fx
        } else {
            fx
        }
    }
}

/// Draw every variable of `vs` again as PyTorch's modules initialise theirs: the embeddings
/// (`wte`, `wpe`) `N(0, 1)`; a Linear's weight `[out, in]` and its bias uniform in `±1/√in`;
/// LayerNorms (`ln_*`) left at one and zero. In name order, so a seed repeats it.
fn pytorch_init(vs: &nn::VarStore) -> Result<()> {
    let _no_grad = tch::no_grad_guard();
    let variables = vs.variables();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    for name in names {
        let (layer, _) = name.rsplit_once('.').unwrap_or(("", name));
        if layer.ends_with("wte") || layer.ends_with("wpe") {
            let _ = variables[name].shallow_clone().f_normal_(0.0, 1.0)?; // in place
        } else if !layer.rsplit('.').next().is_some_and(|l| l.starts_with("ln_")) {
            let weight = variables.get(&format!("{layer}.weight")).ok_or_else(|| {
                Error::Config(format!("{name}: no weight beside it to take its fan-in from"))
            })?;
            let bound = 1.0 / (weight.size()[1] as f64).sqrt(); // fan_in: the weight's [out, in]
            let _ = variables[name].shallow_clone().f_uniform_(-bound, bound)?; // in place
        }
    }
    Ok(())
}

/// `norm(x)` if the rung has the LayerNorm, else `x` itself.
fn maybe_norm(norm: &Option<LayerNorm>, x: &Tensor) -> Tensor {
    match norm {
        Some(norm) => norm.forward(x),
        None => x.shallow_clone(),
    }
}

impl LanguageModel for Ladder {
    fn forward(
        &self,
        idx: &Tensor,
        targets: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let g = &self.config.gpt;
        let mut x = embed(&self.wte, &self.wpe, idx, 0, 1.0, g.dropout, train)?; // [B, T, C]
        for block in &self.blocks {
            let a = block.attn.forward(&maybe_norm(&block.ln_1, &x), train)?; // [B, T, C]
            x = self.add(&x, a);
            if let Some(mlp) = &block.mlp {
                let m = mlp.forward(&maybe_norm(&block.ln_2, &x), train); // [B, T, C]
                x = self.add(&x, m);
            }
        }
        let logits = maybe_norm(&self.ln_f, &x).linear(&self.lm_head, self.lm_head_bias.as_ref()); // [B, T, V]
        let loss = targets.map(|y| cross_entropy(&logits, y)).transpose()?;
        Ok((logits, loss))
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    fn block_size(&self) -> Option<usize> {
        Some(self.config.gpt.block_size)
    }
}
