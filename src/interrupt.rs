//! Stopping long work cleanly: ■ (interrupt) in Jupyter, Ctrl-C or SIGTERM on the command line.
//!
//! A Python notebook turns ■ into a `KeyboardInterrupt` that unwinds the loop and keeps every
//! variable. A Rust cell has no such thing, so the course does it with one process-wide flag:
//!
//! - a signal handler ([`signal_hook`]) sets the flag when SIGINT (or, where a program asks for
//!   it, SIGTERM) arrives; the course's kernel turns ■ into a SIGINT to the process that runs
//!   the cells;
//! - the [`Trainer`](crate::train::Trainer) looks at the flag after every optimizer step, and
//!   [`generate`](crate::generate::generate) after every token: set, they stop there and
//!   return normally, so the model, the optimizer state and the history stay usable in the
//!   next cells (plot, sample, or continue training with the same trainer);
//! - a run clears the flag when it starts ([`start`]), so an old ■ does not stop the next run.
//!
//! Code that never looks at the flag (a plain busy loop) is not stopped by it; the kernel then
//! ends the cell's process after a grace period, and says that the variables are lost.

use crate::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub use signal_hook::consts::{SIGINT, SIGTERM};

/// The signal that asked to stop (0: none).
fn flag() -> &'static Arc<AtomicUsize> {
    static FLAG: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    FLAG.get_or_init(Arc::default)
}

/// Make `signal` set the flag instead of ending the process (once per signal; later calls
/// do nothing).
pub fn listen(signal: i32) -> Result<()> {
    static LISTENING: Mutex<Vec<i32>> = Mutex::new(Vec::new());
    let mut listening = LISTENING.lock().unwrap_or_else(|e| e.into_inner());
    if !listening.contains(&signal) {
        signal_hook::flag::register_usize(signal, Arc::clone(flag()), signal as usize)
            .map_err(|e| Error::Config(format!("cannot watch signal {signal}: {e}")))?;
        listening.push(signal);
    }
    Ok(())
}

/// A run starts: listen for SIGINT and forget any earlier request to stop.
pub fn start() -> Result<()> {
    listen(SIGINT)?;
    clear();
    Ok(())
}

/// The signal that asked to stop since the last [`start`] or [`clear`], if one did.
pub fn requested() -> Option<i32> {
    match flag().load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal as i32),
    }
}

/// Ask the running loop to stop, as a signal would (for code that stops a run itself).
pub fn request() {
    flag().store(SIGINT as usize, Ordering::SeqCst);
}

/// Forget a request to stop.
pub fn clear() {
    flag().store(0, Ordering::SeqCst);
}
