//! Counters of a running mount and their Prometheus text exposition
//! (version 0.0.4), which `sovseal-mount --metrics-file` writes atomically
//! for node_exporter's textfile collector, or anything else, to read.
//!
//! Only counts, sizes and sequence numbers: no names, no paths, no keys.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the commit latency histogram, in seconds.
pub const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; COMMIT_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// What the mount counts as it runs.
#[derive(Default)]
pub struct Metrics {
    commits: AtomicU64,
    commit_errors: AtomicU64,
    commit_latency: Mutex<Histogram>,
}

/// Values sampled when the metrics are rendered.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Agent name (the only label).
    pub agent: String,
    /// Head sequence number.
    pub head_seq: u64,
    /// Highest replicated sequence number (None: no replicator).
    pub replicated_seq: Option<u64>,
    /// Replication attempts that failed since the mount started.
    pub replication_errors: u64,
    /// Sealed bytes written to the local packs since the mount started.
    pub sealed_bytes: u64,
    /// Dirty (not yet sealed) bytes held in memory.
    pub dirty_bytes: u64,
    /// Newest signed checkpoint's sequence (with a replicator).
    pub checkpointed_seq: u64,
    /// Checkpoints or hook runs that failed since the mount started.
    pub checkpoint_errors: u64,
    /// Inodes the kernel holds lookup references to.
    pub kernel_inodes: u64,
    /// Inode numbers the `.snapshots` table holds.
    pub history_inodes: u64,
    /// Bytes the metadata cache and the chunk cache hold (each within its
    /// budget).
    pub cache_bytes: (u64, u64),
    /// A follower's view of the remote: its newest snapshot, and whether
    /// the follower stalled on one that does not verify.
    pub follow: Option<(u64, bool)>,
}

impl Metrics {
    /// Records one commit attempt and how long it took.
    pub fn commit(&self, took: Duration, ok: bool) {
        if !ok {
            self.commit_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        let s = took.as_secs_f64();
        let mut h = self.commit_latency.lock().expect("metrics");
        for (i, b) in COMMIT_BUCKETS.iter().enumerate() {
            if s <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += s;
    }

    /// Snapshots committed since the mount started.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of these metrics and `s`.
    pub fn render(&self, s: &Sample) -> String {
        let l = format!("agent=\"{}\"", s.agent.replace(['"', '\\', '\n'], "_"));
        let mut o = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{l}}} {value}"
            );
        };
        metric(
            "sovseal_commits_total",
            "counter",
            "Snapshots committed by this mount.",
            self.commits().to_string(),
        );
        metric(
            "sovseal_commit_errors_total",
            "counter",
            "Commits that failed (the changes stay pending and are retried).",
            self.commit_errors.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "sovseal_sealed_bytes_total",
            "counter",
            "Sealed bytes appended to the local packs by this mount.",
            s.sealed_bytes.to_string(),
        );
        metric(
            "sovseal_dirty_bytes",
            "gauge",
            "File data held in memory, not yet sealed.",
            s.dirty_bytes.to_string(),
        );
        metric(
            "sovseal_head_seq",
            "gauge",
            "Sequence number of the newest snapshot.",
            s.head_seq.to_string(),
        );
        metric(
            "sovseal_kernel_inodes",
            "gauge",
            "Inodes the kernel holds lookup references to (FORGET releases them).",
            s.kernel_inodes.to_string(),
        );
        metric(
            "sovseal_history_inodes",
            "gauge",
            "Inode numbers of the .snapshots tree held in memory.",
            s.history_inodes.to_string(),
        );
        if let Some((remote_head, stalled)) = s.follow {
            metric(
                "sovseal_follow_remote_head_seq",
                "gauge",
                "Newest snapshot the followed remote listed at the last poll.",
                remote_head.to_string(),
            );
            metric(
                "sovseal_follow_lag_snapshots",
                "gauge",
                "Snapshots on the followed remote not yet shown by this follower.",
                remote_head.saturating_sub(s.head_seq).to_string(),
            );
            metric(
                "sovseal_follow_stalled",
                "gauge",
                "1 once the followed remote failed verification (the follower stays where it is).",
                u8::from(stalled).to_string(),
            );
        }
        if let Some(r) = s.replicated_seq {
            metric(
                "sovseal_replicated_seq",
                "gauge",
                "Highest sequence number on the remote.",
                r.to_string(),
            );
            metric(
                "sovseal_replication_lag_snapshots",
                "gauge",
                "Snapshots committed but not yet on the remote.",
                s.head_seq.saturating_sub(r).to_string(),
            );
            metric(
                "sovseal_replication_errors_total",
                "counter",
                "Replication attempts that failed (each is retried).",
                s.replication_errors.to_string(),
            );
            metric(
                "sovseal_checkpointed_seq",
                "gauge",
                "Sequence number of the newest signed checkpoint.",
                s.checkpointed_seq.to_string(),
            );
            metric(
                "sovseal_checkpoint_errors_total",
                "counter",
                "Checkpoints or checkpoint hook runs that failed.",
                s.checkpoint_errors.to_string(),
            );
        }
        // Each cache's bytes held, then each one's budget.
        let caches = [
            (
                "metadata",
                [s.cache_bytes.0, crate::repo::META_CACHE_BYTES as u64],
            ),
            (
                "chunks",
                [s.cache_bytes.1, crate::repo::CHUNK_CACHE_BYTES as u64],
            ),
        ];
        let families = [
            (
                "sovseal_cache_bytes",
                "Decrypted, verified objects held in memory, in real bytes (metadata: pages, directories, chunk lists; chunks: file data).",
            ),
            ("sovseal_cache_budget_bytes", "The budget of each cache."),
        ];
        for (k, (name, help)) in families.into_iter().enumerate() {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (cache, values) in caches {
                let _ = writeln!(o, "{name}{{{l},cache=\"{cache}\"}} {}", values[k]);
            }
        }
        let h = self.commit_latency.lock().expect("metrics");
        let name = "sovseal_commit_duration_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} Time to seal and durably record one snapshot.\n# TYPE {name} histogram"
        );
        for (i, b) in COMMIT_BUCKETS.iter().enumerate() {
            let _ = writeln!(o, "{name}_bucket{{{l},le=\"{b}\"}} {}", h.counts[i]);
        }
        let _ = writeln!(o, "{name}_bucket{{{l},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(o, "{name}_sum{{{l}}} {}", h.sum);
        let _ = writeln!(o, "{name}_count{{{l}}} {}", h.count);
        o
    }
}

