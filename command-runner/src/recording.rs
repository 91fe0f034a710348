//! A runner for tests: it records commands and answers from a script.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::runner::StdoutConsumer;
use crate::{CommandLine, CommandOutput, CommandRunner};

/// How a rule answers.
enum Answer {
    /// Replies in order; the last is kept for later calls.
    Replies(VecDeque<CommandOutput>),
    /// Computed from the command.
    With(Box<dyn Fn(&CommandLine) -> CommandOutput + Send + Sync>),
}

/// A fake [`CommandRunner`] for tests (feature `test-util`): it records
/// every command line as displayed and answers it from the rule whose
/// prefix is the longest that the line starts with (of two alike, the
/// newest). A command no rule answers succeeds and prints nothing, or,
/// from [`strict`](Self::strict), cannot be started.
#[derive(Default)]
pub struct RecordingRunner {
    strict: bool,
    calls: Mutex<Vec<String>>,
    inputs: Mutex<Vec<Vec<u8>>>,
    rules: Mutex<Vec<(String, Answer)>>,
}

impl fmt::Debug for RecordingRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingRunner")
            .field("strict", &self.strict)
            .field("calls", &*lock(&self.calls))
            .finish_non_exhaustive()
    }
}

/// The data behind `mutex`, even if a test panicked while holding it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RecordingRunner {
    /// A runner under which a command no rule answers succeeds and prints
    /// nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A runner under which a command no rule answers cannot be started
    /// (`NotFound`): every command a test expects must be scripted.
    pub fn strict() -> Self {
        RecordingRunner {
            strict: true,
            ..Self::default()
        }
    }

    /// Answers commands whose line starts with `prefix` with `output`.
    /// Several replies for one prefix are given in order, the last one to
    /// every later call.
    pub fn reply(&self, prefix: impl Into<String>, output: CommandOutput) -> &Self {
        let prefix = prefix.into();
        let mut rules = lock(&self.rules);
        let queue = rules.iter_mut().rev().find_map(|(p, a)| match a {
            Answer::Replies(q) if *p == prefix => Some(q),
            _ => None,
        });
        match queue {
            Some(q) => q.push_back(output),
            None => rules.push((prefix, Answer::Replies(VecDeque::from([output])))),
        }
        self
    }

    /// Answers commands whose line starts with `prefix` with what `answer`
    /// makes of the command.
    pub fn on(
        &self,
        prefix: impl Into<String>,
        answer: impl Fn(&CommandLine) -> CommandOutput + Send + Sync + 'static,
    ) -> &Self {
        lock(&self.rules).push((prefix.into(), Answer::With(Box::new(answer))));
        self
    }

    /// The command lines run so far, as displayed, in order.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    /// What was fed to the standard input of the commands run with
    /// [`CommandRunner::run_streaming`] and an input, in order.
    pub fn inputs(&self) -> Vec<Vec<u8>> {
        lock(&self.inputs).clone()
    }
}

impl CommandRunner for RecordingRunner {
    /// Reads all of `input`, then hands the scripted standard output to
    /// `consume`.
    fn run_streaming(
        &self,
        command: &CommandLine,
        input: Option<&mut (dyn Read + Send)>,
        consume: StdoutConsumer<'_>,
    ) -> io::Result<CommandOutput> {
        if let Some(input) = input {
            let mut bytes = Vec::new();
            input.read_to_end(&mut bytes)?;
            lock(&self.inputs).push(bytes);
        }
        let mut output = self.run(command)?;
        consume(&mut output.stdout.as_slice())?;
        output.stdout.clear();
        Ok(output)
    }

    fn run(&self, command: &CommandLine) -> io::Result<CommandOutput> {
        let line = command.to_string();
        lock(&self.calls).push(line.clone());
        let mut rules = lock(&self.rules);
        // The longest matching prefix; of equals, the newest (the last).
        let rule = rules
            .iter_mut()
            .enumerate()
            .filter(|(_, (p, _))| line.starts_with(p.as_str()))
            .max_by_key(|(i, (p, _))| (p.len(), *i))
            .map(|(_, (_, a))| a);
        match rule {
            Some(Answer::Replies(q)) => Ok(if q.len() > 1 {
                q.pop_front().unwrap_or_default()
            } else {
                q.front().cloned().unwrap_or_default()
            }),
            Some(Answer::With(f)) => Ok(f(command)),
            None if self.strict => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no rule for `{line}`"),
            )),
            None => Ok(CommandOutput::ok("")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_records_and_replies_by_longest_prefix_in_order() {
        let runner = RecordingRunner::new();
        runner.reply("vzlist", CommandOutput::ok("101\n"));
        runner.reply("vzctl chkpnt 102", CommandOutput::failed(1, "busy"));
        runner.reply("vzctl chkpnt 102", CommandOutput::ok("second"));
        let run = |c: CommandLine| runner.run(&c).unwrap();
        assert_eq!(run(CommandLine::new("vzlist", ["-H"])).stdout, b"101\n");
        assert!(!run(CommandLine::new("vzctl", ["chkpnt", "102"])).success());
        assert_eq!(
            run(CommandLine::new("vzctl", ["chkpnt", "102"])).stdout,
            b"second"
        );
        assert_eq!(
            run(CommandLine::new("vzctl", ["chkpnt", "102"])).stdout,
            b"second"
        );
        assert!(run(CommandLine::new("vzctl", ["chkpnt", "101"])).success());
        assert_eq!(
            runner.calls(),
            [
                "vzlist -H",
                "vzctl chkpnt 102",
                "vzctl chkpnt 102",
                "vzctl chkpnt 102",
                "vzctl chkpnt 101"
            ]
        );
    }

    #[test]
    fn streaming_records_the_input_and_hands_over_the_reply() {
        let runner = RecordingRunner::strict();
        runner.reply("agent", CommandOutput::ok("packets"));
        let mut seen = Vec::new();
        let out = runner
            .run_streaming(
                &CommandLine::new("agent", ["--dump"]),
                Some(&mut &b"digest"[..]),
                &mut |stdout| stdout.read_to_end(&mut seen).map(drop),
            )
            .unwrap();
        assert!(out.success());
        assert_eq!(seen, b"packets");
        assert_eq!(runner.inputs(), [b"digest".to_vec()]);
    }

    #[test]
    fn computed_answers_and_the_newest_of_equal_prefixes() {
        let runner = RecordingRunner::strict();
        runner.on("lvs", |_| CommandOutput::ok("old"));
        runner.on("lvs", |c| CommandOutput::ok(c.args.join(",")));
        let out = runner.run(&CommandLine::new("lvs", ["a", "b"])).unwrap();
        assert_eq!(out.stdout, b"a,b");
        let e = runner.run(&CommandLine::new("vgs", [""; 0])).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(runner.calls(), ["lvs a b", "vgs"]);
    }
}
