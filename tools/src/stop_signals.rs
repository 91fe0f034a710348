use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    RECEIVED.store(signal, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP turned into a flag that a long operation
/// polls, so that it stops cleanly: snapshots removed, services thawed,
/// nothing half-committed. The handler is one-shot: a second signal of
/// the same kind kills the process as usual (for an operator who really
/// means it; `blockdiff-lvm cleanup` then finds what was left).
#[derive(Debug)]
pub struct StopSignals(());

impl StopSignals {
    /// Installs the handlers.
    pub fn install() -> io::Result<StopSignals> {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: a zeroed sigaction is valid; the handler only stores
            // to an atomic; sigemptyset and sigaction get valid pointers.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(StopSignals(()))
    }

    /// The signal received, if any: `Some("SIGTERM")`.
    pub fn received(&self) -> Option<&'static str> {
        match RECEIVED.load(Ordering::SeqCst) {
            0 => None,
            libc::SIGINT => Some("SIGINT"),
            libc::SIGTERM => Some("SIGTERM"),
            libc::SIGHUP => Some("SIGHUP"),
            _ => Some("a signal"),
        }
    }

    /// `Some("interrupted by SIGTERM")` once a signal came.
    pub fn stop_reason(&self) -> Option<String> {
        self.received().map(|s| format!("interrupted by {s}"))
    }
}