/// Writes the metrics file every 2 s, and once more when dropped.
pub struct MetricsWriter {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsWriter {
    /// Starts writing `render()` to `path` (mode 0644, atomically).
    pub fn start(render: impl Fn() -> String + Send + 'static, path: PathBuf) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        let write = move || {
            let text = render();
            if let Err(e) = crate::fsutil::write_atomic_anywhere(&path, text.as_bytes(), 0o644) {
                tracing::warn!("metrics file {}: {e}", path.display());
            }
        };
        let thread = std::thread::Builder::new()
            .name("sovseal-metrics".into())
            .spawn(move || {
                loop {
                    write();
                    match rx.recv_timeout(Duration::from_secs(2)) {
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                }
                write();
            })
            .ok();
        MetricsWriter {
            stop: Some(tx),
            thread,
        }
    }
}

impl Drop for MetricsWriter {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.commit(Duration::from_micros(700), true);
        m.commit(Duration::from_millis(30), true);
        m.commit(Duration::from_millis(1), false);
        let t = m.render(&Sample {
            agent: "a\"b".into(),
            head_seq: 10,
            replicated_seq: Some(7),
            replication_errors: 2,
            sealed_bytes: 4096,
            dirty_bytes: 0,
            checkpointed_seq: 6,
            checkpoint_errors: 0,
            kernel_inodes: 12,
            history_inodes: 3,
            cache_bytes: (5000, 7000),
            follow: Some((14, false)),
        });
        assert!(
            t.contains("sovseal_commits_total{agent=\"a_b\"} 2\n"),
            "{t}"
        );
        assert!(t.contains("sovseal_kernel_inodes{agent=\"a_b\"} 12\n"));
        assert!(t.contains("sovseal_history_inodes{agent=\"a_b\"} 3\n"));
        assert!(t.contains("sovseal_cache_bytes{agent=\"a_b\",cache=\"metadata\"} 5000\n"));
        assert!(t.contains("sovseal_cache_bytes{agent=\"a_b\",cache=\"chunks\"} 7000\n"));
        assert!(t.contains(&format!(
            "sovseal_cache_budget_bytes{{agent=\"a_b\",cache=\"chunks\"}} {}\n",
            crate::repo::CHUNK_CACHE_BYTES
        )));
        assert_eq!(t.matches("# TYPE sovseal_cache_bytes gauge").count(), 1);
        assert!(t.contains("sovseal_commit_errors_total{agent=\"a_b\"} 1\n"));
        assert!(t.contains("sovseal_replication_lag_snapshots{agent=\"a_b\"} 3\n"));
        assert!(t.contains("sovseal_follow_lag_snapshots{agent=\"a_b\"} 4\n"));
        assert!(t.contains("sovseal_follow_stalled{agent=\"a_b\"} 0\n"));
        assert!(
            t.contains("sovseal_commit_duration_seconds_bucket{agent=\"a_b\",le=\"0.0005\"} 0\n")
        );
        assert!(
            t.contains("sovseal_commit_duration_seconds_bucket{agent=\"a_b\",le=\"0.001\"} 1\n")
        );
        assert!(
            t.contains("sovseal_commit_duration_seconds_bucket{agent=\"a_b\",le=\"0.05\"} 2\n")
        );
        assert!(
            t.contains("sovseal_commit_duration_seconds_bucket{agent=\"a_b\",le=\"+Inf\"} 2\n")
        );
        assert!(t.contains("sovseal_commit_duration_seconds_count{agent=\"a_b\"} 2\n"));
        let no_remote = m.render(&Sample::default());
        assert!(!no_remote.contains("replicated_seq"));
        assert!(!no_remote.contains("follow"));
    }
}
