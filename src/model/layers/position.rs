//! How a model knows where each token is.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// How positions enter the model: a second embedding added to the tokens'.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Position {
    /// A trained embedding `wpe` `[block_size, C]`: GPT-2's, nanoGPT's and the lecture's.
    #[default]
    Learned,
    /// The fixed sine and cosine table of "Attention Is All You Need", not trained. As in the
    /// paper (section 3.4), the token embeddings are multiplied by `√n_embd` before it is
    /// added: they start at a standard deviation of 0.02, and the table's values reach ±1, so
    /// without the factor the tokens would be drowned by their positions.
    Sinusoidal,
}

impl Position {
    /// What the token embeddings are multiplied by before the positions are added: `√C` for
    /// the sinusoidal table (the paper's), 1 for learned positions.
    pub fn token_scale(self, n_embd: usize) -> f64 {
        match self {
            Position::Learned => 1.0,
            Position::Sinusoidal => (n_embd as f64).sqrt(),
        }
    }
}

impl std::str::FromStr for Position {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "learned" => Ok(Position::Learned),
            "sinusoidal" => Ok(Position::Sinusoidal),
            other => Err(Error::Config(format!(
                "unknown position encoding '{other}' (known: learned, sinusoidal)"
            ))),
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Position::Learned => "learned",
            Position::Sinusoidal => "sinusoidal",
        })
    }
}

/// The sinusoidal position encoding `[block_size, n_embd]` of "Attention Is All You Need"
/// (section 3.5): for position `p` and pair `i` of channels, with `θ = p / 10000^(2i / n_embd)`,
/// channel `2i` is `sin θ` and channel `2i + 1` is `cos θ`. Each pair turns at its own speed,
/// from once every 2π positions (`i = 0`) to almost never, so every position gets its own
/// pattern, and the encoding of `p + k` is a rotation of that of `p`.
pub fn sinusoidal_positions(block_size: usize, n_embd: usize, device: Device) -> Tensor {
    let (t, c) = (block_size as i64, n_embd as i64);
    let pairs = (c + 1) / 2; // an odd width ends on a sine
    let p = Tensor::arange(t, (Kind::Float, device)).unsqueeze(1); // [T, 1]
    let two_i = Tensor::arange(pairs, (Kind::Float, device)) * 2.0; // [C/2]: 0, 2, 4, ...
    let inv_freq = (two_i * (-(10_000f64.ln()) / c as f64)).exp(); // [C/2]: 10000^(-2i/C)
    let theta = p * inv_freq.unsqueeze(0); // [T, C/2]
    let pe = Tensor::stack(&[theta.sin(), theta.cos()], -1); // [T, C/2, 2]: sin, cos of each pair
    pe.reshape([t, 2 * pairs]).narrow(1, 0, c) // [T, C]: sin θ₀, cos θ₀, sin θ₁, cos θ₁, ...
}
