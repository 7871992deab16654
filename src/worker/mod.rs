//! One session (one account): lifecycle types, the driver loop, QR rendering and the
//! foreground runner behind `wxagent --qr_session ID`.

pub mod qr;
pub mod state;
