use std::path::Path;
use std::sync::Arc;

use command_runner::{CommandLine, CommandRunner};

use crate::command::run_checked;
use crate::error::Result;
use crate::log::Logger;
use crate::quiescer::Quiescer;

/// How services are stopped and started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceManager {
    /// `systemctl stop|start|is-active NAME`.
    Systemd,
    /// `service NAME stop|start|status` (sysvinit and others).
    Service,
}

impl ServiceManager {
    /// systemd if it is running (`/run/systemd/system` exists), `service`
    /// otherwise.
    pub fn detect() -> Self {
        if Path::new("/run/systemd/system").is_dir() {
            ServiceManager::Systemd
        } else {
            ServiceManager::Service
        }
    }

    /// The command line that does `action` (`stop`, `start`) to `service`.
    pub fn command(self, action: &str, service: &str) -> CommandLine {
        match self {
            ServiceManager::Systemd => CommandLine::new("systemctl", [action, service]),
            ServiceManager::Service => CommandLine::new("service", [service, action]),
        }
    }

    fn status_command(self, service: &str) -> CommandLine {
        match self {
            ServiceManager::Systemd => {
                CommandLine::new("systemctl", ["is-active", "--quiet", service])
            }
            ServiceManager::Service => CommandLine::new("service", [service, "status"]),
        }
    }
}

/// Stops a list of services in order and starts them again in reverse
/// order. A service that is not running when the freeze begins is left
/// alone (not stopped, not started).
pub struct ServiceQuiescer {
    services: Vec<String>,
    manager: ServiceManager,
    runner: Arc<dyn CommandRunner>,
    stopped: Vec<String>,
}

impl ServiceQuiescer {
    /// Stops `services` through `manager`, running commands with `runner`.
    pub fn new(
        services: Vec<String>,
        manager: ServiceManager,
        runner: Arc<dyn CommandRunner>,
    ) -> Self {
        ServiceQuiescer {
            services,
            manager,
            runner,
            stopped: Vec::new(),
        }
    }

    fn start_stopped(&mut self, log: &Logger) -> Result<()> {
        let mut first_error = None;
        while let Some(service) = self.stopped.pop() {
            let command = self.manager.command("start", &service);
            log.line(format!("service {service}: starting: {command}"));
            if let Err(error) = run_checked(self.runner.as_ref(), &command) {
                log.line(format!("service {service}: {error}"));
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Quiescer for ServiceQuiescer {
    fn name(&self) -> String {
        format!("services {}", self.services.join(", "))
    }

    fn freeze(&mut self, log: &Logger) -> Result<()> {
        for service in self.services.clone() {
            let status = self.manager.status_command(&service);
            let running = self
                .runner
                .run(&status)
                .map(|output| output.success())
                .unwrap_or(true);
            if !running {
                log.line(format!(
                    "service {service}: not running ({status} says so); leaving it alone"
                ));
                continue;
            }
            let command = self.manager.command("stop", &service);
            log.line(format!("service {service}: stopping: {command}"));
            if let Err(error) = run_checked(self.runner.as_ref(), &command) {
                // Undo this quiescer's own partial work before failing.
                let _ = self.start_stopped(log);
                return Err(error);
            }
            self.stopped.push(service);
        }
        Ok(())
    }

    fn thaw(&mut self, log: &Logger) -> Result<()> {
        self.start_stopped(log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use command_runner::{CommandOutput, RecordingRunner};

    #[test]
    fn stops_in_order_and_starts_in_reverse() {
        let runner = Arc::new(RecordingRunner::new());
        let mut services = ServiceQuiescer::new(
            vec!["apache2".into(), "postfix".into()],
            ServiceManager::Systemd,
            runner.clone(),
        );
        services.freeze(&Logger::discard()).unwrap();
        services.thaw(&Logger::discard()).unwrap();
        assert_eq!(
            runner.calls(),
            [
                "systemctl is-active --quiet apache2",
                "systemctl stop apache2",
                "systemctl is-active --quiet postfix",
                "systemctl stop postfix",
                "systemctl start postfix",
                "systemctl start apache2",
            ]
        );
    }

    #[test]
    fn a_failed_stop_restarts_those_already_stopped_and_skips_inactive_ones() {
        let runner = Arc::new(RecordingRunner::new());
        runner.reply(
            "service idle status",
            CommandOutput::failed(3, "not running"),
        );
        runner.reply("service b stop", CommandOutput::failed(1, "b refuses"));
        let mut services = ServiceQuiescer::new(
            vec!["a".into(), "idle".into(), "b".into()],
            ServiceManager::Service,
            runner.clone(),
        );
        let error = services.freeze(&Logger::discard()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`service b stop` exited with status 1: b refuses"
        );
        assert_eq!(
            runner.calls(),
            [
                "service a status",
                "service a stop",
                "service idle status",
                "service b status",
                "service b stop",
                "service a start",
            ]
        );
    }
}
