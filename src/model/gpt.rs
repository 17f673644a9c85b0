//! The GPT of chapter 5: a decoder-only transformer, read top to bottom like nanoGPT's
//! `model.py`.
//!
//! ```text
//! idx [B, T] ─ wte ─┐
//!                   + ─ dropout ─ n_layer × Block ─ ln_f ─ lm_head ─ logits [B, T, V]
//! 0..T ──────── wpe ┘
//! Block: x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))      (pre-LayerNorm, residual stream)
//! ```
//!
//! **Positions** enter as a second embedding added to the tokens'. GPT-2 (and every preset)
//! learns it: `wpe` is a trained `[block_size, C]` table. [`Position::Sinusoidal`] uses instead
//! the fixed table of "Attention Is All You Need" ([`sinusoidal_positions`]), with the token
//! embeddings scaled by `√C` as in the paper: nothing to train, so such a model has
//! `block_size · C` fewer parameters.
//!
//! One [`GptConfig`] describes both famous runs. [`GptConfig::lecture`] is the model at the
//! end of Karpathy's "Let's build GPT" (ReLU, biases everywhere but in the query/key/value
//! projections, a biased and untied LM head: 10,788,929 parameters);
//! [`GptConfig::shakespeare_char`] is nanoGPT's `train_shakespeare_char` model (GELU, no
//! biases, the LM head tied to the token embedding: 10,646,784 parameters without the
//! position embeddings, the number nanoGPT prints). Both use nanoGPT's fused
//! [`CausalSelfAttention`](super::CausalSelfAttention); the lecture's separate per-head
//! projections have the same shapes, so the counts are the same (chapter 4 checks the two
//! forms agree). Dropout, in training only, follows nanoGPT: on the embeddings' sum (which the
//! lecture does not have), on the attention weights, and on the output of each attention and
//! MLP.
//!
//! **Initial weights** (nanoGPT's `_init_weights`): every Linear and Embedding weight
//! `N(0, 0.02)`, every bias zero, LayerNorm weight one; and the projections that write into
//! the residual stream (`attn.c_proj` and `mlp.c_proj`) `N(0, 0.02/√(2·n_layer))`, so the
//! stream's variance does not grow with depth (GPT-2 paper, section 2.3). With these the
//! logits start near zero and the loss at step 0 is close to `ln(vocab_size)`.
//!
//! Variable names follow nanoGPT's `state_dict` (`transformer.h.0.attn.c_attn.weight`, …).

use super::layers::attention::{check_dropout, AttentionConfig};
use super::layers::embedding::{copy_into_larger_vocab, embed, embedding, lm_head, token_ids_shape};
use super::layers::{
    sinusoidal_positions, Activation, Block, BlockConfig, KvCache, LayerNorm, MlpConfig, Position, INIT_STD,
};
use super::lm::{cross_entropy, LanguageModel};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

/// Every size and switch of a GPT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Number of distinct token ids (`V`).
    pub vocab_size: usize,
    /// Longest context, in tokens (`T` at most this).
    pub block_size: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; must divide `n_embd`.
    pub n_head: usize,
    /// Width of the residual stream (`C`).
    pub n_embd: usize,
    /// Dropout probability, in `[0, 1)`, used only in training.
    pub dropout: f64,
    /// Biases in the LayerNorms, `attn.c_proj` and the MLP (nanoGPT's `bias`).
    pub bias: bool,
    /// A bias in the fused query/key/value projection `attn.c_attn`. The lecture's heads
    /// have none (`nn.Linear(n_embd, head_size, bias=False)`) while its other layers do;
    /// nanoGPT uses `bias` for it, GPT-2 has one.
    pub qkv_bias: bool,
    pub activation: Activation,
    /// Use the token embedding `[V, C]` as the LM head's weight too (counted once).
    pub tie_weights: bool,
    /// A bias on the LM head (the lecture has one, nanoGPT not).
    pub lm_head_bias: bool,
    /// The MLP's hidden width; `None` is GPT's `4 · n_embd` (as in Hugging Face's GPT-2
    /// `n_inner`), which follows a changed `n_embd` (see [`GptConfig::mlp_width`]).
    #[serde(default)]
    pub d_ff: Option<usize>,
    /// Learned or sinusoidal positions. A config saved before there was a choice has learned.
    #[serde(default)]
    pub position: Position,
}

