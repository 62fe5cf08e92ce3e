//! `rl-rewrite compare`: trains one model by ordinary backpropagation (BP) and with Replacement Learning, with
//! the same seed, data order and settings, and sets what each run costs and reaches side by side.
//!
//! The two runs live in `DIR/bp` and `DIR/everyK` as ordinary `train` run folders, so each can be inspected,
//! evaluated or baked on its own, and a comparison cut short (Ctrl-C, a crash) continues from the runs'
//! checkpoints when the same command is given again. Peak memory is measured per run: the process's peak
//! resident size is reset before each.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rl_passes::io::{load_model, write_atomically};
use rl_passes::pipeline::{rewrite, RewriteOptions};
use serde_json::json;

use crate::train::metrics::reset_peak_host;
use crate::train::{plot, train_command, RunSummary, TrainOutcome, TrainRequest};

/// The run folder of one side of the comparison.
pub fn run_dir(out: &Path, every: Option<usize>) -> PathBuf {
    match every {
        None => out.join("bp"),
        Some(k) => out.join(format!("every{k}")),
    }
}

/// The label of one side in the table and the chart.
fn label(every: Option<usize>) -> String {
    match every {
        None => "BP".into(),
        Some(k) => format!("RepL every {k}"),
    }
}

/// How a comparison ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOutcome {
    /// Both runs finished; the report is written.
    Done,
    /// A run was stopped by the request's `stop` flag, checkpointed; the same command continues it.
    Interrupted,
}

