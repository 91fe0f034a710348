//! `blockdiff-backup --each 'VG/PATTERN'`: one chain per logical volume,
//! backed up one after another.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use lvm_snap::LvPath;

use crate::{RunError, RunLog, RunSummary};

/// The chain of `lv` in an `--each` run whose NAME is `dir`:
/// `dir/LVNAME`. The one place that names an LV's chain, for options that
/// change chain names to wrap.
pub fn each_chain_name(dir: &Path, lv: &LvPath) -> PathBuf {
    dir.join(&lv.lv)
}

/// Backs up every volume in turn with `one`, which returns its run's
/// summary: a failure is logged and the next volume goes on, unless `one`
/// says to stop ([`ControlFlow::Break`], as after SIGTERM): the volumes
/// left are then not backed up, and count as failed. Returns the
/// summaries in order, and an error naming the failed volumes if any
/// failed.
pub fn back_up_each(
    volumes: &[LvPath],
    log: &RunLog,
    mut one: impl FnMut(&LvPath) -> ControlFlow<RunSummary, RunSummary>,
) -> (Vec<RunSummary>, Result<(), RunError>) {
    let mut summaries = Vec::with_capacity(volumes.len());
    let mut failed = Vec::new();
    for (i, lv) in volumes.iter().enumerate() {
        let (summary, stop) = match one(lv) {
            ControlFlow::Continue(s) => (s, false),
            ControlFlow::Break(s) => (s, true),
        };
        if let Some(error) = &summary.error {
            log.error(format_args!("{lv}: {error}"));
            failed.push(lv.to_string());
        }
        summaries.push(summary);
        if stop && i + 1 < volumes.len() {
            let left: Vec<String> = volumes[i + 1..]
                .iter()
                .map(std::string::ToString::to_string)
                .collect();
            log.error(format_args!("stopping; not backed up: {}", left.join(", ")));
            failed.extend(left);
            break;
        }
    }
    log.info(format_args!(
        "{} of {} volumes backed up",
        volumes.len() - failed.len(),
        volumes.len()
    ));
    let result = if failed.is_empty() {
        Ok(())
    } else {
        Err(RunError::SomeFailed {
            failed,
            total: volumes.len(),
        })
    };
    (summaries, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn error(text: &str) -> RunError {
        RunError::InvalidOption(text.into())
    }

    #[test]
    fn chains_are_named_after_the_lv_under_name() {
        let lv: LvPath = "vg0/domu-web".parse().unwrap();
        assert_eq!(
            each_chain_name(Path::new("/var/backup/vms"), &lv),
            Path::new("/var/backup/vms/domu-web")
        );
    }

    #[test]
    fn a_failing_volume_is_logged_and_the_others_still_run() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let log =
            RunLog::new(move |level, m| l.lock().unwrap().push(format!("{}{m}", level.label())));
        let volumes: Vec<LvPath> = ["vg0/a", "vg0/b", "vg0/c"]
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        let mut ran = Vec::new();
        let (summaries, result) = back_up_each(&volumes, &log, |lv| {
            ran.push(lv.lv.clone());
            let clock = RunSummary::start(&each_chain_name(Path::new("/b"), lv), lv);
            ControlFlow::Continue(if lv.lv == "b" {
                clock.failed(&error("cannot snapshot vg0/b: no space"))
            } else {
                clock.failed(&error("x")).ok_for_test()
            })
        });
        assert_eq!(ran, ["a", "b", "c"]);
        assert_eq!(summaries.len(), 3);
        assert_eq!(summaries[1].name, Path::new("/b/b"));
        assert!(summaries[0].ok() && !summaries[1].ok() && summaries[2].ok());
        assert_eq!(
            result.unwrap_err().to_string(),
            "could not back up 1 of 3 volumes: vg0/b"
        );
        assert_eq!(
            *lines.lock().unwrap(),
            [
                "error: vg0/b: cannot snapshot vg0/b: no space",
                "2 of 3 volumes backed up"
            ]
        );

        let (summaries, result) = back_up_each(&volumes[..1], &log, |lv| {
            ControlFlow::Continue(
                RunSummary::start(Path::new("/b/a"), lv)
                    .failed(&error("x"))
                    .ok_for_test(),
            )
        });
        assert!(result.is_ok() && summaries[0].ok());
    }

    #[test]
    fn an_interrupted_volume_stops_the_run() {
        let log = RunLog::new(|_, _| {});
        let volumes: Vec<LvPath> = ["vg0/a", "vg0/b", "vg0/c"]
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        let mut ran = 0;
        let (summaries, result) = back_up_each(&volumes, &log, |lv| {
            ran += 1;
            ControlFlow::Break(RunSummary::start(Path::new("/b/a"), lv).failed(&error(
                "backup of lvm:vg0/a to /b/a failed: interrupted by SIGTERM",
            )))
        });
        assert_eq!((ran, summaries.len()), (1, 1));
        assert_eq!(
            result.unwrap_err().to_string(),
            "could not back up 3 of 3 volumes: vg0/a, vg0/b, vg0/c"
        );
    }

    impl RunSummary {
        fn ok_for_test(mut self) -> Self {
            self.error = None;
            self
        }
    }
}
