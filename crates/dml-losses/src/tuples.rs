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
    let p = match tuples {
        None => return Ok(Cow::Owned(Pairs::all(labels))),
        Some(Tuples::Pairs(p)) => Cow::Borrowed(p),
        Some(t) => Cow::Owned(t.to_pairs()),
    };
    check_pairs(&p, n, n)?;
    Ok(p)
}

/// [`pairs`] for a batch against its columns ([`Sides`]): without tuples, every pair of a batch
/// item with a column (all reference pairs against a reference set); anchors are checked
/// against the batch, the other ends against the columns.
pub(crate) fn side_pairs<'a>(
    sides: &Sides<'_>,
    tuples: Option<&'a Tuples>,
) -> Result<Cow<'a, Pairs>> {
    if !sides.has_reference() {
        return pairs(sides.labels, tuples, sides.batch.n);
    }
    let p = match tuples {
        None => {
            return Ok(Cow::Owned(Pairs::all_reference(
                sides.labels,
                sides.ref_labels,
            )));
        }
        Some(Tuples::Pairs(p)) => Cow::Borrowed(p),
        Some(t) => Cow::Owned(t.to_pairs()),
    };
    check_pairs(&p, sides.batch.n, sides.m)?;
    Ok(p)
}

/// [`triplets`] for a batch against its columns ([`Sides`]).
pub(crate) fn side_triplets<'a>(
    sides: &Sides<'_>,
    tuples: Option<&'a Tuples>,
) -> Result<Cow<'a, Triplets>> {
    if !sides.has_reference() {
        return triplets(sides.labels, tuples, sides.batch.n);
    }
    let (n, m) = (sides.batch.n, sides.m);
    let t = match tuples {
        None => {
            return Ok(Cow::Owned(Triplets::all_reference(
                sides.labels,
                sides.ref_labels,
            )));
        }
        Some(Tuples::Triplets(t)) => Cow::Borrowed(t),
        Some(t @ Tuples::Pairs(p)) => {
            check_pairs(p, n, m)?;
            Cow::Owned(t.to_triplets())
        }
    };
    check_triplets(&t, n, m)?;
    Ok(t)
}

/// The triplets a triplet-based loss uses: the mined ones (pairs converted as pml does), or all
/// triplets of the batch. Indices, lengths and weights are checked against a batch of `n`.
pub(crate) fn triplets<'a>(
    labels: &[u32],
    tuples: Option<&'a Tuples>,
    n: usize,
) -> Result<Cow<'a, Triplets>> {
    let t = match tuples {
        None => return Ok(Cow::Owned(Triplets::all(labels))),
        Some(Tuples::Triplets(t)) => Cow::Borrowed(t),
        Some(t @ Tuples::Pairs(p)) => {
            // Check before converting, so errors name the caller's fields.
            check_pairs(p, n, n)?;
            Cow::Owned(t.to_triplets())
        }
    };
    check_triplets(&t, n, n)?;
    Ok(t)
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