/// Trains both sides; `base.every` is the Replacement Learning side's K.
pub fn compare_command(base: &TrainRequest) -> Result<CompareOutcome> {
    let Some(every) = base.every else {
        bail!("compare needs --every K for its Replacement Learning run");
    };
    if base.resume.is_some() {
        bail!(
            "compare continues its runs by itself; give the same command again instead of --resume"
        );
    }
    // Rewrite once up front, so that a K that freezes nothing fails before the BP run has been trained.
    let model = load_model(&base.model)?.model;
    rewrite(
        model,
        &RewriteOptions {
            every,
            ..RewriteOptions::default()
        },
    )
    .with_context(|| {
        format!(
            "{}: the Replacement Learning side cannot be built",
            base.model.display()
        )
    })?;
    std::fs::create_dir_all(&base.out)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", base.out.display()))?;
    let mut summaries = Vec::new();
    for side in [None, Some(every)] {
        let dir = run_dir(&base.out, side);
        let resume = dir.join("state.onnx").is_file().then(|| dir.clone());
        println!(
            "== {} ({}{}) ==",
            label(side),
            dir.display(),
            if resume.is_some() { ", continuing" } else { "" }
        );
        if !reset_peak_host() {
            eprintln!(
                "warning: the peak memory of a run cannot be reset here; the second run's peak includes the first's"
            );
        }
        let req = TrainRequest {
            every: side,
            out: dir.clone(),
            resume,
            stop_after: None,
            ..base.clone()
        };
        match train_command(&req) {
            Ok(TrainOutcome::Finished(summary)) => summaries.push(summary),
            Ok(TrainOutcome::Interrupted) => {
                eprintln!(
                    "comparison interrupted during the {} run; give the same command again to continue",
                    label(side)
                );
                return Ok(CompareOutcome::Interrupted);
            }
            Ok(TrainOutcome::Paused) => bail!("the {} run paused unexpectedly", label(side)),
            Err(e) => {
                return Err(e.context(format!("the {} run in {}", label(side), dir.display())))
            }
        }
    }
    let (bp, rl) = (&summaries[0], &summaries[1]);
    print!("\n{}", table(bp, rl));
    let report = json!({
        "model": base.model.display().to_string(),
        "data": base.data.to_string(),
        "every": every,
        "epochs": base.epochs,
        "batch": base.compile.batch_size,
        "optimizer": base.compile.optimizer,
        "lr": base.lr,
        "schedule": base.schedule,
        "warmup": base.warmup,
        "augment": base.augment,
        "label_smoothing": base.compile.label_smoothing,
        "decay_all": base.compile.decay_all,
        "detach_neighbours": base.compile.detach_neighbours,
        "bn_running_var": base.compile.bn_running_var,
        "seed": base.seed,
        "engine": format!("{:?}", base.engine),
        "device": format!("{:?}", base.device),
        "bp": bp,
        "replacement_learning": rl,
        "ratios_repl_over_bp": {
            "learnable_values": ratio(rl.learnable_values as f64, bp.learnable_values as f64),
            "optimizer_state_bytes": ratio(rl.optimizer_state_bytes as f64, bp.optimizer_state_bytes as f64),
            "peak_host_mib": ratio(rl.peak_host_mib(), bp.peak_host_mib()),
            "peak_device_mib": rl.peak_device_mib().zip(bp.peak_device_mib()).and_then(|(r, b)| ratio(r, b)),
            "epoch_time_s": ratio(rl.mean_epoch_time_s(), bp.mean_epoch_time_s()),
        },
        "test_accuracy_points_repl_minus_bp": {
            "best": 100.0 * (rl.best_test_acc() - bp.best_test_acc()),
            "final": 100.0 * (rl.final_test_acc() - bp.final_test_acc()),
        },
    });
    let json_path = base.out.join("compare.json");
    let text = serde_json::to_string_pretty(&report)?;
    write_atomically(&json_path, false, |w| {
        w.write_all(format!("{text}\n").as_bytes())
    })?;
    let svg_path = base.out.join("compare.svg");
    let title = format!(
        "{}: BP vs Replacement Learning (every {every})",
        base.model.file_name().map_or_else(
            || base.model.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        )
    );
    let (bp_label, rl_label) = (label(None), label(Some(every)));
    plot::write_comparison(
        &svg_path,
        &title,
        &[(&bp_label, &bp.epochs), (&rl_label, &rl.epochs)],
    )?;
    println!("\nwrote {} and {}", json_path.display(), svg_path.display());
    Ok(CompareOutcome::Done)
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// Thousands separated by commas: 272186 → "272,186".
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The side-by-side table: one row per figure, BP, Replacement Learning, and RepL relative to BP (a ratio, or
/// a difference in points for accuracies).
pub fn table(bp: &RunSummary, rl: &RunSummary) -> String {
    let times = |x: Option<f64>| x.map_or_else(|| "n/a".into(), |r| format!("{r:.3}×"));
    // An accuracy row: both in percent, then RepL − BP in points.
    let accuracy = |name: &str, of: fn(&RunSummary) -> f64| -> [String; 4] {
        [
            name.into(),
            format!("{:.2} %", 100.0 * of(bp)),
            format!("{:.2} %", 100.0 * of(rl)),
            format!("{:+.2} points", 100.0 * (of(rl) - of(bp))),
        ]
    };
    let mut rows: Vec<[String; 4]> = vec![
        [
            "learnable parameters".into(),
            grouped(bp.learnable_values),
            grouped(rl.learnable_values),
            times(ratio(
                rl.learnable_values as f64,
                bp.learnable_values as f64,
            )),
        ],
        [
            "optimizer-state bytes".into(),
            grouped(bp.optimizer_state_bytes),
            grouped(rl.optimizer_state_bytes),
            times(ratio(
                rl.optimizer_state_bytes as f64,
                bp.optimizer_state_bytes as f64,
            )),
        ],
        [
            "peak host memory".into(),
            format!("{:.0} MiB", bp.peak_host_mib()),
            format!("{:.0} MiB", rl.peak_host_mib()),
            times(ratio(rl.peak_host_mib(), bp.peak_host_mib())),
        ],
        [
            "time per epoch".into(),
            format!("{:.2} s", bp.mean_epoch_time_s()),
            format!("{:.2} s", rl.mean_epoch_time_s()),
            times(ratio(rl.mean_epoch_time_s(), bp.mean_epoch_time_s())),
        ],
        accuracy("best test accuracy", RunSummary::best_test_acc),
        accuracy("final test accuracy", RunSummary::final_test_acc),
    ];
    if bp.peak_device_mib().is_some() || rl.peak_device_mib().is_some() {
        let mib = |x: Option<f64>| x.map_or_else(|| "n/a".into(), |m| format!("{m:.0} MiB"));
        let r = match (bp.peak_device_mib(), rl.peak_device_mib()) {
            (Some(b), Some(r)) => ratio(r, b),
            _ => None,
        };
        rows.insert(
            3,
            [
                "peak device memory".into(),
                mib(bp.peak_device_mib()),
                mib(rl.peak_device_mib()),
                times(r),
            ],
        );
    }
    let header = [
        String::new(),
        label(bp.every),
        label(rl.every),
        "RepL vs BP".into(),
    ];
    let widths: Vec<usize> = (0..4)
        .map(|c| {
            std::iter::once(&header)
                .chain(&rows)
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |r: &[String; 4]| {
        let mut s = format!("{:<w$}", r[0], w = widths[0]);
        for c in 1..4 {
            s.push_str(&format!("  {:>w$}", r[c], w = widths[c]));
        }
        s.push('\n');
        s
    };
    let mut out = line(&header);
    for r in &rows {
        out.push_str(&line(r));
    }
    out.push_str(&format!(
        "({} epochs each; {}: {} tensors replaced by a·prev + b·next; engine {})\n",
        rl.epochs.len(),
        label(rl.every),
        rl.tensors_replaced,
        rl.engine
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::metrics::EpochMetrics;

    fn epoch(epoch: usize, test_acc: f64, time: f64, peak: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: 1.0,
            train_acc: 0.5,
            test_loss: 1.0,
            test_acc,
            lr: 0.1,
            epoch_time_s: time,
            images_per_s: 100.0,
            peak_host_mib: peak,
            peak_device_mib: None,
        }
    }

    fn summary(every: Option<usize>, learnable: usize, epochs: Vec<EpochMetrics>) -> RunSummary {
        RunSummary {
            every,
            tensors_replaced: if every.is_some() { 6 } else { 0 },
            learnable_tensors: 10,
            learnable_values: learnable,
            optimizer_state_values: learnable,
            optimizer_state_bytes: 4 * learnable,
            running_stat_values: 64,
            engine: "test".into(),
            epochs,
        }
    }

    #[test]
    fn table_sets_the_figures_side_by_side() {
        let bp = summary(
            None,
            272_186,
            vec![epoch(1, 0.97, 40.0, 1000.0), epoch(2, 0.9865, 42.0, 1100.0)],
        );
        let rl = summary(
            Some(2),
            267_516,
            vec![epoch(1, 0.9880, 30.0, 900.0), epoch(2, 0.9870, 32.0, 950.0)],
        );
        let t = table(&bp, &rl);
        let line = |name: &str| t.lines().find(|l| l.starts_with(name)).unwrap().to_owned();
        assert!(line("learnable parameters").contains("272,186"), "{t}");
        assert!(line("learnable parameters").contains("267,516"), "{t}");
        assert!(line("learnable parameters").ends_with("0.983×"), "{t}");
        assert!(line("optimizer-state bytes").contains("1,088,744"), "{t}");
        assert!(line("peak host memory").contains("1100 MiB"), "{t}");
        assert!(line("peak host memory").ends_with("0.864×"), "{t}");
        assert!(line("time per epoch").contains("41.00 s"), "{t}");
        assert!(line("time per epoch").ends_with("0.756×"), "{t}");
        // Best is the maximum over epochs, final the last epoch.
        assert!(line("best test accuracy").contains("98.80 %"), "{t}");
        assert!(line("best test accuracy").ends_with("+0.15 points"), "{t}");
        assert!(line("final test accuracy").ends_with("+0.05 points"), "{t}");
        assert!(t.lines().next().unwrap().contains("RepL every 2"), "{t}");
        // Columns line up: every row has the same width.
        let widths: Vec<usize> = t.lines().take(7).map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{t}");
    }

    #[test]
    fn a_device_memory_row_only_when_a_run_measured_it() {
        let bp = summary(None, 100, vec![epoch(1, 0.5, 1.0, 10.0)]);
        let mut rl = summary(Some(2), 80, vec![epoch(1, 0.5, 1.0, 10.0)]);
        assert!(!table(&bp, &rl).contains("peak device memory"));
        rl.epochs[0].peak_device_mib = Some(512.0);
        let t = table(&bp, &rl);
        let row = t
            .lines()
            .find(|l| l.starts_with("peak device memory"))
            .unwrap();
        assert!(row.contains("n/a") && row.contains("512 MiB"), "{t}");
    }

    #[test]
    fn grouping_and_missing_ratios() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
    }

    #[test]
    fn run_folders_are_named_by_side() {
        let out = Path::new("cmp");
        assert_eq!(run_dir(out, None), out.join("bp"));
        assert_eq!(run_dir(out, Some(3)), out.join("every3"));
    }
}
