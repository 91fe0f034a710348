//! Where an S3 bucket is and the credentials to reach it, from the
//! environment and the AWS shared files, as the AWS tools find them.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::{StorageError, StorageErrorKind};

/// The region when none is set anywhere (AWS's own default).
pub const DEFAULT_REGION: &str = "us-east-1";

/// The object named in errors about S3 settings.
const CONFIG_OBJECT: &str = "S3 credentials";

/// How to reach an S3-compatible service: endpoint, region, addressing and
/// credentials. Its `Debug` never shows the secret key or session token.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The service's URL (`https://s3.example.net`, `http://127.0.0.1:3900`);
    /// `None` for AWS itself.
    pub endpoint: Option<String>,
    /// The signing region (`us-east-1`; Garage's default is `garage`).
    pub region: Option<String>,
    /// Path-style addressing (`ENDPOINT/BUCKET/KEY`) rather than virtual
    /// hosts (`BUCKET.ENDPOINT/KEY`): what S3-compatible servers expect.
    pub path_style: bool,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token, with temporary credentials.
    pub session_token: Option<String>,
    /// How long a request, or one step of a transfer, may make no
    /// progress before it is abandoned (and retried); `None`:
    /// [`DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
}

/// The default of [`S3Config::timeout`]: a server that answers nothing for
/// a minute is taken for gone (the request is retried, then the run fails)
/// rather than waited for forever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl S3Config {
    /// The settings as the AWS tools would find them, from this process's
    /// environment: see [`from_lookup`](Self::from_lookup).
    pub fn from_env_and_options(
        endpoint: Option<&str>,
        region: Option<&str>,
        profile: Option<&str>,
    ) -> Result<S3Config, StorageError> {
        Self::from_lookup(endpoint, region, profile, &|name: &str| {
            std::env::var(name).ok()
        })
    }

    /// The settings, with the environment read through `env` (a variable's
    /// value, `None` when unset), so that tests need not change the
    /// process's environment. An empty variable counts as unset.
    ///
    /// - endpoint: `endpoint`, else `AWS_ENDPOINT_URL_S3`, else
    ///   `AWS_ENDPOINT_URL`, else none (AWS); path-style addressing when
    ///   there is an endpoint;
    /// - profile: `profile`, else `AWS_PROFILE`, else `default`;
    /// - credentials: when `profile` is given, that profile's; otherwise
    ///   `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and
    ///   `AWS_SESSION_TOKEN`) if set, else the profile's. A profile's come
    ///   from the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`,
    ///   else `~/.aws/credentials`, section `[NAME]`), else from the config
    ///   file (`AWS_CONFIG_FILE`, else `~/.aws/config`, section
    ///   `[profile NAME]`, or `[default]`);
    /// - region: `region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`,
    ///   else the profile's `region` in the config file, else
    ///   [`DEFAULT_REGION`].
    ///
    /// Missing credentials are an error that names where they were looked
    /// for; no error ever shows a secret.
    pub fn from_lookup(
        endpoint: Option<&str>,
        region: Option<&str>,
        profile: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<S3Config, StorageError> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let endpoint = endpoint
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .or_else(|| var("AWS_ENDPOINT_URL_S3"))
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .map(|e| e.trim_end_matches('/').to_string());
        let explicit_profile = profile.filter(|p| !p.is_empty()).map(str::to_string);
        let profile_name = explicit_profile
            .clone()
            .or_else(|| var("AWS_PROFILE"))
            .unwrap_or_else(|| "default".to_string());

        let home = var("HOME").map(PathBuf::from);
        let credentials_path = var("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
        let config_path = var("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
        let config_section =
            read_ini_section(config_path.as_ref(), &config_section_name(&profile_name))?;

        let (access_key_id, secret_access_key, session_token) = match (
            &explicit_profile,
            var("AWS_ACCESS_KEY_ID"),
            var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (None, Some(id), Some(secret)) => (id, secret, var("AWS_SESSION_TOKEN")),
            (None, Some(_), None) => {
                return Err(config_error(
                    "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
                ));
            }
            (None, None, Some(_)) => {
                return Err(config_error(
                    "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not",
                ));
            }
            _ => {
                let from_credentials = read_ini_section(credentials_path.as_ref(), &profile_name)?;
                match profile_credentials(&from_credentials)
                    .or_else(|| profile_credentials(&config_section))
                {
                    Some(found) => found,
                    None => {
                        return Err(config_error(format!(
                            "no credentials found: {}profile {profile_name:?} has no \
                             aws_access_key_id and aws_secret_access_key in {} or {}",
                            if explicit_profile.is_none() {
                                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set, and "
                            } else {
                                ""
                            },
                            describe_path(credentials_path.as_ref(), "AWS_SHARED_CREDENTIALS_FILE"),
                            describe_path(config_path.as_ref(), "AWS_CONFIG_FILE"),
                        )));
                    }
                }
            }
        };

        let region = region
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .or_else(|| var("AWS_REGION"))
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| {
                config_section
                    .get("region")
                    .filter(|r| !r.is_empty())
                    .cloned()
            })
            .unwrap_or_else(|| DEFAULT_REGION.to_string());

        Ok(S3Config {
            path_style: endpoint.is_some(),
            endpoint,
            region: Some(region),
            access_key_id,
            secret_access_key,
            session_token,
            timeout: None,
        })
    }

    /// The signing region: [`region`](Self::region), or [`DEFAULT_REGION`].
    pub fn region_or_default(&self) -> &str {
        self.region
            .as_deref()
            .filter(|r| !r.is_empty())
            .unwrap_or(DEFAULT_REGION)
    }
}

