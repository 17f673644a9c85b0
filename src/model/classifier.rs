//! A classifier on a pretrained GPT (chapter 10): the GPT reads a message, and a new linear
//! head turns its final hidden state at the message's last token into one score per class.
//!
//! Why the last token: with causal attention it is the one position that has read the whole
//! message (a mean over positions would mix in states that saw only a prefix), and it is what
//! the pretrained model was trained to summarise: the context for the next token. Messages of
//! different lengths share a batch padded on the right ([`crate::data::pad`]); each row is read
//! at its own last real token, which never attends to the padding, so the padding cannot
//! change a score.
//!
//! It is also a [`LanguageModel`] whose "vocabulary" is the classes: [`LanguageModel::forward`]
//! scores every position, and its targets are [`crate::data::IGNORE`] but at each row's last
//! real token ([`crate::data::LabelledData`] makes them so), so the loss is the classifier's
//! and the trainer, its estimates and checkpoints train it as they train a GPT.

use super::gpt::{Gpt, GptConfig};
use super::layers::{Linear, INIT_STD};
use super::lm::{cross_entropy, LanguageModel};
use crate::data::{pad, Padded};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// Which of a classifier's weights train (Raschka's three ways, chapter 10).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Tune {
    /// Every weight.
    All,
    /// The last block, the final LayerNorm and the head; the rest frozen.
    LastBlock,
    /// LoRA adapters of this rank and alpha on every block's projections ([`Gpt::add_lora`]),
    /// and the head (new, and small); the GPT's own weights frozen.
    Lora { rank: usize, alpha: f64 },
}

/// What rebuilds a [`Classifier`] (a checkpoint's model config): its GPT's, its classes, and
/// how it trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    pub gpt: GptConfig,
    pub n_classes: usize,
    pub tune: Tune,
}

impl ClassifierConfig {
    /// A classifier of this config on `device`, its weights fresh: load a checkpoint's (or a
    /// pretrained GPT's) into it.
    pub fn build(&self, device: Device) -> Result<Classifier> {
        Classifier::new(Gpt::new(self.gpt.clone(), device)?, self.n_classes, self.tune)
    }

    /// Every parameter the classifier has, trainable or frozen: its GPT's, the head's, and
    /// with LoRA the adapters' (`rank · (in + out)` for each of a block's four projections).
    pub fn num_params(&self) -> usize {
        let (c, f) = (self.gpt.n_embd, self.gpt.mlp_width());
        let adapters = match self.tune {
            Tune::Lora { rank, .. } => self.gpt.n_layer * rank * ((c + 3 * c) + (c + c) + (c + f) + (f + c)),
            Tune::All | Tune::LastBlock => 0,
        };
        self.gpt.num_params() + c * self.n_classes + self.n_classes + adapters
    }

    /// [`GptConfig::validate_named`], then the classes and the LoRA settings.
    pub fn validate_named(&self, name: &dyn Fn(&str) -> String) -> Result<()> {
        self.gpt.validate_named(name)?;
        if self.n_classes < 2 {
            return Err(Error::Config(format!(
                "a classifier needs at least 2 classes, got {}",
                self.n_classes
            )));
        }
        if let Tune::Lora { rank, alpha } = self.tune {
            if rank == 0 || !(alpha > 0.0 && alpha.is_finite()) {
                return Err(Error::Config(format!(
                    "{} must be at least 1 and {} a positive number, got {rank} and {alpha}",
                    name("lora_rank"),
                    name("lora_alpha")
                )));
            }
        }
        Ok(())
    }
}

/// A GPT with a classification head (`classifier.weight` `[n_classes, C]`, `classifier.bias`,
/// in the GPT's var store). The LM head stays in the model, unused.
#[derive(Debug)]
pub struct Classifier {
    pub gpt: Gpt,
    pub head: Linear,
    pub n_classes: usize,
    pub tune: Tune,
}

