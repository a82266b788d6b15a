//! cargo-fuzz target `forgotten_bundle`: the body of `target_forgotten_bundle` in tests/fuzz.rs,
//! on the raw input and on a seed mutated by it.

#![no_main]

#[path = "../../tests/fuzz.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::fuzz_one("forgotten_bundle", data));
