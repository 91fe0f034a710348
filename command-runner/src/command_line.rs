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

    /// The command as one line for a POSIX shell (`ssh HOST LINE` hands
    /// it to the remote login shell): every word quoted where it needs
    /// it, a shell script too, so that the command gets exactly these
    /// arguments.
    pub fn shell_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The script, when this is `sh -c SCRIPT`.
    fn script(&self) -> Option<&str> {
        match self.args.as_slice() {
            [c, script] if self.program == "sh" && c == "-c" => Some(script),
            _ => None,
        }
    }
}

/// `word` quoted for a POSIX shell where it needs it: it reaches the
/// command as one argument, byte for byte, whatever it holds (spaces,
/// quotes, `$(…)`, newlines).
pub fn shell_quote(word: &str) -> String {
    if plain(word) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
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
        f.write_str(&self.shell_line())
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
    fn quoted_words_reach_a_shell_unchanged() {
        let nasty = [
            "plain",
            "with space",
            "it's",
            "$(touch /tmp/pwned) `id` ${HOME}",
            "a\nnewline",
            "'",
            "",
            "\\ \" ; | & > < *",
        ];
        for word in nasty {
            let line = CommandLine::new("printf", ["%s", word]).shell_line();
            let out = std::process::Command::new("sh")
                .args(["-c", &line])
                .output()
                .unwrap();
            assert!(out.status.success(), "{line}");
            assert_eq!(String::from_utf8(out.stdout).unwrap(), word, "{line}");
        }
        let script = CommandLine::shell("printf %s \"$0\"");
        assert_eq!(script.shell_line(), r#"sh -c 'printf %s "$0"'"#);
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
