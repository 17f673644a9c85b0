//! `llm`: the course's library from the command line.
//!
//! Train, resume, sample and evaluate GPTs outside Jupyter, and prepare their data. The
//! binary only parses arguments, shows progress and wires Ctrl-C; the work is the library's
//! ([`llm_from_scratch::app::run`] for run folders, [`llm_from_scratch::app::wiki`] for dumps).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use llm_from_scratch::app::finetune::{self, FinetuneData, Goal};
use llm_from_scratch::app::run::{self, Run, RunSpec, Task};
use llm_from_scratch::app::wiki;
use llm_from_scratch::data::{self, Batches, Instruction};
use llm_from_scratch::finetune::{classify_results, instruct_results, respond, CLASSES, SPLIT_SEED};
use llm_from_scratch::generate::{self, Cache, Sampling};
use llm_from_scratch::model::LanguageModel;
use llm_from_scratch::model::{hf, AnyModel, Gpt, GptConfig, ModelConfig, Tune};
use llm_from_scratch::precision::Precision;
use llm_from_scratch::tokenizer::{
    AnyTokenizer, BpeConfig, BpeTokenizer, Specials, Tokenizer, GPT2_PATTERN, GPT4_PATTERN,
};
use llm_from_scratch::track::RunStatus;
use llm_from_scratch::train::{Checkpoint, TrainEvent, Trainer};
use llm_from_scratch::{device, interrupt};
use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "llm",
    version,
    about = "Build a GPT from an empty file: the course's command line",
    after_help = "A first run:\n  llm train --preset cpu-small --dataset tinyshakespeare --run-dir runs/first\n  \
                  llm sample --run-dir runs/first --prompt \"ROMEO:\""
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Datasets: list and download them, or make one from a Wikipedia dump.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train a GPT (or continue a run) in a run folder, with a progress bar, checkpoints and plots.
    Train(Box<TrainArgs>),
    /// Generate text from a trained model, printed as it is generated.
    Sample(SampleArgs),
    /// Measure a trained model on a text: loss, perplexity and bits per character.
    Eval(EvalArgs),
    /// Finetune a pretrained GPT into a spam classifier or an instruction follower (chapter 10),
    /// in a run folder as `llm train` keeps one; measured before and after on held-out data.
    #[command(subcommand)]
    Finetune(FinetuneCommand),
    /// Spam or ham: score messages with a classifier finetuned by `llm finetune classify`.
    Classify(ClassifyArgs),
    /// Ask an instruction follower finetuned by `llm finetune instruct`: one instruction with
    /// --prompt, else one per line typed (or piped in).
    Chat(ChatArgs),
    /// Write a model in the Hugging Face layout (config.json, model.safetensors, tokenizer):
    /// transformers' GPT2LMHeadModel.from_pretrained(OUT) loads it, and so does `llm --model OUT`.
    Export(ExportArgs),
    /// Look at several runs together.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Byte-level BPE tokenizers (chapter 6): train one, encode and decode with any tokenizer file.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
}

#[derive(Subcommand)]
enum TokenizerCommand {
    /// Learn a byte-level BPE tokenizer from a text file (or a folder of .txt files) and save it as JSON.
    Train {
        /// The training text.
        #[arg(long)]
        input: PathBuf,
        /// Tokens in all: 256 bytes + the merges to learn + the special tokens.
        #[arg(long)]
        vocab_size: usize,
        /// Where to write the tokenizer (JSON; use it with --tokenizer-path).
        #[arg(long)]
        out: PathBuf,
        /// How text is cut before merging: gpt2, gpt4, or none (merges may then cross words).
        #[arg(long, default_value = "gpt2", value_parser = ["gpt2", "gpt4", "none"])]
        pattern: String,
        /// A special token to reserve, e.g. --special "<|endoftext|>" (repeatable).
        #[arg(long = "special")]
        specials: Vec<String>,
    },
    /// Print the ids of a text, space-separated.
    Encode {
        /// The tokenizer file (any kind: char, word or bpe), or `gpt2` for GPT-2's (downloaded once).
        #[arg(long, value_name = "FILE|gpt2")]
        tokenizer: PathBuf,
        /// The text; without it, standard input is read.
        #[arg(long)]
        text: Option<String>,
        /// Turn special tokens in the text into their ids (otherwise they are an error).
        #[arg(long)]
        allow_special: bool,
    },
    /// Print the text of ids (arguments, or whitespace-separated on standard input).
    Decode {
        /// The tokenizer file (any kind), or `gpt2`.
        #[arg(long, value_name = "FILE|gpt2")]
        tokenizer: PathBuf,
        /// The ids.
        ids: Vec<u32>,
        /// Fail where the ids cut a character in two (by default U+FFFD stands in).
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Subcommand)]
enum FinetuneCommand {
    /// A classifier of messages (Raschka's chapter 6): the last token's hidden state through a
    /// new head of two classes, trained on the SMS Spam Collection (747 spam, 747 ham, split
    /// 70/10/20), with accuracy on train, validation and test before and after.
    Classify(Box<FinetuneClassifyArgs>),
    /// An instruction follower (Raschka's chapter 7): his 1,100 instructions in the Alpaca
    /// template, the loss on the responses only; the held-out records' response loss, and how
    /// many greedy responses end and keep to the template, before and after.
    Instruct(Box<FinetuneInstructArgs>),
}

#[derive(Args)]
struct FinetuneArgs {
    /// The run folder (config, tokenizer, checkpoints, metrics, plots, results.json). A
    /// finetuning run there is resumed. Default: runs/YYYY-MM-DD_HH-MM-SS.
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// The pretrained GPT, or Llama for `instruct` (a new run needs one): a run folder of `llm
    /// train` (its best checkpoint), a folder in the Hugging Face layout, or gpt2 (downloaded
    /// once). Its sizes and tokenizer are the run's; a character vocabulary grows by the data's
    /// new characters.
    #[arg(long, value_name = "RUN|DIR|gpt2")]
    init_from: Option<String>,
    /// A TOML or JSON file with any of the training flags below.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log to the MLflow server at this URI (default: $MLFLOW_TRACKING_URI, if set).
    #[arg(long, value_name = "URI")]
    mlflow: Option<String>,
    /// Training and data settings (over Raschka's: batches of 8, lr 5e-5, weight decay 0.1,
    /// 500 steps). --dataset or --input (a file of the same kind as the default dataset) pick
    /// the data; the model and tokenizer flags are --init-from's and may not be given.
    #[command(flatten)]
    spec: RunSpec,
}

