/*!
Ctrl-C and SIGTERM during a long operation: the first signal sets a flag that the streaming loops
check, so the operation stops at the next buffer, aborts its upload or rolls back its restore, and
exits with a clear message. A second signal ends the process at once.
*/

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, ErrorKind, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // SAFETY: resetting a handler is async-signal-safe; the next signal gets the default action.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// Installs the handlers for SIGINT and SIGTERM (the CLI calls this once at start).
pub fn install() {
    // SAFETY: on_signal only touches an atomic and calls signal(2), both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// An error of kind `Interrupted` once a signal arrived.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err(Error::new(
            ErrorKind::Interrupted,
            "interrupted by a signal",
        ))
    } else {
        Ok(())
    }
}
