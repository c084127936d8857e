//! Restarts of failed pipelines: a failed run (or start) schedules the
//! next start after a back-off, and the supervisor thread starts the
//! pipelines whose time has come (see the invariants in the parent module).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::{Desired, Live, Manager, Start, Status, lock};

/// The first automatic restart of a failed pipeline waits this long...
const RESTART_FIRST: Duration = Duration::from_secs(1);
/// ...each further failure in a row doubles the wait, up to this...
const RESTART_MAX: Duration = Duration::from_secs(60);
/// ...and a run that lasted this long starts the count again.
const RESTART_RESET: Duration = Duration::from_secs(600);
/// How often the supervisor looks for restarts that are due.
const SUPERVISE_EVERY: Duration = Duration::from_millis(100);

/// The wait before the restart that follows `failures` failed runs in a row.
fn restart_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RESTART_FIRST
        .saturating_mul(1 << doublings)
        .min(RESTART_MAX)
}

impl Live {
    /// Records a failed run (or start) and schedules the restart.
    pub(super) fn fail(&mut self, error: String) {
        let lasted = self.run_since.map(|since| since.elapsed());
        self.failures = if lasted.is_some_and(|d| d >= RESTART_RESET) {
            1
        } else {
            self.failures + 1
        };
        let delay = restart_delay(self.failures);
        self.status = Status::Failed;
        self.error = Some(error);
        self.retry_at = Some((
            Instant::now() + delay,
            humantime::format_rfc3339_seconds(SystemTime::now() + delay).to_string(),
        ));
    }
}

impl Manager {
    /// Restarts, from now on, the failed pipelines that should run, each
    /// when its back-off has passed (see the module docs). The thread ends
    /// with the manager or at [`Manager::shutdown`].
    pub fn supervise(self: &Arc<Self>) -> io::Result<JoinHandle<()>> {
        let manager: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("sluice-supervisor".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(SUPERVISE_EVERY);
                    let Some(manager) = manager.upgrade() else {
                        return;
                    };
                    if manager.closing.load(Ordering::Relaxed) {
                        return;
                    }
                    manager.restart_due(Instant::now());
                }
            })
    }

    /// Starts the failed pipelines whose restart is due at `now`.
    fn restart_due(&self, now: Instant) {
        for (name, entry) in self.all() {
            let due = {
                let live = lock(&entry.live);
                live.status == Status::Failed && live.retry_at.as_ref().is_some_and(|r| r.0 <= now)
            } && lock(&entry.doc).desired != Desired::Stopped;
            if due && let Err(e) = self.start_entry(&entry, Start::Restart) {
                tracing::warn!("pipeline {name}: restart failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::{Entry, FORMAT, Origin, Stored, now};
    use super::*;

    fn live() -> Live {
        Entry::new(
            Stored {
                format: FORMAT,
                name: "p".into(),
                spec: Value::Null,
                modules: Vec::new(),
                desired: Desired::Running,
                created_at: now(),
            },
            Origin::Api,
        )
        .live
        .lock()
        .unwrap()
        .clone()
    }

    #[test]
    fn the_back_off_doubles_from_one_second_up_to_a_minute() {
        let delays: Vec<u64> = (1..=9).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(restart_delay(u32::MAX), RESTART_MAX);
    }

    #[test]
    fn failures_in_a_row_grow_the_wait_and_a_long_run_starts_over() {
        let mut live = live();
        let before = Instant::now();
        live.run_since = Some(before);
        live.fail("boom".into());
        live.fail("boom".into());
        live.fail("boom".into());
        assert_eq!(live.failures, 3);
        assert_eq!(live.status, Status::Failed);
        assert_eq!(live.error.as_deref(), Some("boom"));
        let (at, text) = live.retry_at.clone().unwrap();
        assert!(
            at >= before + Duration::from_secs(4) && at <= Instant::now() + Duration::from_secs(4)
        );
        assert!(humantime::parse_rfc3339(&text).is_ok(), "{text}");

        // A run that lasted the reset period fails as if it were the first.
        live.run_since = Instant::now().checked_sub(RESTART_RESET);
        live.fail("later".into());
        assert_eq!(live.failures, 1);
        let (at, _) = live.retry_at.unwrap();
        assert!(at <= Instant::now() + RESTART_FIRST);
    }
}
