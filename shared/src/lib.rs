//! evtrack's shared crate: the domain (events, keys) and its adapters (MySQL, SQS, Redis),
//! used by every Lambda function and by the local stack.

pub mod config;
pub mod event;
pub mod http;
pub mod ids;
pub mod jobs;
pub mod keys;
pub mod limits;
pub mod model;
pub mod queue;
pub mod store;
pub mod telemetry;

pub use config::Config;
