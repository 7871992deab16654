//! Account operations behind [`AccountOp`]: each resolves the names it is given against the
//! contact book, calls the web client, and folds what the server returned back into the book.

use super::events::{AccountOp, OpResult, SendReceipt};
use super::media::{self as worker_media, MediaRef, MediaRefKind};
use crate::wechat::client::WebClient;
use crate::wechat::contact::{Contact, ContactBook, ContactKind};
use crate::wechat::ops::{AddMethod, INVITE_START_COUNT, VerifyOp};
use std::sync::Arc;

/// Resolves a contact or group reference: a UserName as is (`@…`, `@@…`, plain special names
/// the book knows), the own wxid, or a unique remark / nickname / alias.
pub fn resolve(client: &WebClient, book: &ContactBook, name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("an empty contact name".into());
    }
    if name.starts_with('@') || book.contains(name) || name == "filehelper" {
        return Ok(name.to_owned());
    }
    if name == client.uin() {
        return Ok(client.self_user_name());
    }
    match book.find_by_name(name).as_slice() {
        [one] => Ok(one.user_name.to_string()),
        [] => Err(format!("no contact or group named {name:?}")),
        many => Err(format!(
            "{} contacts are named {name:?}; use the UserName",
            many.len()
        )),
    }
}

fn resolve_group(client: &WebClient, book: &ContactBook, name: &str) -> Result<String, String> {
    let r = resolve(client, book, name)?;
    if !r.starts_with("@@") {
        return Err(format!("{name:?} is not a group"));
    }
    Ok(r)
}

/// Re-fetches groups or users and updates the book; returns the fresh entries.
pub async fn refresh(
    client: &WebClient,
    book: &mut ContactBook,
    names: &[String],
) -> Result<Vec<Contact>, String> {
    let me = book.self_user_name().to_owned();
    let mut out = Vec::new();
    for chunk in names.chunks(50) {
        let items: Vec<(String, String)> = chunk
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    book.get(n)
                        .map(|c| c.encry_chat_room_id.to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        let list = client
            .batch_get_contact(&items)
            .await
            .map_err(|e| e.to_string())?;
        for raw in list {
            let c = Contact::from_raw(raw, &me);
            book.upsert(c.clone());
            out.push(c);
        }
    }
    Ok(out)
}

/// The media of recently received messages by `file_index` (bounded; oldest forgotten first),
/// so task 9 can fetch them later.
pub struct MediaIndex {
    cap: usize,
    order: std::collections::VecDeque<String>,
    map: std::collections::HashMap<String, MediaRef>,
}

impl MediaIndex {
    pub fn new(cap: usize) -> MediaIndex {
        MediaIndex {
            cap,
            order: Default::default(),
            map: Default::default(),
        }
    }

    pub fn insert(&mut self, file_index: String, r: MediaRef) {
        if self.map.contains_key(&file_index) {
            return;
        }
        if self.order.len() == self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.map.remove(&old);
        }
        self.order.push_back(file_index.clone());
        self.map.insert(file_index, r);
    }

    /// The reference for a `file_index` (`<MsgType>:<MsgId>`). Images, voice and video can be
    /// fetched by id alone even when the message is no longer remembered (e.g. after a restart).
    pub fn get(&self, file_index: &str) -> Result<MediaRef, String> {
        if let Some(r) = self.map.get(file_index) {
            return Ok(r.clone());
        }
        let unknown = || format!("file_index {file_index:?} is not one this agent issued");
        let (t, id) = file_index.split_once(':').ok_or_else(unknown)?;
        let msg_type: i64 = t.parse().map_err(|_| unknown())?;
        let kind = match msg_type {
            3 => MediaRefKind::Image,
            47 => MediaRefKind::Emoticon,
            34 => MediaRefKind::Voice,
            43 | 62 => MediaRefKind::Video,
            _ => {
                return Err(format!(
                    "file_index {file_index:?}: the message is no longer known to this worker"
                ));
            }
        };
        Ok(MediaRef {
            kind,
            msg_type,
            msg_id: id.to_owned(),
            from: String::new(),
            media_id: String::new(),
            file_name: String::new(),
            encry_file_name: String::new(),
        })
    }
}