impl Classifier {
    /// `gpt` (pretrained, typically) with a new head of `n_classes` (at least 2) outputs,
    /// `N(0, 0.02)` with a zero bias, and only what `tune` says left to train.
    pub fn new(gpt: Gpt, n_classes: usize, tune: Tune) -> Result<Self> {
        ClassifierConfig { gpt: gpt.config.clone(), n_classes, tune }.validate_named(&|f| f.to_owned())?;
        let head = Linear::new(&(gpt.vs.root() / "classifier"), gpt.config.n_embd, n_classes, true, INIT_STD);
        let mut classifier = Self { gpt, head, n_classes, tune };
        match tune {
            Tune::All => {}
            Tune::LastBlock => {
                let last = format!("transformer.h.{}.", classifier.gpt.blocks.len().saturating_sub(1));
                for (name, t) in classifier.gpt.vs.variables() {
                    let trains = name.starts_with(&last)
                        || name.starts_with("transformer.ln_f.")
                        || name.starts_with("classifier.");
                    let _ = t.set_requires_grad(trains);
                }
            }
            Tune::Lora { rank, alpha } => {
                classifier.gpt.add_lora(rank, alpha)?; // freezes the GPT and the head
                let head = &classifier.head;
                for t in [&head.ws].into_iter().chain(&head.bs) {
                    let _ = t.set_requires_grad(true);
                }
            }
        }
        Ok(classifier)
    }

    /// The config that rebuilds this classifier.
    pub fn config(&self) -> ClassifierConfig {
        ClassifierConfig { gpt: self.gpt.config.clone(), n_classes: self.n_classes, tune: self.tune }
    }

    /// The class scores `[B, n_classes]` of a padded batch: each row's final hidden state at
    /// its last real token (`lengths - 1`), through the head. `train` switches dropout on.
    pub fn classify(&self, batch: &Padded, train: bool) -> Result<Tensor> {
        let hidden = self.gpt.hidden_states(&batch.ids, train)?; // [B, T, C]
        let c = hidden.size()[2];
        let last = (&batch.lengths - 1).f_to_kind(Kind::Int64)?; // [B]
        let index = last.f_view([-1, 1, 1])?.f_expand([-1, 1, c], false)?; // [B, 1, C]
        let at_last = hidden.f_gather(1, &index, false)?.f_squeeze_dim(1)?; // [B, C]
        Ok(self.head.forward(&at_last)) // [B, n_classes]
    }

    /// The share of `rows` (token sequences with their labels) whose highest score is their
    /// label, `batch_size` rows at a time, each cut to the model's context, in evaluation mode.
    pub fn accuracy(&self, rows: &[(Vec<u32>, usize)], pad_id: u32, batch_size: usize) -> Result<f64> {
        if rows.is_empty() || batch_size == 0 {
            return Err(Error::Config(
                "accuracy needs at least one row and a batch size of at least 1".into(),
            ));
        }
        let _no_grad = tch::no_grad_guard();
        let (device, block) = (self.gpt.vs.device(), self.gpt.config.block_size);
        let mut correct = 0;
        for chunk in rows.chunks(batch_size) {
            let ids: Vec<Vec<u32>> =
                chunk.iter().map(|(ids, _)| ids[..ids.len().min(block)].to_vec()).collect();
            let scores = self.classify(&pad(&ids, pad_id, device)?, false)?; // [B, n_classes]
            let predicted = Vec::<i64>::try_from(&scores.f_argmax(-1, false)?)?;
            correct += predicted.iter().zip(chunk).filter(|(p, (_, label))| **p == *label as i64).count();
        }
        Ok(correct as f64 / rows.len() as f64)
    }
}

impl LanguageModel for Classifier {
    /// Class scores `[B, T, n_classes]` at every position, and the mean cross-entropy against
    /// `targets` `[B, T]` where they are not ignored (each row's last real token).
    fn forward(
        &self,
        idx: &Tensor,
        targets: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let logits = self.head.forward(&self.gpt.hidden_states(idx, train)?); // [B, T, n_classes]
        let loss = targets.map(|y| cross_entropy(&logits, y)).transpose()?;
        Ok((logits, loss))
    }

    fn var_store(&self) -> &nn::VarStore {
        &self.gpt.vs
    }

    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.gpt.vs
    }

    fn block_size(&self) -> Option<usize> {
        Some(self.gpt.config.block_size)
    }
}
