//! The cron quiescer against Debian's real cron daemon.
//!
//! A job has to be running when the freeze begins. Cron starts ordinary
//! jobs only at minute boundaries, so waiting for one could cost a minute;
//! instead the test gives cron an `@reboot` job (in /etc/cron.d) and
//! removes cron's once-per-boot marker /run/crond.reboot before starting
//! the daemon, so the daemon itself starts the job at once, as its own
//! child, exactly as it starts any job. The quiescer must wait for that job
//! (it blocks reading a FIFO, which the test opens only once the quiescer
//! says it is waiting: no timing is guessed), stop the daemon (its pid
//! gone) and start it again on thaw (a daemon pid present again). Stop and start are custom commands:
//! there is no systemd here.
//!
//! Needs root and the cron package (scripts/services-setup.sh); without
//! cron the test fails saying so, unless BLOCKDIFF_SKIP_SERVICES=1. Skipped
//! with a message if a cron daemon is already running (the test would stop
//! the machine's own cron).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use quiesce::{ProcProcessTable, ProcessTable, QuiesceStack};

const CRON_FILE: &str = "/etc/cron.d/blockdiff-quiesce-test";
const REBOOT_MARKER: &str = "/run/crond.reboot";

fn cron_daemons() -> Vec<u32> {
    let processes = ProcProcessTable.processes().unwrap();
    let named = |pid: u32| processes.iter().any(|p| p.pid == pid && p.name == "cron");
    processes
        .iter()
        .filter(|p| p.name == "cron" && !named(p.parent))
        .map(|p| p.pid)
        .collect()
}

/// Whether `pid` runs (an exited daemon may linger as a zombie until
/// init reaps it: that is not running).
fn alive(pid: u32) -> bool {
    ProcProcessTable
        .processes()
        .unwrap()
        .iter()
        .any(|p| p.pid == pid)
}

/// Removes the cron file, stops the cron daemons the test started and puts
/// the reboot marker back as it was.
struct Cleanup {
    marker_existed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = fs::remove_file(CRON_FILE);
        for pid in cron_daemons() {
            // SAFETY: SIGTERM to the cron daemon this test started.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        if self.marker_existed {
            let _ = fs::write(REBOOT_MARKER, "");
        } else {
            let _ = fs::remove_file(REBOOT_MARKER);
        }
    }
}

#[test]
fn cron_waits_for_the_running_job_stops_the_daemon_and_starts_it_again() {
    let Some(programs) = common::require_programs("cron test", &["cron"]) else {
        return;
    };
    if !common::is_root() {
        eprintln!("cron test skipped: needs root");
        return;
    }
    if !cron_daemons().is_empty() {
        eprintln!(
            "cron test skipped: a cron daemon is already running; the test starts and stops its own"
        );
        return;
    }
    let cron = programs[0].display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let job_done = dir.path().join("job-done");
    let gate = dir.path().join("job-gate.fifo");
    let c_gate = std::ffi::CString::new(gate.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_gate.as_ptr(), 0o600) }, 0);
    let _cleanup = Cleanup {
        marker_existed: Path::new(REBOOT_MARKER).exists(),
    };
    fs::write(
        CRON_FILE,
        format!(
            "@reboot root cat {} >/dev/null; touch {}\n",
            gate.display(),
            job_done.display()
        ),
    )
    .unwrap();
    let _ = fs::remove_file(REBOOT_MARKER);
    let status = Command::new(&cron).status().unwrap();
    assert!(status.success(), "{cron} failed to start");

    // The daemon is up and has started the job as its child.
    let start = Instant::now();
    let first_daemon = loop {
        let processes = ProcProcessTable.processes().unwrap();
        if let Some(&daemon) = cron_daemons().first()
            && processes.iter().any(|p| p.parent == daemon)
        {
            break daemon;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "cron did not start the @reboot job"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(!job_done.exists());

    let spec = format!("cron:stop=kill $(cat /run/crond.pid),start={cron},wait=20");
    let (log, lines) = common::collecting_logger();
    let mut stack = QuiesceStack::from_spec_strings(&[spec], log).unwrap();
    // Lets the job finish once the quiescer says it waits for it.
    let waiting = Arc::clone(&lines);
    let gate_for_release = gate.clone();
    let release = thread::spawn(move || {
        let start = Instant::now();
        while !waiting
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("cron: waiting up to 20 s for running jobs"))
        {
            if start.elapsed() > Duration::from_secs(60) {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        // Opening for writing and closing gives the job's `cat` its EOF.
        drop(fs::OpenOptions::new().write(true).open(&gate_for_release));
        true
    });
    let freeze_began = Instant::now();
    let frozen = stack
        .run_frozen(|_| {
            (
                freeze_began.elapsed(),
                job_done.exists(),
                alive(first_daemon),
                cron_daemons(),
            )
        })
        .unwrap();
    let (_waited, job_finished, daemon_alive, daemons_while_frozen) = frozen.value;
    assert!(
        release.join().unwrap(),
        "the quiescer never said it waits for the running job"
    );
    // The job could finish only after the quiescer began waiting for it.
    assert!(job_finished, "the freeze did not wait for the running job");
    assert!(
        !daemon_alive,
        "cron (pid {first_daemon}) still running while frozen"
    );
    assert!(
        daemons_while_frozen.is_empty(),
        "cron running while frozen: {daemons_while_frozen:?}"
    );

    let daemons_after = cron_daemons();
    assert_eq!(
        daemons_after.len(),
        1,
        "cron not started again on thaw: {daemons_after:?}"
    );
    assert_ne!(daemons_after[0], first_daemon);
    let lines = lines.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("cron: waiting up to 20 s for running jobs: pid")),
        "{lines:?}"
    );
}
