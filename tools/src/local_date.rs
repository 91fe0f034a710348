use blockdiff_core::CivilDate;

use crate::timestamp::{local_tm, now_secs};

/// Today's date in the local time zone (`TZ`, `/etc/localtime`), for
/// choosing the period chain of a run.
pub fn local_today() -> Result<CivilDate, blockdiff_core::Error> {
    let secs = now_secs();
    let Some(tm) = local_tm(secs) else {
        // Without a local time, the UTC date.
        return CivilDate::from_days_since_epoch((secs / 86_400) as i64);
    };
    CivilDate::new(tm.tm_year + 1900, (tm.tm_mon + 1) as u32, tm.tm_mday as u32)
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
}
