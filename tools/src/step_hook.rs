//! A test hook that stops a run at a named step, so that the tests can
//! kill it there (`kill -9` at every commit step) without guessing with a
//! timer.
//!
//! `BLOCKDIFF_TEST_STOP_AT=STEP=FIFO` (for example
//! `backup:rename-ver=/tmp/t/stop.fifo`): when the run reaches `STEP` (see
//! [`blockdiff_core::Progress::at_step`]), it opens `FIFO` for reading and
//! reads it to its end. Opening blocks until the test opens the FIFO for
//! writing, so once the test's own open returns, the run is at `STEP` and
//! stays there until the test closes its end (the run then goes on) or
//! kills it. Without the variable (every real run), a step costs one
//! cached look-up. The variable is for tests only and is not documented in
//! `--help`.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The environment variable that names the step and the FIFO.
pub const STOP_AT_VAR: &str = "BLOCKDIFF_TEST_STOP_AT";

fn target() -> Option<&'static (String, PathBuf)> {
    static TARGET: OnceLock<Option<(String, PathBuf)>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let value = std::env::var_os(STOP_AT_VAR)?;
            let value = value.to_str()?;
            let (step, fifo) = value.split_once('=')?;
            Some((step.to_owned(), PathBuf::from(fifo)))
        })
        .as_ref()
}

/// The run has reached `step`: waits on the FIFO if the test hook names
/// this step, and returns at once otherwise.
pub fn reached(step: &str) {
    if let Some((wanted, fifo)) = target()
        && wanted == step
        && let Ok(mut f) = File::open(fifo)
    {
        let mut sink = Vec::new();
        let _ = f.read_to_end(&mut sink);
    }
}
