//! One config for every model the library builds, tagged by its architecture, and the model
//! it builds.
//!
//! A run folder's `config.json` and the checkpoints `llm` writes keep the model as a
//! [`ModelConfig`]: the architecture's settings with `"arch": "gpt"` beside them. A config
//! written before there was a tag is a GPT's, so every earlier run folder and checkpoint still
//! loads. A second architecture is one more variant here and in [`AnyModel`], which the
//! command line trains, samples and evaluates through [`LanguageModel`], whatever it holds.
//! A classifier (chapter 10: a GPT with a class head) is one too, `"arch": "classifier"`.

use super::classifier::{Classifier, ClassifierConfig, Tune};
use super::gpt::{Gpt, GptConfig};
use super::layers::KvCache;
use super::llama::{Llama, LlamaConfig};
use super::lm::LanguageModel;
use crate::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

/// A model's settings, tagged by its architecture (`"arch"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum ModelConfig {
    /// Chapter 5's GPT (GPT-2's architecture).
    Gpt(GptConfig),
    /// Chapter 10's GPT with a class head.
    Classifier(ClassifierConfig),
    /// A Llama-style model (RMSNorm, rotary positions, SwiGLU, grouped-query attention).
    Llama(LlamaConfig),
}

impl<'de> Deserialize<'de> for ModelConfig {
    /// The variant its `"arch"` names; without one (a config from before the tag), a GPT.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut value = serde_json::Value::deserialize(deserializer)?;
        let arch = match value.as_object_mut() {
            Some(fields) => fields.remove("arch"),
            None => return Err(D::Error::custom("a model config is an object of settings")),
        };
        match arch.as_ref().map(|a| a.as_str()) {
            None | Some(Some("gpt")) => {
                GptConfig::deserialize(value).map(ModelConfig::Gpt).map_err(D::Error::custom)
            }
            Some(Some("classifier")) => {
                ClassifierConfig::deserialize(value).map(ModelConfig::Classifier).map_err(D::Error::custom)
            }
            Some(Some("llama")) => {
                LlamaConfig::deserialize(value).map(ModelConfig::Llama).map_err(D::Error::custom)
            }
            Some(_) => Err(D::Error::custom(format!(
                "unknown model arch {} (known: gpt, classifier, llama)",
                arch.unwrap_or_default()
            ))),
        }
    }
}

impl From<GptConfig> for ModelConfig {
    fn from(config: GptConfig) -> Self {
        ModelConfig::Gpt(config)
    }
}

impl ModelConfig {
    /// A fresh model of this config on `device`, its initial weights drawn from libtorch's
    /// global generator (seed it first to repeat a run).
    pub fn build(&self, device: Device) -> Result<AnyModel> {
        match self {
            ModelConfig::Gpt(config) => Ok(AnyModel::Gpt(Gpt::new(config.clone(), device)?)),
            ModelConfig::Classifier(config) => Ok(AnyModel::Classifier(config.build(device)?)),
            ModelConfig::Llama(config) => Ok(AnyModel::Llama(Llama::new(config.clone(), device)?)),
        }
    }

    /// The GPT of the config: the model, or the one under a classifier's head (a Llama has none).
    pub fn gpt(&self) -> Option<&GptConfig> {
        match self {
            ModelConfig::Gpt(c) | ModelConfig::Classifier(ClassifierConfig { gpt: c, .. }) => Some(c),
            ModelConfig::Llama(_) => None,
        }
    }

    pub fn gpt_mut(&mut self) -> Option<&mut GptConfig> {
        match self {
            ModelConfig::Gpt(c) | ModelConfig::Classifier(ClassifierConfig { gpt: c, .. }) => Some(c),
            ModelConfig::Llama(_) => None,
        }
    }

