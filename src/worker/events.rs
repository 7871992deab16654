//! What a session tells its owner ([`WorkerEvent`]) and what the owner can ask of it
//! ([`WorkerCommand`]). The foreground runner prints the events; the supervised worker turns
//! them into control-plane reports.

use super::state::{LogoutReason, Outcome, SessionState};
use crate::wechat::contact::{Contact, ContactBook};
use crate::wechat::message::Message;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The logged-in account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Stable id: the numeric Uin as a string (control-plane spec B.7).
    pub wxid: String,
    /// Session-scoped `@…` UserName.
    pub user_name: String,
    pub nickname: String,
    pub alias: String,
    pub head_img_url: String,
}

#[derive(Debug, Clone)]
pub enum WorkerEvent {
    State(SessionState),
    /// A QR code to show / upload. `png` is the rendered image.
    Qr {
        uuid: String,
        content: String,
        png: Arc<Vec<u8>>,
        refresh: u32,
    },
    QrExpired {
        refresh: u32,
    },
    Scanned,
    ScanCancelled,
    /// Logged in; the contact book is loaded.
    Online {
        account: Account,
        contacts: Arc<ContactBook>,
    },
    /// A message in either direction. `line` is a readable one-line rendering.
    Message {
        message: Box<Message>,
        line: String,
    },
    ContactAdded(Box<Contact>),
    ContactChanged(Box<Contact>),
    ContactRemoved {
        user_name: String,
    },
    /// The contact book was reloaded after a re-init.
    ContactsReloaded(Arc<ContactBook>),
    Ended(Outcome),
}

/// A message sent on request, with the server's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    pub to: String,
    pub msg_id: String,
    pub local_id: String,
}

#[derive(Debug)]
pub enum WorkerCommand {
    /// Send a text. `to` is a UserName, the own wxid, or a unique remark / nickname / alias.
    SendText {
        to: String,
        text: String,
        reply: oneshot::Sender<Result<SendReceipt, String>>,
    },
    /// Log the account out and end the session with this reason.
    Logout { reason: LogoutReason },
}
