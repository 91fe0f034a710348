use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cgroup::CgroupFreezer;
use crate::cron::{CronOptions, CronQuiescer, ProcProcessTable};
use crate::error::{Error, Result};
use crate::fsfreeze::FsFreezer;
use crate::hook::{Hook, HookStage};
use crate::log::Logger;
use crate::mysql_lock::{MysqlOptions, MysqlQuiescer};
use crate::openvz::{OpenVzMode, OpenVzQuiescer};
use crate::service::{ServiceManager, ServiceQuiescer};
use crate::stack::QuiesceStack;
use command_runner::{CommandLine, CommandRunner, LocalRunner};

/// One quiescer or hook, as a CLI gives it (`--quiesce SPEC`); see the
/// crate documentation for the syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuiesceSpec {
    /// `mysql[:KEY=VALUE,…]`.
    Mysql(MysqlOptions),
    /// `cron[:KEY=VALUE,…]`.
    Cron(CronOptions),
    /// `service:NAME[,NAME…][,manager=systemd|service]`.
    Services {
        /// The services, stopped in this order.
        names: Vec<String>,
        /// The service manager; detected if not given.
        manager: Option<ServiceManager>,
    },
    /// `openvz[:mode=checkpoint|suspend,vzctl=PROGRAM,vzlist=PROGRAM]`.
    OpenVz {
        /// Checkpoint/restore or suspend/resume.
        mode: OpenVzMode,
        /// The `vzctl` program.
        vzctl: String,
        /// The `vzlist` program.
        vzlist: String,
    },
    /// `cgroup:PATH[,timeout=SECONDS]`.
    Cgroup {
        /// Below the cgroup2 mount, or relative to it.
        path: PathBuf,
        /// Bound on each wait for `cgroup.events`.
        timeout: Duration,
    },
    /// `fsfreeze:MOUNT_POINT`.
    FsFreeze {
        /// The file system's mount point.
        mount_point: PathBuf,
    },
    /// `hook:STAGE=COMMAND`.
    Hook(Hook),
}

/// A spec split into its kind and items.
struct Parts<'a> {
    spec: &'a str,
    positional: Vec<String>,
    keyed: Vec<(String, String)>,
}

impl Parts<'_> {
    fn error(&self, detail: impl Into<String>) -> Error {
        Error::Spec {
            spec: self.spec.to_string(),
            detail: detail.into(),
        }
    }

    fn only_keys(&self, allowed: &[&str]) -> Result<()> {
        if let Some(value) = self.positional.first() {
            return Err(self.error(format!(
                "unexpected {value:?}; expected KEY=VALUE with KEY one of {}",
                allowed.join(", ")
            )));
        }
        self.check_keys(allowed)
    }

    fn check_keys(&self, allowed: &[&str]) -> Result<()> {
        for (key, _) in &self.keyed {
            if key == "password" {
                return Err(self.error(
                    "a password is never taken from the command line (it would show in ps); set MYSQL_PWD or use defaults-file=FILE with a [client] password= line",
                ));
            }
            if !allowed.contains(&key.as_str()) {
                return Err(self.error(format!(
                    "unknown key {key:?} (known: {})",
                    allowed.join(", ")
                )));
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.keyed
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn seconds(&self, key: &str) -> Result<Option<Duration>> {
        self.get(key)
            .map(|text| {
                text.parse::<f64>()
                    .ok()
                    .filter(|secs| secs.is_finite() && *secs >= 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| self.error(format!("{key}={text}: not a number of seconds")))
            })
            .transpose()
    }
}

/// Splits on unescaped commas; `\,` is a comma and `\\` a backslash.
fn split_items(text: &str) -> Vec<String> {
    let mut items = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next @ (',' | '\\')) => items.last_mut().unwrap().push(next),
                Some(other) => {
                    items.last_mut().unwrap().push('\\');
                    items.last_mut().unwrap().push(other);
                }
                None => items.last_mut().unwrap().push('\\'),
            },
            ',' => items.push(String::new()),
            c => items.last_mut().unwrap().push(c),
        }
    }
    items
}

