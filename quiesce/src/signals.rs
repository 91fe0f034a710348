use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::error::{Error, Result};

/// The last termination signal received while caught (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// Whether a [`TerminationSignals`] is alive.
static CATCHING: AtomicBool = AtomicBool::new(false);
/// The catcher [`TerminationSignals::shared`] hands out while one is alive.
static SHARED: Mutex<Weak<TerminationSignals>> = Mutex::new(Weak::new());

extern "C" fn record_signal(signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    RECEIVED.store(signal, Ordering::SeqCst);
}

/// Catches SIGINT, SIGTERM and SIGHUP while alive, so that a binary can
/// thaw before it exits.
///
/// How it is sound: the handler does nothing but store the signal number in
/// an atomic (async-signal-safe; no allocation, no lock, no thaw in the
/// handler). The stack's watchdog thread polls it every 20 ms while
/// anything is frozen ([`QuiesceStack::stop_on_signals`](crate::QuiesceStack::stop_on_signals))
/// and thaws on the normal thread, with the normal locks. Handlers are
/// installed with `SA_RESTART`, so system calls in progress (a MySQL
/// query, a command being waited for) are not disturbed. While it is alive
/// the signals do not end the process: the binary must look at
/// [`received`](Self::received) after the run (and exit, e.g. with status
/// 128 + signal) and in its own long loops. Dropping it restores the
/// previous dispositions.
///
/// Create it before starting the run (at the start of `main` is simplest);
/// one may be alive at a time.
#[derive(Debug)]
pub struct TerminationSignals {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl TerminationSignals {
    /// The signals caught.
    pub const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

    /// Installs the handlers.
    pub fn catch() -> Result<Self> {
        if CATCHING.swap(true, Ordering::SeqCst) {
            return Err(Error::Signals {
                detail: "termination signals are already being caught".to_string(),
            });
        }
        RECEIVED.store(0, Ordering::SeqCst);
        let mut caught = TerminationSignals {
            previous: Vec::new(),
        };
        for signal in Self::SIGNALS {
            // SAFETY: a zeroed sigaction is a valid value to fill in; the
            // handler only stores to an atomic.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction =
                    record_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&raw mut action.sa_mask);
                let mut previous: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &raw const action, &raw mut previous) != 0 {
                    return Err(Error::Signals {
                        detail: format!(
                            "cannot install a handler for {}: {}",
                            signal_name(signal),
                            io::Error::last_os_error()
                        ),
                    });
                }
                caught.previous.push((signal, previous));
            }
        }
        Ok(caught)
    }

    /// The catcher shared by every run of this process that is alive at
    /// once (backups running in parallel): the one alive if any, else a new
    /// one ([`catch`](Self::catch)), dropped with the last reference. A
    /// signal stops every run that shares it.
    pub fn shared() -> Result<Arc<Self>> {
        let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(alive) = slot.upgrade() {
            return Ok(alive);
        }
        let caught = Arc::new(Self::catch()?);
        *slot = Arc::downgrade(&caught);
        Ok(caught)
    }

    /// The signal received since [`catch`](Self::catch), if any (the last
    /// one if several).
    pub fn received(&self) -> Option<libc::c_int> {
        match RECEIVED.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }

    /// The name of the signal received while caught, if any.
    pub(crate) fn pending() -> Option<&'static str> {
        match RECEIVED.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal_name(signal)),
        }
    }
}

impl Drop for TerminationSignals {
    fn drop(&mut self) {
        for (signal, previous) in self.previous.drain(..).rev() {
            // SAFETY: restores the disposition saved by `catch`.
            unsafe {
                libc::sigaction(signal, &raw const previous, std::ptr::null_mut());
            }
        }
        CATCHING.store(false, Ordering::SeqCst);
    }
}

/// `SIGINT`, `SIGTERM`, … for a signal number.
pub fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGKILL => "SIGKILL",
        _ => "a signal",
    }
}
