use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder, Row};

use crate::error::{Error, IoContext, Result};
use crate::log::Logger;
use crate::quiescer::Quiescer;

/// The socket used when neither a host nor a socket is given.
pub const DEFAULT_MYSQL_SOCKET: &str = "/run/mysqld/mysqld.sock";

/// How to reach a MySQL/MariaDB server, as given in a spec. The password is
/// never among them: it comes from `MYSQL_PWD` or an option file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlOptions {
    /// A `[client]` option file (`password=`, `user=`, `socket=`, `host=`,
    /// `port=`). Without it, `~/.my.cnf` is read if it exists.
    pub defaults_file: Option<PathBuf>,
    /// Host name or address (TCP); overrides the option file.
    pub host: Option<String>,
    /// TCP port (default 3306).
    pub port: Option<u16>,
    /// Unix socket; overrides the option file.
    pub socket: Option<PathBuf>,
    /// User name (default: the option file's, else `root`).
    pub user: Option<String>,
    /// How long `FLUSH TABLES WITH READ LOCK` may wait for the lock: the
    /// session's `lock_wait_timeout`, with a client-side backstop one
    /// second later that KILLs the statement.
    pub lock_wait_timeout: Duration,
}

impl Default for MysqlOptions {
    fn default() -> Self {
        MysqlOptions {
            defaults_file: None,
            host: None,
            port: None,
            socket: None,
            user: None,
            lock_wait_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MysqlEndpoint {
    /// A Unix socket.
    Socket(PathBuf),
    /// TCP.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

/// Resolved connection settings: options, option file and environment
/// combined.
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlConnectionSettings {
    /// Where the server is.
    pub endpoint: MysqlEndpoint,
    /// The user.
    pub user: String,
    /// The password, if any.
    pub password: Option<String>,
}

impl fmt::Debug for MysqlConnectionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlConnectionSettings")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

impl fmt::Display for MysqlConnectionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            MysqlEndpoint::Socket(path) => {
                write!(f, "{} (socket, user {})", path.display(), self.user)
            }
            MysqlEndpoint::Tcp { host, port } => write!(f, "{host}:{port} (user {})", self.user),
        }
    }
}

/// The `[client]` settings of an option file (`~/.my.cnf`,
/// `/etc/mysql/debian.cnf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptionFile {
    /// `user=`.
    pub user: Option<String>,
    /// `password=`.
    pub password: Option<String>,
    /// `host=`.
    pub host: Option<String>,
    /// `port=`.
    pub port: Option<u16>,
    /// `socket=`.
    pub socket: Option<PathBuf>,
}

impl ClientOptionFile {
    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).ctx(path, "read")?;
        Self::parse(&text, path)
    }

    /// Parses option-file text: the `[client]`, `[client-server]` and
    /// `[client-mariadb]` sections count, later lines win; `#` and `;`
    /// start comments; values may be quoted; `!include` lines are ignored.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut options = ClientOptionFile::default();
        let mut in_client = false;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty()
                || line.starts_with('#')
                || line.starts_with(';')
                || line.starts_with('!')
            {
                continue;
            }
            if let Some(section) = line.strip_prefix('[') {
                let name = section.trim_end_matches(']').trim();
                in_client = matches!(name, "client" | "client-server" | "client-mariadb");
                continue;
            }
            if !in_client {
                continue;
            }
            let (key, value) = match line.split_once('=') {
                Some((key, value)) => (key.trim(), unquote(value.trim())),
                None => (line, String::new()),
            };
            let key = key.replace('_', "-");
            match key.as_str() {
                "user" => options.user = Some(value),
                "password" => options.password = Some(value),
                "host" => options.host = Some(value),
                "socket" => options.socket = Some(PathBuf::from(value)),
                "port" => {
                    options.port = Some(value.parse().map_err(|_| Error::OptionFile {
                        path: path.to_path_buf(),
                        line: index + 1,
                        detail: format!("port {value:?} is not a port number"),
                    })?);
                }
                _ => {}
            }
        }
        Ok(options)
    }
}

