//! Reading a mount's metrics file (`--metrics-file`), which the daemon
//! rewrites every 2 s in the Prometheus text format.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// The value of the first series in `metrics` whose line starts with
/// `series` (a metric name and `{`, or a name with its labels), if the
/// file holds one.
pub fn metric(metrics: &Path, series: &str) -> Option<u64> {
    let t = std::fs::read_to_string(metrics).ok()?;
    t.lines()
        .find(|l| l.starts_with(series))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Waits (up to 30 s) until `series` has a value that `ok` accepts, and
/// returns it.
pub fn wait_for(metrics: &Path, series: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let t0 = Instant::now();
    loop {
        let v = metric(metrics, series);
        if let Some(v) = v.filter(|v| ok(*v)) {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{series} stayed at {v:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (up to 30 s) until the file has been rewritten after `since`, so
/// that what it says was measured after whatever happened before.
pub fn wait_rewritten_after(metrics: &Path, since: SystemTime) {
    let stamp = || std::fs::metadata(metrics).and_then(|m| m.modified()).ok();
    let t0 = Instant::now();
    while stamp().is_none_or(|t| t <= since) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the metrics file was not rewritten"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
