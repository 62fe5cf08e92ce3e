//! Model zoo: ONNX builders for the architectures Replacement Learning is evaluated on.
//!
//! * `resnet20`, `resnet32`, `resnet44`, `resnet56`, `resnet110`: CIFAR ResNets (10 classes, 32×32×3 by
//!   default), option-B projection shortcuts (see [`build_custom_resnet_cifar`]).
//! * `resnet18`, `resnet34` (BasicBlock), `resnet50`, `resnet101`, `resnet152` (Bottleneck): ImageNet
//!   ResNets in torchvision's layout (1000 classes, 224×224×3 by default).
//! * `vit-ti`, `vit-s`, `vit-b`, `vit-l`: Vision Transformers, torchvision layout (1000 classes, 224×224×3 by
//!   default). Patch size 16, except that images smaller than 64 pixels use patch 4 (so a 32×32 image gives
//!   8×8 = 64 tokens instead of 2×2); see [`default_vit_patch`].
//!
//! Every model has one float32 input `input` [N, C, H, W] (N symbolic, `dim_param "N"`) and one float32
//! output `logits` [N, classes]; IR version 8, default-domain opset 17, producer `rl-rewrite-zoo`.
//! Initializers are exactly the model's parameters and BatchNorm running statistics (float32, little-endian
//! `raw_data`), named like a PyTorch state dict (`layer2.0.downsample.1.running_var`, `encoder.layers.3.
//! self_attention.in_proj_weight`, …); shape tensors and scalar constants are `Constant` nodes. Node names
//! follow the module path (`layer2.3.conv1`, `layer2.3.relu`, `encoder.layers.0.self_attention.softmax`),
//! and each node's (first) output value carries its node's name.
//!
//! Weights are drawn from a seeded, portable generator, so the same name and options always encode to the
//! same bytes. Convolutions: Kaiming normal (fan_out, ReLU gain). ResNet `fc`: uniform ±1/√fan_in (weights
//! and bias, PyTorch's default). ViT linear layers, biases, class token and positional embedding: normal
//! std 0.02 truncated at ±2 std; patch-embedding conv: truncated normal std 1/√fan_in. Norm layers are
//! *perturbed* away from the identity so that rewrites are actually exercised: scale 1 ± 0.1, shift ± 0.1,
//! and for BatchNorm running mean ± 0.1 and running variance 1 ± 0.1 (all uniform).
//!
//! ```
//! use rl_models::{build, parameter_count, ZooOptions};
//!
//! let opts = ZooOptions::for_model("resnet20")?;
//! let model = build("resnet20", &opts)?;
//! // Learnable parameters; BatchNorm running statistics are counted apart.
//! assert_eq!(parameter_count(&model).learnable, 272_474);
//! # Ok::<(), rl_models::ZooError>(())
//! ```

mod builder;
mod resnet;
mod resnet_cifar;
mod rng;
mod vit;

use rl_passes::onnx::ModelProto;

use builder::GraphBuilder;
use resnet::Block;
use vit::VitConfig;

/// Every name [`build`] accepts.
pub const MODEL_NAMES: &[&str] = &[
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vit-ti",
    "vit-s",
    "vit-b",
    "vit-l",
];

/// Errors of the zoo builders.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZooError {
    #[error("unknown model `{name}`; valid names: {}", MODEL_NAMES.join(", "))]
    UnknownModel { name: String },
    #[error("{model}: `{option}` must be at least 1 (got 0)")]
    ZeroOption { model: String, option: &'static str },
    #[error("{model}: image size {image_size} is not divisible by the patch size {patch}")]
    ImageSizeNotDivisibleByPatch {
        model: String,
        image_size: usize,
        patch: usize,
    },
    #[error("{model}: embedding dimension {dim} is not divisible by the number of heads {heads}")]
    DimNotDivisibleByHeads {
        model: String,
        dim: usize,
        heads: usize,
    },
}

/// Options shared by all builders.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZooOptions {
    /// Number of output classes (width of `logits`).
    pub classes: usize,
    /// Height and width of the (square) input image.
    pub image_size: usize,
    /// Input channels.
    pub channels: usize,
    /// Seed of the weight initialisation.
    pub seed: u64,
}

impl ZooOptions {
    /// CIFAR defaults: 10 classes, 32×32, 3 channels, seed 0.
    pub const CIFAR: ZooOptions = ZooOptions {
        classes: 10,
        image_size: 32,
        channels: 3,
        seed: 0,
    };
    /// ImageNet defaults: 1000 classes, 224×224, 3 channels, seed 0.
    pub const IMAGENET: ZooOptions = ZooOptions {
        classes: 1000,
        image_size: 224,
        channels: 3,
        seed: 0,
    };