fn unquote(value: &str) -> String {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return value[1..value.len() - 1].to_string();
        }
    }
    // An unquoted value ends at a comment.
    match value.find(" #") {
        Some(end) => value[..end].trim_end().to_string(),
        None => value.to_string(),
    }
}

impl MysqlOptions {
    /// Combines the options with the option file (`defaults_file`, else
    /// `~/.my.cnf` if it exists) and the environment (`MYSQL_PWD`, `HOME`),
    /// read through `env`. Precedence: the spec's options, then the option
    /// file, then `MYSQL_PWD` for the password, as the `mysql` client does.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<MysqlConnectionSettings> {
        let file = match &self.defaults_file {
            Some(path) => ClientOptionFile::read(path)?,
            None => match env("HOME").map(|home| Path::new(&home).join(".my.cnf")) {
                Some(path) if path.is_file() => ClientOptionFile::read(&path)?,
                _ => ClientOptionFile::default(),
            },
        };
        let host = self.host.clone().or(if self.socket.is_some() {
            None
        } else {
            file.host.clone()
        });
        let socket = self.socket.clone().or(if self.host.is_some() {
            None
        } else {
            file.socket.clone()
        });
        let endpoint = match (socket, host) {
            (Some(socket), _) => MysqlEndpoint::Socket(socket),
            (None, Some(host)) if host != "localhost" || self.port.is_some() => {
                MysqlEndpoint::Tcp {
                    host,
                    port: self.port.or(file.port).unwrap_or(3306),
                }
            }
            _ => MysqlEndpoint::Socket(PathBuf::from(DEFAULT_MYSQL_SOCKET)),
        };
        Ok(MysqlConnectionSettings {
            endpoint,
            user: self
                .user
                .clone()
                .or(file.user)
                .unwrap_or_else(|| "root".to_string()),
            password: file.password.or_else(|| env("MYSQL_PWD")),
        })
    }
}

/// Holds `FLUSH TABLES WITH READ LOCK` on one connection for the whole
/// freeze and records the binary-log position while locked.
///
/// Prepare connects twice (the lock connection and a watcher connection),
/// so a wrong password fails before anything is frozen. Freeze runs
/// `sync`, sets the session's `lock_wait_timeout`, issues FTWRL — which
/// waits for running writes — with the watcher ready to `KILL` the lock
/// connection one second after the timeout if the server has not given up
/// by itself, so the server never stays read-only behind a long query —,
/// then reads `SHOW MASTER STATUS` (or `SHOW BINARY LOG STATUS`) and
/// MariaDB's `@@gtid_binlog_pos` into the metadata. Thaw runs `UNLOCK
/// TABLES` and closes the connection (closing alone would release the
/// lock too).
pub struct MysqlQuiescer {
    settings: MysqlConnectionSettings,
    lock_wait_timeout: Duration,
    lock_connection: Option<Conn>,
    watcher_connection: Option<Conn>,
    metadata: Vec<(String, String)>,
}

impl MysqlQuiescer {
    /// A quiescer for the server of `settings`.
    pub fn new(settings: MysqlConnectionSettings, lock_wait_timeout: Duration) -> Self {
        MysqlQuiescer {
            settings,
            lock_wait_timeout,
            lock_connection: None,
            watcher_connection: None,
            metadata: Vec::new(),
        }
    }

    fn error(&self, statement: &str, error: impl fmt::Display) -> Error {
        Error::Mysql {
            server: self.settings.to_string(),
            statement: statement.to_string(),
            message: error.to_string(),
        }
    }

