//! Progress on stderr for long runs (`baseline`, `train`): a bar on a terminal, otherwise a line
//! every ~5 s (and at the end) with the rate and the ETA, nothing when quiet. With a label (a rank
//! of a data-parallel run: several processes share the terminal) always lines, prefixed by it.

use std::cell::Cell;
use std::time::Instant;

/// Seconds between two progress lines when there is no bar.
const LINE_INTERVAL_S: f64 = 5.0;

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    quiet: bool,
    prefix: String,
    /// What is counted, for the lines (`images`, `steps`).
    unit: &'static str,
    last_line: Cell<Option<Instant>>,
    started: Instant,
    /// Position when this invocation started (a resumed run's rate counts its own work only).
    first: u64,
}

impl Progress {
    /// `template` is the indicatif bar template (`{msg}` shows [`Progress::update`]'s message).
    pub fn new(
        total: u64,
        done: u64,
        quiet: bool,
        label: Option<&str>,
        unit: &'static str,
        template: &str,
    ) -> Progress {
        let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = (!quiet && label.is_none() && on_terminal).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_position(done);
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            bar,
            total,
            quiet,
            prefix: label.map(|l| format!("{l}: ")).unwrap_or_default(),
            unit,
            last_line: Cell::new(None),
            started: Instant::now(),
            first: done,
        }
    }

    /// `position` of `total` done; `message` goes into the bar or the line.
    pub fn update(&self, position: u64, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            bar.set_message(message.to_string());
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
            let done = position.saturating_sub(self.first) as f64;
            let per_unit = self.started.elapsed().as_secs_f64() / done.max(1.0);
            let eta = per_unit * self.total.saturating_sub(position) as f64;
            let separator = if message.is_empty() { "" } else { ", " };
            eprintln!(
                "{}progress: {position}/{} {}{separator}{message}, ETA {eta:.0} s",
                self.prefix, self.total, self.unit
            );
        }
    }

    /// A line that does not break the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if !self.quiet => eprintln!("{}{line}", self.prefix),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