    /// The architecture's name, as `"arch"` writes it.
    pub fn arch(&self) -> &'static str {
        match self {
            ModelConfig::Gpt(_) => "gpt",
            ModelConfig::Classifier(_) => "classifier",
            ModelConfig::Llama(_) => "llama",
        }
    }

    /// What a line about the run says of the model beside its parameter count.
    pub fn describe(&self) -> String {
        match self {
            ModelConfig::Gpt(c) => format!("{} positions", c.position),
            ModelConfig::Classifier(c) => {
                let tune = match c.tune {
                    Tune::All => "every weight trains".to_owned(),
                    Tune::LastBlock => "the last block, final LayerNorm and head train".to_owned(),
                    Tune::Lora { rank, alpha } => {
                        format!("LoRA rank {rank}, alpha {alpha}, and the head train")
                    }
                };
                format!("a GPT with a {}-class head; {tune}", c.n_classes)
            }
            ModelConfig::Llama(c) => {
                format!("Llama-style, {} of {} heads for keys and values", c.n_kv_head, c.n_head)
            }
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.vocab_size,
            gpt => gpt.gpt().map_or(0, |c| c.vocab_size),
        }
    }

    /// Set the vocabulary size (settled from the tokenizer).
    pub fn set_vocab_size(&mut self, vocab_size: usize) {
        match self {
            ModelConfig::Llama(c) => c.vocab_size = vocab_size,
            gpt => gpt.gpt_mut().into_iter().for_each(|c| c.vocab_size = vocab_size),
        }
    }

    /// The longest context.
    pub fn block_size(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.block_size,
            gpt => gpt.gpt().map_or(0, |c| c.block_size),
        }
    }

    /// The same config with training dropout `p` (a finetuning run's own).
    pub fn with_dropout(&self, p: f64) -> Self {
        let mut config = self.clone();
        if let Some(c) = config.gpt_mut() {
            c.dropout = p;
        }
        config
    }

    /// The parameters of the model this config builds, from the sizes alone: all of them (a
    /// classifier's frozen ones too: they take memory all the same).
    pub fn num_params(&self) -> usize {
        match self {
            ModelConfig::Gpt(c) => c.num_params(),
            ModelConfig::Classifier(c) => c.num_params(),
            ModelConfig::Llama(c) => c.num_params(),
        }
    }

    /// Bytes of memory training on batches of `batch_size × block_size` tokens takes, estimated.
    pub fn training_bytes(&self, batch_size: usize, block_size: usize) -> u64 {
        match self {
            ModelConfig::Llama(c) => c.training_bytes(batch_size, block_size),
            gpt => gpt.gpt().map_or(0, |c| c.training_bytes(batch_size, block_size)),
        }
    }

    /// Check the settings, each called what `name` makes of its field's name.
    pub fn validate_named(&self, name: &dyn Fn(&str) -> String) -> Result<()> {
        match self {
            ModelConfig::Gpt(c) => c.validate_named(name),
            ModelConfig::Classifier(c) => c.validate_named(name),
            ModelConfig::Llama(c) => c.validate(),
        }
    }
}

/// A model of any architecture, as a [`ModelConfig`] builds it.
#[derive(Debug)]
pub enum AnyModel {
    Gpt(Gpt),
    Classifier(Classifier),
    Llama(Llama),
}

impl AnyModel {
    /// The config that builds this model again.
    pub fn config(&self) -> ModelConfig {
        match self {
            AnyModel::Gpt(m) => ModelConfig::Gpt(m.config.clone()),
            AnyModel::Classifier(m) => ModelConfig::Classifier(m.config()),
            AnyModel::Llama(m) => ModelConfig::Llama(m.config.clone()),
        }
    }

    /// The model as a [`LanguageModel`].
    fn lm(&self) -> &dyn LanguageModel {
        match self {
            AnyModel::Gpt(m) => m,
            AnyModel::Classifier(m) => m,
            AnyModel::Llama(m) => m,
        }
    }

    fn lm_mut(&mut self) -> &mut dyn LanguageModel {
        match self {
            AnyModel::Gpt(m) => m,
            AnyModel::Classifier(m) => m,
            AnyModel::Llama(m) => m,
        }
    }
}

impl From<Llama> for AnyModel {
    fn from(model: Llama) -> Self {
        AnyModel::Llama(model)
    }
}