    fn connect(&self) -> Result<Conn> {
        let mut builder = OptsBuilder::new()
            .user(Some(self.settings.user.clone()))
            .pass(self.settings.password.clone())
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(10)));
        builder = match &self.settings.endpoint {
            MysqlEndpoint::Socket(path) => {
                builder.socket(Some(path.to_string_lossy().into_owned()))
            }
            MysqlEndpoint::Tcp { host, port } => {
                builder.ip_or_hostname(Some(host.clone())).tcp_port(*port)
            }
        };
        Conn::new(builder).map_err(|error| self.error("connect", error))
    }

    fn read_binlog_position(&mut self, log: &Logger) -> Result<()> {
        let conn = self.lock_connection.as_mut().expect("locked connection");
        let mut rows: Vec<Row> = Vec::new();
        let mut last_error = None;
        for statement in ["SHOW MASTER STATUS", "SHOW BINARY LOG STATUS"] {
            match conn.query::<Row, _>(statement) {
                Ok(found) => {
                    rows = found;
                    last_error = None;
                    break;
                }
                Err(error) => last_error = Some((statement, error)),
            }
        }
        if let Some((statement, error)) = last_error {
            return Err(self.error(statement, error));
        }
        let mut metadata = Vec::new();
        if let Some(row) = rows.first() {
            for (column, key) in [
                ("File", "mysql.binlog_file"),
                ("Position", "mysql.binlog_position"),
                ("Executed_Gtid_Set", "mysql.executed_gtid_set"),
            ] {
                if let Some(Some(value)) = row
                    .get_opt::<Option<String>, _>(column)
                    .and_then(std::result::Result::ok)
                    && !value.is_empty()
                {
                    metadata.push((key.to_string(), value));
                }
            }
        }
        if let Ok(Some(Some(gtid))) =
            conn.query_first::<Option<String>, _>("SELECT @@gtid_binlog_pos")
        {
            metadata.push(("mysql.gtid_binlog_pos".to_string(), gtid));
        }
        if metadata.is_empty() {
            log.line("mysql: binary logging is off; no binary-log position recorded");
        } else {
            let text: Vec<String> = metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
            log.line(format!("mysql: recorded {}", text.join(" ")));
        }
        self.metadata = metadata;
        Ok(())
    }
}

impl Quiescer for MysqlQuiescer {
    fn name(&self) -> String {
        format!("mysql {}", self.settings)
    }

    fn prepare(&mut self, log: &Logger) -> Result<()> {
        log.line(format!("mysql: connecting to {}", self.settings));
        self.lock_connection = Some(self.connect()?);
        self.watcher_connection = Some(self.connect()?);
        Ok(())
    }

    fn freeze(&mut self, log: &Logger) -> Result<()> {
        if self.lock_connection.is_none() {
            self.prepare(log)?;
        }
        log.line("mysql: sync");
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        let timeout = self.lock_wait_timeout;
        let mut lock_connection = self.lock_connection.take().expect("connected");
        let set_timeout = format!(
            "SET SESSION lock_wait_timeout = {}",
            timeout.as_secs().max(1)
        );
        lock_connection
            .query_drop(&set_timeout)
            .map_err(|error| self.error(&set_timeout, error))?;
        let connection_id = lock_connection.connection_id();
        let mut watcher = self.watcher_connection.take().expect("connected");
        let killed = AtomicBool::new(false);
        let (done, finished) = mpsc::channel::<()>();
        log.line("issuing lock statement: FLUSH TABLES WITH READ LOCK");
        let outcome = std::thread::scope(|scope| {
            let killed = &killed;
            scope.spawn(move || {
                let backstop = timeout + Duration::from_secs(1);
                if let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(backstop) {
                    killed.store(true, Ordering::SeqCst);
                    let _ = watcher.query_drop(format!("KILL CONNECTION {connection_id}"));
                }
            });
            let outcome = lock_connection.query_drop("FLUSH TABLES WITH READ LOCK");
            let _ = done.send(());
            outcome
        });
        let killed = killed.load(Ordering::SeqCst);
        match outcome {
            Ok(()) if !killed => {}
            outcome => {
                // Dropping the connection releases whatever it may hold.
                drop(lock_connection);
                return Err(match outcome {
                    Err(mysql::Error::MySqlError(ref server)) if server.code == 1205 => {
                        Error::MysqlLockTimeout {
                            server: self.settings.to_string(),
                            timeout,
                            killed: false,
                        }
                    }
                    _ if killed => Error::MysqlLockTimeout {
                        server: self.settings.to_string(),
                        timeout,
                        killed: true,
                    },
                    Err(error) => self.error("FLUSH TABLES WITH READ LOCK", error),
                    Ok(()) => unreachable!("handled above"),
                });
            }
        }
        log.line("mysql: tables flushed and locked");
        self.lock_connection = Some(lock_connection);
        if let Err(error) = self.read_binlog_position(log) {
            // Undo our own lock before failing: a failed freeze is not thawed.
            let _ = self.thaw(log);
            return Err(error);
        }
        Ok(())
    }

