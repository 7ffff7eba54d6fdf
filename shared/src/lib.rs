//! evtrack's shared crate: the domain (events, keys) and its adapters (MySQL, SQS, Redis),
//! used by every Lambda function and by the local stack.

pub mod cohorts;
pub mod config;
pub mod event;
#[cfg(feature = "adapters")]
pub mod http;
pub mod ids;
#[cfg(feature = "adapters")]
pub mod jobs;
pub mod keys;
#[cfg(feature = "adapters")]
pub mod limits;
pub mod model;
pub mod queue;
pub mod sketch;
#[cfg(feature = "adapters")]
pub mod store;
#[cfg(feature = "adapters")]
pub mod telemetry;

pub use config::Config;

/// Every binary that links the adapters (the Lambda functions, `evtrack`, the tests) allocates
/// with mimalloc: under load glibc's malloc and free took 38 % of evtrack's CPU (BENCHMARKS.md,
/// 2026-12-02, later).
#[cfg(feature = "adapters")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
