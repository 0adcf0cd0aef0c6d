//! criterion benchmarks of the `eval` cases (see `dml_benches::cases`).

use criterion::Criterion;
use dml_benches::{Topic, bench_topic};

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_topic(&mut c, Topic::Eval);
    c.final_summary();
}
