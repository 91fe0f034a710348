//! SIGTERM while frozen: the watchdog thaws while the snapshot step is
//! still running and the run fails with Interrupted. Its own test binary,
//! as the signal disposition is process-wide.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use quiesce::{Error, Logger, QuiesceStack, TerminationSignals};

#[test]
fn sigterm_while_frozen_thaws_and_interrupts() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events");
    let signals = TerminationSignals::catch().unwrap();
    assert!(TerminationSignals::catch().is_err(), "one at a time");
    let spec = |stage: &str| format!("hook:{stage}=echo {stage} >> '{}'", events.display());
    let mut stack = QuiesceStack::from_spec_strings(
        &[spec("post-freeze"), spec("pre-thaw")],
        Logger::discard(),
    )
    .unwrap();
    stack.stop_on_signals(&signals);
    let error = stack
        .run_frozen(|window| {
            // SAFETY: raising a caught signal in our own process.
            unsafe { libc::raise(libc::SIGTERM) };
            let start = Instant::now();
            while !window.is_abandoned() && start.elapsed() < Duration::from_secs(5) {
                thread::sleep(Duration::from_millis(5));
            }
            thread::sleep(Duration::from_millis(200));
            fs::read_to_string(&events).unwrap()
        })
        .unwrap_err();
    assert!(matches!(error, Error::Interrupted { .. }));
    assert_eq!(
        error.to_string(),
        "received SIGTERM while frozen; everything was thawed and the snapshot step's result was discarded"
    );
    assert_eq!(signals.received(), Some(libc::SIGTERM));
    assert_eq!(
        fs::read_to_string(&events).unwrap(),
        "post-freeze\npre-thaw\n"
    );
    drop(signals);
    assert!(TerminationSignals::catch().is_ok());
}
