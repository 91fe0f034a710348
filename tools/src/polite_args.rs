use blockdiff_core::{IoPriority, NICE_MAX, NICE_MIN};
use blockdiff_run::PoliteOptions;
use clap::Args;

/// The `--help` heading of these options. (Set on each option: a
/// `next_help_heading` on the struct would also catch the options that
/// follow it in the tool's own list.)
const HEADING: &str = "Polite I/O (applies on the host that reads the volume)";

/// Parses a `--max-rate` value (`60M`, `512K`, `1G`, bytes; binary units)
/// for clap.
pub fn parse_max_rate(s: &str) -> Result<u64, String> {
    blockdiff_core::parse_rate(s).map_err(|e| e.to_string())
}

/// Parses an `--ionice` value (`idle`, `best-effort:N`, `realtime:N`) for
/// clap.
pub fn parse_io_priority(s: &str) -> Result<IoPriority, String> {
    s.parse().map_err(|e: blockdiff_core::Error| e.to_string())
}

/// How gently the source is read: rate limit, CPU and I/O priority, page
/// cache. Flattened into the tools that read a volume; every setting
/// applies to the process that reads the source, on the host that has the
/// volume.
///
/// A run that reads the source elsewhere (the agent over ssh) sends them
/// in its request, as [`PoliteOptions`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct PoliteArgs {
    /// Read at most RATE bytes/s, like pv -L (60M = 60 MiB/s; 0: unlimited)
    ///
    /// Read the source at most RATE bytes per second, like `pv -L RATE`:
    /// bytes, or with a binary unit K, M or G (60M is 60 MiB/s). 0 means
    /// unlimited, as does leaving it out. The limit is a token bucket shared
    /// by all reading threads, so after a pause at most one chunk or a
    /// quarter of a second's worth is read at once. It limits what is read
    /// from the volume on the host that reads it, and so the diff written
    /// too.
    #[arg(long, value_name = "RATE", value_parser = parse_max_rate, help_heading = HEADING)]
    pub max_rate: Option<u64>,

    /// CPU niceness of the run, -20 to 19 (19 is the politest)
    ///
    /// CPU niceness of the run, and so of the reading and hashing threads
    /// it starts: -20 (greediest) to 19 (politest), set like `renice -n N` (absolute, not added to the
    /// current niceness as `nice -n` does). Going below the current value
    /// needs root.
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        help_heading = HEADING,
        value_parser = clap::value_parser!(i32).range(NICE_MIN as i64..=NICE_MAX as i64)
    )]
    pub nice: Option<i32>,

    /// I/O class: idle (as ionice -c 3), best-effort:N or realtime:N (N 0..7)
    ///
    /// I/O scheduling class of the run, and so of the threads that read the
    /// source, like `ionice`: idle
    /// (`ionice -c 3`: the disk is read only when nothing else wants it,
    /// the usual choice for a nightly backup), best-effort:N (`ionice -c 2
    /// -n N`, N from 0, first served, to 7) or realtime:N (`ionice -c 1 -n
    /// N`, needs root). ionice's class numbers are accepted too: 3, 2:N,
    /// 1:N. Only a disk whose I/O scheduler honours priorities is affected:
    /// bfq does, mq-deadline honours the classes (Linux 5.14 and later),
    /// none ignores them (see /sys/block/DISK/queue/scheduler).
    #[arg(long, value_name = "CLASS", value_parser = parse_io_priority, help_heading = HEADING)]
    pub ionice: Option<IoPriority>,

    /// Drop what was read from the page cache, to spare the host's cache
    ///
    /// Drop each range read from the page cache once it is hashed
    /// (posix_fadvise DONTNEED), so that reading a whole volume does not
    /// evict the host's working set (its database's hot pages). Applies to a
    /// file or block device given by name; a source read from standard input
    /// or a pipe is read as it is.
    #[arg(long, help_heading = HEADING)]
    pub drop_cache: bool,
}

impl PoliteArgs {
    /// The options these arguments ask for.
    pub fn to_options(&self) -> PoliteOptions {
        PoliteOptions {
            max_rate: self.max_rate,
            nice: self.nice,
            ionice: self.ionice,
            drop_cache: self.drop_cache,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        p: PoliteArgs,
    }

    fn parse(args: &[&str]) -> Result<PoliteArgs, String> {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map(|t| t.p)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flags_parse() {
        let p = parse(&[
            "--max-rate",
            "60M",
            "--nice",
            "-5",
            "--ionice",
            "best-effort:7",
            "--drop-cache",
        ])
        .unwrap();
        assert_eq!(
            p,
            PoliteArgs {
                max_rate: Some(60 << 20),
                nice: Some(-5),
                ionice: Some(IoPriority::BestEffort(7)),
                drop_cache: true,
            }
        );
        assert_eq!(parse(&[]).unwrap(), PoliteArgs::default());
        assert_eq!(
            parse(&["--max-rate", "0"]).unwrap().to_options().max_rate(),
            None
        );
        assert_eq!(
            parse(&["--max-rate", "1048576"])
                .unwrap()
                .to_options()
                .max_rate(),
            Some(1 << 20)
        );
        assert_eq!(parse(&["--nice=19"]).unwrap().nice, Some(19));
        assert_eq!(
            parse(&["--ionice", "3"]).unwrap().ionice,
            Some(IoPriority::Idle)
        );
    }

    #[test]
    fn bad_values_are_usage_errors_that_explain() {
        let e = parse(&["--max-rate", "fast"]).unwrap_err();
        assert!(e.contains("rate \"fast\" is not a number"), "{e}");
        let e = parse(&["--nice", "20"]).unwrap_err();
        assert!(e.contains("20 is not in -20..=19"), "{e}");
        assert!(parse(&["--nice", "-21"]).is_err());
        let e = parse(&["--ionice", "sleepy"]).unwrap_err();
        assert!(
            e.contains("expected idle, best-effort:N or realtime:N"),
            "{e}"
        );
    }

    #[test]
    fn the_options_cross_the_wire_unchanged() {
        for args in [
            &[
                "--max-rate",
                "60M",
                "--nice",
                "-5",
                "--ionice",
                "idle",
                "--drop-cache",
            ][..],
            &["--max-rate", "1000", "--ionice", "realtime:0"],
            &["--max-rate", "1536K", "--nice", "19"],
            &["--max-rate", "0"],
            &[],
        ] {
            let o = parse(args).unwrap().to_options();
            let wire = serde_json::to_vec(&o).unwrap();
            let back: PoliteOptions = serde_json::from_slice(&wire).unwrap();
            assert_eq!(back, o, "{args:?}");
        }
    }

    #[test]
    fn dump_options_get_the_rate_and_cache_setting() {
        let mut o = blockdiff_core::DumpOptions::default();
        parse(&["--max-rate", "16M", "--drop-cache"])
            .unwrap()
            .to_options()
            .fill_dump_options(&mut o);
        assert_eq!((o.max_rate, o.drop_cache), (Some(16 << 20), true));
        parse(&["--max-rate", "0"])
            .unwrap()
            .to_options()
            .fill_dump_options(&mut o);
        assert_eq!((o.max_rate, o.drop_cache), (None, false));
    }
}
