//! Progress while a run goes: a bar with the current rates on a terminal,
//! a plain line every few seconds otherwise (logs, CI, a Kubernetes Job).

use std::{io::IsTerminal, sync::Arc, time::Duration};

use catga_core::CancellationToken;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::{task::JoinHandle, time::Instant};

use crate::driver::Counters;

const BAR_REFRESH: Duration = Duration::from_millis(250);
const LINE_EVERY: Duration = Duration::from_secs(5);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    Bar,
    Lines,
    Off,
}

impl Display {
    /// A bar when standard error is a terminal, lines otherwise.
    pub fn for_stderr(quiet: bool) -> Self {
        if quiet {
            Display::Off
        } else if std::io::stderr().is_terminal() {
            Display::Bar
        } else {
            Display::Lines
        }
    }
}

/// Shows progress of a run of `duration` until `done` fires.
pub fn spawn(
    display: Display,
    counters: Arc<Counters>,
    duration: Duration,
    done: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if display == Display::Off {
            return;
        }
        let bar = (display == Display::Bar).then(|| {
            let bar = ProgressBar::new(duration.as_secs().max(1));
            let style = ProgressStyle::with_template("{elapsed:>4} [{bar:25}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        let every = if bar.is_some() {
            BAR_REFRESH
        } else {
            LINE_EVERY
        };
        let start = Instant::now();
        let mut rates = Rates::default();
        let mut ticks = tokio::time::interval_at(start + every, every);
        loop {
            tokio::select! {
                () = done.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let line = rates.line(&counters, start.elapsed(), duration);
            match &bar {
                Some(bar) => {
                    bar.set_position(start.elapsed().as_secs().min(duration.as_secs()));
                    bar.set_message(line);
                }
                None => eprintln!("{line}"),
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    })
}

/// Rates since the previous look.
#[derive(Default)]
struct Rates {
    at: Duration,
    accepted: u64,
    completed: u64,
}

impl Rates {
    fn line(&mut self, counters: &Counters, now: Duration, duration: Duration) -> String {
        let accepted = Counters::get(&counters.accepted);
        let completed = Counters::get(&counters.completed);
        let failed = Counters::get(&counters.failed);
        let open = Counters::get(&counters.sent) - Counters::get(&counters.finished);
        let span = (now - self.at).as_secs_f64().max(f64::EPSILON);
        let accepted_rate = (accepted - self.accepted) as f64 / span;
        let completed_rate = (completed - self.completed) as f64 / span;
        *self = Rates {
            at: now,
            accepted,
            completed,
        };
        let phase = if now < duration {
            format!("{:>3.0}s/{}s", now.as_secs_f64(), duration.as_secs())
        } else {
            format!("finishing {open} open")
        };
        format!(
            "{phase}  accepted {accepted} ({accepted_rate:.0}/s)  completed {completed} ({completed_rate:.0}/s)  errors {failed}"
        )
    }
}
