//! What ard-bench prints: Markdown on stdout, kept line by line so that `--out FILE` writes the
//! same report, headed by the command that made it, to a file a doc can quote.

use std::sync::Mutex;

static REPORT: Mutex<String> = Mutex::new(String::new());

/// Prints `line` and keeps it for [`write_to`].
pub fn line(line: String) {
    println!("{line}");
    let mut report = REPORT.lock().unwrap_or_else(|e| e.into_inner());
    report.push_str(&line);
    report.push('\n');
}

/// Writes the report so far to `path` (atomically), after a line naming the command.
pub fn write_to(path: &std::path::Path) -> ard_engine::Result<()> {
    let command: Vec<String> = std::env::args().collect();
    let report = REPORT.lock().unwrap_or_else(|e| e.into_inner());
    let text = format!("<!-- written by: {} -->\n\n{report}", command.join(" "));
    ard_engine::io::write_atomically(path, text.as_bytes())
}

/// `println!` that also keeps the line for `--out`.
macro_rules! out {
    () => {
        $crate::report::line(String::new())
    };
    ($($arg:tt)*) => {
        $crate::report::line(format!($($arg)*))
    };
}
pub(crate) use out;
