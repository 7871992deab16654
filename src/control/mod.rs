//! Control-plane client: the WeHub-compatible callback protocol and wxagent's extensions
//! (spec/control-plane.md). Strict when sending, lenient when reading. Independent of the
//! web-protocol driver (DESIGN §3.2).
//!
//! - [`envelope`]: request envelope, lenient ack, task/login/logout accessors.
//! - [`reports`]: the `data` payload of every action the client sends (A.3, A.7, B).
//! - [`signature`]: login-ack signature (A.4), request signing (B.6), nonces.
//! - [`tasks`]: typed tasks (A.5) and push units, parsed with errors naming the field.
//! - `lenient`: readers for numbers-as-strings and friends (private).

pub mod envelope;
mod lenient;
pub mod reports;
pub mod signature;
pub mod tasks;

pub use envelope::{Ack, ExitFlags, RawTask, Request, WebSocketExtension, action};
pub use reports::Report;
pub use tasks::{AtStyle, InviteMethod, PushUnit, Task, TaskError};
