//! The simulator: a faithful server of the WeChat web protocol (spec/wechat-web.md §10) on plain
//! HTTP, with a JSON test-control API under `/__sim/`. Written from the spec only: nothing here
//! imports `crate::wechat` (DESIGN §3.1).
//!
//! Files: `server` (listener, router, lifecycle), `state` (shared state, sessions, event logs,
//! QR logins), `accounts` (contact books, account specs, contact JSON), `login` (jslogin, login
//! poll, ticket exchange, push login, phone page), `contacts` (init, contact lists, oplog,
//! verifyuser, chat rooms), `sync` (synccheck, webwxsync), `send` (sends, revoke, logout),
//! `media` (uploads, downloads), `inject` (message injection), `control` (test-control API),
//! `faults` (fault injection, stats), `content` (message bodies), `assets` (images and stand-in
//! media), `http` (request/response plumbing), `ids` (identifier generators), `clock` (the monotonic clock `wxagent bench`
//! measures with).

mod accounts;
mod assets;
pub mod clock;
mod contacts;
mod content;
mod control;
mod faults;
mod http;
mod ids;
mod inject;
mod login;
mod media;
mod send;
mod server;
mod state;
/// Events the simulator keeps per session (the bench sizes its bursts by it).
pub(crate) use state::EVENT_LOG_CAP;
mod sync;
pub mod wehub;

pub use server::{SimHandle, SimOptions, run, start};
