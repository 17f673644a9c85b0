//! The bigram model of chapter 3: the next token depends on the current one only.

use super::lm::{cross_entropy, LanguageModel};
use crate::Result;
use tch::{nn, Device, Tensor};

/// A `V × V` table whose row `i` holds the logits of the token that follows token `i`.
/// That is the whole model: `V²` parameters (4,225 for 65 characters), no context.
#[derive(Debug)]
pub struct Bigram {
    pub vs: nn::VarStore,
    token_embedding: nn::Embedding,
}

impl Bigram {
    /// A fresh model whose logits start near zero (`N(0, 0.02)`), so every next token starts
    /// out (almost) equally likely and the loss at step 0 is about `ln(V)`. PyTorch's default
    /// `nn.Embedding` init, `N(0, 1)`, starts confidently wrong instead (chapter 3 shows both).
    pub fn new(vocab_size: usize, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let n = vocab_size as i64;
        let init =
            nn::EmbeddingConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 }, ..Default::default() };
        let token_embedding = nn::embedding(vs.root() / "token_embedding", n, n, init);
        Self { vs, token_embedding }
    }
}

impl LanguageModel for Bigram {
    fn forward(
        &self,
        idx: &Tensor,
        targets: Option<&Tensor>,
        _train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        // The fallible lookup: an id >= V is an error from libtorch, not a crash.
        let logits = Tensor::f_embedding(&self.token_embedding.ws, idx, -1, false, false)?; // [B, T, V]
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
