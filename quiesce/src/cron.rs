use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use command_runner::{CommandLine, CommandRunner};

use crate::command::run_checked;
use crate::error::{Error, Result};
use crate::log::Logger;
use crate::quiescer::Quiescer;

/// One process of the system's process table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its process id.
    pub pid: u32,
    /// Its parent's process id.
    pub parent: u32,
    /// Its command name (`comm`, at most 15 bytes).
    pub name: String,
}

/// The running processes (zombies left out); [`ProcProcessTable`] reads
/// `/proc`.
pub trait ProcessTable: Send + Sync {
    /// Every process now.
    fn processes(&self) -> io::Result<Vec<ProcessInfo>>;
}

/// The process table of `/proc`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcProcessTable;

impl ProcessTable for ProcProcessTable {
    fn processes(&self) -> io::Result<Vec<ProcessInfo>> {
        let mut processes = Vec::new();
        for entry in fs::read_dir("/proc")? {
            let entry = entry?;
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            // A process may end while being read: skip it.
            if let Ok(stat) = fs::read_to_string(entry.path().join("stat"))
                && let Some(info) = parse_stat(pid, &stat)
            {
                processes.push(info);
            }
        }
        Ok(processes)
    }
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid …`; comm may hold
/// spaces and parentheses, so the last `)` ends it. Zombies are `None`.
fn parse_stat(pid: u32, stat: &str) -> Option<ProcessInfo> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?;
    if state == "Z" || state == "X" {
        // Exited, not yet reaped: not running.
        return None;
    }
    let parent = rest.next()?.parse().ok()?;
    Some(ProcessInfo { pid, parent, name })
}

/// How the cron quiescer finds, stops and starts the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronOptions {
    /// The daemon's process name: `cron` (Debian), `crond` (Red Hat).
    pub daemon_name: String,
    /// The command that stops it.
    pub stop: CommandLine,
    /// The command that starts it.
    pub start: CommandLine,
    /// How long to wait for running jobs to finish before giving up
    /// (nothing is stopped then).
    pub job_wait: Duration,
    /// How long to wait for the daemon to go after `stop`, and to appear
    /// after `start`.
    pub daemon_wait: Duration,
}

impl Default for CronOptions {
    /// Debian's cron, stopped and started by systemd if it runs, else by
    /// `/etc/init.d/cron`, else by `service`; jobs waited for 60 s.
    fn default() -> Self {
        let (stop, start) = if Path::new("/run/systemd/system").is_dir() {
            (
                CommandLine::new("systemctl", ["stop", "cron"]),
                CommandLine::new("systemctl", ["start", "cron"]),
            )
        } else if Path::new("/etc/init.d/cron").exists() {
            (
                CommandLine::new("/etc/init.d/cron", ["stop"]),
                CommandLine::new("/etc/init.d/cron", ["start"]),
            )
        } else {
            (
                CommandLine::new("service", ["cron", "stop"]),
                CommandLine::new("service", ["cron", "start"]),
            )
        };
        CronOptions {
            daemon_name: "cron".to_string(),
            stop,
            start,
            job_wait: Duration::from_secs(60),
            daemon_wait: Duration::from_secs(10),
        }
    }
}

/// Waits until no cron job runs, then stops the cron daemon; starts it
/// again on thaw.
///
/// The daemon is the process named [`CronOptions::daemon_name`] whose parent
/// is not also so named (cron forks a same-named child per job); a running
/// job is any descendant of it. If the daemon is not running at freeze
/// time, nothing is stopped and nothing is started on thaw.
///
/// A job that cron starts in the moment between the last check and the
/// stop keeps running (Debian's `cron.service` has `KillMode=process`); the
/// window is a few milliseconds.
pub struct CronQuiescer {
    options: CronOptions,
    runner: Arc<dyn CommandRunner>,
    processes: Arc<dyn ProcessTable>,
    stopped: bool,
    poll: Duration,
}

impl CronQuiescer {
    /// A cron quiescer with `options`, running commands with `runner` and
    /// reading processes from `processes`.
    pub fn new(
        options: CronOptions,
        runner: Arc<dyn CommandRunner>,
        processes: Arc<dyn ProcessTable>,
    ) -> Self {
        CronQuiescer {
            options,
            runner,
            processes,
            stopped: false,
            poll: Duration::from_millis(100),
        }
    }

    fn read_processes(&self) -> Result<Vec<ProcessInfo>> {
        self.processes.processes().map_err(|source| Error::Io {
            path: "/proc".into(),
            op: "list processes",
            source,
        })
    }

    /// The daemon's pids and the running jobs (descendants of a daemon).
    fn survey(&self) -> Result<(Vec<u32>, Vec<ProcessInfo>)> {
        let processes = self.read_processes()?;
        let is_named = |pid: u32| {
            processes
                .iter()
                .any(|p| p.pid == pid && p.name == self.options.daemon_name)
        };
        let daemons: Vec<u32> = processes
            .iter()
            .filter(|p| p.name == self.options.daemon_name && !is_named(p.parent))
            .map(|p| p.pid)
            .collect();
        let mut descendants: Vec<u32> = daemons.clone();
        let mut jobs = Vec::new();
        loop {
            let found: Vec<&ProcessInfo> = processes
                .iter()
                .filter(|p| descendants.contains(&p.parent) && !descendants.contains(&p.pid))
                .collect();
            if found.is_empty() {
                break;
            }
            for process in found {
                descendants.push(process.pid);
                jobs.push(process.clone());
            }
        }
        Ok((daemons, jobs))
    }

    fn wait_until(
        &self,
        limit: Duration,
        mut done: impl FnMut(&Self) -> Result<bool>,
    ) -> Result<bool> {
        let start = Instant::now();
        loop {
            if done(self)? {
                return Ok(true);
            }
            if start.elapsed() >= limit {
                return Ok(false);
            }
            thread::sleep(self.poll);
        }
    }
}

fn describe(jobs: &[ProcessInfo]) -> String {
    jobs.iter()
        .map(|job| format!("pid {} ({})", job.pid, job.name))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Quiescer for CronQuiescer {
    fn name(&self) -> String {
        format!("cron (daemon {})", self.options.daemon_name)
    }

    fn freeze(&mut self, log: &Logger) -> Result<()> {
        let (daemons, jobs) = self.survey()?;
        if daemons.is_empty() {
            log.line(format!(
                "cron: no {} daemon is running; nothing to stop",
                self.options.daemon_name
            ));
            return Ok(());
        }
        if !jobs.is_empty() {
            log.line(format!(
                "cron: waiting up to {:.0} s for running jobs: {}",
                self.options.job_wait.as_secs_f64(),
                describe(&jobs)
            ));
            let finished =
                self.wait_until(self.options.job_wait, |me| Ok(me.survey()?.1.is_empty()))?;
            if !finished {
                return Err(Error::CronJobsStillRunning {
                    waited: self.options.job_wait,
                    jobs: describe(&self.survey()?.1),
                });
            }
            log.line("cron: running jobs finished");
        }
        log.line(format!(
            "cron: stopping the daemon (pid {daemons:?}): {}",
            self.options.stop
        ));
        run_checked(self.runner.as_ref(), &self.options.stop)?;
        let gone = self.wait_until(self.options.daemon_wait, |me| Ok(me.survey()?.0.is_empty()))?;
        if !gone {
            return Err(Error::Daemon {
                what: format!(
                    "`{}` ran, but {} is still running after {:?}",
                    self.options.stop, self.options.daemon_name, self.options.daemon_wait
                ),
            });
        }
        self.stopped = true;
        Ok(())
    }

    fn thaw(&mut self, log: &Logger) -> Result<()> {
        if !self.stopped {
            return Ok(());
        }
        self.stopped = false;
        log.line(format!("cron: starting the daemon: {}", self.options.start));
        run_checked(self.runner.as_ref(), &self.options.start)?;
        let up = self.wait_until(self.options.daemon_wait, |me| {
            Ok(!me.survey()?.0.is_empty())
        })?;
        if !up {
            return Err(Error::Daemon {
                what: format!(
                    "`{}` ran, but no {} daemon appeared within {:?}",
                    self.options.start, self.options.daemon_name, self.options.daemon_wait
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use command_runner::RecordingRunner;

    /// A process table that the test rewrites, and that a scripted runner's
    /// stop/start commands change.
    #[derive(Default)]
    struct FakeTable(Mutex<Vec<ProcessInfo>>);

    impl ProcessTable for FakeTable {
        fn processes(&self) -> io::Result<Vec<ProcessInfo>> {
            Ok(self.0.lock().unwrap().clone())
        }
    }

    fn process(pid: u32, parent: u32, name: &str) -> ProcessInfo {
        ProcessInfo {
            pid,
            parent,
            name: name.to_string(),
        }
    }

    fn options() -> CronOptions {
        CronOptions {
            daemon_name: "cron".to_string(),
            stop: CommandLine::new("stop-cron", Vec::<String>::new()),
            start: CommandLine::new("start-cron", Vec::<String>::new()),
            job_wait: Duration::from_millis(300),
            daemon_wait: Duration::from_millis(300),
        }
    }

    #[test]
    fn parses_stat_lines_with_odd_names() {
        let info = parse_stat(42, "42 (a (b) c) S 7 42 42 0 -1").unwrap();
        assert_eq!(info, process(42, 7, "a (b) c"));
        assert_eq!(parse_stat(43, "43 (cron) Z 1 43 43 0 -1"), None);
    }

    #[test]
    fn jobs_are_descendants_of_the_daemon_and_block_the_stop() {
        let table = Arc::new(FakeTable::default());
        *table.0.lock().unwrap() = vec![
            process(1, 0, "init"),
            process(10, 1, "cron"),
            process(11, 10, "cron"),
            process(12, 11, "sh"),
            process(20, 1, "sshd"),
        ];
        let runner = Arc::new(RecordingRunner::new());
        let mut cron = CronQuiescer::new(options(), runner.clone(), table.clone());
        cron.poll = Duration::from_millis(10);
        let error = cron.freeze(&Logger::discard()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cron jobs still running after waiting 300ms: pid 11 (cron), pid 12 (sh); cron was not stopped"
        );
        assert!(runner.calls().is_empty());
    }

    #[test]
    fn no_daemon_means_nothing_stopped_or_started() {
        let table = Arc::new(FakeTable::default());
        let runner = Arc::new(RecordingRunner::new());
        let mut cron = CronQuiescer::new(options(), runner.clone(), table);
        cron.freeze(&Logger::discard()).unwrap();
        cron.thaw(&Logger::discard()).unwrap();
        assert!(runner.calls().is_empty());
    }

    #[test]
    fn a_stop_command_that_leaves_the_daemon_running_is_an_error() {
        let table = Arc::new(FakeTable::default());
        *table.0.lock().unwrap() = vec![process(10, 1, "cron")];
        let runner = Arc::new(RecordingRunner::new());
        let mut cron = CronQuiescer::new(options(), runner.clone(), table);
        cron.poll = Duration::from_millis(10);
        let error = cron.freeze(&Logger::discard()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`stop-cron` ran, but cron is still running after 300ms"
        );
        cron.thaw(&Logger::discard()).unwrap();
        assert_eq!(
            runner.calls(),
            ["stop-cron"],
            "not started: it was never stopped"
        );
    }
}
