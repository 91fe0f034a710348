//! [`error_line`]: an error and its causes on one line.

/// Formats `err` and its causes on one line, `: `-separated, leaving out a
/// cause whose text the line already holds (errors that quote their
/// cause), with line breaks turned into spaces.
pub fn error_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cause = Some(err);
    while let Some(e) = cause {
        let text = e.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = e.source();
    }
    line.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_causes_are_said_once() {
        let e = crate::RunError::Backup {
            source_name: "/srv/db.img".into(),
            name: "db".into(),
            source: Box::new(crate::RunError::Io {
                op: "write",
                path: "db.3".into(),
                source: std::io::Error::other("disk\non fire"),
            }),
        };
        assert_eq!(
            error_line(&e),
            "backup of /srv/db.img to db failed: write db.3: disk on fire"
        );
        let quoting = crate::RunError::InvalidOption("write db.3: disk\non fire".into());
        let outer = crate::RunError::Snapshot {
            origin: "vg0/db".into(),
            source: Box::new(quoting),
        };
        assert_eq!(
            error_line(&outer),
            "cannot snapshot vg0/db: write db.3: disk on fire"
        );
    }
}
