//! The integration tests, one binary: a module per concern (one file each, below), all sharing
//! `common` (the bridge started as a process, an AMQP consumer, the fault proxy, the test
//! cluster). One binary links once; 29 of them were ~50 s of a clean build on 2 cores.
//!
//! cargo-nextest runs every test in a process of its own (`scripts/test`); `cargo test --test
//! suite -- MODULE::` runs one module's tests.

mod common;

mod acknowledgement;
mod architecture;
mod attack;
mod auth_cost;
mod bad_input;
mod cli;
mod cluster;
mod config_secrets;
mod consumers;
mod contract;
mod deploy;
mod faults;
mod footprint;
mod generic;
mod limits;
mod logging;
mod metrics;
mod providers_core;
mod providers_more;
mod returns;
mod send;
mod shutdown;
mod spool;
mod spool_age;
mod spool_damage;
mod spool_tool;
mod tls;
mod tools;
mod unrouted_queue;
