//! The convolution weight-gradient kernel on resnet32's layers (batch 128, 3×3, stride 1, block 16 or this
//! CPU's block), on one thread and on all parts spread over two: `cargo bench --bench conv_weight_grad`.

use std::time::Instant;

use rl_rewrite::engine::ort::conv_weight_grad::{fast_for, Geometry, WeightGrad};

/// Median milliseconds of `runs` calls.
fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() {
    let block = [16, 8].into_iter().find(|&b| fast_for(b)).unwrap_or(8);
    println!(
        "block {block}{}",
        if fast_for(block) {
            ""
        } else {
            " (scalar tile: no AVX2 or AVX-512 here)"
        }
    );
    let n = 128;
    for (c, hw) in [(16usize, 32usize), (32, 16), (64, 8)] {
        let len = n * c * hw * hw;
        let x: Vec<f32> = (0..len).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
        let dy: Vec<f32> = (0..len).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
        let dims = [n, c / block, hw, hw, block];
        let geometry = Geometry {
            kernel: [3, 3],
            strides: [1, 1],
            dilations: [1, 1],
            pads_begin: [1, 1],
        };
        let grad = WeightGrad::new(&x, dims, &dy, dims, geometry).expect("consistent shapes");
        let flops = 2.0 * (c * c * 9 * n * hw * hw) as f64;
        let one = median_ms(7, || {
            std::hint::black_box(grad.compute());
        });
        let parts = 8;
        let two = median_ms(7, || {
            let partials: Vec<Vec<f32>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..2)
                    .map(|t| {
                        let grad = &grad;
                        s.spawn(move || {
                            (t..parts)
                                .step_by(2)
                                .map(|p| grad.partial(grad.samples(p, parts)))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("no panic"))
                    .collect()
            });
            std::hint::black_box(grad.finish(&partials));
        });
        println!(
            "{c:2} channels {hw:2}×{hw:<2}: 1 thread {one:6.2} ms ({:5.1} GFLOP/s), 2 threads {two:6.2} ms ({:5.1} GFLOP/s)",
            flops / one / 1e6,
            flops / two / 1e6
        );
    }
}
