//! Watching a snapshot's fill while it is read.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::snapshot::SnapshotWatcher;
use crate::{Error, LvPath, Result};

/// How a [`FillMonitor`] polls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FillMonitorOptions {
    /// Time between two polls.
    pub interval: Duration,
    /// Fill (percent) at which [`FillEvent::Warning`] is sent once.
    pub warn_percent: f64,
}

impl Default for FillMonitorOptions {
    /// Every 2 s; warn at 80%.
    fn default() -> Self {
        FillMonitorOptions {
            interval: Duration::from_secs(2),
            warn_percent: 80.0,
        }
    }
}

/// What the monitor has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FillStatus {
    /// The latest fill, percent.
    pub last: Option<f64>,
    /// The highest fill seen, percent.
    pub peak: f64,
    /// The snapshot overflowed and was invalidated.
    pub invalid: bool,
    /// Polls that succeeded.
    pub polls: u64,
}

/// Something the monitor reports as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum FillEvent {
    /// The fill reached the warning threshold (sent once).
    Warning {
        /// The snapshot.
        snapshot: LvPath,
        /// Its fill, percent.
        percent: f64,
        /// The threshold.
        threshold: f64,
    },
    /// The snapshot overflowed: LVM invalidated it (sent once).
    Invalid {
        /// The snapshot.
        snapshot: LvPath,
    },
    /// A poll failed (the next one is tried anyway).
    PollFailed {
        /// The error, on one line.
        error: String,
    },
}

struct Shared {
    status: FillStatus,
    warned: bool,
    on_event: Box<dyn FnMut(FillEvent) + Send>,
}

/// Polls a snapshot's fill on a thread until stopped, keeping the peak.
pub struct FillMonitor {
    watcher: SnapshotWatcher,
    options: FillMonitorOptions,
    shared: Arc<Mutex<Shared>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FillMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FillMonitor")
            .field("snapshot", self.watcher.snapshot())
            .field("status", &self.status())
            .finish()
    }
}

fn poll(
    watcher: &SnapshotWatcher,
    options: &FillMonitorOptions,
    shared: &Mutex<Shared>,
) -> Result<FillStatus> {
    let usage = watcher.usage();
    let mut s = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let usage = match usage {
        Ok(u) => u,
        Err(e) => {
            (s.on_event)(FillEvent::PollFailed {
                error: e.to_string(),
            });
            return Err(e);
        }
    };
    s.status.polls += 1;
    s.status.last = Some(usage.percent);
    s.status.peak = s.status.peak.max(usage.percent);
    if usage.invalid && !s.status.invalid {
        s.status.invalid = true;
        (s.on_event)(FillEvent::Invalid {
            snapshot: watcher.snapshot().clone(),
        });
    } else if !usage.invalid && usage.percent >= options.warn_percent && !s.warned {
        s.warned = true;
        (s.on_event)(FillEvent::Warning {
            snapshot: watcher.snapshot().clone(),
            percent: usage.percent,
            threshold: options.warn_percent,
        });
    }
    Ok(s.status)
}

impl FillMonitor {
    /// Polls once now (so that a snapshot that cannot be watched fails
    /// here), then every `options.interval` on a thread, sending events to
    /// `on_event` (called on the monitor's thread, or on the caller's for
    /// [`FillMonitor::check_now`]).
    pub fn start(
        watcher: SnapshotWatcher,
        options: FillMonitorOptions,
        on_event: impl FnMut(FillEvent) + Send + 'static,
    ) -> Result<FillMonitor> {
        let shared = Arc::new(Mutex::new(Shared {
            status: FillStatus::default(),
            warned: false,
            on_event: Box::new(on_event),
        }));
        poll(&watcher, &options, &shared)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = {
            let (watcher, shared) = (watcher.clone(), shared.clone());
            std::thread::Builder::new()
                .name("snapshot-fill".into())
                .spawn(move || {
                    while let Err(RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(options.interval)
                    {
                        let _ = poll(&watcher, &options, &shared);
                    }
                })
                .map_err(|source| Error::Io {
                    path: "snapshot-fill thread".into(),
                    op: "starting",
                    source,
                })?
        };
        Ok(FillMonitor {
            watcher,
            options,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// What has been seen so far.
    pub fn status(&self) -> FillStatus {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .status
    }

    /// Polls now, on the caller's thread: the check before a backup commits.
    pub fn check_now(&self) -> Result<FillStatus> {
        poll(&self.watcher, &self.options, &self.shared)
    }

    /// The error to report if the snapshot overflowed, else `None`.
    pub fn overflow_error(&self) -> Option<Error> {
        let status = self.status();
        status.invalid.then(|| Error::SnapshotInvalid {
            snapshot: self.watcher.snapshot().to_string(),
            peak_percent: status.peak,
        })
    }

    /// Stops polling and returns what was seen.
    pub fn stop(mut self) -> FillStatus {
        self.shutdown();
        self.status()
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FillMonitor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::thick_vg;
    use crate::{Lvm, Snapshot, SnapshotOptions};
    use command_runner::CommandOutput;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn monitor_keeps_the_peak_warns_once_and_sees_the_overflow() {
        let r = thick_vg(1 << 30);
        let lvm = Lvm::with_runner(r.clone());
        let snap = Snapshot::create(
            &lvm,
            &"vg0/data".parse().unwrap(),
            &SnapshotOptions::default(),
        )
        .unwrap();
        // The snapshot fills up 30, 85, 90, then overflows, then reads 0.
        let fills = ["30.00", "85.00", "90.00", "!", "0.00"];
        let poll_no = Arc::new(AtomicUsize::new(0));
        let name = snap.path().to_string();
        {
            let poll_no = poll_no.clone();
            r.on(format!("lvs --reportformat json --units b --nosuffix -o lv_name,vg_name,lv_attr,lv_size,origin,pool_lv,data_percent,lv_tags {name}"), move |_| {
                let i = poll_no.fetch_add(1, Ordering::SeqCst).min(fills.len() - 1);
                let (attr, pct) = match fills[i] {
                    "!" => ("swi-I-s---", "100.00"),
                    p => ("swi-a-s---", p),
                };
                CommandOutput::ok(format!(r#"{{"report": [{{"lv": [{{"lv_name":"s", "vg_name":"vg0", "lv_attr":"{attr}", "lv_size":"16777216", "origin":"data", "pool_lv":"", "data_percent":"{pct}", "lv_tags":"blockdiff"}}]}}]}}"#))
            });
        }
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let monitor = FillMonitor::start(
            snap.watcher(),
            FillMonitorOptions {
                interval: Duration::from_secs(3600),
                warn_percent: 80.0,
            },
            move |e| sink.lock().unwrap().push(e),
        )
        .unwrap();
        assert_eq!(monitor.status().last, Some(30.0));
        for _ in 0..4 {
            monitor.check_now().unwrap();
        }
        assert!(
            monitor
                .overflow_error()
                .unwrap()
                .to_string()
                .contains("overflowed")
        );
        let status = monitor.stop();
        assert_eq!(
            (status.peak, status.invalid, status.polls, status.last),
            (100.0, true, 5, Some(0.0))
        );
        let events = events.lock().unwrap().clone();
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(
            events[0],
            FillEvent::Warning {
                percent: 85.0,
                threshold: 80.0,
                ..
            }
        ));
        assert!(matches!(events[1], FillEvent::Invalid { .. }));
    }
}