impl GptConfig {
    /// The model at the end of the lecture: 6 blocks of 6 heads, 384 channels, 256 tokens of
    /// context, ReLU, dropout 0.2; 10,788,929 parameters.
    pub fn lecture() -> Self {
        Self {
            vocab_size: 65,
            block_size: 256,
            n_layer: 6,
            n_head: 6,
            n_embd: 384,
            dropout: 0.2,
            bias: true,
            qkv_bias: false,
            activation: Activation::Relu,
            tie_weights: false,
            lm_head_bias: true,
            d_ff: None,
            position: Position::Learned,
        }
    }

    /// nanoGPT's `config/train_shakespeare_char.py`: the same sizes as the lecture, with GELU,
    /// no biases and weight tying; 10,646,784 parameters besides the position embeddings.
    pub fn shakespeare_char() -> Self {
        Self {
            bias: false,
            activation: Activation::Gelu,
            tie_weights: true,
            lm_head_bias: false,
            ..Self::lecture()
        }
    }

    /// The [`GptConfig::shakespeare_char`] architecture, small enough to train on a laptop
    /// CPU in minutes: 4 blocks of 4 heads, 128 channels, 64 tokens of context, no dropout;
    /// 795,904 parameters besides the position embeddings.
    pub fn cpu_small() -> Self {
        Self { n_layer: 4, n_head: 4, n_embd: 128, block_size: 64, dropout: 0.0, ..Self::shakespeare_char() }
    }

    /// OpenAI's GPT-2 (the 124M model, Hugging Face's `openai-community/gpt2`): 12 blocks of
    /// 12 heads, 768 channels, 1,024 tokens of context, the 50,257 tokens of its byte-level
    /// BPE, biases everywhere, the tanh GELU and the LM head tied to the token embedding;
    /// 124,439,808 parameters. Dropout is 0 (nanoGPT's choice for loading it; the published
    /// config trained with 0.1). Load its weights with [`crate::model::hf::load`].
    pub fn gpt2() -> Self {
        Self {
            vocab_size: 50_257,
            block_size: 1024,
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            dropout: 0.0,
            bias: true,
            qkv_bias: true,
            activation: Activation::GeluTanh,
            tie_weights: true,
            lm_head_bias: false,
            d_ff: None,
            position: Position::Learned,
        }
    }

    /// GPT-2 medium: 24 layers, 16 heads, 1,024 channels; 354,823,168 parameters.
    pub fn gpt2_medium() -> Self {
        Self { n_layer: 24, n_head: 16, n_embd: 1024, ..Self::gpt2() }
    }

    /// GPT-2 large: 36 layers, 20 heads, 1,280 channels; 774,030,080 parameters.
    pub fn gpt2_large() -> Self {
        Self { n_layer: 36, n_head: 20, n_embd: 1280, ..Self::gpt2() }
    }

    /// GPT-2 XL: 48 layers, 25 heads, 1,600 channels; 1,557,611,200 parameters.
    pub fn gpt2_xl() -> Self {
        Self { n_layer: 48, n_head: 25, n_embd: 1600, ..Self::gpt2() }
    }

