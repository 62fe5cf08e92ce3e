//! Per-epoch metrics: `metrics.csv` and `metrics.json` in the run folder.

use std::path::Path;

use anyhow::Result;
use rl_passes::io::write_atomically;
use serde::{Deserialize, Serialize};

/// One row per epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Wall time of the epoch's training steps (evaluation excluded), seconds.
    pub epoch_time_s: f64,
    /// Training images per second.
    pub images_per_s: f64,
    /// Peak resident memory of the process so far (VmHWM), MiB.
    pub peak_host_mib: f64,
    /// On CUDA: the most memory ONNX Runtime's device allocators held so far (their `MaxInUse`), MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_device_mib: Option<f64>,
}

pub const CSV_HEADER: &str =
    "epoch,train_loss,train_acc,test_loss,test_acc,lr,epoch_time_s,images_per_s,peak_host_mib,peak_device_mib";

impl EpochMetrics {
    fn csv_row(&self) -> String {
        format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.6e},{:.3},{:.1},{:.1},{}",
            self.epoch,
            self.train_loss,
            self.train_acc,
            self.test_loss,
            self.test_acc,
            self.lr,
            self.epoch_time_s,
            self.images_per_s,
            self.peak_host_mib,
            self.peak_device_mib
                .map_or_else(String::new, |m| format!("{m:.1}"))
        )
    }
}

/// Writes both files (atomically) with all rows so far.
pub fn write(dir: &Path, rows: &[EpochMetrics]) -> Result<()> {
    let mut csv = format!("{CSV_HEADER}\n");
    for r in rows {
        csv.push_str(&r.csv_row());
        csv.push('\n');
    }
    write_atomically(&dir.join("metrics.csv"), false, |w| {
        w.write_all(csv.as_bytes())
    })?;
    let json = serde_json::to_string_pretty(rows)?;
    write_atomically(&dir.join("metrics.json"), false, |w| {
        w.write_all(format!("{json}\n").as_bytes())
    })?;
    Ok(())
}

/// The rows of an earlier run's `metrics.json` (none when the file is missing).
pub fn read(dir: &Path) -> Result<Vec<EpochMetrics>> {
    let path = dir.join("metrics.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(serde_json::from_str(&text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// Peak resident set size of this process in MiB (`VmHWM` of /proc/self/status; 0 where unavailable).
pub fn peak_host_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets this process's peak resident set size to its current size (Linux: `5` written to
/// `/proc/self/clear_refs`), so that a later [`peak_host_mib`] measures from now; false where unsupported.
pub fn reset_peak_host() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
