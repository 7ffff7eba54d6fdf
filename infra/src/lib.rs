//! The `evtrack` command line: the local stack (`up`) and operator tasks.

pub mod commands;
pub mod export;
pub mod rejected;
pub mod stack;
pub mod toolbox;
