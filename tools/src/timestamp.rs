use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch now; 0 for a clock set before it.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `secs` since the epoch as local time (`TZ`, `/etc/localtime`); `None`
/// where `localtime_r` fails.
pub(crate) fn local_tm(secs: u64) -> Option<libc::tm> {
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

#[cfg(test)]
mod tests {
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
