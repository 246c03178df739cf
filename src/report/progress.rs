//! Progress on stderr for long runs (`baseline` and the other dataset runs, `train`): a bar on a
//! terminal, otherwise a line every ~5 s (and at the end), each with the rate in its unit
//! (`12.3 images/s`), the elapsed time and the ETA; nothing when quiet. Lines written where stderr
//! is not a terminal start with a UTC timestamp (CI logs, Slurm output files). With a label (a rank
//! of a data-parallel run: several processes share the terminal) always lines, prefixed by it. The
//! bar is attached to the [`Console`] the logger writes through, so log lines appear above it.

use std::cell::Cell;
use std::time::{Instant, SystemTime};

use super::console::{utc_timestamp, Console};

/// Seconds between two progress lines when there is no bar.
const LINE_INTERVAL_S: f64 = 5.0;

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    console: Console,
    total: u64,
    quiet: bool,
    /// Lines carry a timestamp (stderr is not a terminal).
    stamped: bool,
    prefix: String,
    /// What is counted (`images`, `steps`): the rate is `<n> <unit>/s`.
    unit: &'static str,
    last_line: Cell<Option<Instant>>,
    started: Instant,
    /// Position when this invocation started (a resumed run's rate counts its own work only).
    first: u64,
}

impl Progress {
    /// `template` is the indicatif bar template; its `{msg}` shows the rate and
    /// [`Progress::update`]'s message.
    pub fn new(
        total: u64,
        done: u64,
        quiet: bool,
        label: Option<&str>,
        unit: &'static str,
        template: &str,
        console: &Console,
    ) -> Progress {
        let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = (!quiet && label.is_none() && on_terminal).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_position(done);
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            console.attach(&bar);
            bar
        });
        Progress {
            bar,
            console: console.clone(),
            total,
            quiet,
            stamped: !on_terminal,
            prefix: label.map(|l| format!("{l}: ")).unwrap_or_default(),
            unit,
            last_line: Cell::new(None),
            started: Instant::now(),
            first: done,
        }
    }

    /// `position` of `total` done; `message` goes into the bar or the line after the rate.
    pub fn update(&self, position: u64, message: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let done = position.saturating_sub(self.first) as f64;
        let rate = done / elapsed.max(1e-9);
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            bar.set_message(with_message(&format_rate(rate, self.unit), message));
            return;
        }
        if self.quiet {
            return;
        }
        let now = Instant::now();
        let due = self
            .last_line
            .get()
            .is_none_or(|last| now.duration_since(last).as_secs_f64() >= LINE_INTERVAL_S);
        if due || position == self.total {
            self.last_line.set(Some(now));
            let per_unit = elapsed / done.max(1.0);
            let eta = per_unit * self.total.saturating_sub(position) as f64;
            let stamp = self.stamped.then(|| utc_timestamp(SystemTime::now()));
            self.console.line(&progress_line(&Line {
                stamp: stamp.as_deref(),
                prefix: &self.prefix,
                position,
                total: self.total,
                unit: self.unit,
                rate,
                elapsed_s: elapsed,
                eta_s: eta,
                message,
            }));
        }
    }

    /// A line that does not break the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if !self.quiet => self.console.line(&format!("{}{line}", self.prefix)),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            self.console.detach();
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.bar.is_some() {
            self.console.detach();
        }
    }
}

/// What one progress line says.
struct Line<'a> {
    stamp: Option<&'a str>,
    prefix: &'a str,
    position: u64,
    total: u64,
    unit: &'a str,
    rate: f64,
    elapsed_s: f64,
    eta_s: f64,
    message: &'a str,
}

/// `[STAMP ]PREFIXprogress: 5/12 images, 12.3 images/s, elapsed 4 s, ETA 6 s[, MESSAGE]`.
fn progress_line(line: &Line) -> String {
    let stamp = line.stamp.map(|s| format!("{s} ")).unwrap_or_default();
    let text = format!(
        "{stamp}{}progress: {}/{} {}, {}, elapsed {}, ETA {}",
        line.prefix,
        line.position,
        line.total,
        line.unit,
        format_rate(line.rate, line.unit),
        format_duration(line.elapsed_s),
        format_duration(line.eta_s),
    );
    with_message(&text, line.message)
}

fn with_message(text: &str, message: &str) -> String {
    if message.is_empty() {
        text.to_string()
    } else {
        format!("{text}, {message}")
    }
}

/// `12.3 images/s` (one decimal; `0.25 steps/s` below one per second).
fn format_rate(rate: f64, unit: &str) -> String {
    if rate < 1.0 {
        format!("{rate:.2} {unit}/s")
    } else {
        format!("{rate:.1} {unit}/s")
    }
}

/// `42 s`, `3m 07s`, `2h 05m`.
fn format_duration(seconds: f64) -> String {
    let whole = seconds.max(0.0).round() as u64;
    match whole {
        0..60 => format!("{whole} s"),
        60..3600 => format!("{}m {:02}s", whole / 60, whole % 60),
        _ => format!("{}h {:02}m", whole / 3600, whole % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_carries_its_stamp_rate_unit_elapsed_and_eta() {
        let line = progress_line(&Line {
            stamp: Some("2026-12-03T13:05:09Z"),
            prefix: "rank 1: ",
            position: 5,
            total: 12,
            unit: "images",
            rate: 12.345,
            elapsed_s: 65.4,
            eta_s: 4.2,
            message: "",
        });
        assert_eq!(
            line,
            "2026-12-03T13:05:09Z rank 1: progress: 5/12 images, 12.3 images/s, elapsed 1m 05s, ETA 4 s"
        );
        let line = progress_line(&Line {
            stamp: None,
            prefix: "",
            position: 2,
            total: 300,
            unit: "steps",
            rate: 0.5,
            elapsed_s: 4.0,
            eta_s: 7300.0,
            message: "loss 1.2000",
        });
        assert_eq!(
            line,
            "progress: 2/300 steps, 0.50 steps/s, elapsed 4 s, ETA 2h 01m, loss 1.2000"
        );
    }

    #[test]
    fn lines_without_a_terminal_go_through_the_console() {
        let (console, buffer) = super::super::console::Console::in_memory();
        // Tests run with stderr captured or redirected: no terminal, so lines, stamped.
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return;
        }
        let progress = Progress::new(4, 0, false, None, "images", "{msg}", &console);
        progress.update(2, "");
        progress.update(4, "");
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "the first and the last: {text}");
        for line in &lines {
            let (stamp, rest) = line.split_once(' ').unwrap();
            assert_eq!(stamp.len(), 20, "{line}");
            assert!(
                stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
                "{line}"
            );
            assert!(rest.contains(" images/s, elapsed "), "{line}");
        }
        assert!(lines[1].contains("progress: 4/4 images"), "{text}");
        let quiet = Progress::new(4, 0, true, None, "images", "{msg}", &console);
        quiet.update(4, "");
        assert_eq!(buffer.lock().unwrap().len(), text.len(), "quiet: nothing");
    }
}
