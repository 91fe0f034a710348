use std::fmt;
use std::str::FromStr;

/// When a [`Hook`] runs, relative to the whole stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookStage {
    /// Before the first freeze. A failure aborts the run before anything
    /// is frozen (thaw hooks still run, for the pre-freeze hooks that did).
    PreFreeze,
    /// After the last freeze, before the snapshot step. A failure aborts:
    /// everything is thawed.
    PostFreeze,
    /// After the snapshot step, before the first thaw. A failure is
    /// reported and thawing continues.
    PreThaw,
    /// After the last thaw. A failure is reported.
    PostThaw,
}

impl HookStage {
    /// Every stage, in the order they run.
    pub const ALL: [HookStage; 4] = [
        HookStage::PreFreeze,
        HookStage::PostFreeze,
        HookStage::PreThaw,
        HookStage::PostThaw,
    ];

    /// The stage's name in specs: `pre-freeze`, `post-freeze`, `pre-thaw`,
    /// `post-thaw`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookStage::PreFreeze => "pre-freeze",
            HookStage::PostFreeze => "post-freeze",
            HookStage::PreThaw => "pre-thaw",
            HookStage::PostThaw => "post-thaw",
        }
    }
}

impl fmt::Display for HookStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HookStage {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        HookStage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "unknown hook stage {text:?} (pre-freeze, post-freeze, pre-thaw or post-thaw)"
                )
            })
    }
}

/// A user command run with `sh -c` at one [`HookStage`] of the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// When it runs.
    pub stage: HookStage,
    /// The shell command.
    pub command: String,
}

impl Hook {
    /// A hook running `command` at `stage`.
    pub fn new(stage: HookStage, command: impl Into<String>) -> Self {
        Hook {
            stage,
            command: command.into(),
        }
    }
}
