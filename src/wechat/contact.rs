//! The contact model: lenient views of the server's contact objects (spec §6), their
//! classification, and the per-account [`ContactBook`] fed by webwxinit, webwxgetcontact,
//! webwxbatchgetcontact and webwxsync.
//!
//! Contact objects differ per endpoint and era (ModContactList entries lack `Uin` and
//! `EncryChatRoomId`, numbers sometimes arrive as strings), so the raw views default every field
//! and the book merges updates instead of replacing entries blindly.

use serde::{Deserialize, Serialize};

use crate::wechat::parse::{decode_entities, lenient, replace_emoji_spans};

/// Plain-name special accounts (spec §6.1). They never start with `@`.
pub const SPECIAL_USERS: &[&str] = &[
    "filehelper",
    "newsapp",
    "fmessage",
    "weixin",
    "weibo",
    "qqmail",
    "tmessage",
    "qmessage",
    "qqsync",
    "floatbottle",
    "lbsapp",
    "shakeapp",
    "medianote",
    "qqfriend",
    "readerapp",
    "blogapp",
    "facebookapp",
    "masssendapp",
    "meishiapp",
    "feedsapp",
    "voip",
    "blogappweixin",
    "brandsessionholder",
    "weixinreminder",
    "officialaccounts",
    "notification_messages",
    "wxitil",
    "userexperience_alarm",
    "wxid_novlwrv3lqwv11",
    "gh_22b87fa7cb3c",
];

/// `ContactFlag` bit 1 (CONTACT): the account is in the address book (spec §6.4).
pub const CONTACT_FLAG_CONTACT: i64 = 1;
/// `VerifyFlag` bit 8 (BIZ_BRAND): an official account (spec §6.4).
pub const VERIFY_FLAG_OFFICIAL: i64 = 8;

/// True for group UserNames: `@@…` in the web protocol, `…@chatroom` in XML.
pub fn is_group_name(user_name: &str) -> bool {
    user_name.starts_with("@@") || user_name.ends_with("@chatroom")
}

/// Lenient view of a contact object: webwxinit `ContactList` and `User`, webwxgetcontact
/// `MemberList`, webwxbatchgetcontact `ContactList`, webwxsync `ModContactList`. Every field is
/// optional; numbers are accepted as numbers or numeric strings; unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RawContact {
    #[serde(deserialize_with = "lenient::i64")]
    pub uin: i64,
    #[serde(deserialize_with = "lenient::string")]
    pub user_name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub nick_name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub head_img_url: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub contact_flag: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub member_count: i64,
    #[serde(deserialize_with = "lenient::vec")]
    pub member_list: Vec<RawMember>,
    #[serde(deserialize_with = "lenient::string")]
    pub remark_name: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub hide_input_bar_flag: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub sex: i64,
    #[serde(deserialize_with = "lenient::string")]
    pub signature: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub verify_flag: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub owner_uin: i64,
    #[serde(rename = "PYInitial", deserialize_with = "lenient::string")]
    pub py_initial: String,
    #[serde(rename = "PYQuanPin", deserialize_with = "lenient::string")]
    pub py_quan_pin: String,
    #[serde(rename = "RemarkPYInitial", deserialize_with = "lenient::string")]
    pub remark_py_initial: String,
    #[serde(rename = "RemarkPYQuanPin", deserialize_with = "lenient::string")]
    pub remark_py_quan_pin: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub star_friend: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub app_account_flag: i64,
    /// Spelled this way by the server.
    #[serde(deserialize_with = "lenient::i64")]
    pub statues: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub attr_status: i64,
    #[serde(deserialize_with = "lenient::string")]
    pub province: String,
    #[serde(deserialize_with = "lenient::string")]
    pub city: String,
    #[serde(deserialize_with = "lenient::string")]
    pub alias: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub sns_flag: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub uni_friend: i64,
    #[serde(deserialize_with = "lenient::string")]
    pub display_name: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub chat_room_id: i64,
    #[serde(deserialize_with = "lenient::string")]
    pub key_word: String,
    #[serde(deserialize_with = "lenient::string")]
    pub encry_chat_room_id: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub is_owner: i64,
    /// Group owner's UserName (ModContactList, some batchgetcontact answers).
    #[serde(deserialize_with = "lenient::string")]
    pub chat_room_owner: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub contact_type: i64,
    #[serde(deserialize_with = "lenient::i64")]
    pub head_img_update_flag: i64,
    /// Self `User` only.
    #[serde(deserialize_with = "lenient::i64")]
    pub web_wx_plugin_switch: i64,
    /// Self `User` only.
    #[serde(deserialize_with = "lenient::i64")]
    pub head_img_flag: i64,
}

/// The self `User` of webwxinit has the contact shape (minus group fields).
pub type RawUser = RawContact;

