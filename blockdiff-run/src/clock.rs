//! Local time: log timestamps, the run's start and finish, today's date
//! for period chains.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch now; 0 for a clock set before it.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `secs` since the epoch as local time (`TZ`, `/etc/localtime`); `None`
/// where `localtime_r` fails.
fn local_tm(secs: u64) -> Option<libc::tm> {
    let t = secs as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which is a valid,
    // zero-initialised struct; `t` is a valid time_t.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&raw const t, &raw mut tm).is_null() {
            return None;
        }
        Some(tm)
    }
}

/// The local time now as `YYYY-MM-DD HH:MM:SS`, for log lines.
pub fn timestamp() -> String {
    let secs = now_secs();
    let Some(tm) = local_tm(secs) else {
        return format!("@{secs}");
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// Today's date in the local time zone (`TZ`, `/etc/localtime`), for
/// choosing the period chain of a run.
pub fn local_today() -> Result<blockdiff_core::CivilDate, blockdiff_core::Error> {
    let secs = now_secs();
    let Some(tm) = local_tm(secs) else {
        // Without a local time, the UTC date.
        return blockdiff_core::CivilDate::from_days_since_epoch((secs / 86_400) as i64);
    };
    blockdiff_core::CivilDate::new(tm.tm_year + 1900, (tm.tm_mon + 1) as u32, tm.tm_mday as u32)
}

/// The local date of `secs` (seconds since 1970 UTC), in the system's
/// time zone (`TZ`, `/etc/localtime`); the UTC date if it has none. The
/// calendar of `blockdiff-prune --keep-daily` and its kin.
pub fn local_date(secs: i64) -> blockdiff_core::CivilDate {
    match local_tm(secs.max(0) as u64).and_then(|tm| {
        blockdiff_core::CivilDate::new(tm.tm_year + 1900, (tm.tm_mon + 1) as u32, tm.tm_mday as u32)
            .ok()
    }) {
        Some(date) => date,
        None => blockdiff_core::utc_date(secs),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn today_is_near_the_utc_date() {
        let today = super::local_today().unwrap();
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let utc_days = (secs / 86_400) as i64;
        // Time zones are at most 14 hours from UTC.
        assert!((today.days_since_epoch() - utc_days).abs() <= 1, "{today}");
    }

    #[test]
    fn timestamp_has_the_log_shape() {
        let t = super::timestamp();
        assert_eq!(t.len(), 19, "{t}");
        assert!(
            t.starts_with("20") && &t[4..5] == "-" && &t[13..14] == ":",
            "{t}"
        );
    }
}
