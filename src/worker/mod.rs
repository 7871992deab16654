//! One session (one account): lifecycle types, the driver loop, QR rendering, send pacing,
//! fetching task URLs, the foreground runner behind `wxagent --qr_session ID`, the pipe
//! protocol to the supervisor and polling for tasks through it.

pub mod bridge;
pub mod driver;
pub mod entry;
pub mod events;
pub mod fetch;
pub mod foreground;
pub mod ipc;
pub mod media;
pub mod memory;
pub mod ops;
pub mod pacing;
pub mod persist;
pub mod pull;
pub mod qr;
pub mod reports;
pub mod saver;
pub mod state;
pub mod supervised;