/// Lenient view of a group member object (spec §6.3).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RawMember {
    #[serde(deserialize_with = "lenient::i64")]
    pub uin: i64,
    #[serde(deserialize_with = "lenient::string")]
    pub user_name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub nick_name: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub attr_status: i64,
    #[serde(rename = "PYInitial", deserialize_with = "lenient::string")]
    pub py_initial: String,
    #[serde(rename = "PYQuanPin", deserialize_with = "lenient::string")]
    pub py_quan_pin: String,
    #[serde(rename = "RemarkPYInitial", deserialize_with = "lenient::string")]
    pub remark_py_initial: String,
    #[serde(rename = "RemarkPYQuanPin", deserialize_with = "lenient::string")]
    pub remark_py_quan_pin: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub member_status: i64,
    /// The member's nickname in this group.
    #[serde(deserialize_with = "lenient::string")]
    pub display_name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub key_word: String,
}

/// What kind of account a contact is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactKind {
    Friend,
    Group,
    /// Official (MP) account.
    Official,
    /// A plain-name system account (`filehelper`, `fmessage`, …).
    Special,
    /// The logged-in account itself.
    SelfUser,
    /// Known only through a group or a chat, not in the address book.
    #[default]
    Stranger,
}

/// Classifies a contact object (spec §6.1, §6.4). Order matters: a group is a group whatever its
/// flags; the own account is never a stranger; a person without the CONTACT bit is not a friend.
pub fn classify(raw: &RawContact, self_user_name: &str) -> ContactKind {
    let name = raw.user_name.as_str();
    if is_group_name(name) {
        ContactKind::Group
    } else if !self_user_name.is_empty() && name == self_user_name {
        ContactKind::SelfUser
    } else if !name.starts_with('@') && SPECIAL_USERS.contains(&name) {
        ContactKind::Special
    } else if raw.verify_flag & VERIFY_FLAG_OFFICIAL != 0 {
        ContactKind::Official
    } else if name.starts_with('@') && raw.contact_flag & CONTACT_FLAG_CONTACT == 0 {
        ContactKind::Stranger
    } else {
        ContactKind::Friend
    }
}

/// Converts server name text (NickName, RemarkName, DisplayName) to plain text: emoji spans
/// become characters and HTML entities are decoded.
pub fn unescape_name(s: &str) -> String {
    decode_entities(&replace_emoji_spans(s)).into_owned()
}

/// [`unescape_name`] into an exact-size box: a worker holds thousands of these for its whole
/// life, so no spare capacity.
fn name_box(s: &str) -> Box<str> {
    unescape_name(s).into_boxed_str()
}

/// One member of a group, names unescaped. Only what reports and name resolution read is kept
/// (a worker holds one per member of every group).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub user_name: Box<str>,
    pub nick_name: Box<str>,
    /// The member's nickname in this group ("" when not set).
    pub display_name: Box<str>,
    pub uin: i64,
}

impl GroupMember {
    pub fn from_raw(raw: RawMember) -> GroupMember {
        GroupMember {
            nick_name: name_box(&raw.nick_name),
            display_name: name_box(&raw.display_name),
            user_name: raw.user_name.into_boxed_str(),
            uin: raw.uin,
        }
    }

    /// Group nickname, else nickname, else UserName.
    pub fn name(&self) -> &str {
        [&self.display_name, &self.nick_name]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or(&self.user_name)
    }
}

/// A group's members from its raw list, in a fresh allocation of exactly their number: collected
/// in place, the raw list's bigger buffer would be kept (shrunk in place at best, leaving a hole
/// in the heap) for as long as the group is known.
fn members_of(raw: Vec<RawMember>) -> Box<[GroupMember]> {
    let n = raw.iter().filter(|m| !m.user_name.is_empty()).count();
    let mut members = Vec::with_capacity(n);
    members.extend(
        raw.into_iter()
            .filter(|m| !m.user_name.is_empty())
            .map(GroupMember::from_raw),
    );
    members.into_boxed_slice()
}

/// Path of a person's avatar (spec §6: `HeadImgUrl`), rebuilt from the seq and UserName.
const ICON_PATH: &str = "/cgi-bin/mmwebwx-bin/webwxgeticon";
/// Path of a group's avatar.
const GROUP_ICON_PATH: &str = "/cgi-bin/mmwebwx-bin/webwxgetheadimg";

/// A contact's avatar reference, without the session's `skey` (a secret, DESIGN §3.7, and the
/// only part that changes between sessions). The usual `<path>?seq=N&username=<UserName>` form is
/// kept as its seq alone and rebuilt on demand: the UserName is already in the contact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadImg {
    #[default]
    None,
    /// `webwxgeticon?seq=N&username=<UserName>`.
    Icon(u64),
    /// `webwxgetheadimg?seq=N&username=<UserName>`.
    GroupIcon(u64),
    /// Any other reference, as sent minus the `skey`.
    Other(Box<str>),
}

