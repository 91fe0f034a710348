//! `VG/PATTERN`: the logical volumes of a volume group whose names match
//! a glob (`blockdiff-lvm mount --each`, `blockdiff-backup --each`).

use std::fmt;

use crate::{Error, LogicalVolume, LvPath, Lvm, Result};

/// `VG/PATTERN`: a volume group and a glob over LV names (`*` and `?`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePattern {
    /// The volume group (a name, not a pattern).
    pub vg: String,
    /// The glob over the LV names of `vg`.
    pub lv_glob: String,
}

/// The volumes a [`VolumePattern`] picked out of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeSelection {
    /// Matching volumes that hold data, sorted.
    pub volumes: Vec<LvPath>,
    /// Matching volumes left out, sorted, each with why ([`skip_reason`]).
    pub skipped: Vec<(LvPath, &'static str)>,
}

/// Why `lv` is no volume to back up or mount, if it is not: snapshots
/// (blockdiff's own included) and thin pools hold no data of their own.
pub fn skip_reason(lv: &LogicalVolume) -> Option<&'static str> {
    if lv.is_snapshot() {
        Some("a snapshot")
    } else if lv.is_thin_pool() {
        Some("a thin pool")
    } else {
        None
    }
}

impl VolumePattern {
    /// Parses `VG/PATTERN` or `/dev/VG/PATTERN`.
    pub fn parse(text: &str) -> Result<VolumePattern> {
        let rest = text.strip_prefix("/dev/").unwrap_or(text);
        let bad = |why: &str| {
            Error::Invalid(format!(
                "'{text}' is not a VG/PATTERN such as 'vg0/domu-*': {why}"
            ))
        };
        let (vg, glob) = rest.split_once('/').ok_or_else(|| bad("no '/'"))?;
        if glob.is_empty() || glob.contains('/') {
            return Err(bad("the pattern after the '/' must be one LV name pattern"));
        }
        if vg.contains(['*', '?']) {
            return Err(bad("the volume group is a name, not a pattern"));
        }
        // The VG name as LVM allows it; the glob as an LV name would be,
        // with * and ? allowed.
        LvPath::new(vg, &glob.replace(['*', '?'], "x")).map_err(|e| bad(&e.to_string()))?;
        Ok(VolumePattern {
            vg: vg.to_owned(),
            lv_glob: glob.to_owned(),
        })
    }

    /// Whether `lv` is in the volume group and its name matches.
    pub fn matches(&self, lv: &LvPath) -> bool {
        lv.vg == self.vg && glob_matches(&self.lv_glob, &lv.lv)
    }

    /// The matching volumes of a listing, those that hold data apart from
    /// the others ([`skip_reason`]).
    pub fn select(&self, listing: &[LogicalVolume]) -> VolumeSelection {
        let mut selection = VolumeSelection::default();
        for lv in listing.iter().filter(|lv| self.matches(&lv.path)) {
            match skip_reason(lv) {
                None => selection.volumes.push(lv.path.clone()),
                Some(why) => selection.skipped.push((lv.path.clone(), why)),
            }
        }
        selection.volumes.sort();
        selection.skipped.sort();
        selection
    }

    /// The matching volumes of the volume group, as `lvs` lists them now.
    pub fn select_from(&self, lvm: &Lvm) -> Result<VolumeSelection> {
        Ok(self.select(&lvm.list(Some(&self.vg))?))
    }
}

impl fmt::Display for VolumePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vg, self.lv_glob)
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of
/// characters (also none) and `?` any one character.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character.
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    pi = sp + 1;
                    ti = st + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        for (pattern, text, expected) in [
            ("domu-*", "domu-web", true),
            ("domu-*", "domu-", true),
            ("domu-*", "dom-web", false),
            ("domu-?", "domu-a", true),
            ("domu-?", "domu-ab", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("*-db", "domu-web-db", true),
            ("*-db", "domu-db-web", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("**x", "yyx", true),
            ("data", "data", true),
            ("data", "data2", false),
        ] {
            assert_eq!(glob_matches(pattern, text), expected, "{pattern} {text}");
        }
    }

    #[test]
    fn volume_patterns_parse_and_refuse() {
        let p = VolumePattern::parse("vg0/domu-*").unwrap();
        assert_eq!((p.vg.as_str(), p.lv_glob.as_str()), ("vg0", "domu-*"));
        assert_eq!(VolumePattern::parse("/dev/vg0/domu-*").unwrap(), p);
        assert_eq!(p.to_string(), "vg0/domu-*");
        assert!(p.matches(&"vg0/domu-a".parse().unwrap()));
        assert!(!p.matches(&"vg1/domu-a".parse().unwrap()));
        for bad in ["domu-*", "vg0/", "vg*/x", "vg0/a/b", "vg0/a b", "vg;x/*"] {
            let err = VolumePattern::parse(bad).unwrap_err().to_string();
            assert!(err.contains("is not a VG/PATTERN"), "{bad}: {err}");
        }
    }

    fn lv(name: &str, attr: &str, origin: Option<&str>) -> LogicalVolume {
        LogicalVolume {
            path: name.parse().unwrap(),
            attr: attr.to_owned(),
            size: 4 << 20,
            origin: origin.map(str::to_owned),
            pool: None,
            data_percent: None,
            tags: Vec::new(),
        }
    }

    #[test]
    fn selection_keeps_data_volumes_and_says_why_others_are_skipped() {
        let listing = [
            lv("vg0/web-b", "-wi-a-----", None),
            lv("vg0/web-a", "owi-a-s---", None),
            // A blockdiff snapshot of web-a, matching the glob too.
            lv("vg0/web-a-bd-77-1-1", "swi-a-s---", Some("web-a")),
            // A thin snapshot: no 's' attribute, but an origin.
            lv("vg0/web-thinsnap", "Vwi---tz-k", Some("web-thin")),
            lv("vg0/web-thin", "Vwi-a-tz--", None),
            lv("vg0/web-pool", "twi-aotz--", None),
            lv("vg0/db", "-wi-a-----", None),
            lv("vg1/web-c", "-wi-a-----", None),
        ];
        let p = VolumePattern::parse("vg0/web-*").unwrap();
        let s = p.select(&listing);
        let names = |v: &[LvPath]| {
            v.iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&s.volumes),
            ["vg0/web-a", "vg0/web-b", "vg0/web-thin"]
        );
        let skipped: Vec<_> = s
            .skipped
            .iter()
            .map(|(p, why)| format!("{p}: {why}"))
            .collect();
        assert_eq!(
            skipped,
            [
                "vg0/web-a-bd-77-1-1: a snapshot",
                "vg0/web-pool: a thin pool",
                "vg0/web-thinsnap: a snapshot",
            ]
        );
        // A glob that excludes: `?` is one character.
        let s = VolumePattern::parse("vg0/web-?").unwrap().select(&listing);
        assert_eq!(names(&s.volumes), ["vg0/web-a", "vg0/web-b"]);
        assert!(s.skipped.is_empty());
        assert_eq!(
            VolumePattern::parse("vg0/nothing*")
                .unwrap()
                .select(&listing),
            VolumeSelection::default()
        );
    }
}
