//! A tiny language model for the training and checkpoint tests: an embedding and an output
//! layer (2-D weights), a gain and a bias (1-D, so no weight decay), dropout, and a
//! non-trainable buffer — every kind of variable the optimizer and checkpoints must handle,
//! in a model small enough to train for hundreds of steps in a test.
#![allow(dead_code)]

use llm_from_scratch::data::TokenData;
use llm_from_scratch::model::{cross_entropy, LanguageModel};
use llm_from_scratch::tokenizer::{CharTokenizer, Tokenizer};
use llm_from_scratch::Result;
use tch::{nn, Device, Tensor};

#[derive(Debug)]
pub struct TinyModel {
    pub vs: nn::VarStore,
    pub emb: Tensor,       // [V, C]
    pub gain: Tensor,      // [C]
    pub head: Tensor,      // [V, C]
    pub head_bias: Tensor, // [V]
    pub dropout: f64,
}

impl TinyModel {
    pub fn new(vocab_size: usize, n_embd: usize, dropout: f64) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let (v, c) = (vocab_size as i64, n_embd as i64);
        let root = vs.root();
        let emb = (&root / "emb").var("weight", &[v, c], nn::Init::Randn { mean: 0.0, stdev: 0.5 });
        let gain = root.var("gain", &[c], nn::Init::Const(1.0));
        let head = (&root / "head").var("weight", &[v, c], nn::Init::Randn { mean: 0.0, stdev: 0.2 });
        let head_bias = (&root / "head").var("bias", &[v], nn::Init::Const(0.0));
        let _ = root.ones_no_train("buffer", &[2]);
        Self { vs, emb, gain, head, head_bias, dropout }
    }
}

impl LanguageModel for TinyModel {
    fn forward(
        &self,
        idx: &Tensor,
        targets: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let h = Tensor::f_embedding(&self.emb, idx, -1, false, false)? * &self.gain; // [B, T, C]
        let h = h.f_dropout(self.dropout, train)?;
        let logits = h.f_linear(&self.head, Some(&self.head_bias))?; // [B, T, V]
        let loss = targets.map(|y| cross_entropy(&logits, y)).transpose()?;
        Ok((logits, loss))
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }
}

/// A small corpus with some structure, as characters.
pub fn text_data() -> (CharTokenizer, TokenData) {
    let text =
        "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.\n".repeat(40);
    let tok = CharTokenizer::from_text(&text);
    let data = TokenData::new(&tok.encode(&text).unwrap(), 0.9).unwrap();
    (tok, data)
}

/// Every variable of `model`, by name, as flat f64 vectors.
pub fn weights(model: &dyn LanguageModel) -> Vec<(String, Vec<f64>)> {
    let mut vars: Vec<(String, Vec<f64>)> = model
        .var_store()
        .variables()
        .into_iter()
        .map(|(name, t)| {
            (name, Vec::<f64>::try_from(t.detach().reshape([-1]).to_kind(tch::Kind::Double)).unwrap())
        })
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}