impl HeadImg {
    /// Compacts a server `HeadImgUrl` of the contact `user_name`.
    pub fn from_url(url: &str, user_name: &str) -> HeadImg {
        let url = strip_skey(url);
        if url.is_empty() {
            return HeadImg::None;
        }
        let compact = url.split_once("?seq=").and_then(|(path, rest)| {
            let (seq, name) = rest.split_once("&username=")?;
            let seq: u64 = seq.parse().ok()?;
            let h = match path {
                ICON_PATH => HeadImg::Icon(seq),
                GROUP_ICON_PATH => HeadImg::GroupIcon(seq),
                _ => return None,
            };
            // Only when rebuilding gives back exactly these bytes (no leading zeros, no other
            // parameters, the contact's own name).
            (name == user_name && h.url(user_name) == url).then_some(h)
        });
        compact.unwrap_or_else(|| HeadImg::Other(url.into_boxed_str()))
    }

    /// The reference as the server gave it, minus the `skey` ("" when unknown).
    pub fn url(&self, user_name: &str) -> String {
        match self {
            HeadImg::None => String::new(),
            HeadImg::Icon(seq) => format!("{ICON_PATH}?seq={seq}&username={user_name}"),
            HeadImg::GroupIcon(seq) => format!("{GROUP_ICON_PATH}?seq={seq}&username={user_name}"),
            HeadImg::Other(s) => s.to_string(),
        }
    }

    pub fn is_none(&self) -> bool {
        *self == HeadImg::None
    }
}

/// A URL without its `skey` parameter (any case), the rest in order.
pub fn strip_skey(url: &str) -> String {
    let Some((path, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.to_ascii_lowercase().starts_with("skey="))
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// A contact as the agent sees it: names unescaped, kind classified, group members attached.
/// Only fields the agent reads are kept, as exact-size boxes: a worker holds one per contact for
/// its whole life, hundreds of workers per machine. (Signature, flags, pinyin and KeyWord are
/// read during classification and then dropped.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub user_name: Box<str>,
    pub nick_name: Box<str>,
    pub remark_name: Box<str>,
    pub alias: Box<str>,
    pub province: Box<str>,
    pub city: Box<str>,
    pub head_img: HeadImg,
    pub uin: i64,
    /// The server's count; `members` may be shorter until the group is fetched in full.
    pub member_count: i64,
    pub members: Box<[GroupMember]>,
    /// Group owner's UserName ("" when unknown).
    pub owner_user_name: Box<str>,
    pub encry_chat_room_id: Box<str>,
    pub sex: i64,
    pub kind: ContactKind,
}

impl Contact {
    pub fn from_raw(raw: RawContact, self_user_name: &str) -> Contact {
        let kind = classify(&raw, self_user_name);
        Contact {
            nick_name: name_box(&raw.nick_name),
            remark_name: name_box(&raw.remark_name),
            alias: raw.alias.into_boxed_str(),
            province: name_box(&raw.province),
            city: name_box(&raw.city),
            head_img: HeadImg::from_url(&raw.head_img_url, &raw.user_name),
            sex: raw.sex,
            uin: raw.uin,
            kind,
            member_count: raw.member_count,
            members: members_of(raw.member_list),
            owner_user_name: raw.chat_room_owner.into_boxed_str(),
            encry_chat_room_id: raw.encry_chat_room_id.into_boxed_str(),
            user_name: raw.user_name.into_boxed_str(),
        }
    }

    /// The avatar reference without the `skey` ("" when unknown).
    pub fn head_img_url(&self) -> String {
        self.head_img.url(&self.user_name)
    }

    /// Remark name, else nickname, else UserName.
    pub fn display_name(&self) -> &str {
        [&self.remark_name, &self.nick_name]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or(&self.user_name)
    }

    pub fn is_group(&self) -> bool {
        self.kind == ContactKind::Group
    }

    pub fn member(&self, user_name: &str) -> Option<&GroupMember> {
        self.members.iter().find(|m| &*m.user_name == user_name)
    }

    /// Fields some endpoints leave out (ModContactList has no Uin or EncryChatRoomId,
    /// getcontact pages carry groups without members) are kept from what was known.
    fn merge_missing_from(&mut self, old: &Contact) {
        if self.members.is_empty() && !old.members.is_empty() {
            // A group cannot really have no members (the account itself is one), so an empty
            // list means "not sent", whatever MemberCount says.
            self.members = old.members.clone();
            if self.member_count == 0 {
                self.member_count = old.member_count;
            }
        }
        if self.uin == 0 {
            self.uin = old.uin;
        }
        if self.head_img.is_none() {
            self.head_img.clone_from(&old.head_img);
        }
        for (new, old) in [
            (&mut self.encry_chat_room_id, &old.encry_chat_room_id),
            (&mut self.owner_user_name, &old.owner_user_name),
        ] {
            if new.is_empty() {
                new.clone_from(old);
            }
        }
    }
}

/// What [`ContactBook::upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Added,
    Changed,
    Unchanged,
    /// The entry had no UserName and was dropped.
    Ignored,
}

