//! Quiescing live applications around a snapshot: freeze in order, take
//! the snapshot, thaw in reverse — thawing on every path.
//!
//! - A [`Quiescer`] brings one thing to a consistent, quiet state and
//!   releases it: [`MysqlQuiescer`] (`FLUSH TABLES WITH READ LOCK`, with the
//!   binary-log position recorded), [`CronQuiescer`] (waits for running
//!   jobs, stops the daemon), [`ServiceQuiescer`], [`OpenVzQuiescer`],
//!   [`CgroupFreezer`] (cgroup v2 freezer), [`FsFreezer`] (`FIFREEZE`); plus
//!   [`Hook`]s, user commands at four [`HookStage`]s.
//! - A [`QuiesceStack`] holds them in order. [`QuiesceStack::run_frozen`]
//!   freezes, runs the snapshot step, thaws, and returns the step's value
//!   with a [`FreezeReport`]: the freeze window (first freeze to last thaw)
//!   and the quiescers' metadata. A watchdog thread thaws at the freeze
//!   window limit (default 30 s, [`Error::FreezeWindowExceeded`]) or when
//!   SIGINT/SIGTERM arrives ([`TerminationSignals`], [`Error::Interrupted`]),
//!   and a guard thaws if the step panics.
//! - [`QuiesceSpec`] parses the specs a CLI takes (`--quiesce SPEC`,
//!   repeatable, composed in the order given) and
//!   [`QuiesceStack::from_spec_strings`] builds the stack.
//!
//! Progress goes to a [`Logger`] callback, one line at a time
//! (`issuing lock statement: FLUSH TABLES WITH READ LOCK` …
//! `issuing unlock statement: UNLOCK TABLES`, `freeze window: 0.412 s`); the
//! crate never prints. External commands go through a
//! [`CommandRunner`](command_runner::CommandRunner) of the `command-runner`
//! crate (a [`LocalRunner`](command_runner::LocalRunner), or its
//! `RecordingRunner` in tests).
//!
//! # What a CLI does
//!
//! ```
//! use quiesce::{Logger, QuiesceStack, TerminationSignals};
//!
//! let signals = TerminationSignals::catch()?;
//! let specs = ["hook:pre-freeze=true", "hook:post-thaw=true"]; // from --quiesce, e.g. "mysql", "cron"
//! let mut stack = QuiesceStack::from_spec_strings(&specs, Logger::new(|line| eprintln!("quiesce: {line}")))?;
//! stack.stop_on_signals(&signals);
//! let frozen = stack.run_frozen(|window| {
//!     // take the snapshot here (lvcreate --snapshot …), within window.remaining()
//!     "snapshot taken"
//! })?;
//! assert_eq!(frozen.value, "snapshot taken");
//! println!("frozen for {:?}; metadata {:?}", frozen.report.window, frozen.report.metadata);
//! # Ok::<(), quiesce::Error>(())
//! ```
//!
//! # Spec syntax
//!
//! `KIND` or `KIND:ITEM,ITEM,…`, where an item is `KEY=VALUE` or a plain
//! value; `\,` is a literal comma, `\\` a backslash. Durations are seconds
//! (`2.5` allowed).
//!
//! | spec | quiesces |
//! |------|----------|
//! | `mysql` | MySQL/MariaDB on the local socket `/run/mysqld/mysqld.sock`, user and password from `~/.my.cnf` or `MYSQL_PWD` |
//! | `mysql:defaults-file=/etc/mysql/debian.cnf` | the same, with the `[client]` section of that file |
//! | `mysql:host=H,port=N,socket=PATH,user=U,lock-wait-timeout=SECS` | overrides (default lock wait 10 s); `password=` is refused: use `MYSQL_PWD` or an option file |
//! | `cron` | waits for running cron jobs (up to 60 s), stops cron, starts it on thaw |
//! | `cron:stop=CMD,start=CMD,wait=SECS,name=crond` | custom stop/start shell commands (default `systemctl stop cron` under systemd, else `/etc/init.d/cron stop`, else `service cron stop`), job wait, daemon process name |
//! | `service:apache2,postfix[,manager=systemd\|service]` | stops running services in order (`systemctl stop` or `service NAME stop`), starts them in reverse |
//! | `openvz[:mode=checkpoint\|suspend,vzctl=PROG,vzlist=PROG]` | `vzctl chkpnt CTID` each running container, `vzctl restore CTID` on thaw (suspend: `chkpnt --suspend` / `chkpnt --resume`) |
//! | `cgroup:PATH[,timeout=SECS]` | the cgroup v2 freezer of PATH: absolute below the cgroup2 mount (found in `/proc/mounts`), or relative to it |
//! | `fsfreeze:MOUNT_POINT` | `FIFREEZE`/`FITHAW` of a mounted file system |
//! | `hook:STAGE=COMMAND` | `sh -c COMMAND` at `pre-freeze`, `post-freeze`, `pre-thaw` or `post-thaw`; the rest of the spec is the command, commas and all |
//!
//! Quiescers freeze in the order given and thaw in reverse. Hooks run by
//! stage, whatever their position: all pre-freeze hooks before the first
//! freeze, post-freeze after the last, pre-thaw before the first thaw,
//! post-thaw after the last. A failing pre-/post-freeze hook aborts the run
//! (what was frozen is thawed); a failing pre-/post-thaw hook is reported
//! and thawing goes on, and the run then fails with [`Error::Thaw`].
//!
//! OpenVZ: no OpenVZ kernel exists on current distributions, so
//! [`OpenVzQuiescer`] is tested only against recording stand-ins for
//! `vzctl` and `vzlist`.
#![deny(missing_docs)]

mod cgroup;
mod command;
mod cron;
mod error;
mod fsfreeze;
mod hook;
mod log;
mod mounts;
mod mysql_lock;
mod openvz;
mod quiescer;
mod service;
mod signals;
mod spec;
mod stack;

pub use cgroup::{CgroupFreezer, find_cgroup2_mount};
pub use cron::{CronOptions, CronQuiescer, ProcProcessTable, ProcessInfo, ProcessTable};
pub use error::{Error, Result};
pub use fsfreeze::FsFreezer;
pub use hook::{Hook, HookStage};
pub use log::Logger;
pub use mysql_lock::{
    ClientOptionFile, DEFAULT_MYSQL_SOCKET, MysqlConnectionSettings, MysqlEndpoint, MysqlOptions,
    MysqlQuiescer,
};
pub use openvz::{OpenVzMode, OpenVzQuiescer};
pub use quiescer::Quiescer;
pub use service::{ServiceManager, ServiceQuiescer};
pub use signals::{TerminationSignals, signal_name};
pub use spec::QuiesceSpec;
pub use stack::{DEFAULT_FREEZE_LIMIT, FreezeReport, FreezeWindow, Frozen, QuiesceStack};

/// The README's example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
