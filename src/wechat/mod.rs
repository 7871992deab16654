//! The WeChat web-protocol client: everything one worker needs to keep one account online.

pub mod client;
pub mod contact;
pub mod cookies;
pub mod desktop;
pub mod error;
pub mod hosts;
pub mod login;
pub mod media;
pub mod message;
pub mod ops;
pub mod parse;
pub mod session;
pub mod sync;
pub(crate) mod sync_answer;
