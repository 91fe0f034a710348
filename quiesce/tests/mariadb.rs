//! The MySQL/MariaDB quiescer against a real, private MariaDB server: own
//! temporary datadir (mariadb-install-db), own socket, own TCP port on
//! 127.0.0.1, binary log on, a user with a password. The server is shut
//! down at the end, also when an assertion fails.
//!
//! Needs mariadb-server (scripts/services-setup.sh installs it); without it
//! the test fails saying so, unless BLOCKDIFF_SKIP_SERVICES=1.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};
use quiesce::{Error, Logger, QuiesceStack};

const PASSWORD: &str = "s3cret pass";

struct PrivateServer {
    dir: tempfile::TempDir,
    socket: PathBuf,
    port: u16,
    server: Child,
}

impl PrivateServer {
    fn start(install_db: &Path, mariadbd: &Path) -> PrivateServer {
        let dir = tempfile::tempdir().unwrap();
        let datadir = dir.path().join("data");
        let output = Command::new(install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(if common::is_root() {
                vec!["--user=root"]
            } else {
                vec![]
            })
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let socket = dir.path().join("mysqld.sock");
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let server = Command::new(mariadbd)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .arg(format!("--log-bin={}", dir.path().join("binlog").display()))
            .args([
                "--server-id=1",
                "--innodb-buffer-pool-size=16M",
                "--skip-name-resolve",
            ])
            .args(if common::is_root() {
                vec!["--user=root"]
            } else {
                vec![]
            })
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut private = PrivateServer {
            dir,
            socket,
            port,
            server,
        };
        let start = Instant::now();
        loop {
            if let Ok(mut root) = private.try_root() {
                root.query_drop("CREATE DATABASE app").unwrap();
                root.query_drop("CREATE TABLE app.t (i INT) ENGINE=InnoDB")
                    .unwrap();
                root.query_drop("CREATE TABLE app.other (i INT) ENGINE=InnoDB")
                    .unwrap();
                root.query_drop("INSERT INTO app.t VALUES (1), (2), (3)")
                    .unwrap();
                for host in ["localhost", "127.0.0.1"] {
                    root.query_drop(format!(
                        "CREATE USER 'backup'@'{host}' IDENTIFIED BY '{PASSWORD}'"
                    ))
                    .unwrap();
                    // What FTWRL and SHOW MASTER STATUS need, nothing more.
                    root.query_drop(format!(
                        "GRANT RELOAD, REPLICATION CLIENT ON *.* TO 'backup'@'{host}'"
                    ))
                    .unwrap();
                }
                return private;
            }
            if let Ok(Some(status)) = private.server.try_wait() {
                panic!("mariadbd exited with {status}: {}", private.server_log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "mariadbd did not come up: {}",
                private.server_log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn try_root(&self) -> mysql::Result<Conn> {
        Conn::new(
            OptsBuilder::new()
                .socket(Some(self.socket.to_string_lossy().into_owned()))
                .user(Some("root"))
                .pass(Some("")),
        )
    }

    /// A root connection whose statements give up after `lock_wait` if they
    /// cannot get a lock (so a test never hangs on a locked server).
    fn root(&self) -> Conn {
        let mut conn = self.try_root().unwrap();
        conn.query_drop("SET SESSION lock_wait_timeout = 5, innodb_lock_wait_timeout = 5")
            .unwrap();
        conn
    }

    /// A `[client]` option file for the backup user.
    fn option_file(&self, password: &str) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("client-{}.cnf", password.len()));
        std::fs::write(
            &path,
            format!("[client]\nuser = backup\npassword = \"{password}\"\n"),
        )
        .unwrap();
        path
    }

    fn tcp_spec(&self, password: &str, extra: &str) -> String {
        format!(
            "mysql:host=127.0.0.1,port={},defaults-file={}{extra}",
            self.port,
            self.option_file(password).display()
        )
    }

    fn socket_spec(&self, password: &str, extra: &str) -> String {
        format!(
            "mysql:socket={},defaults-file={}{extra}",
            self.socket.display(),
            self.option_file(password).display()
        )
    }

    /// Asserts that a write goes through: no global read lock is left.
    /// Under `FLUSH TABLES WITH READ LOCK` an INSERT waits for the lock, so
    /// the session gives up waiting after 5 s with an error instead of
    /// hanging (that bound only limits how long a failing test takes; how
    /// fast a loaded machine runs the INSERT does not matter).
    fn assert_writable(&self, table: &str) {
        let mut conn = self.root();
        conn.query_drop("SET SESSION lock_wait_timeout = 5")
            .unwrap();
        if let Err(e) = conn.query_drop(format!("INSERT INTO app.{table} VALUES (100)")) {
            panic!("the server is not writable (a lock is still held?): {e}");
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        // SAFETY: sends SIGTERM to the server we started: a clean shutdown.
        unsafe { libc::kill(self.server.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.server.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[test]
fn mariadb_quiescer_against_a_private_server() {
    let Some(programs) =
        common::require_programs("mariadb test", &["mariadb-install-db", "mariadbd"])
    else {
        return;
    };
    let server = PrivateServer::start(&programs[0], &programs[1]);
    writes_block_while_frozen_and_the_binlog_position_is_recorded(&server);
    the_lock_is_released_when_the_snapshot_step_fails_or_panics(&server);
    a_long_running_write_makes_the_freeze_time_out_and_the_server_stays_writable(&server);
    a_wrong_password_is_a_clear_error_with_nothing_frozen(&server);
}

fn writes_block_while_frozen_and_the_binlog_position_is_recorded(server: &PrivateServer) {
    let (expected_file, expected_position): (String, u64) = server
        .root()
        .query_first("SHOW MASTER STATUS")
        .map(|row: Option<(String, u64, String, String)>| {
            let (file, position, _, _) = row.unwrap();
            (file, position)
        })
        .unwrap();
    let (log, lines) = common::collecting_logger();
    let mut stack = QuiesceStack::from_spec_strings(&[server.tcp_spec(PASSWORD, "")], log).unwrap();
    let insert_done = Arc::new(AtomicBool::new(false));
    let mut writer = None;
    let frozen = stack
        .run_frozen(|_| {
            let done = Arc::clone(&insert_done);
            let mut conn = server.try_root().unwrap();
            writer = Some(thread::spawn(move || {
                conn.query_drop("INSERT INTO app.t VALUES (42)").unwrap();
                done.store(true, Ordering::SeqCst);
                Instant::now()
            }));
            thread::sleep(Duration::from_millis(700));
            let done_while_frozen = insert_done.load(Ordering::SeqCst);
            (done_while_frozen, Instant::now())
        })
        .unwrap();
    let (done_while_frozen, step_end) = frozen.value;
    assert!(
        !done_while_frozen,
        "the INSERT completed while the tables were locked"
    );
    let insert_end = writer.unwrap().join().unwrap();
    assert!(
        insert_end >= step_end,
        "the INSERT completed after the thaw"
    );
    let count: u64 = server
        .root()
        .query_first("SELECT COUNT(*) FROM app.t WHERE i = 42")
        .unwrap()
        .unwrap();
    assert_eq!(count, 1);

    assert_eq!(
        frozen.report.metadata_value("mysql.binlog_file"),
        Some(expected_file.as_str())
    );
    assert_eq!(
        frozen.report.metadata_value("mysql.binlog_position"),
        Some(expected_position.to_string().as_str())
    );
    assert!(
        frozen
            .report
            .metadata_value("mysql.gtid_binlog_pos")
            .is_some()
    );
    assert!(frozen.report.window >= Duration::from_millis(700));
    let lines = lines.lock().unwrap();
    for expected in [
        "issuing lock statement: FLUSH TABLES WITH READ LOCK",
        "issuing unlock statement: UNLOCK TABLES",
    ] {
        assert!(
            lines.iter().any(|line| line == expected),
            "no {expected:?} in {lines:?}"
        );
    }
    assert!(lines.iter().any(|line| line.starts_with("freeze window: ")));
}

fn the_lock_is_released_when_the_snapshot_step_fails_or_panics(server: &PrivateServer) {
    let mut stack =
        QuiesceStack::from_spec_strings(&[server.socket_spec(PASSWORD, "")], Logger::discard())
            .unwrap();
    let frozen = stack
        .run_frozen(|_| -> Result<(), &str> { Err("lvcreate failed") })
        .unwrap();
    assert_eq!(frozen.value, Err("lvcreate failed"));
    server.assert_writable("t");

    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = stack.run_frozen(|_| -> () { panic!("snapshot tool crashed") });
    }));
    assert!(panicked.is_err());
    server.assert_writable("t");

    stack.set_freeze_limit(Duration::from_millis(300));
    let error = stack
        .run_frozen(|_| thread::sleep(Duration::from_millis(800)))
        .unwrap_err();
    assert!(
        matches!(error, Error::FreezeWindowExceeded { .. }),
        "{error}"
    );
    server.assert_writable("t");
}

fn a_long_running_write_makes_the_freeze_time_out_and_the_server_stays_writable(
    server: &PrivateServer,
) {
    // An UPDATE that sleeps 30 s per row holds its tables for minutes:
    // FLUSH TABLES WITH READ LOCK must wait for it.
    let mut long = server.try_root().unwrap();
    let long_id = long.connection_id();
    let long_query =
        thread::spawn(move || long.query_drop("UPDATE app.t SET i = i + 1 WHERE SLEEP(30) = 0"));
    let start = Instant::now();
    loop {
        let running: Option<u64> = server
            .root()
            .query_first(format!("SELECT ID FROM information_schema.PROCESSLIST WHERE ID = {long_id} AND INFO LIKE 'UPDATE%'"))
            .unwrap();
        if running.is_some() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        thread::sleep(Duration::from_millis(20));
    }

    let mut stack = QuiesceStack::from_spec_strings(
        &[server.tcp_spec(PASSWORD, ",lock-wait-timeout=2")],
        Logger::discard(),
    )
    .unwrap();
    let ran = AtomicBool::new(false);
    let start = Instant::now();
    let error = stack
        .run_frozen(|_| ran.store(true, Ordering::SeqCst))
        .unwrap_err();
    let took = start.elapsed();
    assert!(
        !ran.load(Ordering::SeqCst),
        "the snapshot step must not run unlocked"
    );
    let Error::Freeze { source, .. } = &error else {
        panic!("{error}")
    };
    assert!(
        matches!(**source, Error::MysqlLockTimeout { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("did not get the lock within 2s"),
        "{error}"
    );
    // It gave up on its own timeout, not because the blocking UPDATE ended
    // (that sleeps 30 s a row): the UPDATE is still running now.
    let still_running: Option<u64> = server
        .root()
        .query_first(format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID = {long_id} AND INFO LIKE 'UPDATE%'"
        ))
        .unwrap();
    assert!(
        still_running.is_some(),
        "the freeze returned only after the long UPDATE ended ({took:?})"
    );
    // Not read-only: writes to a table the long UPDATE does not hold go
    // through at once.
    server.assert_writable("other");

    server.root().query_drop(format!("KILL {long_id}")).unwrap();
    let _ = long_query.join().unwrap();
}

fn a_wrong_password_is_a_clear_error_with_nothing_frozen(server: &PrivateServer) {
    let (log, lines) = common::collecting_logger();
    let mut stack =
        QuiesceStack::from_spec_strings(&[server.socket_spec("wrong password", "")], log).unwrap();
    let error = stack.run_frozen(|_| ()).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("connect"), "{message}");
    assert!(
        message.contains("Access denied for user 'backup'@'localhost'"),
        "{message}"
    );
    assert!(
        !lines
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("FLUSH TABLES"))
    );
    server.assert_writable("t");
}
