//! Turning `Option<&Tuples>` into the checked pairs or triplets a loss needs.

use std::borrow::Cow;

use dml_sampling::{Pairs, Triplets, Tuples};

use crate::util::Sides;
use crate::{Result, util};

/// The pairs a pair-based loss uses: the mined ones (triplets converted as pml does), or all
/// pairs of the batch. Indices, lengths and weights are checked against a batch of `n`.
pub(crate) fn pairs<'a>(
    labels: &[u32],
    tuples: Option<&'a Tuples>,
    n: usize,
) -> Result<Cow<'a, Pairs>> {
    checked_pairs(|| Pairs::all(labels), tuples, n, n)
}

/// [`pairs`] for a batch against its columns ([`Sides`]): without tuples, every pair of a batch
/// item with a column (all reference pairs against a reference set); anchors are checked
/// against the batch, the other ends against the columns.
pub(crate) fn side_pairs<'a>(
    sides: &Sides<'_>,
    tuples: Option<&'a Tuples>,
) -> Result<Cow<'a, Pairs>> {
    let all = || {
        if sides.has_reference() {
            Pairs::all_reference(sides.labels, sides.ref_labels)
        } else {
            Pairs::all(sides.labels)
        }
    };
    checked_pairs(all, tuples, sides.batch.n, sides.m)
}

/// The triplets a triplet-based loss uses: the mined ones (pairs converted as pml does), or all
/// triplets of the batch against its columns ([`Sides`]). Anchors are checked against the batch,
/// the other ends against the columns.
pub(crate) fn side_triplets<'a>(
    sides: &Sides<'_>,
    tuples: Option<&'a Tuples>,
) -> Result<Cow<'a, Triplets>> {
    let (n, m) = (sides.batch.n, sides.m);
    let t = match tuples {
        None if sides.has_reference() => {
            return Ok(Cow::Owned(Triplets::all_reference(
                sides.labels,
                sides.ref_labels,
            )));
        }
        None => return Ok(Cow::Owned(Triplets::all(sides.labels))),
        Some(Tuples::Triplets(t)) => Cow::Borrowed(t),
        Some(t @ Tuples::Pairs(p)) => {
            // Check before converting, so errors name the caller's fields.
            check_pairs(p, n, m)?;
            Cow::Owned(t.to_triplets())
        }
    };
    check_triplets(&t, n, m)?;
    Ok(t)
}

/// The mined pairs (triplets converted), checked against `n` anchors and `m` columns, or
/// `all()` when nothing was mined.
fn checked_pairs<'a>(
    all: impl FnOnce() -> Pairs,
    tuples: Option<&'a Tuples>,
    n: usize,
    m: usize,
) -> Result<Cow<'a, Pairs>> {
    let p = match tuples {
        None => return Ok(Cow::Owned(all())),
        Some(Tuples::Pairs(p)) => Cow::Borrowed(p),
        Some(t) => Cow::Owned(t.to_pairs()),
    };
    check_pairs(&p, n, m)?;
    Ok(p)
}

fn check_pairs(p: &Pairs, n: usize, m: usize) -> Result<()> {
    util::check_len("positive", p.positive.len(), p.pos_anchor.len())?;
    util::check_len("negative", p.negative.len(), p.neg_anchor.len())?;
    util::check_weights("pos_weight", p.pos_weight.as_deref(), p.pos_anchor.len())?;
    util::check_weights("neg_weight", p.neg_weight.as_deref(), p.neg_anchor.len())?;
    util::check_indices("pos_anchor", &p.pos_anchor, n)?;
    util::check_indices("positive", &p.positive, m)?;
    util::check_indices("neg_anchor", &p.neg_anchor, n)?;
    util::check_indices("negative", &p.negative, m)
}

fn check_triplets(t: &Triplets, n: usize, m: usize) -> Result<()> {
    util::check_len("positive", t.positive.len(), t.anchor.len())?;
    util::check_len("negative", t.negative.len(), t.anchor.len())?;
    util::check_weights("weight", t.weight.as_deref(), t.anchor.len())?;
    util::check_indices("anchor", &t.anchor, n)?;
    util::check_indices("positive", &t.positive, m)?;
    util::check_indices("negative", &t.negative, m)
}
