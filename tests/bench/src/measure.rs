//! What the bench measures besides time: CPU time and peak memory of this
//! process (and optionally of the broker's), read from `/proc` so that no
//! unsafe call is needed; the machine; percentiles.

use std::time::Instant;

use serde::Serialize;

/// `/proc/<pid>/stat` counts CPU time in clock ticks of `USER_HZ`, which the
/// kernel fixes at 100 for this interface on every architecture.
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds of a process, all threads (live and exited),
/// from the text of `/proc/<pid>/stat`.
pub fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may contain spaces.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// CPU seconds of `pid` (`"self"` for this process), if readable.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    parse_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A `kB` field of `/proc/self/status` (`VmHWM`, `VmRSS`, ...).
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn status_kib(field: &str) -> Option<u64> {
    parse_status_kib(&std::fs::read_to_string("/proc/self/status").ok()?, field)
}

/// Resets this process's peak RSS (`VmHWM`) to its current RSS. Returns
/// whether the kernel allowed it.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Resources one bench row used.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    pub wall_s: f64,
    /// User + system CPU seconds of this process during the row.
    pub cpu_s: Option<f64>,
    /// The same for the broker process, when its pid was given.
    pub broker_cpu_s: Option<f64>,
    /// Peak RSS of this process during the row (`VmHWM`), in MiB.
    pub peak_rss_mib: Option<f64>,
    /// Whether the peak was reset at the start of the row; if not, it is the
    /// peak of the whole process so far.
    pub peak_rss_reset: bool,
    /// RSS at the start of the row (what the reset peak starts from: it
    /// includes memory the allocator kept from earlier rows), in MiB.
    pub start_rss_mib: Option<f64>,
}

/// Measures one row: create it just before, [`Meter::finish`] just after.
#[derive(Debug)]
pub struct Meter {
    started: Instant,
    cpu: Option<f64>,
    broker: Option<(String, f64)>,
    peak_reset: bool,
    start_rss_mib: Option<f64>,
}

impl Meter {
    pub fn start(broker_pid: Option<u32>) -> Self {
        let peak_reset = reset_peak_rss();
        let broker = broker_pid.and_then(|pid| {
            let pid = pid.to_string();
            cpu_seconds(&pid).map(|s| (pid, s))
        });
        Self {
            cpu: cpu_seconds("self"),
            broker,
            peak_reset,
            start_rss_mib: status_kib("VmRSS").map(|k| k as f64 / 1024.0),
            started: Instant::now(),
        }
    }

    pub fn finish(self) -> Usage {
        let wall_s = self.started.elapsed().as_secs_f64();
        Usage {
            wall_s,
            cpu_s: self.cpu.zip(cpu_seconds("self")).map(|(a, b)| b - a),
            broker_cpu_s: self
                .broker
                .and_then(|(pid, a)| cpu_seconds(&pid).map(|b| b - a)),
            peak_rss_mib: status_kib("VmHWM").map(|k| k as f64 / 1024.0),
            peak_rss_reset: self.peak_reset,
            start_rss_mib: self.start_rss_mib,
        }
    }
}

/// The machine the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub memory_gib: f64,
    pub loadavg_start: String,
}

impl Machine {
    pub fn read() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| parse_status_kib(&m, "MemTotal"))
            .unwrap_or(0);
        Self {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            cpu,
            memory_gib: memory_kib as f64 / (1024.0 * 1024.0),
            loadavg_start: loadavg(),
        }
    }

    /// `2 CPUs (nproc), <model>, 23.4 GiB RAM; load average <start> at
    /// start, <end> at end`, for a report's first line.
    pub fn describe(&self, loadavg_end: &str) -> String {
        format!(
            "{} CPUs (nproc), {}, {:.1} GiB RAM; load average {} at start, {} at end",
            self.nproc, self.cpu, self.memory_gib, self.loadavg_start, loadavg_end
        )
    }
}

/// The first three fields of `/proc/loadavg`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Peak RSS (MiB) of the host alone: runs the pipeline `spec` (JSON text)
/// with `<sluice> run --until-caught-up` in a process of its own, under a
/// name (and so a consumer group) of its own, and follows the process's
/// `VmHWM` (its peak resident set) every 10 ms until it ends.
pub fn host_alone_peak_rss_mib(
    sluice: &std::path::Path,
    spec: &str,
    dir: &std::path::Path,
) -> anyhow::Result<f64> {
    use anyhow::Context;
    let mut doc: serde_json::Value = serde_json::from_str(spec)?;
    let name = format!("{}-alone", doc["name"].as_str().unwrap_or("bench"));
    doc["name"] = serde_json::Value::String(name.clone());
    std::fs::create_dir_all(dir)?;
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(&doc)?)?;
    let mut child = std::process::Command::new(sluice)
        .args(["run", "--until-caught-up"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("cannot start `sluice run` for the host's own memory")?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| parse_status_kib(&s, "VmHWM"))
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let _ = std::fs::remove_file(&file);
    anyhow::ensure!(
        status.success(),
        "`sluice run` for the host's own memory failed ({status})"
    );
    Ok(peak_kib as f64 / 1024.0)
}

/// The `p`-th percentile (0..=100) of ascending `sorted` values, by the
/// nearest-rank method: the smallest value with at least `p`% of the values
/// at or below it. `None` when there are no values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 99.5), Some(100));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        let v = [3, 7, 20, 1000];
        assert_eq!(percentile(&v, 50.0), Some(7));
        assert_eq!(percentile(&v, 51.0), Some(20));
        assert_eq!(percentile(&v, 99.0), Some(1000));
        assert_eq!(percentile(&[42], 99.0), Some(42));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn reads_cpu_and_memory_from_proc_text() {
        // A command name with spaces and parentheses, as the kernel writes it.
        let stat = "1234 (sluice (x) y) S 1 1234 1234 0 -1 4194560 5000 0 0 0 \
                    250 75 0 0 20 0 12 0 100 1000000 2000 18446744073709551615";
        assert_eq!(parse_cpu_seconds(stat), Some(3.25));
        assert_eq!(parse_cpu_seconds("garbage"), None);
        let status = "Name:\tsluice\nVmPeak:\t  900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(123_456));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(1000));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        // The live process: readable, and plausible.
        assert!(cpu_seconds("self").is_some());
        assert!(status_kib("VmHWM").is_some_and(|k| k > 0));
    }
}
