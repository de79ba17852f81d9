//! Log capture for tests that check what an event logs (feature `testing`).

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::Level;

/// Log lines written by the subscriber under capture.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` on this thread under a plain-text `fmt` subscriber and returns
/// the lines it logged at `level` or more severe, each ending in a newline.
///
/// Everything is captured at TRACE and filtered afterwards: a scoped
/// subscriber at a higher level could leave a callsite cached as "never"
/// for the next capture. Captures run one at a time, with callsite interest
/// recomputed once this subscriber is in place.
pub fn logged(level: Level, f: impl FnOnce()) -> String {
    static SERIAL: Mutex<()> = Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(Level::TRACE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::callsite::rebuild_interest_cache();
        f();
    });
    let bytes = logs.0.lock().unwrap_or_else(PoisonError::into_inner);
    // fmt's lines read "<time> <LEVEL> <target>: ...".
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .nth(1)
                .and_then(|l| l.parse::<Level>().ok())
                .is_some_and(|l| l <= level)
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The Prometheus text exposition of `registry`, as a scrape returns it.
pub fn encoded(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("encoding into a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lines_at_the_level_or_more_severe_are_returned() {
        let logs = logged(Level::INFO, || {
            tracing::debug!("quiet");
            tracing::info!("said");
            tracing::warn!(reason = "r", "loud");
        });
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 2, "{logs}");
        assert!(
            lines[0].contains("INFO") && lines[0].contains("said"),
            "{logs}"
        );
        assert!(
            lines[1].contains("WARN") && lines[1].contains("reason=\"r\""),
            "{logs}"
        );
        assert!(logged(Level::DEBUG, || tracing::debug!("now")).contains("now"));
    }
}
