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

#[derive(Debug)]
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
    /// A saved session is being resumed; one step's outcome (`webwxinit`, `push_login`, `qr`).
    ResumeStep {
        step: &'static str,
        ok: bool,
        detail: String,
    },
    /// A push login waits for the phone's confirmation.
    PushLogin {
        uuid: String,
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
    /// A known group's member list changed (UserNames; `owner` "" when unknown).
    MembersChanged {
        room: String,
        owner: String,
        added: Vec<String>,
        removed: Vec<String>,
    },
    ContactRemoved {
        user_name: String,
    },
    /// The contact book was reloaded after a re-init.
    ContactsReloaded(Arc<ContactBook>),
    /// Everything emitted before this is safe with the owner (spooled, printed) once the
    /// owner answers; the driver waits for it before moving the SyncKey past those events.
    Barrier(Barrier),
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
    /// Any other account operation, answered with its result.
    Op {
        op: AccountOp,
        reply: oneshot::Sender<Result<OpResult, String>>,
    },
    /// Log the account out and end the session with this reason.
    Logout { reason: LogoutReason },
    /// The control plane refused the account: log it out and end as `ControlRefused`.
    Refused { detail: String },
}

/// Operations on the account besides texts. Contacts and groups are named by UserName, the own
/// wxid, or a unique remark / nickname / alias.
#[derive(Debug)]
pub enum AccountOp {
    /// Send a media message or a card-like message.
    SendMedia {
        to: String,
        media: OutgoingMedia,
    },
    RemoveMember {
        room: String,
        member: String,
    },
    /// Add a friend to a group; `direct: None` chooses by group size.
    AddMember {
        room: String,
        member: String,
        direct: Option<bool>,
    },
    /// Send a friend request (e.g. to a group member).
    AddFriend {
        user: String,
        greeting: String,
    },
    /// Accept a friend request with its ticket.
    AcceptFriend {
        user: String,
        ticket: String,
    },
    SetRemark {
        user: String,
        remark: String,
    },
    CreateGroup {
        members: Vec<String>,
        topic: String,
    },
    RenameGroup {
        room: String,
        name: String,
    },
    /// Fresh member lists for these groups.
    GroupDetails {
        rooms: Vec<String>,
    },
    /// Fresh details of one contact.
    UserDetails {
        user: String,
    },
    /// The current contact book.
    Contacts,
    /// The media behind a `file_index` of a received message.
    Download {
        file_index: String,
    },
}

/// An outgoing media message (its bytes already fetched and checked).
#[derive(Debug)]
pub enum OutgoingMedia {
    Image {
        bytes: Vec<u8>,
        name: String,
        content_type: String,
    },
    Gif {
        bytes: Vec<u8>,
        name: String,
    },
    Video {
        bytes: Vec<u8>,
        name: String,
    },
    File {
        bytes: Vec<u8>,
        name: String,
        content_type: String,
    },
    Link {
        title: String,
        desc: String,
        url: String,
        thumb_url: String,
    },
    AppXml {
        xml: String,
    },
}

/// What an [`AccountOp`] produced.
#[derive(Debug)]
pub enum OpResult {
    Done,
    Sent(SendReceipt),
    /// A created group's UserName.
    Group(String),
    /// Groups (with members) or a user, fresh from the server, and the book they updated.
    Contacts(Vec<Contact>, Arc<ContactBook>),
    Book(Arc<ContactBook>),
    File {
        bytes: Vec<u8>,
        name: String,
        content_type: String,
    },
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

/// The answer channel of [`WorkerEvent::Barrier`]; dropping it counts as "not safe".
#[derive(Debug)]
pub struct Barrier(pub tokio::sync::oneshot::Sender<()>);

impl Barrier {
    pub fn release(self) {
        let _ = self.0.send(());
    }
}
