use std::sync::Arc;

use command_runner::{CommandLine, CommandRunner};

use crate::command::run_checked;
use crate::error::Result;
use crate::log::Logger;
use crate::quiescer::Quiescer;

/// How OpenVZ containers are quiesced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenVzMode {
    /// `vzctl chkpnt CTID` (dump the container's state and stop it), then
    /// `vzctl restore CTID`.
    Checkpoint,
    /// `vzctl chkpnt CTID --suspend` (stop its processes in place), then
    /// `vzctl chkpnt CTID --resume`.
    Suspend,
}

/// Checkpoints (or suspends) every running OpenVZ container, as listed by
/// `vzlist -H -o ctid`, and restores (or resumes) them in reverse order.
///
/// No OpenVZ kernel exists on current distributions: this is tested only
/// against recording stand-ins for `vzctl` and `vzlist`, which check the
/// command lines, not their effect.
pub struct OpenVzQuiescer {
    vzctl: String,
    vzlist: String,
    mode: OpenVzMode,
    runner: Arc<dyn CommandRunner>,
    frozen: Vec<String>,
}

impl OpenVzQuiescer {
    /// Uses the programs `vzctl` and `vzlist` (names or paths).
    pub fn new(
        vzctl: impl Into<String>,
        vzlist: impl Into<String>,
        mode: OpenVzMode,
        runner: Arc<dyn CommandRunner>,
    ) -> Self {
        OpenVzQuiescer {
            vzctl: vzctl.into(),
            vzlist: vzlist.into(),
            mode,
            runner,
            frozen: Vec::new(),
        }
    }

    fn freeze_command(&self, ctid: &str) -> CommandLine {
        match self.mode {
            OpenVzMode::Checkpoint => CommandLine::new(&self.vzctl, ["chkpnt", ctid]),
            OpenVzMode::Suspend => CommandLine::new(&self.vzctl, ["chkpnt", ctid, "--suspend"]),
        }
    }

    fn thaw_command(&self, ctid: &str) -> CommandLine {
        match self.mode {
            OpenVzMode::Checkpoint => CommandLine::new(&self.vzctl, ["restore", ctid]),
            OpenVzMode::Suspend => CommandLine::new(&self.vzctl, ["chkpnt", ctid, "--resume"]),
        }
    }

    fn thaw_frozen(&mut self, log: &Logger) -> Result<()> {
        let mut first_error = None;
        while let Some(ctid) = self.frozen.pop() {
            let command = self.thaw_command(&ctid);
            log.line(format!("openvz: {command}"));
            if let Err(error) = run_checked(self.runner.as_ref(), &command) {
                log.line(format!("openvz: container {ctid}: {error}"));
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Quiescer for OpenVzQuiescer {
    fn name(&self) -> String {
        match self.mode {
            OpenVzMode::Checkpoint => "openvz containers (checkpoint)".to_string(),
            OpenVzMode::Suspend => "openvz containers (suspend)".to_string(),
        }
    }

    fn freeze(&mut self, log: &Logger) -> Result<()> {
        let list = CommandLine::new(&self.vzlist, ["-H", "-o", "ctid"]);
        let output = run_checked(self.runner.as_ref(), &list)?;
        let containers: Vec<String> = output
            .stdout_text()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        log.line(format!(
            "openvz: running containers: {}",
            containers.join(" ")
        ));
        for ctid in containers {
            let command = self.freeze_command(&ctid);
            log.line(format!("openvz: {command}"));
            if let Err(error) = run_checked(self.runner.as_ref(), &command) {
                let _ = self.thaw_frozen(log);
                return Err(error);
            }
            self.frozen.push(ctid);
        }
        Ok(())
    }

    fn thaw(&mut self, log: &Logger) -> Result<()> {
        self.thaw_frozen(log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use command_runner::{CommandOutput, RecordingRunner};

    #[test]
    fn checkpoints_every_running_container_and_restores_in_reverse() {
        let runner = Arc::new(RecordingRunner::new());
        runner.reply("vzlist", CommandOutput::ok("     101\n     102\n"));
        let mut openvz =
            OpenVzQuiescer::new("vzctl", "vzlist", OpenVzMode::Checkpoint, runner.clone());
        openvz.freeze(&Logger::discard()).unwrap();
        openvz.thaw(&Logger::discard()).unwrap();
        assert_eq!(
            runner.calls(),
            [
                "vzlist -H -o ctid",
                "vzctl chkpnt 101",
                "vzctl chkpnt 102",
                "vzctl restore 102",
                "vzctl restore 101",
            ]
        );
    }

    #[test]
    fn suspend_mode_resumes_the_ones_done_when_one_fails() {
        let runner = Arc::new(RecordingRunner::new());
        runner.reply("vzlist", CommandOutput::ok("101\n102\n"));
        runner.reply(
            "vzctl chkpnt 102",
            CommandOutput::failed(16, "Unable to suspend"),
        );
        let mut openvz =
            OpenVzQuiescer::new("vzctl", "vzlist", OpenVzMode::Suspend, runner.clone());
        let error = openvz.freeze(&Logger::discard()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("vzctl chkpnt 102 --suspend` exited with status 16: Unable to suspend")
        );
        assert_eq!(
            runner.calls(),
            [
                "vzlist -H -o ctid",
                "vzctl chkpnt 101 --suspend",
                "vzctl chkpnt 102 --suspend",
                "vzctl chkpnt 101 --resume",
            ]
        );
        openvz.thaw(&Logger::discard()).unwrap();
        assert_eq!(runner.calls().len(), 4, "nothing left to thaw");
    }
}