    /// The trainable parameters a [`Gpt`] of this config has, counted from the sizes alone
    /// (nothing is allocated: the count of a model too big to build is known beforehand).
    pub fn num_params(&self) -> usize {
        let (v, t, c, f) = (self.vocab_size, self.block_size, self.n_embd, self.mlp_width());
        let bias = |n: usize, on: bool| if on { n } else { 0 };
        let layer_norm = c + bias(c, self.bias);
        let block = layer_norm                              // ln_1
            + 3 * c * c + bias(3 * c, self.qkv_bias)        // attn.c_attn
            + c * c + bias(c, self.bias)                    // attn.c_proj
            + layer_norm                                    // ln_2
            + c * f + bias(f, self.bias)                    // mlp.c_fc
            + f * c + bias(c, self.bias); //                   mlp.c_proj
        let positions = match self.position {
            Position::Learned => t * c,
            Position::Sinusoidal => 0,
        };
        let head = if self.tie_weights { 0 } else { v * c } + bias(v, self.lm_head_bias);
        v * c + positions + self.n_layer * block + layer_norm + head
    }

    /// Bytes of memory training this model takes, estimated (chapter 9 measures it beside),
    /// in float32 with AdamW on batches of `batch_size × block_size` tokens: the weights, their
    /// gradients and AdamW's two moments (4 bytes each per parameter), and the activations the
    /// backward pass keeps. Korthikanti et al. (2022) count a layer's as `s·b·h·(34 + 5·a·s/h)`
    /// bytes: 16 values of the width per token at 2 bytes, plus 1-byte dropout masks, plus the
    /// `T × T` attention scores (`5·a·s/h`). Here the values are float32 (16 × 4 bytes per token
    /// and channel), masks count only with dropout, and the scores not at all: the fused
    /// attention never stores them, only one log-sum-exp per head and position. (With dropout,
    /// libtorch's CPU attention may take its unfused path and keep them: not counted.) The
    /// logits count three times (logits, log-softmax, their gradient).
    pub fn training_bytes(&self, batch_size: usize, block_size: usize) -> u64 {
        let (b, t, c) = (batch_size as u64, block_size as u64, self.n_embd as u64);
        let masks = if self.dropout > 0.0 { 2 * c } else { 0 }; // after attention and after the MLP
        let per_layer = b * t * (16 * 4 * c + masks + 4 * self.n_head as u64);
        let logits = 3 * 4 * b * t * self.vocab_size as u64;
        16 * self.num_params() as u64 + self.n_layer as u64 * per_layer + logits
    }

    /// The MLP's hidden width: `d_ff`, or `4 · n_embd`.
    pub fn mlp_width(&self) -> usize {
        self.d_ff.unwrap_or(4 * self.n_embd)
    }

    /// Check the sizes fit together; the error says what to change.
    pub fn validate(&self) -> Result<()> {
        self.validate_named(&|field| field.to_owned())
    }

    /// [`GptConfig::validate`], each setting called what `name` makes of its field's name
    /// (the command line passes its flags': `n_embd` is `--n-embd` there).
    pub fn validate_named(&self, name: &dyn Fn(&str) -> String) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("block_size", self.block_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
            ("d_ff", self.mlp_width()),
        ];
        if let Some((field, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("{} must be at least 1", name(field))));
        }
        let (c, nh) = (self.n_embd, self.n_head);
        if c % nh != 0 {
            let heads = (1..=c).filter(|h| c % h == 0).min_by_key(|h| h.abs_diff(nh)).unwrap_or(1);
            let down = c / nh * nh;
            let embd = if down > 0 && c - down <= down + nh - c { down } else { down + nh };
            let (n_embd, n_head) = (name("n_embd"), name("n_head"));
            return Err(Error::Config(format!(
                "{n_embd} ({c}) must be divisible by {n_head} ({nh}), since each head gets n_embd / n_head \
                 channels: try {n_head} = {heads} or {n_embd} = {embd}"
            )));
        }
        check_dropout(&name("dropout"), self.dropout)
    }

    /// The initial standard deviation of the projections that write into the residual stream
    /// (`attn.c_proj`, `mlp.c_proj`): nanoGPT's `0.02/√(2·n_layer)`, so that the stream's
    /// variance does not grow with depth.
    pub fn proj_std(&self) -> f64 {
        INIT_STD / (2.0 * self.n_layer as f64).sqrt()
    }

    /// The attention of each block: `c_attn` biased if `qkv_bias`, `c_proj` if `bias`.
    pub fn attention(&self) -> AttentionConfig {
        AttentionConfig {
            n_embd: self.n_embd,
            n_head: self.n_head,
            qkv_bias: self.qkv_bias,
            proj_bias: self.bias,
            proj_std: self.proj_std(),
            dropout: self.dropout,
        }
    }

    /// The MLP of each block: `C -> mlp_width -> C`, biased if `bias`.
    pub fn mlp(&self) -> MlpConfig {
        MlpConfig {
            n_embd: self.n_embd,
            hidden: self.mlp_width(),
            bias: self.bias,
            activation: self.activation,
            dropout: self.dropout,
            proj_std: self.proj_std(),
        }
    }

    /// Each block: the attention, the MLP, and LayerNorms biased if `bias`.
    pub fn block(&self) -> BlockConfig {
        BlockConfig { attention: self.attention(), mlp: self.mlp(), norm_bias: self.bias }
    }
}

