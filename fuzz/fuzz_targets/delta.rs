//! cargo-fuzz target `delta`: the body of `target_delta` in tests/fuzz.rs,
//! on the raw input and on a seed mutated by it.

#![no_main]

#[path = "../../tests/fuzz.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::fuzz_one("delta", data));
