//! `--snapshot-size`, `--quiesce`, `--freeze-limit`…: the command-line
//! form of [`ConsistencyOptions`].

use blockdiff_run::{ConsistencyOptions, TrackingOptions};
use clap::Args;
use lvm_snap::SnapshotSize;
use quiesce::QuiesceSpec;

use crate::parse_snapshot_size;

/// The options that make a source consistent while it is read: the
/// snapshot of `--lvm` and the quiescers of `--quiesce`.
#[derive(Debug, Clone, Args)]
pub struct ConsistencyArgs {
    /// Size of a thick snapshot: percent of the volume (15%) or a size
    /// (512M, 2G). Thin volumes take thin snapshots, which need none.
    #[arg(long, value_name = "SIZE", default_value = "15%", value_parser = parse_snapshot_size, requires = "lvm")]
    pub snapshot_size: SnapshotSize,

    /// Warn when the snapshot is this full (percent)
    #[arg(long, value_name = "PERCENT", default_value_t = 80.0, requires = "lvm")]
    pub fill_warn: f64,

    /// Seconds between two polls of the snapshot's fill
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0, requires = "lvm")]
    pub fill_interval: f64,

    /// Quiesce a service while the snapshot is taken (repeatable; see SPEC
    /// below)
    #[arg(long = "quiesce", value_name = "SPEC", value_parser = parse_quiesce_spec)]
    pub quiesce: Vec<String>,

    /// Longest time services may stay quiesced, in seconds: past it the
    /// snapshot is abandoned, everything is thawed and the run fails
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub freeze_limit: f64,

    /// Leave the snapshot in place after the run (for debugging; remove it
    /// with lvremove or `blockdiff-lvm cleanup`)
    #[arg(long, requires = "lvm")]
    pub keep_snapshot: bool,

    /// Do not track changed blocks of a thin volume: read it all every
    /// time, keep no snapshot between runs, and remove the one an earlier
    /// run kept for this chain. By default a thin volume's snapshot is
    /// kept after a successful backup (it costs the pool the blocks
    /// written since; `blockdiff-lvm snapshots` shows it as retained) and
    /// the next run reads only the chunks the pool reports changed
    #[arg(long, requires = "lvm", conflicts_with_all = ["full_scan", "full_scan_every"])]
    pub no_track: bool,

    /// Read the whole thin volume this time, and check that the pool's
    /// tracking reported every block that changed (an error in the log and
    /// the JSON summary if not)
    #[arg(long, requires = "lvm")]
    pub full_scan: bool,

    /// Make every Nth run of a tracked chain such a checking full scan
    #[arg(long, value_name = "N", requires = "lvm", value_parser = clap::value_parser!(u32).range(1..))]
    pub full_scan_every: Option<u32>,
}

fn parse_quiesce_spec(s: &str) -> Result<String, String> {
    QuiesceSpec::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

impl ConsistencyArgs {
    /// The options these arguments ask for.
    pub fn to_options(&self) -> ConsistencyOptions {
        ConsistencyOptions {
            snapshot_size: self.snapshot_size,
            fill_warn: self.fill_warn,
            fill_interval: self.fill_interval,
            quiesce: self.quiesce.clone(),
            freeze_limit: self.freeze_limit,
            keep_snapshot: self.keep_snapshot,
            tracking: TrackingOptions {
                enabled: !self.no_track,
                full_scan_every: self.full_scan_every.unwrap_or(0),
                full_scan: self.full_scan,
            },
        }
    }
}