#[derive(Args)]
struct FinetuneClassifyArgs {
    /// What trains: all (every weight), last-block (the last block, the final LayerNorm and
    /// the head: Raschka's choice), or lora (adapters on every projection, and the head).
    #[arg(long, value_parser = ["all", "last-block", "lora"])]
    tune: Option<String>,
    /// LoRA's rank (with --tune lora).
    #[arg(long, default_value_t = 8)]
    lora_rank: usize,
    /// LoRA's alpha: the update is scaled by alpha / rank (with --tune lora).
    #[arg(long, default_value_t = 16.0)]
    lora_alpha: f64,
    /// Seed of the shuffle that splits the messages (default: 123).
    #[arg(long)]
    split_seed: Option<u64>,
    #[command(flatten)]
    common: FinetuneArgs,
}

impl FinetuneClassifyArgs {
    /// What trains, as the flags say (`None`: not given).
    fn tune(&self) -> Option<Tune> {
        self.tune.as_deref().map(|tune| match tune {
            "all" => Tune::All,
            "lora" => Tune::Lora { rank: self.lora_rank, alpha: self.lora_alpha },
            _ => Tune::LastBlock,
        })
    }
}

#[derive(Args)]
struct FinetuneInstructArgs {
    /// Measure on the first N held-out records only (default: all 110 of Raschka's).
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    held_out: Option<usize>,
    /// Tokens a measured response may have at most.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    #[command(flatten)]
    common: FinetuneArgs,
}

#[derive(Args)]
struct ClassifyArgs {
    #[command(flatten)]
    model: ModelSource,
    /// A message to classify (repeatable); without one, each line of standard input is one.
    #[arg(long)]
    text: Vec<String>,
}

#[derive(Args)]
struct ChatArgs {
    /// The run folder of `llm finetune instruct` (its best checkpoint).
    #[arg(long, value_name = "DIR")]
    run_dir: PathBuf,
    /// One instruction: answer it and exit.
    #[arg(long)]
    prompt: Option<String>,
    /// The instruction's input (the template's "### Input:"), with --prompt.
    #[arg(long, requires = "prompt")]
    input: Option<String>,
    /// Tokens a response may have at most.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// 0 (the default): greedy, the same answer every time; above 0, drawn at that temperature.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// The seed of the draws (with --temperature).
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Subcommand)]
enum DataCommand {
    /// List the datasets, with their size and whether they are downloaded.
    List,
    /// Download a dataset (checked by SHA-256; from $LLM_DATA_MIRROR when set), or any file
    /// by URL, and print its path.
    Fetch {
        /// Dataset name, as `llm data list` shows it, or an http(s):// URL (its SHA-256 is
        /// recorded on the first download and checked on every later one).
        #[arg(default_value = "tinyshakespeare", value_name = "NAME|URL")]
        name: String,
        /// The URL's file must have this SHA-256 (hex).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// Take the URL's file as it is now, even if it changed since it was first downloaded.
        #[arg(long)]
        refresh: bool,
    },
    /// Extract the plain text of every article of a Wikipedia XML dump (.xml or .xml.bz2).
    ///
    /// The dump is streamed (constant memory, however many gigabytes), bz2 is read directly,
    /// redirects and non-article pages are skipped, and wiki markup (templates, references,
    /// tables, links) is reduced to readable prose. Dumps: https://dumps.wikimedia.org/enwiki/
    WikiExtract {
        /// The dump, e.g. enwiki-latest-pages-articles.xml.bz2.
        dump: PathBuf,
        /// The text file to write (train on it with `llm train --input FILE`).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct TrainArgs {
    /// The run folder: config, tokenizer, checkpoints, metrics and plots. An existing run
    /// there is resumed. Default: runs/YYYY-MM-DD_HH-MM-SS.
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Continue the run in --run-dir from its latest checkpoint (training flags such as
    /// --max-steps may change; model, tokenizer and data flags may not).
    #[arg(long, requires = "run_dir")]
    resume: bool,
    /// A TOML or JSON file with any of the flags below (n_layer = 4, lr = 1e-3, ...).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Start from a trained GPT-2 or Llama instead of fresh weights: a folder of `llm export`,
    /// one saved by `transformers` (`save_pretrained`), or gpt2 (OpenAI's 124M, downloaded
    /// once). Its sizes and tokenizer are the run's; training and data flags apply. For
    /// finetuning, and for continuing here what was trained elsewhere (a new run: not with
    /// --resume).
    #[arg(long, value_name = "DIR|gpt2", conflicts_with = "resume")]
    init_from: Option<String>,
    /// Log the settings, curves and plots to the MLflow server at this URI, e.g.
    /// http://127.0.0.1:5000 (`make mlflow` starts one). Default: $MLFLOW_TRACKING_URI, if set.
    #[arg(long, value_name = "URI")]
    mlflow: Option<String>,
    /// The model, tokenizer, data and training settings. Each may also come from `--config`;
    /// a flag given here wins over the file.
    #[command(flatten)]
    spec: RunSpec,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["run_dir", "checkpoint", "model"])))]
struct ModelSource {
    /// A run folder (its best checkpoint, else its latest).
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// A checkpoint folder (e.g. RUN/checkpoints/latest).
    #[arg(long, value_name = "DIR")]
    checkpoint: Option<PathBuf>,
    /// A model in the Hugging Face layout: `gpt2` (OpenAI's GPT-2 124M, downloaded once into
    /// the data folder), or a folder with config.json and model.safetensors (`llm export`
    /// writes one).
    #[arg(long, value_name = "gpt2|DIR")]
    model: Option<String>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

/// A model ready to use, with its tokenizer, and the checkpoint it came from (if it did).
struct Loaded {
    model: AnyModel,
    tokenizer: AnyTokenizer,
    checkpoint: Option<Checkpoint>,
}

impl ModelSource {
    /// The checkpoint folder, and the run folder it belongs to if any.
    fn checkpoint_dir(&self) -> Result<PathBuf> {
        match (&self.checkpoint, &self.run_dir) {
            (Some(ckpt), _) => Ok(ckpt.clone()),
            (None, Some(dir)) => {
                let (run, _) = Run::open(dir)?;
                run.checkpoint_for_sampling()
                    .with_context(|| format!("run folder {} has no checkpoint yet", dir.display()))
            }
            (None, None) => bail!("give --run-dir DIR, --checkpoint DIR or --model gpt2|DIR"),
        }
    }

