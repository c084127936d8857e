//! Integration tests: one binary, against a real nisshi broker over TCP (see
//! `sluice_tests::brokers`), with guests built by `build.rs`.

mod api;
mod bench;
mod cli;
mod compose;
mod confine;
mod crash;
mod dashboard;
mod delta;
mod dev;
mod eos;
mod evil;
mod faults;
mod golden;
mod group;
mod guard;
mod join;
mod k8s;
mod layers;
mod metrics;
mod parquet;
mod pause;
mod pipeline;
mod postgres;
mod records;
mod repartition;
mod runtime;
mod s3;
mod secrets;
mod serve;
mod serve_file;
mod server;
mod source;
mod swap;
mod tasks;
mod windows;
