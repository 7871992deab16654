//! Control-plane client: the WeHub-compatible callback protocol and wxagent's extensions
//! (spec/control-plane.md). Strict when sending, lenient when reading. Independent of the
//! web-protocol driver (DESIGN §3.2).
//!
//! - [`client`]: [`ControlClient`]: envelope POSTs (timeouts, signing, event ids), login,
//!   pull_task, reports, logout; the `machine_id` helpers.
//! - [`delivery`]: sends a session's spool in order until acknowledged, with backoff.
//! - [`envelope`]: request envelope, lenient ack, task/login/logout accessors.
//! - [`error`]: [`ControlError`] and which errors are retryable.
//! - [`reports`]: the `data` payload of every action the client sends (A.3, A.7, B).
//! - [`retry`]: capped, jittered retries bounded by attempts, deadline and cancellation.
//! - [`signature`]: login-ack signature (A.4), request signing (B.6), nonces.
//! - [`spool`]: the durable per-session report spool (B.5): append, front, ack, recovery.
//! - [`tasks`]: typed tasks (A.5) and push units, parsed with errors naming the field.
//! - [`upload`]: multipart uploads of QR codes and files (A.6).
//! - [`ws`]: WebSocket mode (A.8): reports as frames, pushed tasks, heartbeats, reconnects,
//!   HTTP whenever the socket is not open.
//! - [`lean`]: the HTTP/1.1 client used for plain `http://` control planes (no proxy).
//! - `lenient`: readers for numbers-as-strings and friends (private).

pub mod client;
pub mod delivery;
pub mod envelope;
pub mod error;
pub mod lean;
mod lenient;
pub mod reports;
pub mod retry;
pub mod signature;
pub mod spool;
pub mod tasks;
pub mod upload;
pub mod ws;

pub use client::{ControlClient, LoginAck, PostOptions, host_name, machine_id, process_machine_id};
pub use envelope::{Ack, ExitFlags, RawTask, Request, WebSocketExtension, action};
pub use error::ControlError;
pub use reports::Report;
pub use retry::{RetryPolicy, with_retry};
pub use tasks::{AtStyle, InviteMethod, PushUnit, Task, TaskError};
pub use upload::{Multipart, UploadAck};
