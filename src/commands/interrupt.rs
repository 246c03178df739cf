//! Ctrl-C for long-running commands: the first press sets a flag the command checks between units
//! of work (it then saves and exits 130); a second press exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::exit::Exit;

/// Installs the handler; `finishing` says what the command does on the first press (e.g.
/// "finishing the batch in flight and saving"). Returns the flag.
pub fn install(quiet: bool, finishing: &'static str) -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    let installed = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(Exit::Interrupted.code()));
        }
        if !quiet {
            eprintln!("\ninterrupt: {finishing} (Ctrl-C again to quit now)");
        }
    });
    if let Err(err) = installed {
        tracing::warn!(
            "Ctrl-C handling unavailable ({err}); an interrupt loses the work in flight"
        );
    }
    interrupted
}