impl From<&GptConfig> for AttentionConfig {
    fn from(config: &GptConfig) -> Self {
        config.attention()
    }
}

impl From<&GptConfig> for BlockConfig {
    fn from(config: &GptConfig) -> Self {
        config.block()
    }
}

/// A GPT language model. Owns its parameters (`vs`), so a notebook can keep it across cells.
/// Its `Debug` (what a notebook cell shows for `model`) is a summary: the config, the
/// parameter count and the device, not every tensor of the var store.
pub struct Gpt {
    pub vs: nn::VarStore,
    pub config: GptConfig,
    /// Token embedding `[V, C]`.
    pub wte: Tensor,
    /// Position embedding `[block_size, C]`: a trained variable, or with
    /// [`Position::Sinusoidal`] the fixed [`sinusoidal_positions`] (a buffer: not in `vs`, so
    /// neither trained nor saved).
    pub wpe: Tensor,
    pub blocks: Vec<Block>,
    pub ln_f: LayerNorm,
    /// LM head weight `[V, C]`: the same tensor as `wte` when `config.tie_weights`.
    pub lm_head: Tensor,
    /// LM head bias `[V]`, if `config.lm_head_bias`.
    pub lm_head_bias: Option<Tensor>,
}

impl std::fmt::Debug for Gpt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        write!(
            f,
            "Gpt: {} parameters on {:?}\n  {} layers, {} heads, {} channels, context {}, vocabulary {}\n  {:?}",
            crate::plot::thousands(LanguageModel::num_params(self) as u64),
            self.vs.device(),
            c.n_layer,
            c.n_head,
            c.n_embd,
            c.block_size,
            c.vocab_size,
            c
        )
    }
}

impl Gpt {
    /// A fresh model with nanoGPT's initial weights (see the module docs), drawn from
    /// libtorch's global generator: seed it first ([`crate::device::seed`]) to repeat a run.
    pub fn new(config: GptConfig, device: Device) -> Result<Self> {
        config.validate()?;
        // The weights must fit before any is allocated: past that, libtorch aborts.
        let bytes = 4 * config.num_params() as u64;
        if let Some(available) = crate::device::available_memory(device).filter(|&a| bytes > a) {
            return Err(Error::Config(format!(
                "a GPT of {} parameters needs {} for its weights alone, and this machine has {} of \
                 memory available: choose a smaller n_layer, n_embd or vocab_size",
                config.num_params(),
                crate::device::format_bytes(bytes),
                crate::device::format_bytes(available)
            )));
        }
        let vs = nn::VarStore::new(device);
        let tr = vs.root() / "transformer";
        let wte = embedding(&(&tr / "wte"), config.vocab_size, config.n_embd); // [V, C]
        let wpe = match config.position {
            Position::Learned => embedding(&(&tr / "wpe"), config.block_size, config.n_embd), // [block_size, C]
            Position::Sinusoidal => sinusoidal_positions(config.block_size, config.n_embd, device),
        };
        let block = config.block();
        let blocks = (0..config.n_layer)
            .map(|i| Block::new(&(&tr / "h" / i), block.clone()))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = LayerNorm::new(&(&tr / "ln_f"), config.n_embd, config.bias);
        let (lm_head, lm_head_bias) =
            lm_head(&(vs.root() / "lm_head"), &wte, config.tie_weights, config.lm_head_bias);
        Ok(Self { vs, config, wte, wpe, blocks, ln_f, lm_head, lm_head_bias })
    }

