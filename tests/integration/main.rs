//! All integration and end-to-end tests, in one binary (one link). They need MariaDB,
//! Redis and moto's SQS server: `infra/dev.sh test` starts them.

mod audit;
mod browser;
mod cli;
mod consumer;
mod database_tls;
mod deploy;
mod erasure_abuse;
mod grants;
mod ingest;
mod jobs;
mod keys;
mod lambda_binaries;
mod lifecycle;
mod lists;
mod openapi;
mod queries;
mod reliability;
mod stack;