fn config_error(detail: impl Into<String>) -> StorageError {
    StorageError::new(CONFIG_OBJECT, "load", StorageErrorKind::Other, detail)
}

fn describe_path(path: Option<&PathBuf>, var: &str) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => format!("(no file: neither {var} nor HOME is set)"),
    }
}

/// The config file's section for a profile: `[default]` or `[profile NAME]`.
fn config_section_name(profile: &str) -> String {
    if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    }
}

/// `(access key id, secret, session token)` from a profile's keys.
fn profile_credentials(
    section: &HashMap<String, String>,
) -> Option<(String, String, Option<String>)> {
    let id = section.get("aws_access_key_id").filter(|v| !v.is_empty())?;
    let secret = section
        .get("aws_secret_access_key")
        .filter(|v| !v.is_empty())?;
    let token = section
        .get("aws_session_token")
        .filter(|v| !v.is_empty())
        .cloned();
    Some((id.clone(), secret.clone(), token))
}

/// One section of an INI file, empty when the file or the section does not
/// exist; an error when the file exists but cannot be read.
fn read_ini_section(
    path: Option<&PathBuf>,
    section: &str,
) -> Result<HashMap<String, String>, StorageError> {
    let Some(path) = path else {
        return Ok(HashMap::new());
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_ini_section(&text, section)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(StorageError::new(
            path.display().to_string(),
            "read",
            crate::local_dir::io_error_kind(&e),
            e.to_string(),
        )),
    }
}

/// The keys of `[section]` in an AWS-style INI text: `key = value` lines,
/// comments starting with `#` or `;`, section names compared after
/// trimming and with inner runs of blanks as one (`[profile  x]`). Keys are
/// lowercased; indented lines (nested settings such as `s3 =` followed by
/// `  addressing_style = path`) are skipped. A key repeated in a section,
/// or a section repeated, keeps its last value.
fn parse_ini_section(text: &str, section: &str) -> HashMap<String, String> {
    let wanted = normalize_section(section);
    let mut in_section = false;
    let mut keys = HashMap::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            in_section = name
                .strip_suffix(']')
                .is_some_and(|name| normalize_section(name) == wanted);
            continue;
        }
        if !in_section || raw.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            keys.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    keys
}

