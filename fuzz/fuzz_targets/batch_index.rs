//! cargo-fuzz target `batch_index`: the body of `target_batch_index` in
//! tests/fuzz.rs, on the raw input and on a seed mutated by it.

#![no_main]

#[path = "../../tests/fuzz.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::fuzz_one("batch_index", data));