pub async fn perform(
    client: &WebClient,
    book: &mut ContactBook,
    media: &MediaIndex,
    op: AccountOp,
) -> Result<OpResult, String> {
    let err = |e: crate::wechat::error::WechatError| e.to_string();
    match op {
        AccountOp::RemoveMember { room, member } => {
            let room = resolve_group(client, book, &room)?;
            let member = resolve_member(client, book, &room, &member)?;
            client
                .remove_members(&room, std::slice::from_ref(&member))
                .await
                .map_err(err)?;
            Ok(OpResult::Done)
        }
        AccountOp::AddMember {
            room,
            member,
            direct,
        } => {
            let room = resolve_group(client, book, &room)?;
            let member = resolve(client, book, &member)?;
            let size = book
                .get(&room)
                .map(|g| g.members.len().max(g.member_count.max(0) as usize))
                .unwrap_or(0);
            let method = match direct {
                Some(true) => AddMethod::Direct,
                Some(false) => AddMethod::Invite,
                None if size > INVITE_START_COUNT => AddMethod::Invite,
                None => AddMethod::Direct,
            };
            client
                .add_members(&room, std::slice::from_ref(&member), method)
                .await
                .map_err(err)?;
            Ok(OpResult::Done)
        }
        AccountOp::AddFriend { user, greeting } => {
            // Group members who are not friends are known only by UserName.
            let user = if user.starts_with('@') {
                user
            } else {
                resolve(client, book, &user)?
            };
            client
                .verify_user(VerifyOp::SendRequest, &user, "", &greeting)
                .await
                .map_err(err)?;
            Ok(OpResult::Done)
        }
        AccountOp::AcceptFriend { user, ticket } => {
            if ticket.is_empty() {
                return Err("accepting a friend request needs its ticket (v2)".into());
            }
            client
                .verify_user(VerifyOp::Accept, &user, &ticket, "")
                .await
                .map_err(err)?;
            Ok(OpResult::Done)
        }
        AccountOp::SetRemark { user, remark } => {
            let user = resolve(client, book, &user)?;
            client.set_remark(&user, &remark).await.map_err(err)?;
            Ok(OpResult::Done)
        }
        AccountOp::CreateGroup { members, topic } => {
            if members.len() < 2 {
                return Err(format!(
                    "a group needs at least 2 other members, got {}",
                    members.len()
                ));
            }
            let resolved = members
                .iter()
                .map(|m| resolve(client, book, m))
                .collect::<Result<Vec<_>, _>>()?;
            let room = client.create_group(&resolved, &topic).await.map_err(err)?;
            let _ = refresh(client, book, std::slice::from_ref(&room)).await;
            Ok(OpResult::Group(room))
        }
        AccountOp::RenameGroup { room, name } => {
            let room = resolve_group(client, book, &room)?;
            client.rename_group(&room, &name).await.map_err(err)?;
            Ok(OpResult::Done)
        }
        AccountOp::GroupDetails { rooms } => {
            let rooms = rooms
                .iter()
                .map(|r| resolve_group(client, book, r))
                .collect::<Result<Vec<_>, _>>()?;
            let fresh = refresh(client, book, &rooms).await?;
            Ok(OpResult::Contacts(fresh, Arc::new(book.clone())))
        }
        AccountOp::UserDetails { user } => {
            let user = resolve(client, book, &user)?;
            let fresh = refresh(client, book, std::slice::from_ref(&user)).await?;
            if fresh.is_empty() {
                return Err(format!("the server knows no contact {user}"));
            }
            Ok(OpResult::Contacts(fresh, Arc::new(book.clone())))
        }
        AccountOp::Contacts => Ok(OpResult::Book(Arc::new(book.clone()))),
        AccountOp::SendMedia { to, media: m } => {
            let to = resolve(client, book, &to)?;
            let sent = worker_media::send_outgoing(client, &to, &m)
                .await
                .map_err(|e| e.to_string())?;
            Ok(OpResult::Sent(SendReceipt {
                to,
                msg_id: sent.msg_id,
                local_id: sent.local_id,
            }))
        }
        AccountOp::Download { file_index } => {
            let r = media.get(&file_index)?;
            let d = worker_media::download(client, &r)
                .await
                .map_err(|e| e.to_string())?;
            let name = worker_media::file_name_for(&r, &d);
            Ok(OpResult::File {
                bytes: d.bytes,
                name,
                content_type: d.content_type,
            })
        }
    }
}

/// A group member by UserName, or by group nickname / nickname within that group.
fn resolve_member(
    client: &WebClient,
    book: &ContactBook,
    room: &str,
    name: &str,
) -> Result<String, String> {
    if name.starts_with('@') {
        return Ok(name.to_owned());
    }
    if let Some(g) = book.get(room)
        && let Some(m) = g
            .members
            .iter()
            .find(|m| &*m.display_name == name || &*m.nick_name == name)
    {
        return Ok(m.user_name.to_string());
    }
    let r = resolve(client, book, name)?;
    if book.get(&r).is_some_and(|c| c.kind == ContactKind::Group) {
        return Err(format!("{name:?} is a group, not a member"));
    }
    Ok(r)
}
