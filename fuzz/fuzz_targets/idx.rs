//! `cargo +nightly fuzz run idx`: the IDX parser must never panic, and whatever it accepts must
//! be exactly as long as its header says.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(arr) = dml_data::formats::parse_idx(bytes, std::path::Path::new("fuzz")) {
        let n: usize = arr.dims.iter().product();
        assert_eq!(arr.data.len(), n);
    }
});
