//! `llm`: the course's library from the command line.
//!
//! So far: the datasets (`llm data list`, `llm data fetch NAME`). Training and sampling
//! arrive with the GPT chapters.

use anyhow::Result;
use clap::{Parser, Subcommand};
use llm_from_scratch::data;

#[derive(Parser)]
#[command(name = "llm", version, about = "Build a GPT from an empty file: the course's command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Datasets of the manifest (data/datasets.json).
    #[command(subcommand)]
    Data(DataCommand),
}

#[derive(Subcommand)]
enum DataCommand {
    /// List the datasets, with their size and whether they are downloaded.
    List,
    /// Download a dataset (checked by SHA-256; from $LLM_DATA_MIRROR when set) and print its path.
    Fetch {
        /// Dataset name, as `llm data list` shows it.
        #[arg(default_value = "tinyshakespeare")]
        name: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Data(DataCommand::List) => {
            for d in data::datasets() {
                let here = data::cache_dir().join(&d.file).is_file();
                println!(
                    "{:<18} {:>12} bytes  {}  {}",
                    d.name,
                    d.size,
                    if here { "[here]" } else { "      " },
                    d.description
                );
            }
        }
        Command::Data(DataCommand::Fetch { name }) => println!("{}", data::fetch(&name)?.display()),
    }
    Ok(())
}