fn normalize_section(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    #[test]
    fn ini_sections_comments_nesting() {
        let text = "\
# comment
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key=secret=with=equals
; another comment
[profile  backup ]
region = garage
s3 =
    addressing_style = path
AWS_Access_Key_ID = AKIDBACKUP
[other]
region = eu-west-1
";
        let d = parse_ini_section(text, "default");
        assert_eq!(
            d.get("aws_access_key_id").map(String::as_str),
            Some("AKIDDEFAULT")
        );
        assert_eq!(
            d.get("aws_secret_access_key").map(String::as_str),
            Some("secret=with=equals")
        );
        let b = parse_ini_section(text, "profile backup");
        assert_eq!(b.get("region").map(String::as_str), Some("garage"));
        assert_eq!(
            b.get("aws_access_key_id").map(String::as_str),
            Some("AKIDBACKUP")
        );
        assert_eq!(b.get("s3").map(String::as_str), Some(""));
        assert!(!b.contains_key("addressing_style"));
        assert!(parse_ini_section(text, "missing").is_empty());
        assert!(parse_ini_section("", "default").is_empty());
        assert!(parse_ini_section("[broken\nkey = v\n", "broken").is_empty());
    }

    #[test]
    fn env_credentials_and_endpoint() {
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_SESSION_TOKEN", "TOKEN"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:3900/"),
            ("AWS_DEFAULT_REGION", "garage"),
            ("HOME", "/nonexistent-home"),
        ]);
        let c = S3Config::from_lookup(None, None, None, &env).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(c.path_style);
        assert_eq!(c.region.as_deref(), Some("garage"));
        assert_eq!(c.access_key_id, "AKIDENV");
        assert_eq!(c.secret_access_key, SECRET);
        assert_eq!(c.session_token.as_deref(), Some("TOKEN"));

        // Options win over the environment; AWS_REGION over AWS_DEFAULT_REGION.
        let env2 = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:3900"),
            ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:3901"),
            ("AWS_REGION", "r1"),
            ("AWS_DEFAULT_REGION", "r2"),
        ]);
        let c = S3Config::from_lookup(None, None, None, &env2).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:3901"));
        assert_eq!(c.region.as_deref(), Some("r1"));
        let c =
            S3Config::from_lookup(Some("https://s3.example.net"), Some("r3"), None, &env2).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("https://s3.example.net"));
        assert_eq!(c.region.as_deref(), Some("r3"));
    }

    #[test]
    fn aws_defaults_without_endpoint() {
        let env = env_of(&[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S")]);
        let c = S3Config::from_lookup(None, None, None, &env).unwrap();
        assert_eq!(c.endpoint, None);
        assert!(!c.path_style);
        assert_eq!(c.region.as_deref(), Some(DEFAULT_REGION));
        assert_eq!(c.session_token, None);
        // Empty variables count as unset.
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "A"),
            ("AWS_SECRET_ACCESS_KEY", "S"),
            ("AWS_ENDPOINT_URL", ""),
            ("AWS_REGION", ""),
        ]);
        let c = S3Config::from_lookup(None, None, None, &env).unwrap();
        assert_eq!(c.endpoint, None);
        assert_eq!(c.region.as_deref(), Some(DEFAULT_REGION));
    }

    #[test]
    fn profiles_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let aws = dir.path().join(".aws");
        std::fs::create_dir(&aws).unwrap();
        std::fs::write(
            aws.join("credentials"),
            format!(
                "[default]\naws_access_key_id = AKIDDEF\naws_secret_access_key = {SECRET}\n\
                 [backup]\naws_access_key_id = AKIDBAK\naws_secret_access_key = S2\naws_session_token = T2\n"
            ),
        )
        .unwrap();
        std::fs::write(
            aws.join("config"),
            "[default]\nregion = eu-west-3\n[profile backup]\nregion = garage\n\
             [profile inconfig]\naws_access_key_id = AKIDCFG\naws_secret_access_key = S3\n",
        )
        .unwrap();
        let home = dir.path().to_str().unwrap().to_string();

        let env = env_of(&[("HOME", &home)]);
        let c = S3Config::from_lookup(None, None, None, &env).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.region.as_deref()),
            ("AKIDDEF", Some("eu-west-3"))
        );

        let env = env_of(&[("HOME", &home), ("AWS_PROFILE", "backup")]);
        let c = S3Config::from_lookup(None, None, None, &env).unwrap();
        assert_eq!(c.access_key_id, "AKIDBAK");
        assert_eq!(c.session_token.as_deref(), Some("T2"));
        assert_eq!(c.region.as_deref(), Some("garage"));

        // A profile given as an option wins over credentials in the environment.
        let env = env_of(&[
            ("HOME", &home),
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "SENV"),
        ]);
        let c = S3Config::from_lookup(None, None, Some("backup"), &env).unwrap();
        assert_eq!(c.access_key_id, "AKIDBAK");
        let c = S3Config::from_lookup(None, None, None, &env).unwrap();
        assert_eq!(c.access_key_id, "AKIDENV");

        // Credentials in the config file's profile section.
        let c = S3Config::from_lookup(None, None, Some("inconfig"), &env).unwrap();
        assert_eq!(c.access_key_id, "AKIDCFG");

        // Files named by the environment.
        let creds = dir.path().join("creds");
        std::fs::write(
            &creds,
            "[x]\naws_access_key_id = AKIDX\naws_secret_access_key = SX\n",
        )
        .unwrap();
        let creds = creds.to_str().unwrap().to_string();
        let env = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", &creds),
            ("AWS_CONFIG_FILE", "/nonexistent/config"),
            ("AWS_PROFILE", "x"),
        ]);
        let c = S3Config::from_lookup(None, None, None, &env).unwrap();
        assert_eq!(c.access_key_id, "AKIDX");
        assert_eq!(c.region.as_deref(), Some(DEFAULT_REGION));
    }

    #[test]
    fn missing_credentials_say_where_they_were_looked_for() {
        let env = env_of(&[("HOME", "/nonexistent-home")]);
        let e = S3Config::from_lookup(None, None, None, &env).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("AWS_ACCESS_KEY_ID"), "{text}");
        assert!(
            text.contains("/nonexistent-home/.aws/credentials"),
            "{text}"
        );
        assert!(text.contains("/nonexistent-home/.aws/config"), "{text}");
        assert!(text.contains("\"default\""), "{text}");

        let e = S3Config::from_lookup(None, None, Some("nope"), &env).unwrap_err();
        assert!(e.to_string().contains("\"nope\""), "{e}");

        let env = env_of(&[]);
        let e = S3Config::from_lookup(None, None, None, &env).unwrap_err();
        assert!(e.to_string().contains("HOME"), "{e}");

        let env = env_of(&[("AWS_ACCESS_KEY_ID", "A")]);
        let e = S3Config::from_lookup(None, None, None, &env).unwrap_err();
        assert!(
            e.to_string().contains("AWS_SECRET_ACCESS_KEY is not"),
            "{e}"
        );
        let env = env_of(&[("AWS_SECRET_ACCESS_KEY", SECRET)]);
        let e = S3Config::from_lookup(None, None, None, &env).unwrap_err();
        assert!(!e.to_string().contains(SECRET), "{e}");
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = S3Config {
            endpoint: None,
            region: None,
            path_style: false,
            access_key_id: "AKID".into(),
            secret_access_key: SECRET.into(),
            session_token: Some("SESSIONTOKEN".into()),
            timeout: None,
        };
        let text = format!("{c:?}");
        assert!(text.contains("secret_access_key: \"<redacted>\""), "{text}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains("SESSIONTOKEN"), "{text}");
        assert!(text.contains("AKID"), "{text}");
        assert_eq!(c.region_or_default(), DEFAULT_REGION);
    }
}