    /// This model with a vocabulary of `vocab_size` tokens (at least its own): the token
    /// embedding and an untied LM head get new rows for the new ids, drawn as a fresh model's
    /// (from libtorch's global generator, a zero bias), and every other weight is copied. For
    /// a tokenizer that grew to fit finetuning data ([`crate::tokenizer::CharTokenizer::extended`]):
    /// the old ids give the same logits as before.
    pub fn with_vocab_size(&self, vocab_size: usize) -> Result<Gpt> {
        if self.vs.variables().keys().any(|name| name.contains(".lora_")) {
            return Err(Error::Config("merge the LoRA adapters before growing the vocabulary".into()));
        }
        let grown = Gpt::new(GptConfig { vocab_size, ..self.config.clone() }, self.vs.device())?;
        copy_into_larger_vocab(&self.vs, self.config.vocab_size, &grown.vs, vocab_size)?;
        Ok(grown)
    }

    /// LoRA adapters of rank `rank` and scale `alpha / rank` on every block's four
    /// projections (`attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`; see
    /// [`crate::model::layers::linear`]), and every other variable frozen: from here only the
    /// adapters train (AdamW and [`LanguageModel::num_params`] see only them). The model's
    /// output does not change until they do.
    pub fn add_lora(&mut self, rank: usize, alpha: f64) -> Result<()> {
        for (_, t) in self.vs.variables() {
            let _ = t.set_requires_grad(false);
        }
        let root = self.vs.root();
        for (i, block) in self.blocks.iter_mut().enumerate() {
            let h = &root / "transformer" / "h" / i;
            for (part, name, layer) in block.projections_mut() {
                layer.add_lora(&(&h / part / name), rank, alpha)?;
            }
        }
        Ok(())
    }

    /// Fold every adapter into its weight ([`crate::model::Linear::merge`]), take the adapters'
    /// variables out of the var store and let every weight train again: the same outputs from
    /// an ordinary GPT, which saves, loads and exports as one.
    pub fn merge_lora(&mut self) -> Result<()> {
        for block in &mut self.blocks {
            for (_, _, layer) in block.projections_mut() {
                layer.merge()?;
            }
        }
        let mut variables = self
            .vs
            .variables_
            .lock()
            .map_err(|_| Error::Config("the var store's lock is poisoned".into()))?;
        variables.named_variables.retain(|name, _| !name.contains(".lora_"));
        let kept: std::collections::HashSet<usize> =
            variables.named_variables.values().map(|t| t.data_ptr() as usize).collect();
        variables.trainable_variables.retain(|v| kept.contains(&(v.tensor.data_ptr() as usize)));
        for t in variables.named_variables.values() {
            let _ = t.set_requires_grad(true);
        }
        Ok(())
    }

    /// nanoGPT's `get_num_params(non_embedding=True)`: the trainable parameters less the
    /// learned position embeddings. (The token embedding stays in: tied, it is also the LM
    /// head.) With sinusoidal positions there is nothing to take away.
    pub fn num_params_non_embedding(&self) -> usize {
        match self.config.position {
            Position::Learned => self.num_params() - self.wpe.numel(),
            Position::Sinusoidal => self.num_params(),
        }
    }

