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
    /// `mentions` (UserNames or the own wxid) are written as `@Name` + U+2005 in `style`.
    SendText {
        to: String,
        text: String,
        mentions: Vec<String>,
        style: MentionStyle,
        reply: oneshot::Sender<Result<SendReceipt, String>>,
    },
    /// Log the account out and end the session with this reason.
    Logout { reason: LogoutReason },
    /// The control plane refused the account: log it out and end as `ControlRefused`.
    Refused { detail: String },
}

/// Where `@Name` mentions go in a sent text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MentionStyle {
    /// Before the text.
    #[default]
    Prefix,
    /// Each `{$@}` in the text is replaced by the next mention, in order (mentions left over
    /// go before the text).
    Placeholder,
}

/// Writes `text` with `@names` (each followed by U+2005, as the phone does) in `style`.
pub fn compose_mentions(text: &str, names: &[String], style: MentionStyle) -> String {
    let at = |n: &String| format!("@{n}\u{2005}");
    match style {
        MentionStyle::Prefix => {
            let mut out: String = names.iter().map(at).collect();
            out.push_str(text);
            out
        }
        MentionStyle::Placeholder => {
            let mut rest = names.iter();
            let mut out = String::with_capacity(text.len());
            let mut parts = text.split("{$@}").peekable();
            while let Some(p) = parts.next() {
                out.push_str(p);
                if parts.peek().is_some()
                    && let Some(n) = rest.next()
                {
                    out.push_str(&at(n));
                }
            }
            let extra: String = rest.map(at).collect();
            extra + &out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_prefix_and_placeholder() {
        let names = vec!["Bob".to_owned(), "Carol".to_owned()];
        assert_eq!(
            compose_mentions("hi", &names, MentionStyle::Prefix),
            "@Bob\u{2005}@Carol\u{2005}hi"
        );
        assert_eq!(
            compose_mentions("a {$@} b {$@}!", &names, MentionStyle::Placeholder),
            "a @Bob\u{2005} b @Carol\u{2005}!"
        );
        assert_eq!(
            compose_mentions("only {$@}", &names, MentionStyle::Placeholder),
            "@Carol\u{2005}only @Bob\u{2005}"
        );
        assert_eq!(
            compose_mentions("none", &[], MentionStyle::Placeholder),
            "none"
        );
    }
}