impl From<Gpt> for AnyModel {
    fn from(model: Gpt) -> Self {
        AnyModel::Gpt(model)
    }
}

impl LanguageModel for AnyModel {
    fn forward(
        &self,
        idx: &Tensor,
        targets: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        self.lm().forward(idx, targets, train)
    }

    fn var_store(&self) -> &nn::VarStore {
        self.lm().var_store()
    }

    fn var_store_mut(&mut self) -> &mut nn::VarStore {
        self.lm_mut().var_store_mut()
    }

    fn block_size(&self) -> Option<usize> {
        self.lm().block_size()
    }

    fn kv_cache(&self, batch: usize) -> Result<Option<KvCache>> {
        self.lm().kv_cache(batch)
    }

    fn forward_cached(&self, idx: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.lm().forward_cached(idx, cache)
    }

    fn next_logits(&self, idx: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        self.lm().next_logits(idx, cache)
    }

    fn num_params(&self) -> usize {
        self.lm().num_params()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arch_tag_is_written_and_a_config_without_one_is_a_gpt() {
        let gpt = GptConfig::cpu_small();
        let tagged = serde_json::to_value(ModelConfig::Gpt(gpt.clone())).unwrap();
        assert_eq!(tagged["arch"], "gpt");
        assert_eq!(tagged["n_embd"], 128);
        assert_eq!(serde_json::from_value::<ModelConfig>(tagged).unwrap(), ModelConfig::Gpt(gpt.clone()));
        // Written before the tag: a GptConfig alone.
        let untagged = serde_json::to_value(&gpt).unwrap();
        assert_eq!(serde_json::from_value::<ModelConfig>(untagged).unwrap(), ModelConfig::Gpt(gpt));
        let unknown = serde_json::json!({"arch": "mamba", "n_embd": 16});
        let err = serde_json::from_value::<ModelConfig>(unknown).unwrap_err().to_string();
        assert!(err.contains("unknown model arch \"mamba\" (known: gpt, classifier, llama)"), "{err}");
        let err = serde_json::from_value::<ModelConfig>(serde_json::json!({"arch": "gpt"})).unwrap_err();
        assert!(err.to_string().contains("missing field"), "{err}");
    }

    #[test]
    fn a_classifier_config_round_trips_and_counts_what_it_builds() {
        let gpt = GptConfig { vocab_size: 70, ..GptConfig::cpu_small() };
        for tune in [Tune::All, Tune::LastBlock, Tune::Lora { rank: 4, alpha: 8.0 }] {
            let config = ModelConfig::Classifier(ClassifierConfig { gpt: gpt.clone(), n_classes: 2, tune });
            let json = serde_json::to_value(&config).unwrap();
            assert_eq!(
                (json["arch"].as_str(), json["gpt"]["n_embd"].as_u64()),
                (Some("classifier"), Some(128))
            );
            assert_eq!(serde_json::from_value::<ModelConfig>(json).unwrap(), config);
            let model = config.build(Device::Cpu).unwrap();
            assert_eq!(model.config(), config);
            assert_eq!((config.vocab_size(), config.block_size()), (70, gpt.block_size));
            let all: usize = model.var_store().variables().values().map(|t| t.numel()).sum();
            assert_eq!(config.num_params(), all, "{tune:?}");
        }
        let lora = |rank, alpha| ClassifierConfig {
            gpt: gpt.clone(),
            n_classes: 2,
            tune: Tune::Lora { rank, alpha },
        };
        let flag = |field: &str| format!("--{}", field.replace('_', "-"));
        let err = ModelConfig::Classifier(lora(0, 8.0)).validate_named(&flag).unwrap_err().to_string();
        assert!(err.contains("--lora-rank must be at least 1 and --lora-alpha a positive number"), "{err}");
        assert!(ModelConfig::Classifier(lora(4, f64::NAN)).validate_named(&flag).is_err());
        let one_class = ClassifierConfig { n_classes: 1, ..lora(4, 8.0) };
        assert!(ModelConfig::Classifier(one_class).validate_named(&flag).is_err());
    }
}
