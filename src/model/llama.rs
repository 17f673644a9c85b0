//! A Llama-style model (Llama 2 and 3, SmolLM2, TinyLlama and most small open models since):
//! chapter 5's GPT with four changes, and no biases anywhere.
//!
//! ```text
//! idx [B, T] ─ embed_tokens ─ n_layer × Block ─ norm ─ lm_head ─ logits [B, T, V]
//! Block: x + attention(RMSNorm(x)), then x + SwiGLU(RMSNorm(x))
//! ```
//!
//! - **RMSNorm** for LayerNorm ([`RmsNorm`]): no mean taken away, no bias;
//! - **rotary positions** for the table of learned positions ([`Rotary`]): the queries and
//!   keys are rotated by their position, so attention sees distances, and nothing is added to
//!   the tokens (Llama 3.1 and 3.2 stretch the slow rotations for long contexts: [`RopeScaling`]);
//! - **SwiGLU** for the GELU MLP ([`SwiGlu`]): a gated MLP of three matrices;
//! - **grouped-query attention** ([`GroupedQueryAttention`]): fewer key/value heads than query
//!   heads, so the KV cache is smaller by `n_head / n_kv_head`.
//!
//! The variables are named as Hugging Face's `LlamaForCausalLM` names them
//! (`model.layers.0.self_attn.q_proj.weight`, ...). The weights start as the GPT's: `N(0, 0.02)`,
//! the two projections into the residual stream (`o_proj`, `down_proj`) `N(0, 0.02/√(2·n_layer))`.

use super::gpt::GptConfig;
use super::layers::embedding::{copy_into_larger_vocab, embedding, token_ids_shape};
use super::layers::{GroupedQueryAttention, KvCache, RmsNorm, RopeScaling, Rotary, SwiGlu, INIT_STD};
use super::lm::{cross_entropy, LanguageModel};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

/// The sizes and settings of a [`Llama`], named as Hugging Face's `LlamaConfig` names them
/// where the GPT has no name of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    /// The longest context (`max_position_embeddings`): the rotary tables' length.
    pub block_size: usize,
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (`num_key_value_heads`), a divisor of `n_head`.
    pub n_kv_head: usize,
    /// The width of the residual stream (`hidden_size`).
    pub n_embd: usize,
    /// The SwiGLU's hidden width.
    pub intermediate_size: usize,
    /// The base of the rotary angles.
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    /// The LM head is the token embedding.
    pub tie_word_embeddings: bool,
    /// Llama 3's stretch of the slow rotary frequencies for long contexts, if any. A config
    /// saved before there was one has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
}

impl LlamaConfig {
    /// A GPT's sizes made Llama: its blocks, heads, width, context and vocabulary, half as
    /// many key/value heads as heads, a SwiGLU of `8/3 · d` for the GPT's MLP of `d`
    /// (`2 · C · d` weights in both), the head untied if the GPT's is, rotary base 10,000.
    pub fn like_gpt(gpt: &GptConfig) -> Self {
        Self {
            vocab_size: gpt.vocab_size,
            block_size: gpt.block_size,
            n_layer: gpt.n_layer,
            n_head: gpt.n_head,
            n_kv_head: (gpt.n_head / 2).max(1),
            n_embd: gpt.n_embd,
            intermediate_size: (2 * gpt.mlp_width()).div_ceil(3),
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: gpt.tie_weights,
            rope_scaling: None,
        }
    }

    /// Chapter 5's `cpu_small` GPT made Llama ([`LlamaConfig::like_gpt`]): 4 blocks of 4 heads
    /// (2 key/value heads), 128 channels, 64 characters of context, the head tied as the
    /// GPT's, and a SwiGLU of 342 (three matrices of `C × 342` hold what the GPT's two of
    /// `C × 4C` hold, to 0.2%).
    pub fn cpu_small() -> Self {
        Self { vocab_size: 65, ..Self::like_gpt(&GptConfig::cpu_small()) }
    }

    /// Hugging Face's SmolLM2-135M: 30 blocks of 9 heads (3 key/value heads), 576 channels, a
    /// SwiGLU of 1,536, 49,152 tokens, the head tied; 134,515,008 parameters.
    pub fn smollm2_135m() -> Self {
        Self {
            vocab_size: 49_152,
            block_size: 8_192,
            n_layer: 30,
            n_head: 9,
            n_kv_head: 3,
            n_embd: 576,
            intermediate_size: 1_536,
            rope_theta: 100_000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: true,
            rope_scaling: None,
        }
    }

    /// Meta's Llama 3.2 1B: 16 blocks of 32 heads (8 key/value heads), 2,048 channels, a
    /// SwiGLU of 8,192, 128,256 tokens, the head tied, a context of 131,072 stretched from
    /// 8,192 by its rotary scaling; 1,235,814,400 parameters.
    pub fn llama_3_2_1b() -> Self {
        Self {
            vocab_size: 128_256,
            block_size: 131_072,
            n_layer: 16,
            n_head: 32,
            n_kv_head: 8,
            n_embd: 2_048,
            intermediate_size: 8_192,
            rope_theta: 500_000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: true,
            rope_scaling: Some(RopeScaling {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8_192,
            }),
        }
    }

