//! CPU and I/O scheduling priority of the process reading a source:
//! [`set_nice`] and [`IoPriority`].
//!
//! On Linux both settings belong to a thread, not to the process: with pid
//! 0, `setpriority` and `ioprio_set` change the calling thread only, and a
//! thread created afterwards inherits them. Apply them on the main thread
//! *before* [`dump`](crate::dump) (or [`backup`](crate::backup)) runs, so
//! that the reader and hashing threads it spawns start with them; threads
//! that already exist keep their own.

use std::fmt;
use std::io;
use std::str::FromStr;

use crate::{Error, Result};

/// The lowest niceness (highest priority) accepted by [`set_nice`].
pub const NICE_MIN: i32 = -20;
/// The highest niceness (lowest priority) accepted by [`set_nice`].
pub const NICE_MAX: i32 = 19;

/// Sets the calling thread's niceness to `nice` (-20 to 19; absolute, as
/// `renice -n`, not added to the current one as `nice -n` does). Threads
/// created afterwards inherit it; threads that exist keep their own, so set
/// it before [`dump`](crate::dump) starts its threads. Lowering
/// the niceness below its current value needs root (`CAP_SYS_NICE`).
pub fn set_nice(nice: i32) -> Result<()> {
    if !(NICE_MIN..=NICE_MAX).contains(&nice) {
        return Err(Error::InvalidOption(format!(
            "niceness {nice} is out of range ({NICE_MIN} to {NICE_MAX})"
        )));
    }
    // SAFETY: setpriority takes plain integers and touches no memory of
    // ours; `who` 0 is the calling thread.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r == -1 {
        return Err(Error::Priority {
            setting: format!("niceness {nice}"),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// An I/O scheduling class and level, as `ionice -c`/`-n` sets them; the
/// kernel's I/O schedulers (BFQ; mq-deadline for the class) honour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoPriority {
    /// Only served when no other process wants the disk (`ionice -c 3`):
    /// the polite choice for a nightly backup.
    Idle,
    /// The default class, level 0 (first served) to 7 (`ionice -c 2 -n N`).
    BestEffort(u8),
    /// Served before every best-effort process, level 0 to 7 (`ionice -c 1
    /// -n N`; needs root).
    RealTime(u8),
}

const IOPRIO_CLASS_SHIFT: u32 = 13;
const IOPRIO_CLASS_RT: u32 = 1;
const IOPRIO_CLASS_BE: u32 = 2;
const IOPRIO_CLASS_IDLE: u32 = 3;
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
/// The highest (least favoured) level of the best-effort and real-time
/// classes.
const LEVEL_MAX: u8 = 7;
/// The level `ionice` uses when given a class without one.
const LEVEL_DEFAULT: u8 = 4;

impl IoPriority {
    /// The value `ioprio_set` takes: the class in the top bits, the level
    /// below.
    pub fn to_raw(self) -> u32 {
        let (class, level) = match self {
            IoPriority::Idle => (IOPRIO_CLASS_IDLE, 0),
            IoPriority::BestEffort(n) => (IOPRIO_CLASS_BE, n),
            IoPriority::RealTime(n) => (IOPRIO_CLASS_RT, n),
        };
        (class << IOPRIO_CLASS_SHIFT) | u32::from(level)
    }

    /// Sets the calling thread's I/O priority with
    /// `ioprio_set(IOPRIO_WHO_PROCESS, 0, …)`. Threads created afterwards
    /// inherit it; threads that exist keep their own, so apply it before
    /// [`dump`](crate::dump) starts its threads.
    pub fn apply(self) -> Result<()> {
        if let IoPriority::BestEffort(n) | IoPriority::RealTime(n) = self
            && n > LEVEL_MAX
        {
            return Err(Error::InvalidOption(format!(
                "I/O priority level {n} is out of range (0 to {LEVEL_MAX})"
            )));
        }
        // SAFETY: ioprio_set takes three integers and touches no memory of
        // ours; `who` 0 with IOPRIO_WHO_PROCESS is the calling thread.
        let r = unsafe {
            libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                0 as libc::c_int,
                self.to_raw() as libc::c_int,
            )
        };
        if r == -1 {
            return Err(Error::Priority {
                setting: format!("I/O priority {self}"),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for IoPriority {
    /// The form [`FromStr`] reads: `idle`, `best-effort:N`, `realtime:N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoPriority::Idle => f.write_str("idle"),
            IoPriority::BestEffort(n) => write!(f, "best-effort:{n}"),
            IoPriority::RealTime(n) => write!(f, "realtime:{n}"),
        }
    }
}

impl FromStr for IoPriority {
    type Err = Error;

    /// Parses `idle`, `best-effort:N` or `realtime:N` (N from 0, first
    /// served, to 7), or ionice's class numbers: `3`, `2:N`, `1:N`. A class
    /// without a level has level 4, as with ionice. Case does not matter.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: String| {
            Error::InvalidOption(format!(
                "I/O priority {s:?}: {why}; expected idle, best-effort:N or realtime:N with N from 0 (first served) to 7"
            ))
        };
        let t = s.trim().to_ascii_lowercase();
        let (class, level) = match t.split_once(':') {
            Some((c, l)) => (c, Some(l)),
            None => (t.as_str(), None),
        };
        let level = match level {
            None => LEVEL_DEFAULT,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= LEVEL_MAX => n,
                _ => return Err(bad(format!("level {l:?} is not a number from 0 to 7"))),
            },
        };
        match class {
            "idle" | "3" => match t.contains(':') {
                false => Ok(IoPriority::Idle),
                true => Err(bad("the idle class has no level".into())),
            },
            "best-effort" | "besteffort" | "be" | "2" => Ok(IoPriority::BestEffort(level)),
            "realtime" | "real-time" | "rt" | "1" => Ok(IoPriority::RealTime(level)),
            "none" | "0" => Err(bad(
                "class none is the default, which needs no option".into()
            )),
            _ => Err(bad(format!("unknown class {class:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_priorities_parse() {
        let p = |s: &str| s.parse::<IoPriority>().unwrap();
        assert_eq!(p("idle"), IoPriority::Idle);
        assert_eq!(p("IDLE"), IoPriority::Idle);
        assert_eq!(p("3"), IoPriority::Idle);
        assert_eq!(p("best-effort:7"), IoPriority::BestEffort(7));
        assert_eq!(p("best-effort:0"), IoPriority::BestEffort(0));
        assert_eq!(p("best-effort"), IoPriority::BestEffort(4));
        assert_eq!(p("be:6"), IoPriority::BestEffort(6));
        assert_eq!(p("2:5"), IoPriority::BestEffort(5));
        assert_eq!(p("realtime:0"), IoPriority::RealTime(0));
        assert_eq!(p("rt:3"), IoPriority::RealTime(3));
        assert_eq!(p("1:7"), IoPriority::RealTime(7));
        // Display gives back what parses to the same value.
        for prio in [
            IoPriority::Idle,
            IoPriority::BestEffort(3),
            IoPriority::RealTime(0),
        ] {
            assert_eq!(p(&prio.to_string()), prio);
        }
        assert_eq!(IoPriority::BestEffort(7).to_string(), "best-effort:7");
    }

    #[test]
    fn bad_io_priorities_say_what_is_expected() {
        let e = |s: &str| s.parse::<IoPriority>().unwrap_err().to_string();
        const TAIL: &str =
            "expected idle, best-effort:N or realtime:N with N from 0 (first served) to 7";
        assert_eq!(
            e("lazy"),
            format!("invalid option: I/O priority \"lazy\": unknown class \"lazy\"; {TAIL}")
        );
        assert_eq!(
            e("best-effort:8"),
            format!(
                "invalid option: I/O priority \"best-effort:8\": level \"8\" is not a number from 0 to 7; {TAIL}"
            )
        );
        assert_eq!(
            e("realtime:-1"),
            format!(
                "invalid option: I/O priority \"realtime:-1\": level \"-1\" is not a number from 0 to 7; {TAIL}"
            )
        );
        assert_eq!(
            e("best-effort:"),
            format!(
                "invalid option: I/O priority \"best-effort:\": level \"\" is not a number from 0 to 7; {TAIL}"
            )
        );
        assert_eq!(
            e("idle:3"),
            format!("invalid option: I/O priority \"idle:3\": the idle class has no level; {TAIL}")
        );
        assert!(e("0").contains("class none is the default"));
        assert!(e("").contains("unknown class \"\""));
        assert!(e("4").contains("unknown class \"4\""));
    }

    #[test]
    fn raw_values_are_ionices() {
        assert_eq!(IoPriority::Idle.to_raw(), 3 << 13);
        assert_eq!(IoPriority::BestEffort(7).to_raw(), (2 << 13) | 7);
        assert_eq!(IoPriority::RealTime(2).to_raw(), (1 << 13) | 2);
    }

    #[test]
    fn out_of_range_values_are_refused_before_the_system_call() {
        assert_eq!(
            set_nice(20).unwrap_err().to_string(),
            "invalid option: niceness 20 is out of range (-20 to 19)"
        );
        assert!(set_nice(-21).is_err());
        assert_eq!(
            IoPriority::BestEffort(8).apply().unwrap_err().to_string(),
            "invalid option: I/O priority level 8 is out of range (0 to 7)"
        );
    }

    #[test]
    fn applying_changes_only_this_thread_and_its_children() {
        // SAFETY: plain integer arguments; 0 is the calling thread.
        let nice_before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        // On a thread of its own, so the test harness's threads keep theirs.
        std::thread::spawn(|| {
            IoPriority::BestEffort(6).apply().unwrap();
            set_nice(NICE_MAX).unwrap();
            let child = std::thread::spawn(|| {
                // SAFETY: plain integer arguments; 0 is the calling thread.
                let io = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) };
                // SAFETY: as above.
                let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
                (io, nice)
            })
            .join()
            .unwrap();
            let expected = libc::c_long::from(IoPriority::BestEffort(6).to_raw());
            assert_eq!(child, (expected, NICE_MAX));
        })
        .join()
        .unwrap();
        // SAFETY: as above.
        let nice_after = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert_eq!(
            nice_after, nice_before,
            "the test thread itself is unchanged"
        );
    }
}
