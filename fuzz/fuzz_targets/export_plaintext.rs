//! cargo-fuzz target `export_plaintext`: the body of `target_export_plaintext` in tests/fuzz.rs,
//! on the raw input and on a seed mutated by it.

#![no_main]

#[path = "../../tests/fuzz.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::fuzz_one("export_plaintext", data));