    fn thaw(&mut self, log: &Logger) -> Result<()> {
        let Some(mut connection) = self.lock_connection.take() else {
            return Ok(());
        };
        log.line("issuing unlock statement: UNLOCK TABLES");
        let result = connection.query_drop("UNLOCK TABLES");
        drop(connection);
        result.map_err(|error| {
            self.error(
                "UNLOCK TABLES",
                format!(
                    "{error} (the connection was closed, which releases the lock on the server)"
                ),
            )
        })
    }

    fn metadata(&self) -> Vec<(String, String)> {
        self.metadata.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn parses_the_client_section_of_an_option_file() {
        let text = "# Automatically generated\n[client]\nhost     = localhost\nuser     = debian-sys-maint\npassword = \"se cret\"\nsocket   = /run/mysqld/mysqld.sock\n[mysql_upgrade]\nuser = other\n";
        let options = ClientOptionFile::parse(text, Path::new("debian.cnf")).unwrap();
        assert_eq!(options.user.as_deref(), Some("debian-sys-maint"));
        assert_eq!(options.password.as_deref(), Some("se cret"));
        assert_eq!(
            options.socket,
            Some(PathBuf::from("/run/mysqld/mysqld.sock"))
        );
        let error =
            ClientOptionFile::parse("[client]\nport=abc\n", Path::new("my.cnf")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "my.cnf:2: port \"abc\" is not a port number"
        );
    }

    #[test]
    fn option_file_beats_mysql_pwd_and_spec_beats_option_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("my.cnf");
        std::fs::write(
            &file,
            "[client]\nuser=backup\npassword=fromfile\nhost=db.example\nport=3307\n",
        )
        .unwrap();
        let options = MysqlOptions {
            defaults_file: Some(file),
            ..MysqlOptions::default()
        };
        let settings = options
            .resolve(&env_of(&[("MYSQL_PWD", "fromenv")]))
            .unwrap();
        assert_eq!(settings.password.as_deref(), Some("fromfile"));
        assert_eq!(
            settings.endpoint,
            MysqlEndpoint::Tcp {
                host: "db.example".into(),
                port: 3307
            }
        );
        let options = MysqlOptions {
            socket: Some("/tmp/s".into()),
            user: Some("me".into()),
            ..options
        };
        let settings = options.resolve(&env_of(&[])).unwrap();
        assert_eq!(settings.endpoint, MysqlEndpoint::Socket("/tmp/s".into()));
        assert_eq!(settings.user, "me");
        assert!(
            !format!("{settings:?}").contains("fromfile"),
            "Debug hides the password"
        );
    }

    #[test]
    fn defaults_are_the_local_socket_root_and_mysql_pwd() {
        let settings = MysqlOptions::default()
            .resolve(&env_of(&[("MYSQL_PWD", "pw"), ("HOME", "/nonexistent")]))
            .unwrap();
        assert_eq!(
            settings.endpoint,
            MysqlEndpoint::Socket(DEFAULT_MYSQL_SOCKET.into())
        );
        assert_eq!(settings.user, "root");
        assert_eq!(settings.password.as_deref(), Some("pw"));
    }
}
