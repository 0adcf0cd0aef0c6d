//! Times a leave-one-out evaluation (MAP@R, no NMI) against the symmetric top-1 search of the
//! same points (`knn_self` with k = 1, half the distance GEMM) and against the bare half GEMM
//! (the products of the same 512 × 512 tiles on and above the diagonal, in parallel, nothing
//! else), alternating the three in rounds so that all see the same machine load.
//!
//! ```text
//! cargo run --release -p dml-eval --example eval_vs_gemm -- [n_classes] [per_class] [dim] [rounds]
//! cargo run --release -p dml-eval --example eval_vs_gemm -- --npy EMBEDDINGS.npy LABELS.npy [rounds]
//! ```
//!
//! Defaults: 5 classes of 7,000 points in 784-d (R = 6,999 per query), 3 rounds. The points are
//! clustered unit vectors (a random centre per class plus noise of the same scale), the shape
//! of the benchmark's `evaluate_euclidean` sets. With `--npy`, the points and labels are read
//! from `.npy` files instead (e.g. the 35,000 raw Fashion-MNIST images of classes 5–9, flattened
//! and L2-normalised).

mod common;

use std::time::Instant;

use dml_eval::{EvalConfig, evaluate, npy};
use dml_kernels::{Metric, knn_self};
use ndarray::{Array2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use common::{cpu_seconds, normal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (x, labels, rounds) = if args.first().is_some_and(|a| a == "--npy") {
        let (Some(emb), Some(lab)) = (args.get(1), args.get(2)) else {
            return Err("usage: eval_vs_gemm --npy EMBEDDINGS.npy LABELS.npy [rounds]".into());
        };
        let (x, labels) = npy::read_embeddings_and_labels(emb, lab)?;
        let rounds = args.get(3).map_or(Ok(3), |r| r.parse())?;
        (x, labels, rounds)
    } else {
        let args: Vec<usize> = args.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
        let arg = |i: usize, default: usize| args.get(i).copied().unwrap_or(default);
        let (n_classes, per_class, d) = (arg(0, 5), arg(1, 7_000), arg(2, 784));
        let (x, labels) = clustered(n_classes, per_class, d);
        (x, labels, arg(3, 3))
    };
    let n_classes = labels
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let d = x.ncols();
    let cfg = EvalConfig {
        nmi: false,
        ..EvalConfig::default()
    };
    eprintln!(
        "{} × {d}, {n_classes} classes, {} threads",
        x.nrows(),
        rayon::current_num_threads()
    );
    for round in 1..=rounds {
        let (t, c) = (Instant::now(), cpu_seconds());
        let m = evaluate(x.view(), &labels, Metric::Euclidean, &cfg)?;
        let (eval_s, eval_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        let (t, c) = (Instant::now(), cpu_seconds());
        let nn = knn_self(Metric::Euclidean, x.view(), 1)?;
        let (top1_s, top1_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        std::hint::black_box(nn);
        let (t, c) = (Instant::now(), cpu_seconds());
        std::hint::black_box(half_gemm(x.view()));
        let (gemm_s, gemm_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        println!(
            "round {round}: evaluate {eval_s:.2} s, symmetric top-1 {top1_s:.2} s, ratio {:.2} \
             (CPU {eval_cpu:.1} s against {top1_cpu:.1} s, {:.2}); bare half GEMM {gemm_s:.2} s, \
             ratio {:.2} (CPU {gemm_cpu:.1} s, {:.2}; MAP@R {:.6}, load {})",
            eval_s / top1_s,
            eval_cpu / top1_cpu,
            eval_s / gemm_s,
            eval_cpu / gemm_cpu,
            m.map_at_r.unwrap_or(f64::NAN),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
    }
    Ok(())
}

/// `n_classes` × `per_class` clustered unit vectors in `d` dimensions and their labels.
fn clustered(n_classes: usize, per_class: usize, d: usize) -> (Array2<f32>, Vec<u32>) {
    let labels: Vec<u32> = (0..n_classes as u32)
        .flat_map(|c| std::iter::repeat_n(c, per_class))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let centres = Array2::from_shape_simple_fn((n_classes, d), || normal(&mut rng));
    let mut x = Array2::from_shape_simple_fn((labels.len(), d), || normal(&mut rng));
    for (mut row, &l) in x.axis_iter_mut(Axis(0)).zip(&labels) {
        row += &centres.row(l as usize);
        let norm = row.dot(&row).sqrt().max(1e-12);
        row /= norm;
    }
    (x, labels)
}

/// The products `x_i · x_jᵀ` of every 512 × 512 tile on and above the diagonal, as the
/// symmetric searches cut them, in parallel with one tile buffer per worker thread, kept from
/// call to call (as the search keeps its own), through the same library call with the same
/// arguments (single-threaded `gemm`, the output overwritten); the sum of one value per tile
/// keeps the work from being optimised away.
fn half_gemm(x: ndarray::ArrayView2<'_, f32>) -> f32 {
    use rayon::prelude::*;
    const TILE: usize = 512;
    let (n, d) = x.dim();
    let x = x.as_standard_layout();
    let data = x.as_slice().expect("standard layout");
    let nb = n.div_ceil(TILE);
    let pairs: Vec<(usize, usize)> = (0..nb).flat_map(|i| (i..nb).map(move |j| (i, j))).collect();
    pairs
        .par_iter()
        .map(|&(bi, bj)| {
            TILE_BUFFER.with_borrow_mut(|tile| {
                tile.resize(TILE * TILE, 0.0);
                let (r0, c0) = (bi * TILE, bj * TILE);
                let (rows, cols) = ((n - r0).min(TILE), (n - c0).min(TILE));
                let (a, b) = (&data[r0 * d..], &data[c0 * d..]);
                // SAFETY: `a` holds rows r0..r0 + rows and `b` rows c0..c0 + cols of the
                // row-major n × d matrix (d apart, unit column stride), `tile` holds rows × cols
                // values written with row stride `cols`; nothing aliases the output. Bᵀ is `b`
                // with its strides swapped, and `read_dst = false` makes gemm overwrite it.
                unsafe {
                    gemm::gemm(
                        rows,
                        cols,
                        d,
                        tile.as_mut_ptr(),
                        1,
                        cols as isize,
                        false,
                        a.as_ptr(),
                        1,
                        d as isize,
                        b.as_ptr(),
                        d as isize,
                        1,
                        0.0,
                        -2.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                tile[0]
            })
        })
        .sum()
}

thread_local! {
    /// [`half_gemm`]'s tile buffer on each worker thread.
    static TILE_BUFFER: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}
