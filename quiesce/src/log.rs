use std::fmt;
use std::sync::Arc;

/// Where the quiescers' progress lines go: a callback that receives one
/// line at a time ("issuing lock statement: FLUSH TABLES WITH READ LOCK").
///
/// It is called from the thread that runs the stack and, when the freeze
/// window limit or a signal makes the watchdog thaw, from the watchdog
/// thread; hence `Send + Sync`. Cloning is cheap.
#[derive(Clone)]
pub struct Logger(Arc<dyn Fn(&str) + Send + Sync>);

impl Logger {
    /// A logger that hands every line to `callback`.
    pub fn new(callback: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Logger(Arc::new(callback))
    }

    /// A logger that drops every line.
    pub fn discard() -> Self {
        Logger::new(|_| {})
    }

    /// Logs one line.
    pub fn line(&self, text: impl AsRef<str>) {
        (self.0)(text.as_ref());
    }
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Logger")
    }
}

#[cfg(test)]
pub(crate) fn collecting_logger() -> (Logger, Arc<std::sync::Mutex<Vec<String>>>) {
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let logger = Logger::new(move |line| sink.lock().unwrap().push(line.to_string()));
    (logger, lines)
}
