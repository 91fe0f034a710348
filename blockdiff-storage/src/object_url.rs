//! `s3://BUCKET/PREFIX/NAME`: where a chain is kept on S3.

use std::fmt;

use crate::{StorageError, StorageErrorKind};

/// A chain's place on S3, `s3://BUCKET/PREFIX/NAME`: its objects are
/// `PREFIX/NAME.ver`, `PREFIX/NAME.1`, … in `BUCKET`.
///
/// ```
/// use blockdiff_storage::ObjectUrl;
///
/// let url = ObjectUrl::parse("s3://backups/db1/mysql").unwrap();
/// assert_eq!((url.bucket.as_str(), url.prefix.as_str(), url.name.as_str()), ("backups", "db1", "mysql"));
/// assert_eq!(url.to_string(), "s3://backups/db1/mysql");
/// assert!(ObjectUrl::parse("s3://backups/db1/").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectUrl {
    /// The bucket (S3's rules: 3 to 63 lowercase letters, digits, `.`, `-`).
    pub bucket: String,
    /// The path between the bucket and the name, without a leading or
    /// trailing `/`; empty when the name follows the bucket.
    pub prefix: String,
    /// The chain's name: the last segment.
    pub name: String,
}

/// The scheme an [`ObjectUrl`] starts with.
const SCHEME: &str = "s3://";

impl ObjectUrl {
    /// Whether `s` is meant as an object URL (starts with `s3://`), rather
    /// than a local path.
    pub fn is_object_url(s: &str) -> bool {
        s.starts_with(SCHEME)
    }

    /// Parses `s3://BUCKET/PREFIX/NAME` (`PREFIX` may be empty or have
    /// several segments). Refused: an invalid bucket, no name, a name
    /// starting with `.`, an empty segment (`//`, a trailing `/`), a `.` or
    /// `..` segment, a control character.
    pub fn parse(s: &str) -> Result<ObjectUrl, StorageError> {
        let invalid = |detail: &str| {
            StorageError::new(s, "parse", StorageErrorKind::Invalid, detail.to_string())
        };
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| invalid("not an object URL (s3://BUCKET/PREFIX/NAME)"))?;
        if rest.chars().any(char::is_control) {
            return Err(invalid("contains a control character"));
        }
        let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket (s3://BUCKET/PREFIX/NAME)"));
        }
        check_bucket(bucket).map_err(|detail| invalid(&detail))?;
        if path.is_empty() {
            return Err(invalid(
                "no name after the bucket (s3://BUCKET/PREFIX/NAME)",
            ));
        }
        let segments: Vec<&str> = path.split('/').collect();
        for segment in &segments {
            if segment.is_empty() {
                return Err(invalid("an empty path segment ('//' or a trailing '/')"));
            }
            if *segment == "." || *segment == ".." {
                return Err(invalid("a '.' or '..' path segment"));
            }
        }
        let (name, prefix) = segments
            .split_last()
            .ok_or_else(|| invalid("no name after the bucket"))?;
        if name.starts_with('.') {
            return Err(invalid("the name starts with '.'"));
        }
        Ok(ObjectUrl {
            bucket: bucket.to_string(),
            prefix: prefix.join("/"),
            name: (*name).to_string(),
        })
    }
}

/// S3's bucket naming rules (the ones that matter for a path-style or
/// virtual-host URL): 3 to 63 characters of lowercase letters, digits, `.`
/// and `-`, starting and ending with a letter or digit, no `..`.
fn check_bucket(bucket: &str) -> Result<(), String> {
    if !(3..=63).contains(&bucket.len()) {
        return Err(format!("bucket {bucket:?} must have 3 to 63 characters"));
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        return Err(format!(
            "bucket {bucket:?} has {c:?}: only lowercase letters, digits, '.' and '-' are allowed"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !alnum(bucket.chars().next()) || !alnum(bucket.chars().last()) {
        return Err(format!(
            "bucket {bucket:?} must start and end with a letter or digit"
        ));
    }
    if bucket.contains("..") {
        return Err(format!("bucket {bucket:?} has '..'"));
    }
    Ok(())
}

impl fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "{SCHEME}{}/{}", self.bucket, self.name)
        } else {
            write!(f, "{SCHEME}{}/{}/{}", self.bucket, self.prefix, self.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (String, String, String) {
        let u = ObjectUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(u.to_string(), s, "round trip");
        (u.bucket, u.prefix, u.name)
    }

    #[test]
    fn parses_and_round_trips() {
        assert_eq!(
            parts("s3://bkt/name"),
            ("bkt".into(), "".into(), "name".into())
        );
        assert_eq!(
            parts("s3://bkt/p/name"),
            ("bkt".into(), "p".into(), "name".into())
        );
        assert_eq!(
            parts("s3://my.bucket-1/a/b/c/db1.img"),
            ("my.bucket-1".into(), "a/b/c".into(), "db1.img".into())
        );
        assert_eq!(parts("s3://b-3/.hidden-prefix/n").1, ".hidden-prefix");
        let long = "a".repeat(63);
        assert_eq!(parts(&format!("s3://{long}/n")).0, long);
    }

    #[test]
    fn refuses_bad_urls() {
        for bad in [
            "",
            "s3:/bkt/name",
            "http://bkt/name",
            "s3://",
            "s3:///name",
            "s3://bkt",
            "s3://bkt/",
            "s3://bkt/p/",
            "s3://bkt//name",
            "s3://bkt/p//name",
            "s3://bkt/../name",
            "s3://bkt/p/./name",
            "s3://bkt/p/..",
            "s3://bkt/.name",
            "s3://bkt/p/.ver",
            "s3://ab/name",
            "s3://Bucket/name",
            "s3://bu_ket/name",
            "s3://-bucket/name",
            "s3://bucket-/name",
            "s3://buc..ket/name",
            "s3://bucket/na\nme",
        ] {
            let e = ObjectUrl::parse(bad).expect_err(bad);
            assert_eq!(e.kind, StorageErrorKind::Invalid, "{bad}");
            assert_eq!(e.object, bad);
        }
        assert!(ObjectUrl::parse(&format!("s3://{}/n", "a".repeat(64))).is_err());
    }

    #[test]
    fn is_object_url() {
        assert!(ObjectUrl::is_object_url("s3://b/n"));
        assert!(ObjectUrl::is_object_url("s3://"));
        assert!(!ObjectUrl::is_object_url("/var/backup/s3://x"));
        assert!(!ObjectUrl::is_object_url("S3://b/n"));
        assert!(!ObjectUrl::is_object_url("db1"));
    }
}
