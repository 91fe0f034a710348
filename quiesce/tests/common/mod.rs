//! Helpers shared by the real-service tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use quiesce::Logger;

/// Finds `programs` (in PATH or /usr/sbin, /sbin). If one is missing, fails
/// with a message to run scripts/services-setup.sh — or, with
/// BLOCKDIFF_SKIP_SERVICES=1, prints a skip message and returns None.
pub fn require_programs(test: &str, programs: &[&str]) -> Option<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for program in programs {
        match find_program(program) {
            Some(path) => found.push(path),
            None => missing.push(*program),
        }
    }
    if missing.is_empty() {
        return Some(found);
    }
    if std::env::var("BLOCKDIFF_SKIP_SERVICES").as_deref() == Ok("1") {
        eprintln!(
            "{test}: skipped (BLOCKDIFF_SKIP_SERVICES=1): missing {}",
            missing.join(", ")
        );
        return None;
    }
    panic!(
        "{test}: {} not installed; run scripts/services-setup.sh (or set BLOCKDIFF_SKIP_SERVICES=1 to skip these tests)",
        missing.join(", ")
    );
}

pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .map(Path::new)
        .chain([
            Path::new("/usr/sbin"),
            Path::new("/sbin"),
            Path::new("/usr/bin"),
        ])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A logger that keeps every line.
pub fn collecting_logger() -> (Logger, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let logger = Logger::new(move |line| {
        eprintln!("quiesce: {line}");
        sink.lock().unwrap().push(line.to_string());
    });
    (logger, lines)
}
