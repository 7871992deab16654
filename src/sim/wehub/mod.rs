//! The reference control plane: a WeHub-compatible callback server (spec/control-plane.md parts
//! A and B, server side) with a JSON test-control API under `/__cp/` and a QR page at `/cp/`.
//!
//! Written from the spec only: nothing here imports `crate::control` or `crate::wechat`
//! (DESIGN §3.1), so a wire-format bug in the client cannot be mirrored here and cancel out.
//!
//! Files:
//! - [`server`]: the router (paths are fixed) and a standalone `serve` for tests.
//! - [`state`]: the shared handle; [`store`]: the records, queues and their memory caps;
//!   [`mode`]: the behaviour switches ([`Mode`]).
//! - [`envelope`]: lenient request parsing and the ack bodies.
//! - [`sign`]: the login md5 signature (A.4) and the request HMAC check (B.6).
//! - [`callback`], [`upload`], [`ws`]: the wire endpoints (HTTP callback, multipart upload,
//!   WebSocket mode).
//! - [`control`]: the test-control API; [`page`]: the human QR page.
//!
//! Memory caps (oldest records are dropped first; see the constants in [`store`]):
//! 100,000 callback requests and at most ~256 MiB of their bodies; 100,000 upload records;
//! 256 MiB of media bytes; 10,000 QR sessions (latest PNG each); 100,000 task records and
//! results; 100,000 queued tasks per wxid (queueing more is refused with 429); 10,000
//! WebSocket connection records.

pub mod callback;
pub mod control;
pub mod envelope;
pub mod mode;
pub mod page;
pub mod server;
pub mod sign;
pub mod state;
pub mod store;
pub mod upload;
pub mod ws;

pub use mode::{AutoReply, Mode, WebsocketMode};
pub use server::{router, serve};
pub use state::WehubState;
