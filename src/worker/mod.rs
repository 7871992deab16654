//! One session (one account): lifecycle types, the driver loop, QR rendering and the
//! foreground runner behind `wxagent --qr_session ID`.

pub mod driver;
pub mod events;
pub mod foreground;
pub mod qr;
pub mod state;
