//! The pieces every model here is built from. Nothing in this folder imports a model: each
//! model's config converts itself into the small configs these layers take
//! ([`AttentionConfig`], [`MlpConfig`], [`BlockConfig`]), so a second architecture adds
//! layers here and a file beside [`crate::model::Gpt`], not copies.
//!
//! - [`Linear`], with a slot for a LoRA adapter ([`linear`]);
//! - [`LayerNorm`], and Llama's [`RmsNorm`] ([`norm`]);
//! - the feed-forward [`Mlp`] and its [`Activation`], and Llama's [`SwiGlu`] ([`mlp`]);
//! - learned or sinusoidal [`Position`]s ([`position`]), and [`Rotary`] ones, with Llama 3's
//!   [`RopeScaling`] ([`rotary`]);
//! - the token embedding, the LM head and the check of a model's input ([`embedding`]);
//! - nanoGPT's [`CausalSelfAttention`] and Llama's [`GroupedQueryAttention`] ([`attention`]),
//!   and the [`KvCache`] they fill when generating ([`kv_cache`]);
//! - the pre-norm transformer [`Block`] over those ([`block`]).
//!
//! Initial weights follow nanoGPT: weights `N(0, 0.02)` ([`INIT_STD`]), biases zero,
//! LayerNorm weights one; the projections that write into the residual stream get the
//! standard deviation their model's config gives them (the GPT's `0.02/√(2·n_layer)`).

pub mod attention;
pub mod block;
pub mod embedding;
pub mod kv_cache;
pub mod linear;
pub mod mlp;
pub mod norm;
pub mod position;
pub mod rotary;

pub use attention::{AttentionConfig, CausalSelfAttention, GroupedQueryAttention};
pub use block::{Block, BlockConfig};
pub use kv_cache::KvCache;
pub use linear::{Linear, Lora, INIT_STD};
pub use mlp::{Activation, Mlp, MlpConfig, SwiGlu};
pub use norm::{LayerNorm, RmsNorm, LAYER_NORM_EPS};
pub use position::{sinusoidal_positions, Position};
pub use rotary::{RopeScaling, Rotary};
