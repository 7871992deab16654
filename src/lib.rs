//! wxagent: a per-machine agent that keeps personal WeChat accounts online over the web protocol
//! for a remote orchestrator (the WeHub-compatible "control plane").
//!
//! Module map (see `DESIGN.md` §2 in the shared design folder):
//! - `bench`: `wxagent bench`: density, latency, throughput and spawn scenarios against a
//!   simulator process on loopback (Unix only: it reads /proc).
//! - [`backoff`]: capped, jittered exponential backoff for every retry loop.
//! - [`cli`]: command-line definitions (clap).
//! - [`config`]: TOML file → raw table → validated [`config::Config`], every error collected.
//! - [`control`]: the control-plane client (WeHub callback protocol: envelopes, tasks, reports,
//!   signing, uploads).
//! - [`demo`]: `wxagent demo`: simulator, reference control plane, supervisor and a worker on
//!   loopback, walked through login, messages and logout with narration.
//! - [`exit`]: the documented exit codes shared by worker and supervisor.
//! - [`logging`]: tracing set-up.
//! - [`wechat`]: the web-protocol client for one account (login, init, contacts, sync, send).
//! - [`worker`]: one session: lifecycle enums, the driver loop, QR rendering, foreground runner.
//! - [`service`]: the service managers: systemd notify + watchdog, the Windows service.
//! - [`shutdown`]: the one shutdown path (signals → root cancellation token).
//! - [`stats`]: this process's activity counters (a worker's sync, messages, uploads) for the
//!   supervisor's status and metrics.
//! - [`supervisor`]: `wxagent run`: one worker process per session, owned, restarted and reaped.
//! - [`tls`]: the one TLS client configuration (native root certificates) a process's HTTP
//!   clients share.
//! - [`sim`]: the simulator of the WeChat web servers with its test-control API. It does not
//!   import [`wechat`] types: it writes its wire bodies from the spec (DESIGN §3.1).

pub mod alarm;
pub mod backoff;
#[cfg(unix)]
pub mod bench;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod exit;
pub mod logging;
pub mod service;
pub mod shutdown;
pub mod sim;
pub mod stats;
pub mod supervisor;
#[cfg(test)]
pub(crate) mod testutil;
pub mod tls;
pub mod wechat;
pub mod worker;
