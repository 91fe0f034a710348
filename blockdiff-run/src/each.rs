//! `blockdiff-backup --each 'VG/PATTERN'`: one chain per logical volume,
//! backed up one after another, or `--jobs N` at a time.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use lvm_snap::{LvPath, Lvm, SnapshotSize};

use crate::{RunError, RunLog, RunSummary};

/// The chain of `lv` in an `--each` run whose NAME is `dir`:
/// `dir/LVNAME`. The one place that names an LV's chain, for options that
/// change chain names to wrap.
pub fn each_chain_name(dir: &Path, lv: &LvPath) -> PathBuf {
    dir.join(&lv.lv)
}

/// Backs up every volume (an [`LvPath`] of `--each`, a
/// [`ListedSource`](crate::ListedSource) of `--sources`) with `one`, which
/// returns its run's summary,
/// `jobs` at a time (in the order given; 1: one after another): a failure
/// is logged and the next volume goes on, unless `one` says to stop
/// ([`ControlFlow::Break`], as after SIGTERM): the volumes not yet started
/// are then not backed up, and count as failed. Returns the summaries of
/// the volumes backed up, in the order given, and an error naming the
/// failed volumes if any failed.
pub fn back_up_each<T: std::fmt::Display + Sync>(
    volumes: &[T],
    jobs: usize,
    log: &RunLog,
    one: impl Fn(&T) -> ControlFlow<RunSummary, RunSummary> + Sync,
) -> (Vec<RunSummary>, Result<(), RunError>) {
    let next = AtomicUsize::new(0);
    let stopping = AtomicBool::new(false);
    let done: Mutex<Vec<Option<RunSummary>>> = Mutex::new(vec![None; volumes.len()]);
    let worker = || {
        while !stopping.load(Ordering::SeqCst) {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(lv) = volumes.get(i) else { break };
            let (summary, stop) = match one(lv) {
                ControlFlow::Continue(s) => (s, false),
                ControlFlow::Break(s) => (s, true),
            };
            if let Some(error) = &summary.error {
                log.error(format_args!("{lv}: {error}"));
            }
            if stop {
                stopping.store(true, Ordering::SeqCst);
            }
            done.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(summary);
        }
    };
    let jobs = jobs.clamp(1, volumes.len().max(1));
    if jobs == 1 {
        worker();
    } else {
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(worker);
            }
        });
    }
    let done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
    let mut summaries = Vec::with_capacity(volumes.len());
    let mut failed = Vec::new();
    let mut left = Vec::new();
    for (lv, summary) in volumes.iter().zip(done) {
        match summary {
            Some(summary) => {
                if summary.error.is_some() {
                    failed.push(lv.to_string());
                }
                summaries.push(summary);
            }
            None => left.push(lv.to_string()),
        }
    }
    if !left.is_empty() {
        log.error(format_args!("stopping; not backed up: {}", left.join(", ")));
        failed.extend(left);
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

/// Which volume groups' volumes must be backed up one at a time under
/// `--jobs`: those whose thick snapshots (sized by `size`) would not all
/// fit in the group's free space if taken at once. Thin volumes take no
/// space from the group. Each such group comes with the reason, for the
/// log.
pub fn groups_to_serialize(
    lvm: &Lvm,
    volumes: &[LvPath],
    size: SnapshotSize,
) -> Result<BTreeMap<String, String>, RunError> {
    let mut needs: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    let mut groups = BTreeMap::new();
    for lv in volumes {
        let volume = lvm.lv(lv)?;
        let vg = groups.entry(lv.vg.as_str());
        let vg = match vg {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(lvm.vg(&lv.vg)?),
        };
        if !volume.is_thin() {
            let need = size.bytes_for(volume.size, vg.extent_size);
            let entry = needs.entry(lv.vg.as_str()).or_default();
            entry.0 = entry.0.saturating_add(need);
            entry.1 += 1;
        }
    }
    let mut serialize = BTreeMap::new();
    for (vg, (need, count)) in needs {
        let free = groups[vg].free;
        if count > 1 && need > free {
            serialize.insert(
                vg.to_owned(),
                format!(
                    "the snapshots of its {count} thick volumes need {need} bytes together, more than its {free} free: they are backed up one at a time"
                ),
            );
        }
    }
    Ok(serialize)
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
        let ran = Mutex::new(Vec::new());
        let (summaries, result) = back_up_each(&volumes, 1, &log, |lv| {
            ran.lock().unwrap().push(lv.lv.clone());
            let clock = RunSummary::start(&each_chain_name(Path::new("/b"), lv), lv);
            ControlFlow::Continue(if lv.lv == "b" {
                clock.failed(&error("cannot snapshot vg0/b: no space"))
            } else {
                clock.failed(&error("x")).ok_for_test()
            })
        });
        assert_eq!(*ran.lock().unwrap(), ["a", "b", "c"]);
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

        let (summaries, result) = back_up_each(&volumes[..1], 1, &log, |lv| {
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
        let ran = AtomicUsize::new(0);
        let (summaries, result) = back_up_each(&volumes, 1, &log, |lv| {
            ran.fetch_add(1, Ordering::SeqCst);
            ControlFlow::Break(RunSummary::start(Path::new("/b/a"), lv).failed(&error(
                "backup of lvm:vg0/a to /b/a failed: interrupted by SIGTERM",
            )))
        });
        assert_eq!((ran.into_inner(), summaries.len()), (1, 1));
        assert_eq!(
            result.unwrap_err().to_string(),
            "could not back up 3 of 3 volumes: vg0/a, vg0/b, vg0/c"
        );
    }

    #[test]
    fn jobs_run_at_once_and_the_summaries_keep_the_order_given() {
        let log = RunLog::new(|_, _| {});
        let volumes: Vec<LvPath> = ["vg0/a", "vg0/b", "vg0/c", "vg0/d"]
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        // Three jobs: a, b and c each wait until all three have started,
        // which happens only if they run at the same time (a generous
        // limit turns a broken pool into a failure, not a hang).
        let started = (Mutex::new(0usize), std::sync::Condvar::new());
        let all_met = AtomicBool::new(true);
        let (summaries, result) = back_up_each(&volumes, 3, &log, |lv| {
            if lv.lv != "d" {
                let (count, cv) = &started;
                let mut n = count.lock().unwrap();
                *n += 1;
                cv.notify_all();
                let (n, timeout) = cv
                    .wait_timeout_while(n, std::time::Duration::from_secs(60), |n| *n < 3)
                    .unwrap();
                if timeout.timed_out() {
                    all_met.store(false, Ordering::SeqCst);
                }
                drop(n);
            }
            let clock = RunSummary::start(&each_chain_name(Path::new("/b"), lv), lv);
            ControlFlow::Continue(if lv.lv == "c" {
                clock.failed(&error("cannot snapshot vg0/c"))
            } else {
                clock.failed(&error("x")).ok_for_test()
            })
        });
        assert!(all_met.into_inner(), "three volumes never ran at once");
        let names: Vec<_> = summaries.iter().map(|s| s.name.clone()).collect();
        assert_eq!(names, ["/b/a", "/b/b", "/b/c", "/b/d"].map(PathBuf::from));
        assert_eq!(
            result.unwrap_err().to_string(),
            "could not back up 1 of 4 volumes: vg0/c"
        );
    }

    #[test]
    fn thick_snapshots_that_would_not_fit_together_are_taken_one_at_a_time() {
        use command_runner::{CommandOutput, RecordingRunner};
        let r = std::sync::Arc::new(RecordingRunner::strict());
        let row = |name: &str, attr: &str, size: u64| {
            CommandOutput::ok(format!(
                r#"{{"report": [{{"lv": [{{"lv_name":"{name}", "vg_name":"vg0", "lv_attr":"{attr}", "lv_size":"{size}", "origin":"", "pool_lv":"", "data_percent":"", "lv_tags":""}}]}}]}}"#
            ))
        };
        let lvs = "lvs --reportformat json --units b --nosuffix -o lv_name,vg_name,lv_attr,lv_size,origin,pool_lv,data_percent,lv_tags";
        r.reply(format!("{lvs} vg0/a"), row("a", "-wi-a-----", 400 << 20));
        r.reply(format!("{lvs} vg0/b"), row("b", "-wi-a-----", 400 << 20));
        r.reply(format!("{lvs} vg0/t"), row("t", "Vwi-a-tz--", 4 << 30));
        r.reply(
            "vgs",
            CommandOutput::ok(
                r#"{"report": [{"vg": [{"vg_name":"vg0", "vg_size":"2147483648", "vg_free":"104857600", "vg_extent_size":"4194304"}]}]}"#,
            ),
        );
        let lvm = Lvm::with_runner(r);
        let vols = |names: &[&str]| -> Vec<LvPath> {
            names
                .iter()
                .map(|n| format!("vg0/{n}").parse().unwrap())
                .collect()
        };
        // 15% of 400 MiB is 60 MiB each: one fits in 100 MiB free, two not.
        let serial =
            groups_to_serialize(&lvm, &vols(&["a", "b", "t"]), SnapshotSize::default()).unwrap();
        assert!(
            serial["vg0"].contains("its 2 thick volumes need 125829120 bytes together"),
            "{serial:?}"
        );
        // One thick volume and a thin one: nothing to wait for.
        let serial =
            groups_to_serialize(&lvm, &vols(&["a", "t"]), SnapshotSize::default()).unwrap();
        assert!(serial.is_empty());
    }

    impl RunSummary {
        fn ok_for_test(mut self) -> Self {
            self.error = None;
            self
        }
    }
}