/// Everything the account knows about its contacts. The self user is held apart but answers
/// [`get`](Self::get) like any other contact. Iteration is in UserName order.
///
/// The contacts are one vector sorted by UserName (binary search; the name is not stored a
/// second time as a map key), grown by small steps rather than doubling, so a long-lived worker
/// carries little slack.
#[derive(Debug, Clone)]
pub struct ContactBook {
    self_user: Contact,
    contacts: Vec<Contact>,
}

impl ContactBook {
    pub fn new(mut self_user: Contact) -> Self {
        self_user.kind = ContactKind::SelfUser;
        Self {
            self_user,
            contacts: Vec::new(),
        }
    }

    pub fn self_user(&self) -> &Contact {
        &self.self_user
    }

    pub fn self_user_name(&self) -> &str {
        &self.self_user.user_name
    }

    fn position(&self, user_name: &str) -> Result<usize, usize> {
        self.contacts
            .binary_search_by(|c| (*c.user_name).cmp(user_name))
    }

    /// Adds or updates a contact, keeping known fields the update does not carry (see
    /// [`Contact`]'s merge rules: members of a group, Uin, EncryChatRoomId, avatar, owner).
    pub fn upsert(&mut self, mut c: Contact) -> Upsert {
        if c.user_name.is_empty() {
            return Upsert::Ignored;
        }
        if c.user_name == self.self_user.user_name {
            c.kind = ContactKind::SelfUser;
            c.merge_missing_from(&self.self_user);
            if c == self.self_user {
                return Upsert::Unchanged;
            }
            self.self_user = c;
            return Upsert::Changed;
        }
        match self.position(&c.user_name) {
            Err(at) => {
                if self.contacts.len() == self.contacts.capacity() {
                    // An eighth more, not double: the book is mostly built at login and then
                    // changes by one contact at a time.
                    self.contacts.reserve_exact(self.contacts.len() / 8 + 4);
                }
                self.contacts.insert(at, c);
                Upsert::Added
            }
            Ok(at) => {
                let old = &mut self.contacts[at];
                c.merge_missing_from(old);
                if *old == c {
                    Upsert::Unchanged
                } else {
                    *old = c;
                    Upsert::Changed
                }
            }
        }
    }

    /// [`upsert`](Self::upsert) for a whole contact list (webwxgetcontact, webwxinit): sorts the
    /// new entries in at once instead of shifting the vector for each one, and trims the slack.
    pub fn upsert_all(&mut self, list: impl IntoIterator<Item = Contact>) {
        let mut added = Vec::new();
        for c in list {
            if c.user_name.is_empty() {
                continue;
            }
            if c.user_name != self.self_user.user_name && self.position(&c.user_name).is_err() {
                added.push(c);
            } else {
                self.upsert(c);
            }
        }
        // A list may name a contact twice; the later entry is merged over the earlier one.
        added.sort_by(|a, b| a.user_name.cmp(&b.user_name));
        let mut merged: Vec<Contact> = Vec::with_capacity(self.contacts.len() + added.len());
        let mut old = std::mem::take(&mut self.contacts).into_iter().peekable();
        for c in added {
            while let Some(o) = old.next_if(|o| o.user_name < c.user_name) {
                merged.push(o);
            }
            match merged.last_mut() {
                Some(last) if last.user_name == c.user_name => {
                    let mut c = c;
                    c.merge_missing_from(last);
                    *last = c;
                }
                _ => merged.push(c),
            }
        }
        merged.extend(old);
        merged.shrink_to_fit();
        self.contacts = merged;
    }

    /// Removes a contact (DelContactList). The self user cannot be removed.
    pub fn remove(&mut self, user_name: &str) -> Option<Contact> {
        let at = self.position(user_name).ok()?;
        Some(self.contacts.remove(at))
    }

    pub fn get(&self, user_name: &str) -> Option<&Contact> {
        if user_name == &*self.self_user.user_name {
            return Some(&self.self_user);
        }
        self.position(user_name).ok().map(|at| &self.contacts[at])
    }

    pub fn contains(&self, user_name: &str) -> bool {
        self.get(user_name).is_some()
    }

    fn all(&self) -> impl Iterator<Item = &Contact> {
        std::iter::once(&self.self_user).chain(self.contacts.iter())
    }

    /// Contacts (self included) whose remark name, nickname or alias equals `name`.
    pub fn find_by_name(&self, name: &str) -> Vec<&Contact> {
        if name.is_empty() {
            return Vec::new();
        }
        self.all()
            .filter(|c| &*c.remark_name == name || &*c.nick_name == name || &*c.alias == name)
            .collect()
    }

    fn of_kind(&self, kind: ContactKind) -> impl Iterator<Item = &Contact> {
        self.contacts.iter().filter(move |c| c.kind == kind)
    }

