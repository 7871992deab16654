//! `wxagent bench`: performance scenarios (density, latency, throughput, spawn) run against the
//! simulator and reference control plane in a separate `wxagent sim` process on loopback, with a
//! real supervisor (`wxagent run`) and its workers.
//!
//! Files: `run` (dispatch, the `all` sequence, JSON output), `lab` (the processes, the accounts
//! and logged-in sessions), `procfs` (memory and CPU from /proc), `stats` (percentiles, the
//! table), and one file per scenario: `density`, `latency`, `throughput`, `spawn`.
//!
//! Every time that matters is taken on the simulator's one monotonic clock (`crate::sim::clock`):
//! injection and report arrival, task hand-out and QR upload, so no two clocks are compared.

mod density;
mod lab;
mod latency;
mod procfs;
mod run;
mod spawn;
mod stats;
mod throughput;

pub use run::run;
