//! The epoch log on a thread of its own, and how far it is durable.

use std::sync::{Arc, Condvar, Mutex, mpsc};

use anyhow::Context;

use super::CheckpointError;
use super::log::Wal;

/// How far the epoch log is durable: the newest epoch written (and, with
/// `sync`, fsynced), or the error that stopped it. The send stage waits
/// on it before an epoch's outputs leave, so the run loop goes on with
/// the next batch meanwhile.
#[derive(Debug, Default)]
pub struct Durable {
    state: Mutex<DurableState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct DurableState {
    through: u64,
    failed: Option<String>,
}

impl Durable {
    /// Waits until epoch `n` is durable. After a failure of the log every
    /// wait fails: what the log holds is no longer known.
    pub fn wait_for(&self, n: u64) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(e) = &state.failed {
                anyhow::bail!("cannot log epoch {n}: {e}");
            }
            if state.through >= n {
                return Ok(());
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn update(&self, f: impl FnOnce(&mut DurableState)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }
}

/// The epoch log on a thread of its own: an fsync costs milliseconds on
/// common disks, as long as a batch's Wasm work, so the two overlap.
/// Requests are handled in order; appends that queued up while an fsync
/// ran are written and fsynced together (a group commit).
#[derive(Debug)]
pub struct LogWriter {
    requests: Option<mpsc::Sender<LogRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
    durable: Arc<Durable>,
    /// The newest epoch handed to the thread.
    last: u64,
}

enum LogRequest {
    Append(u64, Vec<u8>),
    Truncate(u64, mpsc::Sender<Result<(), CheckpointError>>),
}

impl LogWriter {
    pub fn spawn(log: impl Wal + 'static) -> Self {
        let log: Box<dyn Wal> = Box::new(log);
        let (requests, inbox) = mpsc::channel::<LogRequest>();
        let durable = Arc::new(Durable::default());
        let state = durable.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-epoch-log".into())
            .spawn(move || write_log(log, &inbox, &state))
            .expect("cannot start the epoch log thread");
        Self {
            requests: Some(requests),
            thread: Some(thread),
            durable,
            last: 0,
        }
    }

    fn send(&self, request: LogRequest) -> anyhow::Result<()> {
        self.requests
            .as_ref()
            .and_then(|r| r.send(request).ok())
            .context("the epoch log thread has stopped")
    }

    pub fn append(&mut self, n: u64, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.send(LogRequest::Append(n, bytes))?;
        self.last = n;
        Ok(())
    }

    /// How far the log is durable, to wait on from another thread.
    pub fn durable(&self) -> Arc<Durable> {
        self.durable.clone()
    }

    /// Waits until every epoch appended so far is durable.
    pub fn wait(&self) -> anyhow::Result<()> {
        self.durable.wait_for(self.last)
    }

    pub fn truncate_through(&mut self, through: u64) -> anyhow::Result<()> {
        self.wait()?;
        let (reply, answer) = mpsc::channel();
        self.send(LogRequest::Truncate(through, reply))?;
        answer
            .recv()
            .context("the epoch log thread has stopped")?
            .context("cannot trim the epoch log")
    }
}

/// The log thread: appends, grouped, and truncations, in order.
fn write_log(mut log: Box<dyn Wal>, inbox: &mpsc::Receiver<LogRequest>, durable: &Durable) {
    /// Fails the waiters, whatever ends the thread: they would wait for ever.
    struct Stopped<'a>(&'a Durable);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            self.0.update(|s| {
                s.failed
                    .get_or_insert_with(|| "the epoch log thread has stopped".to_owned());
            });
        }
    }
    let _stopped = Stopped(durable);
    let mut next = None;
    loop {
        let Some(request) = next.take().or_else(|| inbox.recv().ok()) else {
            return;
        };
        match request {
            LogRequest::Append(n, bytes) => {
                let mut group = vec![(n, bytes)];
                while let Ok(request) = inbox.try_recv() {
                    match request {
                        LogRequest::Append(n, bytes) => group.push((n, bytes)),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                let entries: Vec<(u64, &[u8])> =
                    group.iter().map(|(n, b)| (*n, b.as_slice())).collect();
                let result = log.append_all(&entries);
                // Epochs increase: the group's last is its newest.
                let newest = entries.last().map_or(n, |e| e.0);
                durable.update(|s| match result {
                    Ok(()) => s.through = newest,
                    Err(e) => {
                        s.failed.get_or_insert_with(|| e.to_string());
                    }
                });
            }
            // A requester that went away no longer needs the answer.
            LogRequest::Truncate(n, reply) => {
                let _ = reply.send(log.truncate_through(n));
            }
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::EpochLog;

    #[test]
    fn the_log_writer_makes_every_appended_epoch_durable_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = EpochLog::open(dir.path(), true).unwrap();
        let mut writer = LogWriter::spawn(log);
        let durable = writer.durable();
        // Appends queue up behind the first fsync and are written in groups.
        for n in 1..=50 {
            writer.append(n, format!("epoch {n}").into_bytes()).unwrap();
        }
        durable.wait_for(50).unwrap();
        writer.truncate_through(10).unwrap();
        writer.append(51, b"last".to_vec()).unwrap();
        writer.wait().unwrap();
        drop(writer);
        let (_, read) = EpochLog::open(dir.path(), true).unwrap();
        let epochs: Vec<u64> = read.iter().map(|(n, _)| *n).collect();
        assert_eq!(epochs, (11..=51).collect::<Vec<_>>());
        assert_eq!(read[0].1, b"epoch 11");
    }

    #[test]
    fn a_failed_append_fails_every_wait_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = EpochLog::open(dir.path(), false).unwrap();
        let mut writer = LogWriter::spawn(log);
        writer.append(2, b"two".to_vec()).unwrap();
        writer.wait().unwrap();
        // Not increasing: refused by the log.
        writer.append(1, b"one".to_vec()).unwrap();
        writer.append(3, b"three".to_vec()).unwrap();
        let error = writer.wait().unwrap_err().to_string();
        assert!(error.starts_with("cannot log epoch 3: "), "{error}");
        let error = writer.durable().wait_for(2).unwrap_err().to_string();
        assert!(error.starts_with("cannot log epoch 2: "), "{error}");
    }

    #[test]
    fn waiters_fail_when_the_log_thread_stops() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = EpochLog::open(dir.path(), false).unwrap();
        let writer = LogWriter::spawn(log);
        let durable = writer.durable();
        drop(writer);
        let error = durable.wait_for(1).unwrap_err().to_string();
        assert_eq!(
            error,
            "cannot log epoch 1: the epoch log thread has stopped"
        );
    }
}
