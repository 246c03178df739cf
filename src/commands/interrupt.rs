//! Ctrl-C, SIGTERM and SIGHUP for long-running commands (the three are one: a scheduler's preemption
//! or `docker stop` gets what Ctrl-C gets): the first sets a flag the command checks between units
//! of work and phases (it then saves, writes its partial report and exits 130); a second exits at
//! once (130).

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
            eprintln!("\ninterrupt (Ctrl-C or SIGTERM): {finishing} (interrupt again to quit now)");
        }
    });
    if let Err(err) = installed {
        tracing::warn!(
            "Ctrl-C/SIGTERM handling unavailable ({err}); an interrupt loses the work in flight"
        );
    }
    interrupted
}
