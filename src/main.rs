//! rl-rewrite: Replacement Learning for ONNX models. This file only parses arguments and wires commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand, ValueEnum};
use rl_passes::analysis::units::UnitKind;
use rl_passes::pipeline::RewriteOptions;
use rl_rewrite::compare::CompareOutcome;
use rl_rewrite::data::{DataSpec, Normalization};
use rl_rewrite::train::TrainOutcome;
use rl_rewrite::{commands, compare, evaluate, execute, train, train_compile};

mod flags;
use flags::{CompilerFlags, EngineArgs, TrainFlags};

/// Rewrites an ONNX model for Replacement Learning: every K-th repeated unit (block or layer) is frozen and its
/// parameters replaced by θ_l = a_l·θ_{l-1} + b_l·θ_{l+1}, with two learnable scalars per frozen unit.
#[derive(Parser)]
#[command(
    name = "rl-rewrite",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    rewrite: RewriteArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum UnitArg {
    /// Repeated blocks found from the dominator structure (residual blocks, transformer blocks).
    Block,
    /// Each Conv/Gemm/MatMul with a constant weight, with its trailing BatchNormalization or bias.
    Layer,
}

impl From<UnitArg> for UnitKind {
    fn from(u: UnitArg) -> Self {
        match u {
            UnitArg::Block => UnitKind::Block,
            UnitArg::Layer => UnitKind::Layer,
        }
    }
}