    /// The attention weights of every block for `idx` `[B, T]`, in evaluation mode: one
    /// `[B, nh, T, T]` per layer, row `t` saying how much position `t` reads each position
    /// `0..=t` (each row sums to 1).
    pub fn attention_weights(&self, idx: &Tensor) -> Result<Vec<Tensor>> {
        let _no_grad = tch::no_grad_guard();
        let mut x = self.embed(idx, 0, false)?; // [B, T, C]
        let mut maps = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (next, weights) = block.forward_with_weights(&x)?;
            maps.push(weights);
            x = next;
        }
        Ok(maps)
    }

    /// Everything before the head: the embeddings and every block, `[B, T]` to `[B, T, C]`.
    fn trunk(&self, idx: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.embed(idx, 0, train)?; // [B, T, C]
        for block in &self.blocks {
            x = block.forward(&x, train)?; // [B, T, C]
        }
        Ok(x)
    }

    /// [`Gpt::trunk`] for the positions after those held in `cache`, adding theirs to it.
    fn trunk_cached(&self, idx: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t) = token_ids_shape(idx)?;
        let (b, t) = (b as usize, t as usize);
        cache.check(self.blocks.len(), b, t)?;
        let _no_grad = tch::no_grad_guard();
        let mut x = self.embed(idx, cache.len(), false)?; // [B, T, C]
        for (layer, block) in self.blocks.iter().enumerate() {
            x = block.forward_cached(&x, cache, layer)?; // [B, T, C]
        }
        cache.advance(t);
        Ok(x)
    }

    /// The final hidden states `[B, T, C]` of `idx` `[B, T]`: every block, then `ln_f`. The
    /// LM head reads them; so does a classifier's head in its place (chapter 10).
    pub fn hidden_states(&self, idx: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.ln_f.forward(&self.trunk(idx, train)?))
    }

    /// The last LayerNorm and the LM head: `[..., C]` to logits `[..., V]`.
    fn head(&self, x: &Tensor) -> Tensor {
        self.ln_f.forward(x).linear(&self.lm_head, self.lm_head_bias.as_ref())
    }

    /// Token plus position embeddings `[B, T, C]` of `idx` `[B, T]` at positions
    /// `start..start + T`, after dropout.
    fn embed(&self, idx: &Tensor, start: usize, train: bool) -> Result<Tensor> {
        let c = &self.config;
        embed(&self.wte, &self.wpe, idx, start, c.position.token_scale(c.n_embd), c.dropout, train)
    }
}

impl LanguageModel for Gpt {
    fn forward(
        &self,
        idx: &Tensor,
        targets: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let logits = self.head(&self.trunk(idx, train)?); // [B, T, V]
        let loss = targets.map(|y| cross_entropy(&logits, y)).transpose()?; // []
        Ok((logits, loss))
    }

    fn kv_cache(&self, batch: usize) -> Result<Option<KvCache>> {
        let c = &self.config;
        let kind = (self.wte.kind(), self.wte.device());
        KvCache::new(c.n_layer, batch, c.n_head, c.n_embd / c.n_head, c.block_size, kind).map(Some)
    }

    fn forward_cached(&self, idx: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        Ok(self.head(&self.trunk_cached(idx, cache)?)) // [B, T, V]
    }

    fn next_logits(&self, idx: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let _no_grad = tch::no_grad_guard();
        let x = match cache {
            Some(cache) => self.trunk_cached(idx, cache)?,
            None => self.trunk(idx, false)?,
        }; // [B, T, C]
           // The head on the last position only: with GPT-2's 50,257 tokens, the logits of a
           // whole window of 1,024 would be 200 MB per step, all but the last row thrown away.
        Ok(self.head(&x.f_select(1, -1)?)) // [B, V]
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    fn block_size(&self) -> Option<usize> {
        Some(self.config.block_size)
    }
}
