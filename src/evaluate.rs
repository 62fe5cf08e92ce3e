//! `rl-rewrite eval`: accuracy and speed of a classifier on a dataset's test split.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rl_passes::io::load_model;
use serde::Serialize;

use crate::data::{check_model_shape, open, Batch, DataSpec, Normalization, Split};
use crate::engine::{open_engine, ElementType, Engine, HostTensor, InputFact};
use crate::execute::EngineOptions;
use crate::inputs::input_shapes;

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub data: String,
    pub engine: String,
    pub provider: String,
    pub batch: usize,
    pub images: usize,
    pub top1: f64,
    pub top5: f64,
    pub images_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} on {} ({} images, batch {})",
            self.model, self.data, self.images, self.batch
        )?;
        writeln!(f, "engine: {} on {}", self.engine, self.provider)?;
        writeln!(
            f,
            "top-1: {:.2} %   top-5: {:.2} %",
            100.0 * self.top1,
            100.0 * self.top5
        )?;
        writeln!(
            f,
            "throughput: {:.1} images/s   batch latency p50 {:.2} ms, p99 {:.2} ms",
            self.images_per_s, self.latency_p50_ms, self.latency_p99_ms
        )
    }
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1].as_secs_f64() * 1e3
}

/// How many of `labels` are the argmax (top-1) and within the 5 largest (top-5) of each row of `logits`.
pub fn count_correct(logits: &[f32], classes: usize, labels: &[i64]) -> (usize, usize) {
    let (mut top1, mut top5) = (0, 0);
    for (row, &label) in logits.chunks_exact(classes).zip(labels) {
        let Some(&target) = row.get(label as usize) else {
            continue;
        };
        // Rank of the label: how many classes score strictly higher (ties favour the label's lower index).
        let higher = row
            .iter()
            .enumerate()
            .filter(|&(k, &v)| v > target || (v == target && k < label as usize))
            .count();
        top1 += usize::from(higher == 0);
        top5 += usize::from(higher < 5);
    }
    (top1, top5)
}

pub struct EvalRequest<'a> {
    pub model: &'a Path,
    pub data: &'a DataSpec,
    pub batch: usize,
    pub limit: Option<usize>,
    pub normalization: Option<Normalization>,
    pub engine: EngineOptions,
    pub json: bool,
}

fn pad_to(batch: &Batch, size: usize) -> HostTensor {
    let [n, c, h, w] = batch.shape();
    let mut data = batch.images.clone();
    data.resize(size.max(n) * c * h * w, 0.0);
    HostTensor::f32(vec![size.max(n), c, h, w], data)
}

pub fn eval_command(req: &EvalRequest) -> Result<()> {
    if req.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let model = load_model(req.model)?.model;
    let declared = input_shapes(&model, req.batch);
    let [(input, dims)] = declared.as_slice() else {
        bail!(
            "{}: eval needs a model with one image input; it has {}",
            req.model.display(),
            declared.len()
        );
    };
    let mut data = open(req.data, Split::Test)?;
    if let Some(n) = &req.normalization {
        data.set_normalization(n.clone())?;
    }
    check_model_shape(data.image_shape(), dims)
        .with_context(|| format!("{} with {}", req.model.display(), req.data))?;
    // A model with a fixed batch dimension runs at that size; symbolic batches run at --batch.
    let batch = dims.first().copied().unwrap_or(req.batch);
    let [c, h, w] = data.image_shape();
    let facts = [InputFact {
        name: input.clone(),
        element_type: ElementType::F32,
        shape: vec![batch, c, h, w],
    }];
    let engine: Box<dyn Engine> = open_engine(&model, req.engine.engine, req.engine.device, &facts)
        .with_context(|| req.model.display().to_string())?;
    let total = req.limit.unwrap_or(usize::MAX).min(data.len());
    let progress = if req.json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} images {per_sec} {msg}")
                .expect("the template is valid"),
        );
        bar
    };
    let (mut seen, mut top1, mut top5) = (0usize, 0usize, 0usize);
    let mut latencies = Vec::new();
    let mut busy = Duration::ZERO;
    while seen < total {
        let Some(b) = data.next_batch(batch.min(total - seen))? else {
            break;
        };
        let feed = vec![(input.clone(), pad_to(&b, batch))];
        let start = Instant::now();
        let outputs = engine
            .run(&feed)
            .with_context(|| req.model.display().to_string())?;
        let took = start.elapsed();
        latencies.push(took);
        busy += took;
        let Some((name, logits)) = outputs.first() else {
            bail!("{} has no output", req.model.display())
        };
        let (classes, Some(values)) = (
            match logits.shape.as_slice() {
                [n, k] if *n == batch => *k,
                other => {
                    bail!(
                        "output '{name}' has shape {other:?}; eval expects [batch, classes] logits"
                    )
                }
            },
            logits.as_f32(),
        ) else {
            bail!("output '{name}' is not float32; eval expects float logits")
        };
        let (t1, t5) = count_correct(&values[..b.len * classes], classes, &b.labels);
        top1 += t1;
        top5 += t5;
        seen += b.len;
        progress.inc(b.len as u64);
        progress.set_message(format!("top-1 {:.2} %", 100.0 * top1 as f64 / seen as f64));
    }
    progress.finish_and_clear();
    if seen == 0 {
        bail!("{} has no images to evaluate", req.data);
    }
    latencies.sort();
    let report = EvalReport {
        model: req.model.display().to_string(),
        data: req.data.to_string(),
        engine: engine.name().to_owned(),
        provider: engine.provider(),
        batch,
        images: seen,
        top1: top1 as f64 / seen as f64,
        top5: top5 as f64 / seen as f64,
        images_per_s: seen as f64 / busy.as_secs_f64().max(1e-9),
        latency_p50_ms: percentile_ms(&latencies, 50.0),
        latency_p99_ms: percentile_ms(&latencies, 99.0),
    };
    if req.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_counts_follow_ranks() {
        // Two samples, 6 classes: the first is right at top-1, the second's label ranks 6th.
        let logits = [9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(count_correct(&logits, 6, &[0, 0]), (1, 1));
        assert_eq!(count_correct(&logits, 6, &[5, 1]), (0, 2));
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&d, 50.0), 50.0);
        assert_eq!(percentile_ms(&d, 99.0), 99.0);
        assert_eq!(percentile_ms(&d[..1], 99.0), 1.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }
}
