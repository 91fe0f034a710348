use crate::error::Result;
use crate::log::Logger;

/// Something that can be brought to a quiet, consistent state for a
/// snapshot and released again: a database lock, a stopped daemon, a frozen
/// cgroup or file system.
///
/// A [`QuiesceStack`](crate::QuiesceStack) calls [`prepare`](Self::prepare)
/// on every quiescer before anything is frozen, then [`freeze`](Self::freeze)
/// in order, and [`thaw`](Self::thaw) in reverse order on exactly those whose
/// freeze succeeded. A `freeze` that fails must leave nothing of its own
/// frozen (undo its partial work before returning the error): it is not
/// thawed.
pub trait Quiescer: Send {
    /// What it quiesces, for log lines and errors ("mysql (socket /run/mysqld/mysqld.sock)").
    fn name(&self) -> String;

    /// Checks and connects before anything is frozen (a wrong password or a
    /// missing path fails here, with nothing frozen). The default does
    /// nothing.
    fn prepare(&mut self, _log: &Logger) -> Result<()> {
        Ok(())
    }

    /// Brings the application to a quiet state.
    fn freeze(&mut self, log: &Logger) -> Result<()>;

    /// Releases what `freeze` did.
    fn thaw(&mut self, log: &Logger) -> Result<()>;

    /// Key/value facts recorded while frozen, to store with the snapshot
    /// (the MySQL binary-log position). Asked after all freezes succeeded.
    fn metadata(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}