    fn load(&self) -> Result<Loaded> {
        let device = device::parse(&self.device)?;
        let Some(name) = &self.model else {
            let checkpoint = Checkpoint::load(self.checkpoint_dir()?)?;
            let model = run::load_model(&checkpoint, device)?;
            let tokenizer = checkpoint.tokenizer.clone();
            return Ok(Loaded { model, tokenizer, checkpoint: Some(checkpoint) });
        };
        let (model, tokenizer) = load_folder(name, device)?;
        Ok(Loaded { model, tokenizer, checkpoint: None })
    }
}

/// A model folder in the Hugging Face layout, a GPT-2 or a Llama (or `gpt2`, OpenAI's 124M:
/// [`load_hf`]), and the tokenizer beside it.
fn load_folder(name: &str, device: tch::Device) -> Result<(AnyModel, AnyTokenizer)> {
    let dir = Path::new(name);
    if !hf::is_llama(dir) {
        let (model, tokenizer) = load_hf(name, device)?;
        return Ok((model.into(), tokenizer));
    }
    let model = hf::load_llama(dir, device)?;
    let tokenizer = hf::load_tokenizer(dir)?.with_context(|| {
        format!(
            "{name}: no tokenizer beside the Llama ({} or {})",
            hf::LLM_TOKENIZER_FILE,
            hf::TOKENIZER_FILE
        )
    })?;
    Ok((model.into(), tokenizer))
}

/// A GPT-2 in the Hugging Face layout and its tokenizer: the folder `name`, or OpenAI's 124M
/// for `gpt2` (downloaded once, unless a folder of that name is here).
fn load_hf(name: &str, device: tch::Device) -> Result<(Gpt, AnyTokenizer)> {
    let dir = match name {
        "gpt2" if !Path::new("gpt2").exists() => {
            let weights = fetch_with_bar("gpt2")?;
            weights.parent().map(Path::to_path_buf).unwrap_or_default()
        }
        _ => PathBuf::from(name),
    };
    let model = hf::load(&dir, device)?;
    let tokenizer = match hf::load_tokenizer(&dir)? {
        Some(tokenizer) => tokenizer,
        None if model.config.vocab_size == GptConfig::gpt2().vocab_size => gpt2_tokenizer()?,
        None => bail!(
            "{}: no {} beside the model, and its vocab_size {} is not GPT-2's: which tokenizer is it?",
            dir.display(),
            hf::LLM_TOKENIZER_FILE,
            model.config.vocab_size
        ),
    };
    Ok((model, tokenizer))
}

/// A pretrained GPT or Llama and its tokenizer, for finetuning: a run folder of `llm train` (its
/// best checkpoint, else its latest), or a folder in the Hugging Face layout, or `gpt2`
/// ([`load_folder`]).
fn load_pretrained(source: &str, device: tch::Device) -> Result<(AnyModel, AnyTokenizer)> {
    if !Run::exists(source) {
        return load_folder(source, device);
    }
    let (run, _) = Run::open(source)?;
    let dir = run
        .checkpoint_for_sampling()
        .with_context(|| format!("run folder {source} has no checkpoint yet"))?;
    let checkpoint = Checkpoint::load(dir)?;
    match run::load_model(&checkpoint, device)? {
        AnyModel::Classifier(_) => bail!("{source} holds a classifier, not a pretrained language model"),
        model => Ok((model, checkpoint.tokenizer)),
    }
}

/// Refuse a classifier where text is to be written or measured: it scores messages instead.
fn writes_text(model: &AnyModel) -> Result<()> {
    if let AnyModel::Classifier(_) = model {
        bail!("the model is a classifier: it scores messages (`llm classify`) and writes no text");
    }
    Ok(())
}

/// GPT-2's tokenizer, from the manifest's ranks (downloaded once).
fn gpt2_tokenizer() -> Result<AnyTokenizer> {
    Ok(AnyTokenizer::Bpe(BpeTokenizer::gpt2(fetch_with_bar("gpt2-ranks")?)?))
}

/// `data::fetch`, with a progress bar on a terminal for each file of 10 MB or more.
fn fetch_with_bar(name: &str) -> Result<PathBuf> {
    let mut current: Option<(String, Box<dyn FnMut(u64, Option<u64>)>)> = None; // the file downloading
    Ok(data::fetch_with_progress(name, |file, done, total| {
        if current.as_ref().is_none_or(|(f, _)| f != file) {
            current = Some((file.to_owned(), Box::new(byte_bar(file))));
        }
        if let Some((_, bar)) = current.as_mut() {
            bar(done, total);
        }
    })?)
}

/// A progress callback that draws a bar on a terminal once a download is known to be 10 MB
/// or more, and clears it when the last byte arrives.
fn byte_bar(label: &str) -> impl FnMut(u64, Option<u64>) {
    let (label, tty) = (label.to_owned(), std::io::stderr().is_terminal());
    let mut bar: Option<indicatif::ProgressBar> = None;
    move |done, total| {
        let Some(total) = total.filter(|&t| tty && t >= 10 << 20) else { return };
        let bar = bar.get_or_insert_with(|| {
            let style = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})",
            )
            .expect("a valid template")
            .progress_chars("=> ");
            indicatif::ProgressBar::new(total).with_style(style).with_message(label.clone())
        });
        bar.set_position(done);
        if done >= total {
            bar.finish_and_clear();
        }
    }
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("prompt_source").args(["prompt", "prompt_file"])))]
struct SampleArgs {
    #[command(flatten)]
    model: ModelSource,
    /// The text to continue (default: a newline).
    #[arg(long)]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// Tokens to generate per sample.
    #[arg(long, default_value_t = 500)]
    max_new_tokens: usize,
    /// Below 1: safer, more repetitive text; above 1: wilder.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Draw only from the k most likely tokens (`all`: from every token).
    #[arg(long, default_value = "200")]
    top_k: TopK,
    /// Draw only from the most likely tokens that make up this probability (nucleus sampling).
    #[arg(long)]
    top_p: Option<f64>,
    /// The same seed gives the same text. Sample i is drawn with seed + i, so it is the same
    /// drawn alone (--seed S+i) or among others.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// How many samples, generated side by side in one batch.
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// Recompute the whole context for every token instead of keeping a KV cache (the same
    /// text, slower: to compare).
    #[arg(long)]
    no_cache: bool,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelSource,
    /// A text file to measure on (default: the run's validation split).
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
}

