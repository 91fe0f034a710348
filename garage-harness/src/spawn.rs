//! Starting node processes that die with the test process.
//!
//! Each node gets `prctl(PR_SET_PDEATHSIG, SIGKILL)`, so a test that panics,
//! aborts or is killed never leaves a Garage daemon behind. The kernel sends
//! that signal when the *thread* that forked the child ends, not the
//! process: a cluster started in one test thread and used from another (a
//! cluster shared by several tests) would lose its nodes when the first
//! thread returns. So every node is forked by one long-lived thread of the
//! harness, which ends only with the process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender};
use std::thread;

type Request = (Command, Sender<io::Result<Child>>);

static SPAWNER: OnceLock<Result<Sender<Request>, String>> = OnceLock::new();

/// Starts `command` from the spawner thread, with the parent-death signal
/// set to SIGKILL.
pub(crate) fn spawn_tied_to_process(mut command: Command) -> io::Result<Child> {
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    let hook = move || {
        // SAFETY: plain system calls, no pointers.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // The parent may have died before the prctl: then nobody would ever
        // send the signal. (An OS error: nothing may allocate here.)
        // SAFETY: as above.
        if unsafe { libc::getppid() } != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec and only makes
    // async-signal-safe calls (prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(hook);
    }
    let spawner = SPAWNER
        .get_or_init(|| {
            let (send, receive) = mpsc::channel::<Request>();
            thread::Builder::new()
                .name("garage-harness-spawner".to_owned())
                .spawn(move || {
                    for (mut command, reply) in receive {
                        // The requester may be gone (it panicked): nothing to do then.
                        let _ = reply.send(command.spawn());
                    }
                })
                .map(|_| send)
                .map_err(|error| error.to_string())
        })
        .as_ref()
        .map_err(|error| io::Error::other(format!("cannot start the spawner thread: {error}")))?;
    let (reply, answer) = mpsc::channel();
    spawner
        .send((command, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the spawner thread did not answer"))?
}
