//! cargo-fuzz target `export`: the body of `target_export` in tests/fuzz.rs,
//! on the raw input and on a seed mutated by it.

#![no_main]

#[path = "../../tests/fuzz.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::fuzz_one("export", data));