impl QuiesceSpec {
    /// Parses one spec (see the crate documentation for the syntax).
    pub fn parse(spec: &str) -> Result<Self> {
        let (kind, rest) = match spec.split_once(':') {
            Some((kind, rest)) => (kind, Some(rest)),
            None => (spec, None),
        };
        let mut parts = Parts {
            spec,
            positional: Vec::new(),
            keyed: Vec::new(),
        };
        if kind == "hook" {
            let (stage, command) = rest
                .and_then(|rest| rest.split_once('='))
                .ok_or_else(|| parts.error("expected hook:STAGE=COMMAND"))?;
            let stage: HookStage = stage
                .parse()
                .map_err(|detail: String| parts.error(detail))?;
            if command.trim().is_empty() {
                return Err(parts.error("the hook's command is empty"));
            }
            return Ok(QuiesceSpec::Hook(Hook::new(stage, command)));
        }
        if let Some(rest) = rest {
            for item in split_items(rest) {
                if item.is_empty() {
                    return Err(parts.error("empty item (two commas, or a trailing one?)"));
                }
                match item.split_once('=') {
                    Some((key, value)) => parts
                        .keyed
                        .push((key.trim().to_string(), value.to_string())),
                    None => parts.positional.push(item),
                }
            }
        }
        match kind {
            "mysql" | "mariadb" => {
                parts.only_keys(&[
                    "defaults-file",
                    "host",
                    "port",
                    "socket",
                    "user",
                    "lock-wait-timeout",
                ])?;
                let port = parts
                    .get("port")
                    .map(|port| {
                        port.parse::<u16>()
                            .map_err(|_| parts.error(format!("port={port}: not a port number")))
                    })
                    .transpose()?;
                let defaults = MysqlOptions::default();
                Ok(QuiesceSpec::Mysql(MysqlOptions {
                    defaults_file: parts.get("defaults-file").map(PathBuf::from),
                    host: parts.get("host").map(str::to_string),
                    port,
                    socket: parts.get("socket").map(PathBuf::from),
                    user: parts.get("user").map(str::to_string),
                    lock_wait_timeout: parts
                        .seconds("lock-wait-timeout")?
                        .unwrap_or(defaults.lock_wait_timeout),
                }))
            }
            "cron" => {
                parts.only_keys(&["stop", "start", "wait", "name"])?;
                let mut options = CronOptions::default();
                if let Some(stop) = parts.get("stop") {
                    options.stop = CommandLine::shell(stop);
                }
                if let Some(start) = parts.get("start") {
                    options.start = CommandLine::shell(start);
                }
                if let Some(wait) = parts.seconds("wait")? {
                    options.job_wait = wait;
                }
                if let Some(name) = parts.get("name") {
                    options.daemon_name = name.to_string();
                }
                Ok(QuiesceSpec::Cron(options))
            }
            "service" => {
                parts.check_keys(&["manager"])?;
                if parts.positional.is_empty() {
                    return Err(parts.error("expected service:NAME[,NAME…]"));
                }
                let manager = match parts.get("manager") {
                    None => None,
                    Some("systemd" | "systemctl") => Some(ServiceManager::Systemd),
                    Some("service" | "sysvinit") => Some(ServiceManager::Service),
                    Some(other) => {
                        return Err(
                            parts.error(format!("manager={other}: expected systemd or service"))
                        );
                    }
                };
                Ok(QuiesceSpec::Services {
                    names: parts.positional.clone(),
                    manager,
                })
            }
            "openvz" => {
                parts.only_keys(&["mode", "vzctl", "vzlist"])?;
                let mode = match parts.get("mode") {
                    None | Some("checkpoint" | "chkpnt") => OpenVzMode::Checkpoint,
                    Some("suspend") => OpenVzMode::Suspend,
                    Some(other) => {
                        return Err(
                            parts.error(format!("mode={other}: expected checkpoint or suspend"))
                        );
                    }
                };
                Ok(QuiesceSpec::OpenVz {
                    mode,
                    vzctl: parts.get("vzctl").unwrap_or("vzctl").to_string(),
                    vzlist: parts.get("vzlist").unwrap_or("vzlist").to_string(),
                })
            }
            "cgroup" => {
                parts.check_keys(&["timeout"])?;
                let [path] = parts.positional.as_slice() else {
                    return Err(parts.error("expected cgroup:PATH (one cgroup per spec)"));
                };
                Ok(QuiesceSpec::Cgroup {
                    path: PathBuf::from(path),
                    timeout: parts.seconds("timeout")?.unwrap_or(Duration::from_secs(10)),
                })
            }
            "fsfreeze" => {
                parts.check_keys(&[])?;
                let [path] = parts.positional.as_slice() else {
                    return Err(
                        parts.error("expected fsfreeze:MOUNT_POINT (one file system per spec)")
                    );
                };
                Ok(QuiesceSpec::FsFreeze {
                    mount_point: PathBuf::from(path),
                })
            }
            other => Err(parts.error(format!(
                "unknown kind {other:?} (mysql, cron, service, openvz, cgroup, fsfreeze or hook)"
            ))),
        }
    }
}