#[derive(Args)]
struct ExportArgs {
    #[command(flatten)]
    model: ModelSource,
    /// The folder to write (an existing export there is replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum RunsCommand {
    /// One plot of the validation loss curves of several runs.
    Compare {
        /// Run folders.
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// The PNG to write.
        #[arg(long, default_value = "compare.png")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Data(cmd) => data_command(cmd).map(|()| ExitCode::SUCCESS),
        Command::Train(args) => train(*args),
        Command::Finetune(cmd) => finetune(cmd),
        Command::Classify(args) => classify(args).map(|()| ExitCode::SUCCESS),
        Command::Chat(args) => chat(args).map(|()| ExitCode::SUCCESS),
        Command::Sample(args) => sample(args).map(|()| ExitCode::SUCCESS),
        Command::Eval(args) => eval(args).map(|()| ExitCode::SUCCESS),
        Command::Tokenizer(cmd) => tokenizer_command(cmd).map(|()| ExitCode::SUCCESS),
        Command::Export(args) => export(args).map(|()| ExitCode::SUCCESS),
        Command::Runs(RunsCommand::Compare { dirs, out }) => run::compare(&dirs)
            .and_then(|figure| figure.save(&out))
            .map(|()| {
                println!("{}", out.display());
                ExitCode::SUCCESS
            })
            .map_err(Into::into),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {}", error_chain(&e));
        ExitCode::FAILURE
    })
}

/// An error and its causes on one line, `a: b: c`, leaving out a cause its parent already
/// ends with (the library's `path: reason` errors carry their OS error as text and as cause).
fn error_chain(e: &anyhow::Error) -> String {
    e.chain().skip(1).fold(e.to_string(), |line, cause| {
        let cause = cause.to_string();
        if line.ends_with(&cause) {
            line
        } else {
            format!("{line}: {cause}")
        }
    })
}

