//! A command to run: a program and its arguments.

use std::fmt;

/// A command to run: a program and its arguments, passed to it as they
/// are (no shell), unless made with [`CommandLine::shell`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The program: a name looked up on `PATH`, or a path.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

impl CommandLine {
    /// `program` with `args`.
    pub fn new<S: Into<String>>(
        program: impl Into<String>,
        args: impl IntoIterator<Item = S>,
    ) -> Self {
        CommandLine {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// `sh -c script`: for command strings a user wrote (hooks, stop and
    /// start commands).
    pub fn shell(script: impl Into<String>) -> Self {
        CommandLine::new("sh", ["-c".to_string(), script.into()])
    }

    /// The script, when this is `sh -c SCRIPT`.
    fn script(&self) -> Option<&str> {
        match self.args.as_slice() {
            [c, script] if self.program == "sh" && c == "-c" => Some(script),
            _ => None,
        }
    }
}

/// Bytes a shell takes as part of a word, needing no quotes.
fn plain(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,%+@".contains(&b))
}

impl fmt::Display for CommandLine {
    /// The command as a user would type it: words a shell would split or
    /// expand in single quotes; `sh -c SCRIPT` as the script itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(script) = self.script() {
            return f.write_str(script);
        }
        for (i, word) in std::iter::once(&self.program).chain(&self.args).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if plain(word) {
                f.write_str(word)?;
            } else {
                write!(f, "'{}'", word.replace('\'', r"'\''"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let c = CommandLine::new("lvcreate", ["-n", "a b", "it's", "vg/lv", "", "$(x)"]);
        assert_eq!(
            c.to_string(),
            r"lvcreate -n 'a b' 'it'\''s' vg/lv '' '$(x)'"
        );
        assert_eq!(
            CommandLine::new("/usr/bin/my prog", ["x"]).to_string(),
            "'/usr/bin/my prog' x"
        );
    }

    #[test]
    fn a_shell_script_displays_as_written() {
        let c = CommandLine::shell("kill -STOP $(pidof x) && echo 'done'");
        assert_eq!(c.program, "sh");
        assert_eq!(c.to_string(), "kill -STOP $(pidof x) && echo 'done'");
        // Only `sh -c SCRIPT` itself: more arguments are shown quoted.
        let c = CommandLine::new("sh", ["-c", "echo $0", "a b"]);
        assert_eq!(c.to_string(), "sh -c 'echo $0' 'a b'");
    }
}