    /// The default options of a zoo model: [`ZooOptions::CIFAR`] for the CIFAR ResNets (`resnet20` …
    /// `resnet110`), [`ZooOptions::IMAGENET`] for the ImageNet ResNets and the ViTs.
    pub fn for_model(name: &str) -> Result<ZooOptions, ZooError> {
        match arch(name)? {
            Arch::CifarResNet { .. } => Ok(Self::CIFAR),
            Arch::ResNet { .. } | Arch::Vit { .. } => Ok(Self::IMAGENET),
        }
    }
}

/// Learnable-parameter and buffer counts of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParameterCount {
    /// Elements of learnable tensors (every initializer except BatchNorm running statistics).
    pub learnable: u64,
    /// Elements of BatchNorm running statistics (`*.running_mean`, `*.running_var`).
    pub buffers: u64,
}

/// Counts initializer elements of a zoo model, split into learnable parameters and BN running statistics
/// (the split is by name, `running_mean`/`running_var` suffix). The learnable count is the figure usually
/// quoted for a model (e.g. torchvision's 11,689,512 for ResNet-18).
pub fn parameter_count(model: &ModelProto) -> ParameterCount {
    let mut count = ParameterCount::default();
    for t in model.graph.iter().flat_map(|g| &g.initializer) {
        let n: u64 = t.dims.iter().map(|&d| d.max(0) as u64).product();
        let name = t.name.as_deref().unwrap_or("");
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            count.buffers += n;
        } else {
            count.learnable += n;
        }
    }
    count
}

/// The ViT patch size used for an image size by the named ViTs: 16, or 4 when `image_size < 64` (so that
/// CIFAR-sized images still give a useful number of tokens).
pub fn default_vit_patch(image_size: usize) -> usize {
    if image_size < 64 {
        4
    } else {
        16
    }
}

enum Arch {
    CifarResNet {
        n: usize,
    },
    ResNet {
        block: Block,
        layers: [usize; 4],
    },
    Vit {
        depth: usize,
        dim: usize,
        heads: usize,
    },
}

fn arch(name: &str) -> Result<Arch, ZooError> {
    use Block::{Basic, Bottleneck};
    Ok(match name {
        "resnet20" => Arch::CifarResNet { n: 3 },
        "resnet32" => Arch::CifarResNet { n: 5 },
        "resnet44" => Arch::CifarResNet { n: 7 },
        "resnet56" => Arch::CifarResNet { n: 9 },
        "resnet110" => Arch::CifarResNet { n: 18 },
        "resnet18" => Arch::ResNet {
            block: Basic,
            layers: [2, 2, 2, 2],
        },
        "resnet34" => Arch::ResNet {
            block: Basic,
            layers: [3, 4, 6, 3],
        },
        "resnet50" => Arch::ResNet {
            block: Bottleneck,
            layers: [3, 4, 6, 3],
        },
        "resnet101" => Arch::ResNet {
            block: Bottleneck,
            layers: [3, 4, 23, 3],
        },
        "resnet152" => Arch::ResNet {
            block: Bottleneck,
            layers: [3, 8, 36, 3],
        },
        "vit-ti" => Arch::Vit {
            depth: 12,
            dim: 192,
            heads: 3,
        },
        "vit-s" => Arch::Vit {
            depth: 12,
            dim: 384,
            heads: 6,
        },
        "vit-b" => Arch::Vit {
            depth: 12,
            dim: 768,
            heads: 12,
        },
        "vit-l" => Arch::Vit {
            depth: 24,
            dim: 1024,
            heads: 16,
        },
        _ => {
            return Err(ZooError::UnknownModel {
                name: name.to_owned(),
            })
        }
    })
}

fn nonzero(model: &str, option: &'static str, value: usize) -> Result<(), ZooError> {
    if value == 0 {
        Err(ZooError::ZeroOption {
            model: model.to_owned(),
            option,
        })
    } else {
        Ok(())
    }
}

fn check_options(model: &str, opts: &ZooOptions) -> Result<(), ZooError> {
    nonzero(model, "classes", opts.classes)?;
    nonzero(model, "image_size", opts.image_size)?;
    nonzero(model, "channels", opts.channels)
}

fn doc(model: &str, what: &str, opts: &ZooOptions) -> String {
    format!(
        "{model}: {what}; {} classes, {}x{}x{} input, seed {}",
        opts.classes, opts.channels, opts.image_size, opts.image_size, opts.seed
    )
}

/// Builds the named zoo model (see [`MODEL_NAMES`]) with the given options.
pub fn build(name: &str, opts: &ZooOptions) -> Result<ModelProto, ZooError> {
    build_named(name, opts, true)
}