impl QuiesceStack {
    /// Parses `specs` (as given to `--quiesce`, in order) and builds the
    /// stack: what a CLI calls before [`run_frozen`](Self::run_frozen).
    pub fn from_spec_strings(specs: &[impl AsRef<str>], log: Logger) -> Result<Self> {
        let specs = specs
            .iter()
            .map(|spec| QuiesceSpec::parse(spec.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Self::from_specs(&specs, log)
    }

    /// Builds a stack from parsed specs, in order, for the real system
    /// (commands run, `/proc` read, `MYSQL_PWD` and `HOME` from the
    /// environment).
    pub fn from_specs(specs: &[QuiesceSpec], log: Logger) -> Result<Self> {
        Self::from_specs_with_runner(specs, log, Arc::new(LocalRunner::new()))
    }

    /// As [`from_specs`](Self::from_specs), with external commands (hooks,
    /// services, cron, OpenVZ) run by `runner`.
    pub fn from_specs_with_runner(
        specs: &[QuiesceSpec],
        log: Logger,
        runner: Arc<dyn CommandRunner>,
    ) -> Result<Self> {
        let mut stack = QuiesceStack::new(log);
        stack.set_hook_runner(Arc::clone(&runner));
        for spec in specs {
            match spec {
                QuiesceSpec::Mysql(options) => {
                    let settings = options.resolve(&|name| std::env::var(name).ok())?;
                    stack.push(Box::new(MysqlQuiescer::new(
                        settings,
                        options.lock_wait_timeout,
                    )));
                }
                QuiesceSpec::Cron(options) => stack.push(Box::new(CronQuiescer::new(
                    options.clone(),
                    Arc::clone(&runner),
                    Arc::new(ProcProcessTable),
                ))),
                QuiesceSpec::Services { names, manager } => {
                    stack.push(Box::new(ServiceQuiescer::new(
                        names.clone(),
                        manager.unwrap_or_else(ServiceManager::detect),
                        Arc::clone(&runner),
                    )));
                }
                QuiesceSpec::OpenVz {
                    mode,
                    vzctl,
                    vzlist,
                } => stack.push(Box::new(OpenVzQuiescer::new(
                    vzctl.clone(),
                    vzlist.clone(),
                    *mode,
                    Arc::clone(&runner),
                ))),
                QuiesceSpec::Cgroup { path, timeout } => {
                    stack.push(Box::new(CgroupFreezer::new(path, *timeout)?));
                }
                QuiesceSpec::FsFreeze { mount_point } => {
                    stack.push(Box::new(FsFreezer::new(mount_point.clone())));
                }
                QuiesceSpec::Hook(hook) => stack.add_hook(hook.clone()),
            }
        }
        Ok(stack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(
            QuiesceSpec::parse("mysql").unwrap(),
            QuiesceSpec::Mysql(MysqlOptions::default())
        );
        let QuiesceSpec::Mysql(options) = QuiesceSpec::parse(
            "mysql:defaults-file=/etc/mysql/debian.cnf,lock-wait-timeout=2.5,port=3307",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            options.defaults_file,
            Some(PathBuf::from("/etc/mysql/debian.cnf"))
        );
        assert_eq!(options.lock_wait_timeout, Duration::from_millis(2500));
        assert_eq!(options.port, Some(3307));
        assert_eq!(
            QuiesceSpec::parse("service:apache2,postfix,manager=service").unwrap(),
            QuiesceSpec::Services {
                names: vec!["apache2".into(), "postfix".into()],
                manager: Some(ServiceManager::Service)
            }
        );
        assert_eq!(
            QuiesceSpec::parse("openvz:mode=suspend").unwrap(),
            QuiesceSpec::OpenVz {
                mode: OpenVzMode::Suspend,
                vzctl: "vzctl".into(),
                vzlist: "vzlist".into()
            }
        );
        assert_eq!(
            QuiesceSpec::parse("cgroup:/sys/fs/cgroup/app").unwrap(),
            QuiesceSpec::Cgroup {
                path: "/sys/fs/cgroup/app".into(),
                timeout: Duration::from_secs(10)
            }
        );
        assert_eq!(
            QuiesceSpec::parse("fsfreeze:/mnt/data").unwrap(),
            QuiesceSpec::FsFreeze {
                mount_point: "/mnt/data".into()
            }
        );
        assert_eq!(
            QuiesceSpec::parse("hook:pre-freeze=echo a,b=c; curl -d x=1 http://h/").unwrap(),
            QuiesceSpec::Hook(Hook::new(
                HookStage::PreFreeze,
                "echo a,b=c; curl -d x=1 http://h/"
            ))
        );
        let QuiesceSpec::Cron(cron) =
            QuiesceSpec::parse(r"cron:stop=/etc/init.d/cron stop,start=kill -CONT 1\,2,wait=5")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(cron.stop, CommandLine::shell("/etc/init.d/cron stop"));
        assert_eq!(cron.start, CommandLine::shell("kill -CONT 1,2"));
        assert_eq!(cron.job_wait, Duration::from_secs(5));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let message = |spec: &str| QuiesceSpec::parse(spec).unwrap_err().to_string();
        assert!(message("mysql:password=x").contains("never taken from the command line"));
        assert!(message("mysql:colour=blue").contains("unknown key \"colour\""));
        assert!(message("nfs").contains("unknown kind \"nfs\""));
        assert!(message("service").contains("expected service:NAME"));
        assert!(message("hook:during=x").contains("unknown hook stage \"during\""));
        assert!(message("hook:pre-freeze=").contains("empty"));
        assert!(message("cgroup:a,b").contains("one cgroup per spec"));
        assert!(message("cron:wait=soon").contains("wait=soon: not a number of seconds"));
        assert!(message("openvz:mode=pause").contains("expected checkpoint or suspend"));
    }

    #[test]
    fn builds_a_stack_in_the_order_given() {
        let specs = [
            "hook:post-thaw=true",
            "service:a",
            "openvz",
            "fsfreeze:/mnt/data",
        ];
        let stack = QuiesceStack::from_spec_strings(&specs, Logger::discard()).unwrap();
        assert_eq!(
            stack.quiescer_names(),
            [
                "services a",
                "openvz containers (checkpoint)",
                "file system /mnt/data"
            ]
        );
        assert_eq!(stack.hooks(), [Hook::new(HookStage::PostThaw, "true")]);
    }
}
