//! criterion benchmarks of the `losses` cases (see `dml_benches::cases`).

use criterion::Criterion;
use dml_benches::{Topic, bench_topic};

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_topic(&mut c, Topic::Losses);
    c.final_summary();
}