    /// Channels per head.
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// The parameters of a model of this config, from the sizes alone.
    pub fn num_params(&self) -> usize {
        let (v, c, f) = (self.vocab_size, self.n_embd, self.intermediate_size);
        let kv = self.n_kv_head * self.head_size();
        let block = c                      // input_layernorm
            + c * c + 2 * c * kv + c * c    // q_proj, k_proj and v_proj, o_proj
            + c                            // post_attention_layernorm
            + 3 * c * f; //                   gate_proj, up_proj, down_proj
        let head = if self.tie_word_embeddings { 0 } else { v * c };
        v * c + self.n_layer * block + c + head
    }

    /// Bytes the KV cache takes per token of context, in float32: every layer's keys and
    /// values of the `n_kv_head` heads.
    pub fn kv_cache_bytes_per_token(&self) -> usize {
        2 * self.n_layer * self.n_kv_head * self.head_size() * 4
    }

    /// Bytes of memory training on batches of `batch_size × block_size` tokens takes,
    /// estimated as [`crate::model::GptConfig::training_bytes`] estimates a GPT's: weights,
    /// gradients and AdamW's two moments, float32 activations of 16 widths per token and layer
    /// (the SwiGLU's hidden width counted as its three matrices' share), and the logits three times.
    pub fn training_bytes(&self, batch_size: usize, block_size: usize) -> u64 {
        let (b, t, c) = (batch_size as u64, block_size as u64, self.n_embd as u64);
        let per_layer = b * t * (16 * 4 * c + 4 * self.n_head as u64);
        16 * self.num_params() as u64
            + self.n_layer as u64 * per_layer
            + 3 * 4 * b * t * self.vocab_size as u64
    }

    /// The initial standard deviation of the projections into the residual stream.
    pub fn proj_std(&self) -> f64 {
        INIT_STD / (2.0 * self.n_layer as f64).sqrt()
    }

    /// Check the sizes fit together; the error says what to change.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("block_size", self.block_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_kv_head", self.n_kv_head),
            ("n_embd", self.n_embd),
            ("intermediate_size", self.intermediate_size),
        ];
        if let Some((field, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("{field} must be at least 1")));
        }
        if !self.n_embd.is_multiple_of(self.n_head) || !self.head_size().is_multiple_of(2) {
            return Err(Error::Config(format!(
                "n_embd ({}) must be n_head ({}) heads of an even size: rotary positions turn channels in pairs",
                self.n_embd, self.n_head
            )));
        }
        if !self.n_head.is_multiple_of(self.n_kv_head) {
            return Err(Error::Config(format!(
                "n_head ({}) must be a multiple of n_kv_head ({})",
                self.n_head, self.n_kv_head
            )));
        }
        let valid = self.rope_theta > 1.0 && self.rope_theta.is_finite() && self.rms_norm_eps > 0.0;
        if !valid {
            return Err(Error::Config(format!(
                "rope_theta must be above 1 and rms_norm_eps above 0, got {} and {}",
                self.rope_theta, self.rms_norm_eps
            )));
        }
        self.rope_scaling.as_ref().map_or(Ok(()), RopeScaling::validate)
    }
}

/// One Llama block: `x + attention(RMSNorm(x))`, then `x + SwiGLU(RMSNorm(x))`.
#[derive(Debug)]
pub struct LlamaBlock {
    pub input_layernorm: RmsNorm,
    pub self_attn: GroupedQueryAttention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: SwiGlu,
}

impl LlamaBlock {
    /// `x` `[B, T, C]` through the block; with a cache, as the positions after those it holds
    /// (their keys and values added to layer `layer`'s entry).
    pub fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let normed = self.input_layernorm.forward(x)?;
        let attended = match cache {
            Some((cache, layer)) => self.self_attn.forward_cached(&normed, rotary, cache, layer)?,
            None => self.self_attn.forward(&normed, rotary)?,
        };
        let x = x.f_add(&attended)?;
        Ok(x.f_add(&self.mlp.forward(&self.post_attention_layernorm.forward(&x)?))?)
    }
}

/// A Llama-style language model (see the module docs). Owns its parameters.
#[derive(Debug)]
pub struct Llama {
    pub vs: nn::VarStore,
    pub config: LlamaConfig,
    /// Token embedding `[V, C]`.
    pub embed_tokens: Tensor,
    pub layers: Vec<LlamaBlock>,
    pub norm: RmsNorm,
    /// LM head weight `[V, C]`: the same tensor as `embed_tokens` when tied.
    pub lm_head: Tensor,
    /// The rotary tables, `block_size` positions (not variables: neither trained nor saved).
    pub rotary: Rotary,
}

