//! What the integration tests share; each test crate pulls it in with
//! `mod support;`:
//! - `home`: a throwaway SOVSEAL_HOME with a fixed master key for engines
//!   opened in process, and helpers over files, bytes and paths;
//! - `mount`: the shipped binaries as processes: a real mount in a private
//!   home, programs run in it, `sovseal` in any home, exits checked;
//! - `moto`: a real S3-compatible server (moto) on loopback;
//! - `postgres`: a real PostgreSQL server on a Unix socket;
//! - `cutfs`: a pass-through FUSE file system that can lose power;
//! - `metrics`: a mount's metrics file, read and waited for.

// Each test crate compiles all of this and uses only part of it.
#![allow(dead_code)]

pub mod cutfs;
pub mod home;
pub mod metrics;
pub mod moto;
pub mod mount;
pub mod postgres;