/// The graph of [`build`] with initializers that have their names, shapes and dtype but **no data**
/// (`raw_data` unset): for inspecting structure and parameter counts, or planning rewrites, without drawing
/// hundreds of millions of weights (ViT-L has 304M). Not a valid model to run or save.
pub fn build_without_weights(name: &str, opts: &ZooOptions) -> Result<ModelProto, ZooError> {
    build_named(name, opts, false)
}

fn build_named(name: &str, opts: &ZooOptions, weights: bool) -> Result<ModelProto, ZooError> {
    match arch(name)? {
        Arch::CifarResNet { n } => build_resnet_cifar(name, n, 16, opts, weights),
        Arch::ResNet { block, layers } => {
            check_options(name, opts)?;
            let mut b = GraphBuilder::new(opts.seed, weights);
            resnet::build_imagenet(&mut b, block, layers, opts);
            let what = format!("ImageNet ResNet, {block:?} blocks {layers:?}");
            Ok(b.finish(name, doc(name, &what, opts)))
        }
        Arch::Vit { depth, dim, heads } => {
            let cfg = VitConfig {
                depth,
                dim,
                heads,
                mlp_dim: 4 * dim,
                patch: default_vit_patch(opts.image_size),
            };
            build_vit(name, &cfg, opts, weights)
        }
    }
}

/// A CIFAR ResNet with `blocks_per_stage` BasicBlocks in each of its 3 stages (depth 6n + 2) and stage widths
/// `base_width`, 2·`base_width`, 4·`base_width` (the named models use 16). Tensor and node names are those of
/// the named CIFAR ResNets; the graph is named `resnet_cifar_n{n}_w{w}`.
pub fn build_custom_resnet_cifar(
    blocks_per_stage: usize,
    base_width: usize,
    opts: &ZooOptions,
) -> Result<ModelProto, ZooError> {
    let name = format!("resnet_cifar_n{blocks_per_stage}_w{base_width}");
    build_resnet_cifar(&name, blocks_per_stage, base_width, opts, true)
}

fn build_resnet_cifar(
    name: &str,
    n: usize,
    width: usize,
    opts: &ZooOptions,
    weights: bool,
) -> Result<ModelProto, ZooError> {
    check_options(name, opts)?;
    nonzero(name, "blocks_per_stage", n)?;
    nonzero(name, "base_width", width)?;
    let mut b = GraphBuilder::new(opts.seed, weights);
    resnet_cifar::build(&mut b, n, width, opts);
    let what = format!(
        "CIFAR ResNet-{}, 3 stages x {n} BasicBlocks, widths {}/{}/{}",
        6 * n + 2,
        width,
        2 * width,
        4 * width
    );
    Ok(b.finish(name, doc(name, &what, opts)))
}

/// A ViT with `depth` encoder blocks of width `dim`, `heads` attention heads, MLP hidden width `mlp_dim` and
/// square patches of side `patch` (`opts.image_size` must be a multiple of it). The graph is named
/// `vit_d{depth}_e{dim}_h{heads}_m{mlp_dim}_p{patch}`.
pub fn build_custom_vit(
    depth: usize,
    dim: usize,
    heads: usize,
    mlp_dim: usize,
    patch: usize,
    opts: &ZooOptions,
) -> Result<ModelProto, ZooError> {
    let name = format!("vit_d{depth}_e{dim}_h{heads}_m{mlp_dim}_p{patch}");
    let cfg = VitConfig {
        depth,
        dim,
        heads,
        mlp_dim,
        patch,
    };
    build_vit(&name, &cfg, opts, true)
}

fn build_vit(
    name: &str,
    cfg: &VitConfig,
    opts: &ZooOptions,
    weights: bool,
) -> Result<ModelProto, ZooError> {
    check_options(name, opts)?;
    nonzero(name, "depth", cfg.depth)?;
    nonzero(name, "dim", cfg.dim)?;
    nonzero(name, "heads", cfg.heads)?;
    nonzero(name, "mlp_dim", cfg.mlp_dim)?;
    nonzero(name, "patch", cfg.patch)?;
    if !opts.image_size.is_multiple_of(cfg.patch) {
        return Err(ZooError::ImageSizeNotDivisibleByPatch {
            model: name.to_owned(),
            image_size: opts.image_size,
            patch: cfg.patch,
        });
    }
    if !cfg.dim.is_multiple_of(cfg.heads) {
        return Err(ZooError::DimNotDivisibleByHeads {
            model: name.to_owned(),
            dim: cfg.dim,
            heads: cfg.heads,
        });
    }
    let mut b = GraphBuilder::new(opts.seed, weights);
    vit::build(&mut b, cfg, opts);
    let what = format!(
        "ViT, {} blocks, dim {}, {} heads, MLP {}, patch {}",
        cfg.depth, cfg.dim, cfg.heads, cfg.mlp_dim, cfg.patch
    );
    Ok(b.finish(name, doc(name, &what, opts)))
}