fn data_command(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::List => {
            for d in data::datasets()? {
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
        DataCommand::Fetch { name, sha256, refresh }
            if name.starts_with("http://") || name.starts_with("https://") =>
        {
            let path = data::fetch_url_with_progress(&name, sha256.as_deref(), refresh, byte_bar(&name))
                .map_err(|e| {
                    let changed = e.to_string().contains("with `refresh`");
                    anyhow::anyhow!(
                        "{e}{}",
                        if changed { " (here: llm data fetch URL --refresh)" } else { "" }
                    )
                })?;
            println!("{}", path.display());
        }
        DataCommand::Fetch { sha256: Some(_), .. } | DataCommand::Fetch { refresh: true, .. } => {
            bail!("--sha256 and --refresh are for URLs: a dataset of the manifest has its SHA-256 there")
        }
        DataCommand::Fetch { name, .. } => println!("{}", fetch_with_bar(&name)?.display()),
        DataCommand::WikiExtract { dump, out } => {
            let tty = std::io::stderr().is_terminal();
            let stats = wiki::extract_file(&dump, &out, |s| {
                if tty && s.articles % 1000 == 0 {
                    eprint!("\r{} articles, {} MB", s.articles, s.bytes >> 20);
                }
            });
            if tty {
                eprintln!();
            }
            println!("{}: {}", out.display(), stats?);
        }
    }
    Ok(())
}

fn tokenizer_command(cmd: TokenizerCommand) -> Result<()> {
    let stdin = || -> Result<String> {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading standard input")?;
        Ok(text)
    };
    match cmd {
        TokenizerCommand::Train { input, vocab_size, out, pattern, specials } => {
            let text = data::load_text(&input)?;
            let pattern = match pattern.as_str() {
                "gpt2" => Some(GPT2_PATTERN),
                "gpt4" => Some(GPT4_PATTERN),
                _ => None,
            };
            let specials: Vec<&str> = specials.iter().map(String::as_str).collect();
            let config = BpeConfig::new(vocab_size).pattern(pattern).special_tokens(&specials);
            let start = std::time::Instant::now();
            let tokenizer = BpeTokenizer::train(&text, &config)?;
            let secs = start.elapsed().as_secs_f64();
            tokenizer.save(&out)?;
            let tokens = tokenizer.encode_ordinary(&text)?.len();
            println!(
                "{}: {} tokens ({} merges) learned in {secs:.2} s from {} characters; {:.3} tokens per character",
                out.display(),
                tokenizer.vocab_size(),
                tokenizer.merges().len(),
                text.chars().count(),
                tokens as f64 / text.chars().count().max(1) as f64
            );
        }
        TokenizerCommand::Encode { tokenizer, text, allow_special } => {
            let tokenizer = load_tokenizer(&tokenizer)?;
            let text = match text {
                Some(text) => text,
                None => stdin()?,
            };
            let ids = match (&tokenizer, allow_special) {
                (AnyTokenizer::Bpe(bpe), true) => bpe.encode_with_specials(&text, Specials::AllowAll)?,
                _ => tokenizer.encode(&text)?,
            };
            println!("{}", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
        }
        TokenizerCommand::Decode { tokenizer, mut ids, strict } => {
            let tokenizer = load_tokenizer(&tokenizer)?;
            if ids.is_empty() {
                for word in stdin()?.split_whitespace() {
                    ids.push(word.parse().with_context(|| format!("{word:?} is not a token id"))?);
                }
            }
            let text = match (&tokenizer, strict) {
                (AnyTokenizer::Bpe(bpe), true) => bpe.decode_strict(&ids)?,
                _ => tokenizer.decode(&ids)?,
            };
            print!("{text}");
        }
    }
    Ok(())
}

/// A tokenizer file, or GPT-2's for `gpt2` (unless a file of that name is here).
fn load_tokenizer(path: &Path) -> Result<AnyTokenizer> {
    match path.to_str() {
        Some("gpt2") if !path.exists() => gpt2_tokenizer(),
        _ => Ok(AnyTokenizer::load(path)?),
    }
}

/// `runs/2025-01-31_14-05-09` (UTC): a new folder for each run by default.
fn default_run_dir() -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    PathBuf::from(format!(
        "runs/{year:04}-{month:02}-{day:02}_{:02}-{:02}-{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}

fn train(args: TrainArgs) -> Result<ExitCode> {
    let spec = match &args.config {
        Some(file) => args.spec.clone().or(RunSpec::load(file)?)?,
        None => args.spec.clone(),
    };
    let dir = args.run_dir.clone().unwrap_or_else(default_run_dir);

    // Everything is checked before anything is written: a rejected start leaves no folder.
    let resuming = args.resume || Run::exists(&dir);
    if let (Some(source), true) = (&args.init_from, resuming) {
        bail!(
            "--init-from {source} starts a new run, and {} holds one already: resume it without \
             --init-from, or give another --run-dir",
            dir.display()
        );
    }
    let (run, _lock, plan, model, mut trainer) = if resuming {
        let (mut run, tokenizer) = Run::open(&dir)?;
        if !run.config.task.is_pretrain() {
            bail!(
                "{} is a finetuning run: continue it with `{} --run-dir {}`",
                dir.display(),
                run.config.task.command(),
                dir.display()
            );
        }
        let lock = run.lock()?; // before anything in the folder is read to be rewritten
        let plan = run::plan_resumed(&run.config, tokenizer, &spec)?;
        let device = device::parse(&plan.config.device)?;
        device::seed(plan.config.train.seed); // the initial weights, if there is no checkpoint yet
        let mut model = plan.config.model.build(device)?;
        let trainer = resume_trainer(&mut run, &mut model, &plan.config)?;
        (run, lock, plan, model, trainer)
    } else if let Some(source) = &args.init_from {
        // The folder's weights, sizes and tokenizer; the run's training and data settings.
        let device = device::parse(spec.device.as_deref().unwrap_or("auto"))?;
        let (trained, tokenizer) = load_folder(source, device)?;
        let plan = run::plan_init(&spec, source, &trained.config(), tokenizer)?;
        device::seed(plan.config.train.seed);
        let mut model = plan.config.model.build(device)?; // its dropout may be the run's
        model.var_store_mut().copy(trained.var_store())?;
        let trainer = Trainer::new(&model, plan.config.train.clone())?;
        let run = Run::create(&dir, &plan.config, &plan.tokenizer)?;
        let lock = run.lock()?;
        (run, lock, plan, model, trainer)
    } else {
        let plan = run::plan(&spec)?;
        let device = device::parse(&plan.config.device)?;
        device::seed(plan.config.train.seed); // the initial weights
        let model = plan.config.model.build(device)?;
        let trainer = Trainer::new(&model, plan.config.train.clone())?;
        let run = Run::create(&dir, &plan.config, &plan.tokenizer)?;
        let lock = run.lock()?;
        (run, lock, plan, model, trainer)
    };
    let c = &plan.config;
    let device = model.var_store().device();
    let chosen = if spec.precision.is_some() {
        String::new()
    } else if resuming {
        " (the run's; --precision to change it)".to_owned()
    } else {
        let why = Precision::auto_with_reason(device).1.map_or(String::new(), |why| format!(": {why}"));
        format!(" (the default on this device{why}; --precision to change it)")
    };
    eprintln!(
        "run {}: {} parameters ({}), {} tokenizer ({} tokens), {} training tokens, {} steps on \
         {device:?} in {}{chosen}",
        dir.display(),
        model.num_params(),
        c.model.describe(),
        c.tokenizer,
        plan.tokenizer.vocab_size(),
        plan.data.train.size()[0],
        c.train.steps,
        c.train.precision.describe(device),
    );
    let finished =
        train_in_run(&run, &model, &mut trainer, &plan.data, &plan.tokenizer, args.mlflow.as_deref())?;
    if finished {
        eprintln!("sample with `llm sample --run-dir {}`", dir.display());
    }
    Ok(exit_code(finished))
}

/// The trainer of a resumed run, `model` holding its latest checkpoint's weights (or, if it
/// has none yet, a fresh trainer from step 0), with `config`'s training settings; the folder's
/// config is rewritten with them, and its metrics with the checkpoint's history.
fn resume_trainer(run: &mut Run, model: &mut AnyModel, config: &run::RunConfig) -> Result<Trainer> {
    let trainer = if run.latest().exists() {
        let checkpoint = Checkpoint::load(run.latest())?;
        let mut trainer = checkpoint.resume(model)?;
        trainer.set_config(config.train.clone())?;
        trainer
    } else {
        Trainer::new(model, config.train.clone())? // no checkpoint yet: from step 0
    };
    run.config = config.clone();
    run.save_config()?;
    run.rewrite_metrics(trainer.history())?;
    eprintln!("resuming {} at step {}", run.dir().display(), trainer.step());
    Ok(trainer)
}

/// Train `model` in `run` until its steps are done or it is stopped (Ctrl-C, SIGTERM: the
/// checkpoint is saved, and the command to resume is said), with a progress bar on a
/// terminal, log lines otherwise, and MLflow if asked (`mlflow`, else `MLFLOW_TRACKING_URI`).
/// Returns whether the run finished.
fn train_in_run(
    run: &Run,
    model: &dyn LanguageModel,
    trainer: &mut Trainer,
    data: &dyn Batches,
    tokenizer: &AnyTokenizer,
    mlflow: Option<&str>,
) -> Result<bool> {
    let steps = trainer.config().steps;
    // MLflow, if asked for: the run folder sends it the events and the plots.
    let tracker = run.start_tracking(mlflow, model.num_params(), trainer.history());

    // Ctrl-C or SIGTERM: the trainer finishes the step (the library's interrupt flag), the
    // run saves, and we exit. A second one exits at once.
    let armed = Arc::new(AtomicBool::new(false));
    for sig in [interrupt::SIGINT, interrupt::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&armed))?;
        signal_hook::flag::register(sig, Arc::clone(&armed))?;
        interrupt::listen(sig)?;
    }

    // A progress bar on a terminal; plain log lines otherwise (CI, pipes, files).
    let bar = std::io::stderr().is_terminal().then(|| {
        let style = indicatif::ProgressStyle::with_template(
            "step {pos}/{len} [{bar:30}] {msg} [{elapsed_precise}, ETA {eta_precise}]",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        indicatif::ProgressBar::new(steps as u64).with_position(trainer.step() as u64).with_style(style)
    });
    let result = run.train(
        model,
        trainer,
        data,
        tokenizer,
        tracker.as_ref(),
        |event| match (&bar, event) {
            (Some(bar), TrainEvent::Log(l)) => bar.set_message(format!(
                "loss {:.4}{}",
                l.loss,
                l.tokens_per_sec.map(|t| format!(", {t:.0} tokens/s")).unwrap_or_default()
            )),
            (Some(bar), TrainEvent::Eval(_)) => bar.println(event.to_string()),
            (Some(bar), TrainEvent::EarlyStopped(_)) => bar.println(event.to_string()),
            (_, TrainEvent::Started(_)) => {}     // the first line said it
            (_, TrainEvent::Stopped { .. }) => {} // said below, with the resume command
            (_, TrainEvent::Progress(_)) => {}    // the bar moves every step; a log has its lines
            (None, _) => println!("{event}"),
        },
        |step| {
            if let Some(bar) = &bar {
                bar.set_position(step as u64);
            }
            ControlFlow::Continue(())
        },
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(tracker) = &tracker {
        tracker.finish(match result {
            Ok(true) => RunStatus::Finished,
            Ok(false) => RunStatus::Killed,
            Err(_) => RunStatus::Failed,
        });
    }
    let dir = run.dir().display();
    if result? {
        let best = trainer.history().points.iter().map(|p| p.val_loss).fold(f64::INFINITY, f64::min);
        let early = trainer.early_stop().map_or_else(String::new, |e| {
            format!(
                " (stopped early: no new best in {} estimates since step {})",
                e.estimates_since, e.best_step
            )
        });
        eprintln!("done: {} steps{early}, best val loss {best:.4} in {dir}", trainer.step());
        eprintln!("time: {} (checkpoints and plots not counted)", trainer.times());
        return Ok(true);
    }
    let sig = interrupt::requested().unwrap_or(interrupt::SIGINT);
    let resume = match run.config.task {
        Task::Pretrain => format!("llm train --resume --run-dir {dir}"),
        ref task => format!("{} --run-dir {dir}", task.command()),
    };
    eprintln!(
        "stopped at step {} of {steps} ({}); checkpoint saved in {}.\nResume with: {resume}",
        trainer.step(),
        if sig == interrupt::SIGTERM { "SIGTERM" } else { "Ctrl-C" },
        run.latest().display(),
    );
    Ok(false)
}

/// A finished run succeeded; a stopped one exits as the signal that stopped it would.
fn exit_code(finished: bool) -> ExitCode {
    match finished {
        true => ExitCode::SUCCESS,
        false => ExitCode::from((128 + interrupt::requested().unwrap_or(interrupt::SIGINT)) as u8),
    }
}

fn finetune(command: FinetuneCommand) -> Result<ExitCode> {
    // What to finetune for; whether --tune or --split-seed were given (a resumed run keeps its own).
    let (args, goal, given, measures) = match command {
        FinetuneCommand::Classify(a) => {
            let tune = a.tune();
            let goal = Goal::Classify {
                tune: tune.unwrap_or(Tune::LastBlock),
                split_seed: a.split_seed.unwrap_or(SPLIT_SEED),
            };
            (a.common, goal, tune.is_some() || a.split_seed.is_some(), Measures::default())
        }
        FinetuneCommand::Instruct(a) => {
            let measures = Measures { held_out: a.held_out, max_new_tokens: a.max_new_tokens };
            (a.common, Goal::Instruct, false, measures)
        }
    };
    let spec = match &args.config {
        Some(file) => args.spec.clone().or(RunSpec::load(file)?)?,
        None => args.spec.clone(),
    };
    let dir = args.run_dir.clone().unwrap_or_else(default_run_dir);

    // Everything is checked before anything is written: a rejected start leaves no folder.
    let (run, _lock, plan, mut trainer) = if Run::exists(&dir) {
        if let Some(source) = &args.init_from {
            bail!(
                "--init-from {source} starts a new run, and {} holds one already: resume it without \
                 --init-from, or give another --run-dir",
                dir.display()
            );
        }
        let (mut run, tokenizer) = Run::open(&dir)?;
        let saved = (&run.config.task, &run.config.model);
        match (saved, goal) {
            (
                (Task::Classify { split_seed }, ModelConfig::Classifier(c)),
                Goal::Classify { tune, split_seed: s },
            ) if !given || (c.tune == tune && *split_seed == s) => {}
            ((Task::Classify { .. }, _), Goal::Classify { .. }) => bail!(
                "a resumed run keeps what trains and its split of the messages: drop --tune and --split-seed"
            ),
            ((Task::Instruct { .. }, _), Goal::Instruct) => {}
            ((task, _), _) => {
                bail!("{} is a run of `{}`: continue it with that command", dir.display(), task.command())
            }
        }
        if !run.latest().exists() {
            bail!(
                "{} has no checkpoint yet to continue from: remove it, and start again with --init-from",
                dir.display()
            );
        }
        let lock = run.lock()?; // before anything in the folder is read to be rewritten
        let mut plan = finetune::plan_resumed(&run.config, tokenizer, &spec)?;
        let trainer = resume_trainer(&mut run, &mut plan.model, &plan.config)?;
        (run, lock, plan, trainer)
    } else {
        let Some(source) = &args.init_from else {
            bail!("a new finetuning run starts from a pretrained model: give --init-from RUN|DIR|gpt2")
        };
        let device = device::parse(spec.device.as_deref().unwrap_or("auto"))?;
        let (pretrained, tokenizer) = load_pretrained(source, device)?;
        let plan = finetune::plan_new(&spec, source, pretrained, tokenizer, goal)?;
        let run = Run::create(&dir, &plan.config, &plan.tokenizer)?;
        let lock = run.lock()?;
        measure(&run, &plan.model, &plan, "before", measures)?;
        let trainer = Trainer::new(&plan.model, plan.config.train.clone())?;
        (run, lock, plan, trainer)
    };
    if let FinetuneData::Instruct { left_out: n @ 1.., .. } = plan.data {
        eprintln!(
            "left out {n} records whose prompt alone fills the model's context of {} tokens",
            plan.config.model.block_size()
        );
    }
    let (c, model) = (&plan.config, &plan.model);
    let device = model.var_store().device();
    eprintln!(
        "run {}: {} of {} parameters train ({}), {} tokenizer ({} tokens), {} steps on {device:?} in {}",
        dir.display(),
        model.num_params(),
        c.model.num_params(),
        c.model.describe(),
        c.tokenizer,
        plan.tokenizer.vocab_size(),
        c.train.steps,
        c.train.precision.describe(device),
    );
    let finished = train_in_run(
        &run,
        &plan.model,
        &mut trainer,
        plan.data.batches(),
        &plan.tokenizer,
        args.mlflow.as_deref(),
    )?;
    if finished {
        // The best checkpoint, as `llm classify` and `llm chat` load it.
        let best = run.checkpoint_for_sampling().context("the run saved no checkpoint")?;
        let model = run::load_model(&Checkpoint::load(best)?, device)?;
        measure(&run, &model, &plan, "after", measures)?;
        let next = match plan.config.task {
            Task::Instruct { .. } => "ask it with `llm chat --run-dir",
            _ => "classify messages with `llm classify --run-dir",
        };
        eprintln!("{next} {}`", dir.display());
    }
    Ok(exit_code(finished))
}

/// How an instruction follower is measured: on how many held-out records, with responses
/// of at most how many tokens.
#[derive(Debug, Clone, Copy, Default)]
struct Measures {
    held_out: Option<usize>,
    max_new_tokens: usize,
}

/// Measure `model` on the run's held-out data, say it, and record it as `when` ("before",
/// "after") in the run folder: accuracy, or the response loss and the responses themselves.
fn measure(
    run: &Run,
    model: &AnyModel,
    plan: &finetune::FinetunePlan,
    when: &str,
    measures: Measures,
) -> Result<()> {
    match (&plan.data, model, &plan.config.task) {
        (FinetuneData::Classify { data, test }, AnyModel::Classifier(classifier), _) => {
            let results = classify_results(classifier, data, test)?;
            eprintln!("{when}: {results}");
            finetune::save_results(run.dir(), finetune::RESULTS_FILE, when, &results)?;
        }
        (FinetuneData::Instruct { test, .. }, _, Task::Instruct { end_id }) => {
            let records = &test[..measures.held_out.unwrap_or(test.len()).min(test.len())];
            eprintln!("{when}: answering {} held-out instructions ...", records.len());
            let (results, responses) =
                instruct_results(model, &plan.tokenizer, records, *end_id, measures.max_new_tokens)?;
            eprintln!("{when}: {results}");
            finetune::save_results(run.dir(), finetune::RESULTS_FILE, when, &results)?;
            finetune::save_results(run.dir(), finetune::RESPONSES_FILE, when, &responses)?;
        }
        _ => bail!("{}: the run's model and data are not of its task", run.dir().display()),
    }
    Ok(())
}

fn classify(args: ClassifyArgs) -> Result<()> {
    let Loaded { model, tokenizer, .. } = args.model.load()?;
    let AnyModel::Classifier(classifier) = &model else {
        bail!("the model is a {}, not a classifier: `llm finetune classify` makes one", model.config().arch())
    };
    let texts = match args.text.is_empty() {
        false => args.text,
        true => {
            std::io::stdin().lines().collect::<std::io::Result<Vec<_>>>().context("reading standard input")?
        }
    };
    let (device, block) = (classifier.gpt.vs.device(), classifier.gpt.config.block_size);
    for text in texts.iter().filter(|t| !t.trim().is_empty()) {
        let mut ids = tokenizer
            .encode(text)
            .with_context(|| format!("{text:?}: the classifier's tokenizer cannot encode it"))?;
        ids.truncate(block); // its first tokens, as in training
        let batch = data::pad(&[ids], 0, device)?;
        let scores = tch::no_grad(|| classifier.classify(&batch, false))?; // [1, n_classes]
        let probs = Vec::<f64>::try_from(scores.f_softmax(-1, tch::Kind::Double)?.f_squeeze_dim(0)?)?;
        let (label, p) = probs
            .iter()
            .enumerate()
            .fold((0, f64::MIN), |best, (i, &p)| if p > best.1 { (i, p) } else { best });
        let name = CLASSES.get(label).map_or_else(|| label.to_string(), |c| (*c).to_owned());
        println!("{name}\t{p:.3}\t{text}");
    }
    Ok(())
}

fn chat(args: ChatArgs) -> Result<()> {
    let (run, _) = Run::open(&args.run_dir)?;
    let Task::Instruct { end_id } = run.config.task else {
        bail!(
            "{} is not an instruction follower's run: `llm finetune instruct` makes one",
            args.run_dir.display()
        )
    };
    let best = run
        .checkpoint_for_sampling()
        .with_context(|| format!("{} has no checkpoint yet", args.run_dir.display()))?;
    let checkpoint = Checkpoint::load(best)?;
    let model = run::load_model(&checkpoint, device::parse(&args.device)?)?;
    let sampling = match args.temperature {
        0.0 => Sampling::greedy(),
        t => Sampling { temperature: t, top_k: None, ..Sampling::default() },
    };
    sampling.validate().context("--temperature")?;
    let answer = |instruction: &str, input: &str| -> Result<String> {
        let record =
            Instruction { instruction: instruction.into(), input: input.into(), output: String::new() };
        let (response, ended) = respond(
            &model,
            &checkpoint.tokenizer,
            &record,
            end_id,
            args.max_new_tokens,
            &sampling,
            args.seed,
        )?;
        let cut = if ended {
            String::new()
        } else {
            format!("\n[no end-of-text in {} tokens]", args.max_new_tokens)
        };
        Ok(format!("{response}{cut}"))
    };
    if let Some(prompt) = &args.prompt {
        println!("{}", answer(prompt, args.input.as_deref().unwrap_or(""))?);
        return Ok(());
    }
    let tty = std::io::stdin().is_terminal();
    let mut lines = std::io::stdin().lines();
    loop {
        if tty {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { return Ok(()) };
        let line = line.context("reading standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        match answer(line.trim(), "") {
            Ok(response) => println!("{response}"),
            Err(e) => eprintln!("error: {}", error_chain(&e)),
        }
    }
}

fn sample(args: SampleArgs) -> Result<()> {
    let Loaded { model, tokenizer, .. } = args.model.load()?;
    writes_text(&model)?;
    let tokenizer = &tokenizer;
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(file)) => {
            std::fs::read_to_string(file).with_context(|| format!("--prompt-file {}", file.display()))?
        }
        (None, None) => "\n".into(),
    };
    let mut ids = tokenizer.encode(&prompt).context("--prompt: the model's tokenizer cannot encode it")?;
    if ids.is_empty() {
        ids = tokenizer.encode("\n").unwrap_or_default();
        if ids.is_empty() {
            ids = vec![0];
        }
    }
    let sampling =
        Sampling { temperature: args.temperature, top_k: args.top_k.0, top_p: args.top_p, greedy: false };
    sampling.validate().context("sampling settings (--temperature, --top-k, --top-p)")?;
    if args.num_samples == 0 {
        bail!("--num-samples must be at least 1");
    }
    let seeds: Vec<u64> = (0..args.num_samples as u64).map(|i| args.seed.wrapping_add(i)).collect();
    let cache = if args.no_cache { Cache::Off } else { Cache::On };
    let mut out = std::io::stdout().lock();
    write!(out, "{prompt}")?;
    // One sample streams: after each token, print what the decoded text has grown by.
    // Several are printed once they are done.
    let (mut streamed, mut printed) = (Vec::new(), 0usize);
    let start = std::time::Instant::now();
    let samples =
        generate::generate_batch(&model, &ids, args.max_new_tokens, &sampling, &seeds, cache, |step| {
            if let [id] = step {
                streamed.push(*id);
                let text = tokenizer.decode(&streamed)?;
                let stable = stable_prefix(&text);
                if stable.len() > printed {
                    let _ = out.write_all(stable[printed..].as_bytes()).and_then(|()| out.flush());
                    printed = stable.len();
                }
            }
            Ok(())
        })?;
    let seconds = start.elapsed().as_secs_f64();
    for (i, sample) in samples.iter().enumerate() {
        if i > 0 {
            write!(out, "\n---------------\n{prompt}")?;
        }
        let skip = if i == 0 { printed } else { 0 };
        writeln!(out, "{}", &tokenizer.decode(sample)?[skip..])?;
    }
    let tokens: usize = samples.iter().map(Vec::len).sum();
    eprintln!(
        "{tokens} tokens in {seconds:.2} s: {:.0} tokens/s ({})",
        tokens as f64 / seconds.max(1e-9),
        if args.no_cache { "no cache" } else { "KV cache" }
    );
    Ok(())
}

/// `--top-k`: how many of the most likely tokens stay in the draw, or `all`.
#[derive(Debug, Clone, Copy)]
struct TopK(Option<usize>);

impl std::str::FromStr for TopK {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match (s, s.parse::<usize>()) {
            ("all", _) => Ok(TopK(None)),
            (_, Ok(0)) => Err("must be at least 1 (or `all` to draw from every token)".into()),
            (_, Ok(k)) => Ok(TopK(Some(k))),
            (_, Err(_)) => Err(format!("expected a number of tokens or `all`, got {s:?}")),
        }
    }
}

/// The part of a streamed decode that later tokens cannot change: all but trailing U+FFFD.
/// A byte-level token sequence can stop inside a character (the first bytes of an emoji),
/// which decodes to U+FFFD until the rest arrives; printing it would print the wrong text.
fn stable_prefix(text: &str) -> &str {
    text.trim_end_matches('\u{FFFD}')
}

fn export(args: ExportArgs) -> Result<()> {
    let Loaded { model, tokenizer, checkpoint } = args.model.load()?;
    let training = checkpoint.map(|c| serde_json::to_value(&c.train_config)).transpose()?;
    let gpt = match &model {
        AnyModel::Gpt(gpt) => gpt,
        AnyModel::Llama(llama) => {
            hf::export_llama(llama, &tokenizer, &args.out)?;
            println!("{}", args.out.display());
            eprintln!(
                "{} parameters in the Hugging Face Llama layout; in Python: \
                 LlamaForCausalLM.from_pretrained({:?})",
                model.num_params(),
                args.out.display().to_string()
            );
            return Ok(());
        }
        AnyModel::Classifier(_) => bail!("the model is a classifier: it has no Hugging Face layout here"),
    };
    hf::export_with_training(gpt, &tokenizer, training.as_ref(), &args.out)?;
    println!("{}", args.out.display());
    eprintln!(
        "{} parameters in the Hugging Face GPT-2 layout; in Python: \
         GPT2LMHeadModel.from_pretrained({:?}){}",
        model.num_params(),
        args.out.display().to_string(),
        if args.out.join(hf::TOKENIZER_FILE).exists() {
            ", AutoTokenizer.from_pretrained(the same)"
        } else {
            ""
        }
    );
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let Loaded { model, tokenizer, checkpoint } = args.model.load()?;
    writes_text(&model)?;
    let tokenizer = &tokenizer;
    let (ids, what) = match &args.input {
        Some(file) => {
            let text = data::load_text(file)?;
            let ids = tokenizer.encode(&text).context("--input: the run's tokenizer cannot encode it")?;
            (ids, file.display().to_string())
        }
        None => {
            // The run's own validation split: the last 10% of its text's tokens, or the
            // validation part of a corpus published with its splits.
            let Some(checkpoint) = &checkpoint else { bail!("--model has no run: give --input FILE") };
            let run_dir = checkpoint.path.parent().and_then(Path::parent).filter(|d| Run::exists(d));
            let Some(run_dir) = run_dir else {
                bail!("{} is not inside a run folder: give --input FILE", checkpoint.path.display())
            };
            let (run, _) = Run::open(run_dir)?;
            if !run.config.task.is_pretrain() {
                bail!(
                    "{} is a finetuning run (its measures are in its results.json): give --input FILE",
                    run_dir.display()
                )
            }
            let ids = run.config.data.load()?.validation_ids(tokenizer)?;
            (ids, format!("the validation split of {}", run_dir.display()))
        }
    };
    let report = run::evaluate(&model, tokenizer, &ids)?;
    println!(
        "loss {:.4} nats/token, perplexity {:.3}, {:.4} bits per character ({} tokens, {} characters of {what}{})",
        report.loss,
        report.perplexity,
        report.bits_per_char,
        report.tokens,
        report.chars,
        checkpoint.map_or_else(String::new, |c| format!("; step {}", c.step))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::stable_prefix;

    #[test]
    fn streaming_waits_for_a_character_split_across_tokens() {
        let bytes = "ab🙂c".as_bytes();
        let mut printed = String::new();
        for end in 1..=bytes.len() {
            let text = String::from_utf8_lossy(&bytes[..end]);
            let stable = stable_prefix(&text);
            assert!(stable.starts_with(printed.as_str()), "{stable:?} after {printed:?}");
            printed = stable.to_string();
        }
        assert_eq!(printed, "ab🙂c");
    }
}
