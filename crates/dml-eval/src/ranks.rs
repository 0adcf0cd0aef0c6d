//! The ranks of a query's positives in its whole ranking, from one row of the query × reference
//! matrix.
//!
//! Metrics over the whole ranking (pml's `mean_average_precision` and `mean_reciprocal_rank` at
//! its default `k=None`) need the position of every same-class reference, not only of those among
//! the first k. Sorting the whole row would cost O(n log n) per query; instead the R positives
//! are sorted and each other reference is counted into the gap between positives where it
//! falls, so the cost is O(n) for the references outside the positives' span plus O(log R) for
//! each one inside it.

use dml_kernels::Metric;

/// A key whose integer order is the ranking order: the metric's value (negated for
/// similarities), then the reference index; `-0.0` and `0.0` are one value.
#[inline]
fn code(metric: Metric, value: f32, idx: usize) -> u64 {
    let key = if metric.is_similarity() {
        0.0 - value
    } else {
        value + 0.0
    };
    let bits = key.to_bits();
    let mask = (((bits as i32) >> 31) as u32) | 0x8000_0000;
    (u64::from(bits ^ mask) << 32) | idx as u64
}

/// Scratch space reused across the rows of one task.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    positives: Vec<u64>,
    gaps: Vec<u32>,
}

/// The 1-based ranks, in increasing order, of the references of class `label` (other than
/// `skip`, the query itself in leave-one-out mode) in the ranking of `values`, a query's row of
/// metric values against every reference (closest first; equal values: lower index first, the
/// rule of dml-kernels' k-NN). `skip` is left out of the ranking altogether.
pub(crate) fn hit_ranks(
    metric: Metric,
    values: &[f32],
    reference_labels: &[u32],
    label: u32,
    skip: Option<usize>,
    scratch: &mut Scratch,
    out: &mut Vec<u32>,
) {
    out.clear();
    let skip = skip.unwrap_or(usize::MAX);
    let positives = &mut scratch.positives;
    positives.clear();
    for (j, (&v, &l)) in values.iter().zip(reference_labels).enumerate() {
        if l == label && j != skip {
            positives.push(code(metric, v, j));
        }
    }
    if positives.is_empty() {
        return;
    }
    positives.sort_unstable();
    let (first, last) = (positives[0], positives[positives.len() - 1]);
    // gaps[s]: other references ranked between positive s − 1 and positive s.
    let gaps = &mut scratch.gaps;
    gaps.clear();
    gaps.resize(positives.len(), 0);
    for (j, (&v, &l)) in values.iter().zip(reference_labels).enumerate() {
        if l == label || j == skip {
            continue;
        }
        let c = code(metric, v, j);
        if c < first {
            gaps[0] += 1;
        } else if c < last {
            gaps[positives.partition_point(|&p| p < c)] += 1;
        }
    }
    let mut before = 0u32;
    for (s, &g) in gaps.iter().enumerate() {
        before += g;
        out.push(s as u32 + 1 + before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranks straight from a full sort by (key, index).
    fn naive(
        metric: Metric,
        values: &[f32],
        labels: &[u32],
        label: u32,
        skip: Option<usize>,
    ) -> Vec<u32> {
        let mut order: Vec<usize> = (0..values.len()).filter(|&j| Some(j) != skip).collect();
        let key = |j: usize| {
            if metric.is_similarity() {
                -f64::from(values[j])
            } else {
                f64::from(values[j])
            }
        };
        // partial_cmp: -0.0 and 0.0 are one value.
        order.sort_by(|&a, &b| key(a).partial_cmp(&key(b)).expect("finite").then(a.cmp(&b)));
        order
            .iter()
            .enumerate()
            .filter(|&(_, &j)| labels[j] == label)
            .map(|(pos, _)| pos as u32 + 1)
            .collect()
    }

    #[test]
    fn ranks_match_a_full_sort_with_ties() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        for case in 0..300 {
            let n = rng.random_range(1..60);
            // Few distinct values: ties everywhere (including -0.0 against 0.0).
            let values: Vec<f32> = (0..n)
                .map(|_| [0.0, -0.0, 0.5, 1.0, 2.0, -1.0][rng.random_range(0..6)])
                .collect();
            let labels: Vec<u32> = (0..n).map(|_| rng.random_range(0..3)).collect();
            let skip = (case % 2 == 0).then(|| rng.random_range(0..n));
            for metric in [Metric::Euclidean, Metric::Cosine] {
                for label in 0..3 {
                    hit_ranks(
                        metric,
                        &values,
                        &labels,
                        label,
                        skip,
                        &mut scratch,
                        &mut out,
                    );
                    assert_eq!(
                        out,
                        naive(metric, &values, &labels, label, skip),
                        "case {case}"
                    );
                }
            }
        }
    }
}
