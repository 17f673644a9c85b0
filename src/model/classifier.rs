//! A classifier on a pretrained GPT (chapter 10): the GPT reads a message, and a new linear
//! head turns its final hidden state at the message's last token into one score per class.
//!
//! Why the last token: with causal attention it is the one position that has read the whole
//! message (a mean over positions would mix in states that saw only a prefix), and it is what
//! the pretrained model was trained to summarise: the context for the next token. Messages of
//! different lengths share a batch padded on the right ([`crate::data::pad`]); each row is read
//! at its own last real token, which never attends to the padding, so the padding cannot
//! change a score.

use super::gpt::Gpt;
use super::layers::{Linear, INIT_STD};
use crate::data::Padded;
use crate::{Error, Result};
use tch::{Kind, Tensor};

/// A GPT with a classification head (`classifier.weight` `[n_classes, C]`, `classifier.bias`,
/// in the GPT's var store). The LM head stays in the model, unused.
#[derive(Debug)]
pub struct Classifier {
    pub gpt: Gpt,
    pub head: Linear,
    pub n_classes: usize,
}

impl Classifier {
    /// `gpt` with a new head of `n_classes` (at least 2) outputs, `N(0, 0.02)`, zero bias.
    pub fn new(gpt: Gpt, n_classes: usize) -> Result<Self> {
        if n_classes < 2 {
            return Err(Error::Config(format!("a classifier needs at least 2 classes, got {n_classes}")));
        }
        let head = Linear::new(&(gpt.vs.root() / "classifier"), gpt.config.n_embd, n_classes, true, INIT_STD);
        Ok(Self { gpt, head, n_classes })
    }

    /// The class scores `[B, n_classes]` of a padded batch: each row's final hidden state at
    /// its last real token (`lengths - 1`), through the head. `train` switches dropout on.
    pub fn forward(&self, batch: &Padded, train: bool) -> Result<Tensor> {
        let hidden = self.gpt.hidden_states(&batch.ids, train)?; // [B, T, C]
        let c = hidden.size()[2];
        let last = (&batch.lengths - 1).f_to_kind(Kind::Int64)?; // [B]
        let index = last.f_view([-1, 1, 1])?.f_expand([-1, 1, c], false)?; // [B, 1, C]
        let at_last = hidden.f_gather(1, &index, false)?.f_squeeze_dim(1)?; // [B, C]
        Ok(self.head.forward(&at_last)) // [B, n_classes]
    }

    /// The mean cross-entropy of `forward`'s scores against `labels` `[B]` (class indices).
    pub fn loss(&self, batch: &Padded, labels: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.forward(batch, train)?.f_cross_entropy_loss::<Tensor>(
            labels,
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        )?)
    }
}
