//! criterion benchmarks of the `train` cases (see `dml_benches::cases`).

use criterion::Criterion;
use dml_benches::{Topic, bench_topic};

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_topic(&mut c, Topic::Train);
    c.final_summary();
}