    pub fn friends(&self) -> impl Iterator<Item = &Contact> {
        self.of_kind(ContactKind::Friend)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Contact> {
        self.of_kind(ContactKind::Group)
    }

    pub fn officials(&self) -> impl Iterator<Item = &Contact> {
        self.of_kind(ContactKind::Official)
    }

    pub fn specials(&self) -> impl Iterator<Item = &Contact> {
        self.of_kind(ContactKind::Special)
    }

    pub fn strangers(&self) -> impl Iterator<Item = &Contact> {
        self.of_kind(ContactKind::Stranger)
    }

    pub fn group_member(&self, room: &str, user: &str) -> Option<&GroupMember> {
        self.get(room)?.member(user)
    }

    /// Groups whose member list is empty or shorter than their MemberCount: candidates for
    /// webwxbatchgetcontact.
    pub fn groups_needing_members(&self) -> Vec<String> {
        self.groups()
            .filter(|g| {
                g.members.is_empty()
                    || i64::try_from(g.members.len()).unwrap_or(i64::MAX) < g.member_count
            })
            .map(|g| g.user_name.to_string())
            .collect()
    }

    /// A name for a UserName: the contact's display name, else the UserName itself.
    pub fn display_name_of<'a>(&'a self, user_name: &'a str) -> &'a str {
        self.get(user_name)
            .map(Contact::display_name)
            .unwrap_or(user_name)
    }

    /// How a sender appears in a group: the address-book remark if any, else the group nickname,
    /// nickname, contact name, or the UserName.
    pub fn member_display_name<'a>(&'a self, room: &str, user: &'a str) -> &'a str {
        if let Some(c) = self.get(user)
            && !c.remark_name.is_empty()
        {
            return &c.remark_name;
        }
        if let Some(m) = self.group_member(room, user) {
            let n = m.name();
            if n != &*m.user_name {
                return n;
            }
        }
        self.display_name_of(user)
    }

    /// Number of contacts, the self user not counted.
    pub fn len(&self) -> usize {
        self.contacts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SELF: &str = "@f0c04abe389590b02d91684d99584439";
    const ROOM: &str = "@@0d9a1e5c0e7a1d0f9d6c0b2a9e1f3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";

    fn raw(json: &str) -> RawContact {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn contact(json: &str) -> Contact {
        Contact::from_raw(raw(json), SELF)
    }

    /// A webwxinit `User` as in spec §3.5 (CAP18).
    fn self_user() -> Contact {
        contact(&format!(
            r#"{{"Uin":176666155,"UserName":"{SELF}","NickName":"Me<span class=\"emoji emoji1f604\"></span>",
            "HeadImgUrl":"/cgi-bin/mmwebwx-bin/webwxgeticon?seq=1264610125&username={SELF}&skey=@crypt_x",
            "RemarkName":"","PYInitial":"","PYQuanPin":"","RemarkPYInitial":"","RemarkPYQuanPin":"","HideInputBarFlag":0,
            "StarFriend":0,"Sex":1,"Signature":"sig","AppAccountFlag":0,"VerifyFlag":0,"ContactFlag":0,
            "WebWxPluginSwitch":0,"HeadImgFlag":1,"SnsFlag":17}}"#
        ))
    }

    #[test]
    fn raw_contact_full_object() {
        let r = raw(
            r#"{"Uin":0,"UserName":"@abc","NickName":"Bob &amp; Co","HeadImgUrl":"/cgi-bin/mmwebwx-bin/webwxgeticon?seq=1&username=@abc&skey=",
            "ContactFlag":3,"MemberCount":0,"MemberList":[],"RemarkName":"Bobby","HideInputBarFlag":0,"Sex":1,
            "Signature":"line1<br/>line2","VerifyFlag":0,"OwnerUin":0,"PYInitial":"BOB","PYQuanPin":"bob",
            "RemarkPYInitial":"BOBBY","RemarkPYQuanPin":"bobby","StarFriend":0,"AppAccountFlag":0,"Statues":0,
            "AttrStatus":33656933,"Province":"广东","City":"深圳","Alias":"bob_w","SnsFlag":17,"UniFriend":0,
            "DisplayName":"","ChatRoomId":0,"KeyWord":"","EncryChatRoomId":"","IsOwner":0,"Extra":{"x":1}}"#,
        );
        assert_eq!(r.py_initial, "BOB");
        assert_eq!(r.remark_py_quan_pin, "bobby");
        assert_eq!(r.attr_status, 33656933);
        let c = Contact::from_raw(r, SELF);
        assert_eq!(c.kind, ContactKind::Friend);
        assert_eq!(&*c.nick_name, "Bob & Co");
        assert_eq!(c.display_name(), "Bobby");
        assert_eq!(
            (&*c.province, &*c.city, &*c.alias),
            ("广东", "深圳", "bob_w")
        );
    }