impl Llama {
    /// A fresh model (see the module docs for its initial weights), drawn from libtorch's
    /// global generator.
    pub fn new(config: LlamaConfig, device: Device) -> Result<Self> {
        config.validate()?;
        let vs = nn::VarStore::new(device);
        let m = vs.root() / "model";
        let c = config.n_embd;
        let embed_tokens = embedding(&(&m / "embed_tokens"), config.vocab_size, c); // [V, C]
        let layers = (0..config.n_layer)
            .map(|i| {
                let l = &m / "layers" / i;
                Ok(LlamaBlock {
                    input_layernorm: RmsNorm::new(&(&l / "input_layernorm"), c, config.rms_norm_eps),
                    self_attn: GroupedQueryAttention::new(
                        &(&l / "self_attn"),
                        c,
                        config.n_head,
                        config.n_kv_head,
                        config.proj_std(),
                    )?,
                    post_attention_layernorm: RmsNorm::new(
                        &(&l / "post_attention_layernorm"),
                        c,
                        config.rms_norm_eps,
                    ),
                    mlp: SwiGlu::new(&(&l / "mlp"), c, config.intermediate_size, config.proj_std()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(&(&m / "norm"), c, config.rms_norm_eps);
        let lm_head = match config.tie_word_embeddings {
            true => embed_tokens.shallow_clone(),
            false => embedding(&(vs.root() / "lm_head"), config.vocab_size, c),
        };
        let rotary = Rotary::scaled(
            config.block_size,
            config.head_size(),
            config.rope_theta,
            config.rope_scaling.as_ref(),
            device,
        )?;
        Ok(Self { vs, config, embed_tokens, layers, norm, lm_head, rotary })
    }

    /// This model with a vocabulary of `vocab_size` tokens (at least its own), as
    /// [`crate::model::Gpt::with_vocab_size`] grows a GPT's: new rows of the embedding and an
    /// untied head drawn as a fresh model's, every other weight copied.
    pub fn with_vocab_size(&self, vocab_size: usize) -> Result<Llama> {
        let grown = Llama::new(LlamaConfig { vocab_size, ..self.config.clone() }, self.vs.device())?;
        copy_into_larger_vocab(&self.vs, self.config.vocab_size, &grown.vs, vocab_size)?;
        Ok(grown)
    }

    /// The final hidden states `[B, T, C]` of `idx` `[B, T]`: every block, then `norm`.
    pub fn hidden_states(&self, idx: &Tensor) -> Result<Tensor> {
        let mut x = self.embed(idx, 0)?; // [B, T, C]
        for block in &self.layers {
            x = block.forward(&x, &self.rotary, None)?; // [B, T, C]
        }
        self.norm.forward(&x)
    }

    /// [`Llama::hidden_states`] for the positions after those held in `cache`, adding theirs.
    fn hidden_states_cached(&self, idx: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t) = token_ids_shape(idx)?;
        cache.check(self.layers.len(), b as usize, t as usize)?;
        let _no_grad = tch::no_grad_guard();
        let mut x = self.embed(idx, cache.len())?;
        for (layer, block) in self.layers.iter().enumerate() {
            x = block.forward(&x, &self.rotary, Some((&mut *cache, layer)))?; // [B, T, C]
        }
        cache.advance(t as usize);
        self.norm.forward(&x)
    }

    /// The token embeddings `[B, T, C]` of `idx`, positions `start..start + T` (which must
    /// fit in the context).
    fn embed(&self, idx: &Tensor, start: usize) -> Result<Tensor> {
        let (_, t) = token_ids_shape(idx)?;
        if start + t as usize > self.config.block_size {
            return Err(Error::Config(format!(
                "a context of {} positions is longer than block_size {}",
                start + t as usize,
                self.config.block_size
            )));
        }
        Ok(Tensor::f_embedding(&self.embed_tokens, idx, -1, false, false)?)
    }
}

impl LanguageModel for Llama {
    fn forward(
        &self,
        idx: &Tensor,
        targets: Option<&Tensor>,
        _train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let logits = self.hidden_states(idx)?.f_matmul(&self.lm_head.f_tr()?)?; // [B, T, V]
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
        Some(self.config.block_size)
    }

    /// A cache of the `n_kv_head` heads only.
    fn kv_cache(&self, batch: usize) -> Result<Option<KvCache>> {
        let c = &self.config;
        let kind = (self.embed_tokens.kind(), self.embed_tokens.device());
        KvCache::new(c.n_layer, batch, c.n_kv_head, c.head_size(), c.block_size, kind).map(Some)
    }

    fn forward_cached(&self, idx: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        Ok(self.hidden_states_cached(idx, cache)?.f_matmul(&self.lm_head.f_tr()?)?)
        // [B, T, V]
    }
}
