//! Where stderr output meets the progress bar. The log subscriber writes every line through a
//! [`Console`]; while a bar is attached, each line is printed with the bar suspended (cleared, the
//! line written, the bar redrawn below it), so warnings stand on their own line above the bar
//! instead of being glued onto it. One `Console` is made in `main` and handed down (the logger
//! and every [`super::progress::Progress`] share it); nothing here is global.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// A function that takes what would go to stderr (tests).
type SinkFn = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Where the bytes go: stderr, or a function (tests).
#[derive(Clone)]
enum Sink {
    Stderr,
    Function(SinkFn),
}

/// A handle on stderr shared by the logger and the progress bar (cheap to clone).
#[derive(Clone)]
pub struct Console {
    bar: Arc<Mutex<Option<indicatif::ProgressBar>>>,
    sink: Sink,
}

impl Default for Console {
    fn default() -> Self {
        Console::stderr()
    }
}

impl Console {
    /// Writes to stderr.
    pub fn stderr() -> Console {
        Console {
            bar: Arc::new(Mutex::new(None)),
            sink: Sink::Stderr,
        }
    }

    /// Hands every write to `sink` instead of stderr (for tests).
    pub fn to_function(sink: impl Fn(&[u8]) + Send + Sync + 'static) -> Console {
        Console {
            bar: Arc::new(Mutex::new(None)),
            sink: Sink::Function(Arc::new(sink)),
        }
    }

    /// Writes into the returned buffer instead of stderr (for tests).
    pub fn in_memory() -> (Console, Arc<Mutex<Vec<u8>>>) {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let into = buffer.clone();
        let console = Console::to_function(move |bytes| {
            if let Ok(mut buffer) = into.lock() {
                buffer.extend_from_slice(bytes);
            }
        });
        (console, buffer)
    }

    /// Lines written from now on go above `bar`.
    pub fn attach(&self, bar: &indicatif::ProgressBar) {
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar.clone());
        }
    }

    /// No bar any more: lines are written as they come.
    pub fn detach(&self) {
        if let Ok(mut slot) = self.bar.lock() {
            *slot = None;
        }
    }

    fn sink_write(&self, bytes: &[u8]) {
        match &self.sink {
            Sink::Stderr => {
                let mut stderr = std::io::stderr().lock();
                let _ = stderr.write_all(bytes);
                let _ = stderr.flush();
            }
            Sink::Function(sink) => sink(bytes),
        }
    }

    /// Writes `bytes` (whole lines), above the bar when one is attached.
    pub fn write(&self, bytes: &[u8]) {
        let bar = self.bar.lock().ok().and_then(|slot| slot.clone());
        match bar {
            Some(bar) => bar.suspend(|| self.sink_write(bytes)),
            None => self.sink_write(bytes),
        }
    }

    /// Writes `line` and a newline (see [`Console::write`]).
    pub fn line(&self, line: &str) {
        self.write(format!("{line}\n").as_bytes());
    }
}

/// What the log subscriber writes one formatted event into.
pub struct ConsoleWriter {
    console: Console,
    pending: Vec<u8>,
}

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.console.write(&self.pending);
            self.pending.clear();
        }
        Ok(())
    }
}

impl Drop for ConsoleWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Console {
    type Writer = ConsoleWriter;

    fn make_writer(&'a self) -> Self::Writer {
        ConsoleWriter {
            console: self.clone(),
            pending: Vec::new(),
        }
    }
}

/// `now` in UTC as RFC 3339 to the second (`2026-12-03T13:05:09Z`), for lines written where
/// stderr is not a terminal (CI logs, Slurm output files).
pub fn utc_timestamp(now: SystemTime) -> String {
    let seconds = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = ((seconds / 86_400) as i64, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// (year, month, day) of the day `days` after 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        let at = |s: u64| utc_timestamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day of a century year divisible by 400), 12:34:56.
        assert_eq!(at(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(at(1_796_308_509), "2026-12-03T14:35:09Z"); // GNU date -u -d @1796308509
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    /// A terminal that records what the bar does, into the same log as the console's lines.
    #[derive(Debug)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl indicatif::TermLike for Recorder {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push(format!("bar {s}"));
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            if !s.is_empty() {
                self.0.lock().unwrap().push(format!("bar {s}"));
            }
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.0.lock().unwrap().push("clear".to_string());
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_log_line_is_written_with_the_bar_cleared_then_redrawn() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(10),
            indicatif::ProgressDrawTarget::term_like(Box::new(Recorder(events.clone()))),
        );
        bar.set_style(indicatif::ProgressStyle::with_template("{pos}/{len} images").unwrap());
        bar.set_position(3);
        bar.tick();
        let console = {
            let events = events.clone();
            Console::to_function(move |bytes| {
                let text = String::from_utf8_lossy(bytes).trim_end().to_string();
                events.lock().unwrap().push(format!("line {text}"));
            })
        };
        console.attach(&bar);
        let before = events.lock().unwrap().len();
        {
            let mut writer = tracing_subscriber::fmt::MakeWriter::make_writer(&console);
            writer.write_all(b"WARN skipping bad.png: ").unwrap();
            writer.write_all(b"not an image\n").unwrap();
        } // dropped: the event goes out whole, through the console
        let seen: Vec<String> = events.lock().unwrap()[before..].to_vec();
        let line = seen
            .iter()
            .position(|e| e == "line WARN skipping bad.png: not an image")
            .unwrap_or_else(|| panic!("one whole line: {seen:?}"));
        assert!(
            seen[..line].iter().any(|e| e == "clear"),
            "the bar is cleared before the line: {seen:?}"
        );
        assert!(
            seen[line + 1..]
                .iter()
                .any(|e| e.starts_with("bar 3/10 images")),
            "and drawn again below it: {seen:?}"
        );
        assert!(
            !seen[..line].iter().any(|e| e.starts_with("line")),
            "{seen:?}"
        );
        console.detach();
        let count = events.lock().unwrap().len();
        console.line("after");
        assert_eq!(events.lock().unwrap()[count..], ["line after".to_string()]);
        let (memory, buffer) = Console::in_memory();
        memory.line("a");
        memory.line("b");
        assert_eq!(buffer.lock().unwrap().as_slice(), b"a\nb\n");
    }
}
