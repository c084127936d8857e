//! Integration tests: one binary, against a real nisshi broker over TCP (see
//! `sluice_tests::brokers`), with guests built by `build.rs`.

mod api;
mod cli;
mod crash;
mod dashboard;
mod dev;
mod faults;
mod golden;
mod parquet;
mod pause;
mod pipeline;
mod records;
mod runtime;
mod serve;
mod server;
mod swap;
mod windows;
