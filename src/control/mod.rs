//! Control-plane client: the WeHub-compatible callback protocol and wxagent's extensions
//! (spec/control-plane.md). Strict when sending, lenient when reading. Independent of the
//! web-protocol driver (DESIGN §3.2).
//!
//! - [`envelope`]: request envelope, lenient ack, task/login/logout accessors.
//! - `lenient`: readers for numbers-as-strings and friends (private).

pub mod envelope;
mod lenient;

pub use envelope::{Ack, ExitFlags, RawTask, Request, WebSocketExtension, action};
