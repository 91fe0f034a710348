//! rclone's view of a cluster: a remote named `garage`, from environment
//! variables only.

use std::process::Command;

/// The rclone remote the environment of [`RcloneEnv`] defines.
pub const RCLONE_REMOTE: &str = "garage";

/// Environment variables that define rclone's remote `garage:` (an S3
/// remote, provider `Other`, path-style addressing) for a cluster, and the
/// variables to remove: `AWS_CA_BUNDLE`, which rclone refuses for a
/// plain-HTTP endpoint, and `RCLONE_CONFIG`'s file, replaced by an empty
/// one so that no remote of the user's own configuration interferes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcloneEnv {
    vars: Vec<(String, String)>,
    removed: Vec<String>,
}

impl RcloneEnv {
    pub(crate) fn new(
        endpoint: &str,
        region: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Self {
        let prefix = format!("RCLONE_CONFIG_{}_", RCLONE_REMOTE.to_ascii_uppercase());
        let vars = [
            ("TYPE", "s3"),
            ("PROVIDER", "Other"),
            ("ENDPOINT", endpoint),
            ("REGION", region),
            ("ACCESS_KEY_ID", access_key_id),
            ("SECRET_ACCESS_KEY", secret_access_key),
            ("FORCE_PATH_STYLE", "true"),
            // The bucket exists: no CreateBucket attempt before uploads.
            ("NO_CHECK_BUCKET", "true"),
        ]
        .into_iter()
        .map(|(name, value)| (format!("{prefix}{name}"), value.to_owned()))
        .chain([("RCLONE_CONFIG".to_owned(), "/dev/null".to_owned())])
        .collect();
        Self {
            vars,
            removed: vec!["AWS_CA_BUNDLE".to_owned()],
        }
    }

    /// The variables to set, `(name, value)`.
    #[must_use]
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    /// The variables to remove.
    #[must_use]
    pub fn removed(&self) -> &[String] {
        &self.removed
    }

    /// Sets and removes the variables on `command`.
    pub fn apply<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        for name in &self.removed {
            command.env_remove(name);
        }
        command.envs(self.vars.iter().map(|(name, value)| (name, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defines_the_garage_remote() {
        let env = RcloneEnv::new("http://127.0.0.1:1234", "garage", "GKabc", "secret");
        let get = |name: &str| {
            env.vars()
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("RCLONE_CONFIG_GARAGE_TYPE"), Some("s3"));
        assert_eq!(get("RCLONE_CONFIG_GARAGE_PROVIDER"), Some("Other"));
        assert_eq!(
            get("RCLONE_CONFIG_GARAGE_ENDPOINT"),
            Some("http://127.0.0.1:1234")
        );
        assert_eq!(get("RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID"), Some("GKabc"));
        assert_eq!(
            get("RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY"),
            Some("secret")
        );
        assert_eq!(get("RCLONE_CONFIG_GARAGE_REGION"), Some("garage"));
        assert_eq!(get("RCLONE_CONFIG_GARAGE_FORCE_PATH_STYLE"), Some("true"));
        assert_eq!(env.removed(), ["AWS_CA_BUNDLE"]);

        let mut command = Command::new("rclone");
        env.apply(&mut command);
        let envs: Vec<_> = command.get_envs().collect();
        assert!(envs.contains(&("AWS_CA_BUNDLE".as_ref(), None)));
        assert!(envs.contains(&("RCLONE_CONFIG_GARAGE_TYPE".as_ref(), Some("s3".as_ref()))));
    }
}