#[derive(Args)]
struct RewriteArgs {
    /// The ONNX model to rewrite (external data is read from beside it).
    #[arg(required = true)]
    model: Option<PathBuf>,
    /// Freeze every K-th unit of each stage (units K, 2K, … that have two unfrozen neighbours); K ≥ 2.
    #[arg(long, value_name = "K", required = true)]
    every: Option<usize>,
    /// Where to write the rewritten model [default: <stem>.rl.onnx beside MODEL]. MODEL is never overwritten
    /// unless this names it.
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// What a unit is.
    #[arg(long, value_enum, default_value = "block")]
    unit: UnitArg,
    /// Shift the frozen positions: units offset+K, offset+2K, … are frozen.
    #[arg(long, value_name = "N", default_value_t = 0)]
    offset: usize,
    /// Initial value of each frozen unit's a (weight of the previous unit's parameters).
    #[arg(
        long,
        value_name = "A",
        default_value_t = 0.5,
        allow_negative_numbers = true
    )]
    init_a: f64,
    /// Initial value of each frozen unit's b (weight of the next unit's parameters).
    #[arg(
        long,
        value_name = "B",
        default_value_t = 0.5,
        allow_negative_numbers = true
    )]
    init_b: f64,
    /// Also write the plan (the same JSON stored in the model's metadata) to FILE.
    #[arg(long, value_name = "FILE")]
    plan_json: Option<PathBuf>,
    /// Plan and print the summary, but write no model.
    #[arg(long)]
    dry_run: bool,
    /// fsync the output before renaming it into place (survives a power loss; slower). Without it the output
    /// is still written atomically: a temporary file renamed into place, never a half-written file.
    #[arg(long)]
    fsync: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Show opsets, inputs/outputs, op histogram, parameters, and the stages and units found.
    Inspect {
        /// The ONNX model to inspect.
        model: PathBuf,
        /// What a unit is.
        #[arg(long, value_enum, default_value = "block")]
        unit: UnitArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Semantic diff of two models (nodes, initializers, inputs/outputs, opsets, metadata). Exit code 0 when
    /// equal, 1 when different, 2 on error.
    Diff {
        /// The first model (before).
        a: PathBuf,
        /// The second model (after).
        b: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Build a model of the zoo: resnet20/32/44/56/110 (CIFAR), resnet18/34/50/101/152, vit-ti/s/b/l.
    Zoo {
        /// Model name: resnet20, resnet32, resnet44, resnet56, resnet110, resnet18, resnet34, resnet50, resnet101,
        /// resnet152, vit-ti, vit-s, vit-b or vit-l.
        name: String,
        /// Output file.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Number of classes [default: 10 for CIFAR ResNets, 1000 otherwise].
        #[arg(long, value_name = "N")]
        classes: Option<usize>,
        /// Input height and width [default: 32 for CIFAR ResNets, 224 otherwise].
        #[arg(long, value_name = "S")]
        image_size: Option<usize>,
        /// Input channels [default: 3].
        #[arg(long, value_name = "C")]
        channels: Option<usize>,
        /// Seed of the weight initialisation.
        #[arg(long, value_name = "N", default_value_t = 0)]
        seed: u64,
    },
    /// Top-1/top-5 accuracy and speed of a classifier on a dataset's test split.
    Eval {
        /// The classifier to evaluate: one image input [N, C, H, W], logits [N, classes] as first output.
        model: PathBuf,
        /// cifar10:DIR, cifar100:DIR, stl10:DIR, mnist:DIR or synthetic:N[:CxHxW[:CLASSES[:SEED]]].
        #[arg(long, value_name = "SPEC")]
        data: DataSpec,
        #[command(flatten)]
        engine: EngineArgs,
        /// Images per batch (the last batch is padded).
        #[arg(long, value_name = "N", default_value_t = 64)]
        batch: usize,
        /// Evaluate only the first N test images.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Override the dataset's standard normalisation: per-channel means and stds, e.g. 0.5,0.5,0.5/0.25,0.25,0.25.
        #[arg(long, value_name = "MEAN/STD")]
        normalize: Option<Normalization>,
        /// Print JSON instead of text (and no progress bar).
        #[arg(long)]
        json: bool,
    },
    /// Run a model once and write each output as .npy; prints shapes and summary statistics.
    Run {
        /// The ONNX model to run.
        model: PathBuf,
        /// Feed input NAME from a .npy file (float32, float64, int32 or int64); other inputs are random.
        #[arg(long = "input", value_name = "NAME=FILE.npy")]
        inputs: Vec<String>,
        /// Seed of the random inputs.
        #[arg(long, value_name = "SEED", default_value_t = 0)]
        random: u64,
        /// Folder for the outputs (one NAME.npy each); without it nothing is written.
        #[arg(short, long, value_name = "DIR")]
        output: Option<PathBuf>,
        #[command(flatten)]
        engine: EngineArgs,
        /// Value of symbolic dimensions (the batch) in random inputs.
        #[arg(long, value_name = "N", default_value_t = 1)]
        batch: usize,
    },
    /// Run two models on the same seeded inputs and compare their outputs. Exit code 0 when every output is
    /// within tolerance (|a − b| ≤ tol·(1 + |b|)), 1 when not, 2 on error.
    Check {
        /// The first model.
        a: PathBuf,
        /// The second model (taking the same inputs).
        b: PathBuf,
        /// Seed of the random inputs.
        #[arg(long, value_name = "SEED", default_value_t = 0)]
        random: u64,
        /// Tolerance.
        #[arg(long, value_name = "T", default_value_t = 1e-5)]
        tol: f64,
        #[command(flatten)]
        engine: EngineArgs,
        /// Value of symbolic dimensions (the batch) in the inputs.
        #[arg(long, value_name = "N", default_value_t = 2)]
        batch: usize,
    },
    /// Compile the training-step model of a classifier (and its eval model): inputs batch, labels, lr, every
    /// trainable parameter and optimizer state; outputs loss, correct, and x.next for each of those.
    CompileTrain {
        /// The classifier (first output: logits [N, classes]); a Replacement Learning rewrite trains a and b.
        model: PathBuf,
        /// Output file of the training-step model.
        #[arg(short, long, value_name = "STEP")]
        output: PathBuf,
        /// Also write the eval model (running statistics, outputs loss and correct too).
        #[arg(long, value_name = "FILE")]
        eval_out: Option<PathBuf>,
        /// Also write the manifest (names, shapes, weight-decay flags) as JSON; it is in the step model's
        /// metadata too.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// The fixed batch size of both models.
        #[arg(long, value_name = "N", default_value_t = 128)]
        batch: usize,
        #[command(flatten)]
        compiler: CompilerFlags,
    },
    /// Train a classifier: rewritten for Replacement Learning (--every K) or as it is (--bp), on ONNX Runtime
    /// (or tract), with per-epoch metrics (metrics.csv, metrics.json, curves.svg) and checkpoints (model.onnx,
    /// state.onnx) in --out.
    Train {
        /// The classifier (one image input, logits [N, classes] as first output).
        model: PathBuf,
        /// Rewrite first, freezing every K-th unit (block units) of each stage.
        #[arg(
            long,
            value_name = "K",
            required_unless_present = "bp",
            conflicts_with = "bp"
        )]
        every: Option<usize>,
        /// Train the model as it is (ordinary end-to-end backpropagation).
        #[arg(long)]
        bp: bool,
        #[command(flatten)]
        flags: TrainFlags,
        /// Folder for metrics and checkpoints.
        #[arg(long, value_name = "DIR", default_value = "rl-train")]
        out: PathBuf,
        /// Continue the run checkpointed in DIR (same model, data and flags; --epochs is the total).
        #[arg(long, value_name = "DIR")]
        resume: Option<PathBuf>,
        /// Stop after N epochs of this invocation, checkpointed (to be resumed later).
        #[arg(long, value_name = "N", hide = true)]
        stop_after: Option<usize>,
    },
    /// Train the model twice with the same seed and settings, by ordinary backpropagation (BP) and with
    /// Replacement Learning (--every K), and set the two side by side: a table (learnable parameters,
    /// optimizer-state bytes, peak memory, time per epoch, best and final test accuracy), compare.json and
    /// compare.svg in --out, the runs themselves in --out/bp and --out/everyK. Rerunning the same command
    /// continues unfinished runs from their checkpoints.
    Compare {
        /// The classifier (one image input, logits [N, classes] as first output).
        model: PathBuf,
        /// The Replacement Learning run freezes every K-th unit (block units) of each stage.
        #[arg(long, value_name = "K")]
        every: usize,
        #[command(flatten)]
        flags: TrainFlags,
        /// Folder for the comparison and both runs.
        #[arg(long, value_name = "DIR", default_value = "rl-compare")]
        out: PathBuf,
    },
    /// Fold each integration subgraph of a rewritten (trained) model into a stored tensor: a plain inference
    /// model with the original structure (check it with `rl-rewrite check`).
    Bake {
        /// The rewritten model (carrying its plan in the metadata).
        model: PathBuf,
        /// Output file.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
    },
    /// Build resnet32, rewrite it with --every 2, print plan and diff, and check equivalence with tract.
    Demo {
        /// Folder for the demo's files.
        #[arg(long, value_name = "DIR", default_value = "rl-demo")]
        out: PathBuf,
    },
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Some(Command::Inspect { model, unit, json }) => {
            commands::inspect_command(&model, unit.into(), json).map(success)
        }
        Some(Command::Diff { a, b, json }) => commands::diff_command(&a, &b, json).map(verdict),
        Some(Command::Zoo {
            name,
            output,
            classes,
            image_size,
            channels,
            seed,
        }) => commands::zoo_command(&commands::ZooRequest {
            name,
            output,
            classes,
            image_size,
            channels,
            seed,
        })
        .map(success),
        Some(Command::Demo { out }) => commands::demo_command(&out).map(verdict),
        Some(Command::Bake { model, output }) => {
            commands::bake_command(&model, &output).map(success)
        }
        Some(Command::CompileTrain {
            model,
            output,
            eval_out,
            manifest,
            batch,
            compiler,
        }) => train_compile::compile_train_command(&train_compile::CompileTrainRequest {
            model,
            output,
            eval_output: eval_out,
            manifest,
            options: compiler.options(batch)?,
        })
        .map(success),
        Some(Command::Train {
            model,
            every,
            bp: _,
            flags,
            out,
            resume,
            stop_after,
        }) => {
            let req = train::TrainRequest {
                resume,
                stop_after,
                ..flags.request(model, every, out)?
            };
            catch_ctrl_c();
            Ok(match train::train_command(&req)? {
                TrainOutcome::Interrupted => EXIT_INTERRUPTED,
                TrainOutcome::Finished(_) | TrainOutcome::Paused => 0,
            })
        }
        Some(Command::Compare {
            model,
            every,
            flags,
            out,
        }) => {
            catch_ctrl_c();
            Ok(
                match compare::compare_command(&flags.request(model, Some(every), out)?)? {
                    CompareOutcome::Interrupted => EXIT_INTERRUPTED,
                    CompareOutcome::Done => 0,
                },
            )
        }
        Some(Command::Eval {
            model,
            data,
            engine,
            batch,
            limit,
            normalize,
            json,
        }) => evaluate::eval_command(&evaluate::EvalRequest {
            model: &model,
            data: &data,
            batch,
            limit,
            normalization: normalize,
            engine: engine.with_batch(batch),
            json,
        })
        .map(success),
        Some(Command::Run {
            model,
            inputs,
            random,
            output,
            engine,
            batch,
        }) => execute::run_command(
            &model,
            &inputs,
            random,
            output.as_deref(),
            &engine.with_batch(batch),
        )
        .map(success),
        Some(Command::Check {
            a,
            b,
            random,
            tol,
            engine,
            batch,
        }) => execute::check_command(&a, &b, random, tol, &engine.with_batch(batch)).map(verdict),
        None => {
            let r = cli.rewrite;
            let model = r.model.expect("clap requires MODEL");
            let every = r.every.expect("clap requires --every");
            commands::rewrite_command(&commands::RewriteRequest {
                model,
                output: r.output,
                options: RewriteOptions {
                    unit: r.unit.into(),
                    every,
                    offset: r.offset,
                    init_a: r.init_a,
                    init_b: r.init_b,
                },
                plan_json: r.plan_json,
                dry_run: r.dry_run,
                fsync: r.fsync,
            })
            .map(success)
        }
    }
}

/// Exit code of a run stopped by Ctrl-C (after its checkpoint was written).
const EXIT_INTERRUPTED: i32 = 130;

/// Set by the Ctrl-C handler; training checks it between steps.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From here on Ctrl-C sets [`INTERRUPTED`] instead of ending the process: training checkpoints and stops.
fn catch_ctrl_c() {
    #[cfg(unix)]
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// Exit code 0 for a command that has no verdict.
fn success(_: ()) -> i32 {
    0
}

/// Exit code of a command with a verdict (equal, within tolerance, exact): 0 yes, 1 no.
fn verdict(yes: bool) -> i32 {
    if yes {
        0
    } else {
        1
    }
}

fn main() -> ExitCode {
    // Like other Unix filters, end quietly when the reader goes away (`rl-rewrite diff a b | head`).
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread or I/O exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run(Cli::parse()) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
