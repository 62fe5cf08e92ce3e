//! CIFAR ResNets (He et al. 2015, section 4.2): a 3x3 conv to `w` channels, three stages of `n` BasicBlocks
//! with `w`/`2w`/`4w` channels (stride 2 at the first block of stages 2 and 3), GlobalAveragePool, fc.
//! depth = 6n + 2 (resnet20: n = 3, …, resnet110: n = 18), w = 16.
//!
//! Shortcuts use option B (1x1 conv + BN projection where the shape changes) rather than the paper's
//! parameter-free option A (zero padding), so each model has 2 extra convs and 2 extra BNs: +2,752 learnable
//! parameters at w = 16 compared with the paper's counts.

use crate::builder::GraphBuilder;
use crate::resnet::{head, input, stages, Block};
use crate::ZooOptions;

pub(crate) fn build(
    b: &mut GraphBuilder,
    blocks_per_stage: usize,
    width: usize,
    opts: &ZooOptions,
) {
    let x = input(b, opts);
    let h = b.conv("conv1", &x, opts.channels, width, 3, 1, 1);
    let h = b.batch_norm("bn1", &h, width);
    let h = b.relu("relu", &h);
    let n = blocks_per_stage;
    let (h, ch) = stages(
        b,
        Block::Basic,
        h,
        width,
        &[n, n, n],
        &[width, 2 * width, 4 * width],
    );
    head(b, &h, ch, opts);
}