    #[test]
    fn raw_contact_is_lenient() {
        let r = raw(
            r#"{"UserName":"@@g","Uin":"42","MemberCount":"3","Sex":null,"VerifyFlag":"x","NickName":12,
               "MemberList":[{"UserName":"@m1","Uin":"0","AttrStatus":"5","DisplayName":"D<span class=\"emoji emoji1f1e81f1f3\"></span>"},
                             "garbage", 7, {"UserName":"@m2","NickName":null}]}"#,
        );
        assert_eq!((r.uin, r.member_count, r.sex, r.verify_flag), (42, 3, 0, 0));
        assert_eq!(&*r.nick_name, "12");
        assert_eq!(r.member_list.len(), 2);
        assert_eq!(r.member_list[0].attr_status, 5);
        let c = Contact::from_raw(r, SELF);
        assert_eq!(&*c.members[0].display_name, "D🇨🇳");
        assert_eq!(c.members[1].name(), "@m2");
        let empty = raw("{}");
        assert_eq!(empty, RawContact::default());
        let c = raw(r#"{"UserName":"@x","MemberList":null}"#);
        assert!(c.member_list.is_empty());
        let c = raw(r#"{"UserName":"@x","MemberList":{"a":1}}"#);
        assert!(c.member_list.is_empty());
    }

    #[test]
    fn classification() {
        let cases = [
            (
                r#"{"UserName":"@@abc","VerifyFlag":8,"ContactFlag":0}"#,
                ContactKind::Group,
            ),
            (r#"{"UserName":"12345@chatroom"}"#, ContactKind::Group),
            (
                r#"{"UserName":"filehelper","ContactFlag":0}"#,
                ContactKind::Special,
            ),
            (r#"{"UserName":"fmessage"}"#, ContactKind::Special),
            (
                r#"{"UserName":"weixin","VerifyFlag":56}"#,
                ContactKind::Special,
            ),
            (
                r#"{"UserName":"@mp","VerifyFlag":8,"ContactFlag":3}"#,
                ContactKind::Official,
            ),
            (
                r#"{"UserName":"@mp","VerifyFlag":24,"ContactFlag":0}"#,
                ContactKind::Official,
            ),
            (
                r#"{"UserName":"@mp","VerifyFlag":136}"#,
                ContactKind::Official,
            ),
            (
                r#"{"UserName":"@friend","ContactFlag":1}"#,
                ContactKind::Friend,
            ),
            (
                r#"{"UserName":"@friend","ContactFlag":2051}"#,
                ContactKind::Friend,
            ),
            (
                r#"{"UserName":"@friend","ContactFlag":34819}"#,
                ContactKind::Friend,
            ),
            (
                r#"{"UserName":"@member","ContactFlag":0}"#,
                ContactKind::Stranger,
            ),
            (
                r#"{"UserName":"@chatonly","ContactFlag":2}"#,
                ContactKind::Stranger,
            ),
            (
                &format!(r#"{{"UserName":"{SELF}","ContactFlag":0}}"#),
                ContactKind::SelfUser,
            ),
        ];
        for (json, want) in cases {
            assert_eq!(classify(&raw(json), SELF), want, "{json}");
        }
        // Without a known self name nothing is SelfUser.
        assert_eq!(
            classify(&raw(r#"{"UserName":"@x","ContactFlag":1}"#), ""),
            ContactKind::Friend
        );
        assert_eq!(
            classify(&raw(r#"{"UserName":""}"#), ""),
            ContactKind::Friend
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            unescape_name("A&amp;B <span class=\"emoji emoji1f604\"></span>&#x4E2D;&lt;"),
            "A&B 😄中<"
        );
        let c = contact(r#"{"UserName":"@x","NickName":"","RemarkName":""}"#);
        assert_eq!(c.display_name(), "@x");
        let c = contact(r#"{"UserName":"@x","NickName":"Nick","RemarkName":""}"#);
        assert_eq!(c.display_name(), "Nick");
        assert_eq!(&*self_user().nick_name, "Me😄");
    }

    fn group(members: &[(&str, &str, &str)], count: i64) -> Contact {
        let list: Vec<String> = members
            .iter()
            .map(|(u, n, d)| {
                format!(r#"{{"UserName":"{u}","NickName":"{n}","DisplayName":"{d}","Uin":0}}"#)
            })
            .collect();
        contact(&format!(
            r#"{{"UserName":"{ROOM}","NickName":"Team","MemberCount":{count},"MemberList":[{}],"EncryChatRoomId":"@e1","ChatRoomOwner":"@a"}}"#,
            list.join(",")
        ))
    }

    #[test]
    fn book_upsert_and_queries() {
        let mut book = ContactBook::new(self_user());
        assert_eq!(book.self_user().kind, ContactKind::SelfUser);
        assert_eq!(book.get(SELF).unwrap().uin, 176666155);
        assert!(book.is_empty());

        assert_eq!(
            book.upsert(contact(
                r#"{"UserName":"@bob","NickName":"Bob","ContactFlag":3,"Alias":"bobw"}"#
            )),
            Upsert::Added
        );
        assert_eq!(
            book.upsert(contact(
                r#"{"UserName":"@bob","NickName":"Bob","ContactFlag":3,"Alias":"bobw"}"#
            )),
            Upsert::Unchanged
        );
        assert_eq!(book.upsert(contact(r#"{"UserName":"@bob","NickName":"Bob","RemarkName":"B","ContactFlag":3,"Alias":"bobw"}"#)), Upsert::Changed);
        assert_eq!(
            book.upsert(contact(r#"{"UserName":"","NickName":"ghost"}"#)),
            Upsert::Ignored
        );
        book.upsert(contact(
            r#"{"UserName":"@mp","NickName":"News","VerifyFlag":24}"#,
        ));
        book.upsert(contact(
            r#"{"UserName":"filehelper","NickName":"File Transfer"}"#,
        ));
        book.upsert(contact(
            r#"{"UserName":"@s","NickName":"Bob","ContactFlag":0}"#,
        ));
        book.upsert(group(
            &[(SELF, "Me", ""), ("@bob", "Bob", "Bobby in team")],
            2,
        ));
        assert_eq!(book.len(), 5);

        let names = |it: &mut dyn Iterator<Item = &Contact>| {
            it.map(|c| c.user_name.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(names(&mut book.friends()), ["@bob"]);
        assert_eq!(names(&mut book.groups()), [ROOM]);
        assert_eq!(names(&mut book.officials()), ["@mp"]);
        assert_eq!(names(&mut book.specials()), ["filehelper"]);
        assert_eq!(names(&mut book.strangers()), ["@s"]);

        let by_nick: Vec<_> = book
            .find_by_name("Bob")
            .iter()
            .map(|c| &*c.user_name)
            .collect();
        assert_eq!(by_nick, ["@bob", "@s"]);
        assert_eq!(book.find_by_name("B").len(), 1);
        assert_eq!(book.find_by_name("bobw").len(), 1);
        assert_eq!(&*book.find_by_name("Me😄")[0].user_name, SELF);
        assert!(book.find_by_name("").is_empty());
        assert!(book.find_by_name("nobody").is_empty());

        assert_eq!(
            &*book.group_member(ROOM, "@bob").unwrap().display_name,
            "Bobby in team"
        );
        assert!(book.group_member(ROOM, "@zed").is_none());
        assert!(book.group_member("@@none", "@bob").is_none());
        assert_eq!(book.member_display_name(ROOM, "@bob"), "B", "remark wins");
        assert_eq!(book.member_display_name(ROOM, SELF), "Me");
        assert_eq!(book.member_display_name(ROOM, "@zed"), "@zed");
        assert_eq!(book.display_name_of("@mp"), "News");

        assert_eq!(&*book.remove("@bob").unwrap().nick_name, "Bob");
        assert!(book.remove("@bob").is_none());
        assert!(book.remove(SELF).is_none());
        assert!(book.get(SELF).is_some());
        assert_eq!(book.len(), 4);
    }

    #[test]
    fn group_updates_keep_known_members() {
        let mut book = ContactBook::new(self_user());
        book.upsert(group(&[(SELF, "Me", ""), ("@bob", "Bob", "")], 2));
        // A ModContactList entry: members omitted, count present, no EncryChatRoomId.
        let update = contact(&format!(
            r#"{{"UserName":"{ROOM}","NickName":"Team 2","MemberCount":2,"MemberList":[]}}"#
        ));
        assert_eq!(book.upsert(update), Upsert::Changed);
        let g = book.get(ROOM).unwrap();
        assert_eq!(&*g.nick_name, "Team 2");
        assert_eq!(g.members.len(), 2);
        assert_eq!(&*g.encry_chat_room_id, "@e1");
        assert_eq!(&*g.owner_user_name, "@a");
        // A getcontact page entry: MemberCount 0, no members.
        let page = contact(&format!(
            r#"{{"UserName":"{ROOM}","NickName":"Team 2","MemberCount":0,"MemberList":[]}}"#
        ));
        assert_eq!(book.upsert(page), Upsert::Unchanged);
        assert_eq!(book.get(ROOM).unwrap().member_count, 2);
        // A full member list replaces the old one.
        book.upsert(group(
            &[
                (SELF, "Me", ""),
                ("@bob", "Bob", ""),
                ("@carol", "Carol", ""),
            ],
            3,
        ));
        assert_eq!(book.get(ROOM).unwrap().members.len(), 3);
        // Self updates merge too and keep the SelfUser kind.
        let me = contact(&format!(
            r#"{{"UserName":"{SELF}","NickName":"New me","ContactFlag":7}}"#
        ));
        assert_eq!(book.upsert(me), Upsert::Changed);
        assert_eq!(&*book.self_user().nick_name, "New me");
        assert_eq!(book.self_user().uin, 176666155, "uin kept");
        assert_eq!(book.self_user().kind, ContactKind::SelfUser);
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn groups_needing_members() {
        let mut book = ContactBook::new(self_user());
        book.upsert(group(&[(SELF, "Me", "")], 1));
        book.upsert(contact(
            r#"{"UserName":"@@empty","MemberCount":0,"MemberList":[]}"#,
        ));
        book.upsert(contact(
            r#"{"UserName":"@@partial","MemberCount":5,"MemberList":[{"UserName":"@a"}]}"#,
        ));
        book.upsert(contact(r#"{"UserName":"@friend","ContactFlag":1}"#));
        assert_eq!(book.groups_needing_members(), ["@@empty", "@@partial"]);
    }

    #[test]
    fn head_img_is_compacted_and_rebuilt_without_skey() {
        let icon = format!("/cgi-bin/mmwebwx-bin/webwxgeticon?seq=1264610125&username={SELF}");
        let h = HeadImg::from_url(&format!("{icon}&skey=@crypt_x"), SELF);
        assert_eq!(h, HeadImg::Icon(1264610125));
        assert_eq!(h.url(SELF), icon);
        let group = format!("/cgi-bin/mmwebwx-bin/webwxgetheadimg?seq=7&username={ROOM}&skey=");
        let h = HeadImg::from_url(&group, ROOM);
        assert_eq!(h, HeadImg::GroupIcon(7));
        assert_eq!(h.url(ROOM), group.trim_end_matches("&skey="));
        // Anything that would not rebuild byte for byte is kept as sent, minus the skey.
        for (url, kept) in [
            (
                "/cgi-bin/mmwebwx-bin/webwxgeticon?seq=07&username=@x&skey=s",
                "/cgi-bin/mmwebwx-bin/webwxgeticon?seq=07&username=@x",
            ),
            (
                "/cgi-bin/mmwebwx-bin/webwxgeticon?seq=1&username=@other",
                "/cgi-bin/mmwebwx-bin/webwxgeticon?seq=1&username=@other",
            ),
            (
                "/cgi-bin/mmwebwx-bin/webwxgeticon?seq=1&username=@x&type=big",
                "/cgi-bin/mmwebwx-bin/webwxgeticon?seq=1&username=@x&type=big",
            ),
            (
                "https://cdn.example/a.jpg?SKey=1&b=2",
                "https://cdn.example/a.jpg?b=2",
            ),
        ] {
            let h = HeadImg::from_url(url, "@x");
            assert!(matches!(h, HeadImg::Other(_)), "{url}");
            assert_eq!(h.url("@x"), kept);
        }
        assert_eq!(HeadImg::from_url("", "@x"), HeadImg::None);
        assert_eq!(HeadImg::from_url("/x?skey=1", "@x").url("@x"), "/x");
        assert_eq!(
            self_user().head_img_url(),
            format!("/cgi-bin/mmwebwx-bin/webwxgeticon?seq=1264610125&username={SELF}")
        );
    }

    #[test]
    fn group_members_skip_nameless_entries() {
        let g = contact(
            r#"{"UserName":"@@g","NickName":"G","MemberCount":3,"MemberList":[
                {"UserName":"@a","NickName":"A"},{"UserName":"","NickName":"ghost"},
                {"UserName":"@b","DisplayName":"Bee"}]}"#,
        );
        let names: Vec<&str> = g.members.iter().map(|m| &*m.user_name).collect();
        assert_eq!(names, ["@a", "@b"]);
        assert_eq!(g.members[1].name(), "Bee");
    }

    #[test]
    fn upsert_all_matches_upsert_one_by_one() {
        let list: Vec<Contact> = [
            r#"{"UserName":"@c","NickName":"C","ContactFlag":3}"#,
            r#"{"UserName":"@a","NickName":"A","ContactFlag":3}"#,
            r#"{"UserName":"","NickName":"ghost"}"#,
            r#"{"UserName":"@b","NickName":"B","ContactFlag":3}"#,
            r#"{"UserName":"@a","NickName":"A2","ContactFlag":3}"#,
            r#"{"UserName":"@@g","NickName":"G","MemberCount":0,"MemberList":[]}"#,
        ]
        .into_iter()
        .map(contact)
        .chain([self_user()])
        .collect();
        let mut start = ContactBook::new(self_user());
        start.upsert(group(&[(SELF, "Me", "")], 1));
        start.upsert(contact(r#"{"UserName":"@b","NickName":"old B","Uin":5}"#));
        let mut one_by_one = start.clone();
        for c in list.clone() {
            one_by_one.upsert(c);
        }
        let mut bulk = start;
        bulk.upsert_all(list);
        let all = |b: &ContactBook| b.all().cloned().collect::<Vec<_>>();
        assert_eq!(all(&bulk), all(&one_by_one));
        assert_eq!(&*bulk.get("@a").unwrap().nick_name, "A2");
        assert_eq!(bulk.get("@b").unwrap().uin, 5, "known uin kept");
        assert_eq!(bulk.get(ROOM).unwrap().members.len(), 1);
        assert_eq!(bulk.len(), 5);
        let names: Vec<&str> = bulk.contacts.iter().map(|c| &*c.user_name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn contact_serde_round_trip() {
        let c = self_user();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"kind\":\"self_user\""), "{json}");
        assert_eq!(serde_json::from_str::<Contact>(&json).unwrap(), c);
    }
}
