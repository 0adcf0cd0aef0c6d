//! The index tuples that miners produce and losses consume.

/// Pairs of batch indices: positive pairs (same class) and negative pairs (different classes),
/// each with optional per-pair weights.
///
/// This is pytorch-metric-learning's `(a1, p, a2, n)` pair tuple, stored as four index vectors
/// (struct of arrays) so that a loss can turn each into an index tensor without copying.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pairs {
    /// Anchor of each positive pair.
    pub pos_anchor: Vec<u32>,
    /// Positive of each positive pair (same label as its anchor, different index).
    pub positive: Vec<u32>,
    /// Anchor of each negative pair.
    pub neg_anchor: Vec<u32>,
    /// Negative of each negative pair (different label from its anchor).
    pub negative: Vec<u32>,
    /// Optional weight of each positive pair (`None` means all 1).
    pub pos_weight: Option<Vec<f32>>,
    /// Optional weight of each negative pair (`None` means all 1).
    pub neg_weight: Option<Vec<f32>>,
}

/// Triplets of batch indices `(anchor, positive, negative)` with optional per-triplet weights.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Triplets {
    /// Anchor of each triplet.
    pub anchor: Vec<u32>,
    /// Positive of each triplet (same label as the anchor, different index).
    pub positive: Vec<u32>,
    /// Negative of each triplet (different label from the anchor).
    pub negative: Vec<u32>,
    /// Optional weight of each triplet (`None` means all 1).
    pub weight: Option<Vec<f32>>,
}

/// What a miner returns: pairs or triplets.
#[derive(Debug, Clone, PartialEq)]
pub enum Tuples {
    /// Positive and negative pairs.
    Pairs(Pairs),
    /// Triplets.
    Triplets(Triplets),
}
