//! Builders for message bodies as the web server writes them: HTML escaping with `<br/>` newlines
//! (spec §5.3), group sender prefixes and @-mentions, the XML payloads of each MsgType (§5.2), and
//! the complete AddMsgList entry (§5.1).

use serde_json::{Value, json};

/// Escapes text the way `Content` carries it: `& < > "` as entities, newlines as `<br/>`.
pub(crate) fn escape_content(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("<br/>"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Whether the web client shows `c` as an emoji image (and the server sends it as a span).
fn is_emoji(c: char) -> bool {
    matches!(c as u32,
        0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0x2300..=0x23FF | 0x2B00..=0x2BFF)
}

fn is_regional_indicator(c: char) -> bool {
    (0x1F1E6..=0x1F1FF).contains(&(c as u32))
}

/// Replaces emoji with `<span class="emoji emoji1f604"></span>` as the web server does (spec
/// §5.3); a flag (two regional indicators) becomes one span with both code points. Variation
/// selector 16 after an emoji is dropped.
pub(crate) fn emoji_spans(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if !is_emoji(c) {
            out.push(c);
            continue;
        }
        let mut code = format!("{:x}", c as u32);
        if is_regional_indicator(c)
            && let Some(&next) = chars.peek()
            && is_regional_indicator(next)
        {
            code.push_str(&format!("{:x}", next as u32));
            chars.next();
        }
        if chars.peek() == Some(&'\u{FE0F}') {
            chars.next();
        }
        out.push_str(&format!("<span class=\"emoji emoji{code}\"></span>"));
    }
    out
}

/// A plain-text message body on the wire: escaped, `<br/>` newlines, emoji as spans.
pub(crate) fn text_content(text: &str) -> String {
    emoji_spans(&escape_content(text))
}

/// Escapes a value for use inside an XML attribute or element before the whole XML document is
/// itself content-escaped.
pub(crate) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The group form of a message from `member`: `@member:<br/>body` (body already escaped).
pub(crate) fn group_prefixed(member_user_name: &str, escaped_body: &str) -> String {
    format!("{member_user_name}:<br/>{escaped_body}")
}

/// `@Name` followed by U+2005, as the phone inserts for a mention.
pub(crate) fn mention(name: &str) -> String {
    format!("@{name}\u{2005}")
}

/// Percent-encodes every byte outside `[A-Za-z0-9-]`, as `EncryFileName` does (`IMG%5F1.JPG` →
/// `IMG%5F1%2EJPG`).
pub(crate) fn encry_file_name(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn image_xml(length: usize, md5: &str, width: u32, height: u32) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<msg>\n\t<img aeskey=\"{aes}\" encryver=\"1\" cdnthumbaeskey=\"{aes}\" cdnthumburl=\"{cdn}\" cdnthumblength=\"{thumb}\" cdnthumbheight=\"{height}\" cdnthumbwidth=\"{width}\" cdnmidheight=\"0\" cdnmidwidth=\"0\" cdnhdheight=\"0\" cdnhdwidth=\"0\" cdnmidimgurl=\"{cdn}\" length=\"{length}\" md5=\"{md5}\" />\n</msg>\n",
        aes = md5,
        cdn = md5,
        thumb = length.min(4096),
    )
}

pub(crate) fn voice_xml(length_ms: u64, bytes: usize, from_wxid: &str) -> String {
    format!(
        "<msg><voicemsg endflag=\"1\" cancelflag=\"0\" forwardflag=\"0\" voiceformat=\"4\" voicelength=\"{length_ms}\" length=\"{bytes}\" bufid=\"0\" clientmsgid=\"{from_wxid}\" fromusername=\"{from_wxid}\" /></msg>"
    )
}

pub(crate) fn video_xml(play_seconds: u64, bytes: usize, md5: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<msg>\n\t<videomsg aeskey=\"{md5}\" cdnthumbaeskey=\"{md5}\" cdnvideourl=\"{md5}\" cdnthumburl=\"{md5}\" length=\"{bytes}\" playlength=\"{play_seconds}\" cdnthumblength=\"1024\" cdnthumbwidth=\"160\" cdnthumbheight=\"120\" fromusername=\"\" md5=\"{md5}\" newmd5=\"{md5}\" isad=\"0\" />\n</msg>\n"
    )
}

pub(crate) fn emoji_xml(from_wxid: &str, to_wxid: &str, md5: &str, len: usize) -> String {
    format!(
        "<msg><emoji fromusername=\"{from_wxid}\" tousername=\"{to_wxid}\" type=\"2\" idbuffer=\"media:0_0\" md5=\"{md5}\" len=\"{len}\" productid=\"\" androidmd5=\"{md5}\" androidlen=\"{len}\" s60v3md5=\"{md5}\" s60v3len=\"{len}\" s60v5md5=\"{md5}\" s60v5len=\"{len}\" cdnurl=\"http://emoji.qpic.cn/wx_emoji/{md5}/\" designerid=\"\" thumburl=\"\" encrypturl=\"\" aeskey=\"\" width=\"40\" height=\"40\" /></msg>"
    )
}

/// A shared contact card (MsgType 42).
pub(crate) fn card_xml(user_name: &str, nickname: &str, alias: &str, sex: u32) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<msg bigheadimgurl=\"\" smallheadimgurl=\"\" username=\"{u}\" nickname=\"{n}\" fullpy=\"\" shortpy=\"\" alias=\"{a}\" imagestatus=\"3\" scene=\"17\" province=\"\" city=\"\" sign=\"\" sex=\"{sex}\" certflag=\"0\" certinfo=\"\" brandIconUrl=\"\" brandHomeUrl=\"\" brandSubscriptConfigUrl=\"\" brandFlags=\"0\" regionCode=\"CN\" />\n",
        u = xml_escape(user_name),
        n = xml_escape(nickname),
        a = xml_escape(alias),
    )
}

/// A file attachment (MsgType 49 / AppMsgType 6).
pub(crate) fn appmsg_file_xml(file_name: &str, size: u64, media_id: &str) -> String {
    let ext = file_name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    format!(
        "<msg><appmsg appid=\"\" sdkver=\"0\"><title>{t}</title><des></des><action></action><type>6</type><showtype>0</showtype><content></content><url></url><lowurl></lowurl><appattach><totallen>{size}</totallen><attachid>{media_id}</attachid><fileext>{ext}</fileext></appattach><extinfo></extinfo></appmsg><appinfo><version>1</version><appname></appname></appinfo></msg>",
        t = xml_escape(file_name),
        ext = xml_escape(ext),
    )
}

/// An article link (AppMsgType 5).
pub(crate) fn appmsg_link_xml(title: &str, desc: &str, url: &str) -> String {
    format!(
        "<msg><appmsg appid=\"\" sdkver=\"0\"><title>{t}</title><des>{d}</des><action></action><type>5</type><showtype>0</showtype><content></content><url>{u}</url><lowurl></lowurl><appattach><totallen>0</totallen><attachid></attachid><fileext></fileext></appattach><extinfo></extinfo></appmsg><appinfo><version>1</version><appname></appname></appinfo></msg>",
        t = xml_escape(title),
        d = xml_escape(desc),
        u = xml_escape(url),
    )
}

/// A mini-program share (AppMsgType 33).
pub(crate) fn appmsg_mini_program_xml(title: &str, app_name: &str, url: &str) -> String {
    format!(
        "<msg><appmsg appid=\"\" sdkver=\"0\"><title>{t}</title><des></des><action></action><type>33</type><showtype>0</showtype><content></content><url>{u}</url><sourcedisplayname>{a}</sourcedisplayname><weappinfo><pagepath></pagepath><username>gh_{h}@app</username><appid>wx{h}</appid><type>2</type></weappinfo></appmsg></msg>",
        t = xml_escape(title),
        a = xml_escape(app_name),
        u = xml_escape(url),
        h = "0123456789ab",
    )
}

/// A money transfer (AppMsgType 2000): the second CDATA is the text itchat shows.
pub(crate) fn appmsg_transfer_xml(amount: &str) -> String {
    let amount = xml_escape(amount);
    format!(
        "<msg><appmsg appid=\"\" sdkver=\"\"><title><![CDATA[微信转账]]></title><des><![CDATA[收到转账{amount}元。如需收钱，请点此升级至最新版本]]></des><action></action><type>2000</type><content><![CDATA[]]></content><url><![CDATA[https://support.weixin.qq.com/cgi-bin/mmsupport-bin/readtemplate?t=page/common_page__upgrade&text=text001&btn_text=btn_text_0]]></url><wcpayinfo><paysubtype>1</paysubtype><feedesc><![CDATA[￥{amount}]]></feedesc><transcationid><![CDATA[]]></transcationid><transferid><![CDATA[]]></transferid><invalidtime><![CDATA[0]]></invalidtime><pay_memo><![CDATA[]]></pay_memo></wcpayinfo></appmsg></msg>"
    )
}

/// The raw location XML carried in `OriContent`.
pub(crate) fn location_xml(lat: f64, lng: f64, label: &str, poiname: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<msg>\n\t<location x=\"{lat}\" y=\"{lng}\" scale=\"16\" label=\"{l}\" maptype=\"0\" poiname=\"{p}\" poiid=\"\" />\n</msg>\n",
        l = xml_escape(label),
        p = xml_escape(poiname),
    )
}

pub(crate) struct FriendRequestXml<'a> {
    pub encrypt_user_name: &'a str,
    pub nickname: &'a str,
    pub greeting: &'a str,
    pub ticket: &'a str,
    pub sex: u32,
    pub alias: &'a str,
    pub province: &'a str,
    pub city: &'a str,
    pub signature: &'a str,
    pub scene: u32,
}

/// The MsgType 37 body (a friend request, spec §5.2).
pub(crate) fn friend_request_xml(r: &FriendRequestXml<'_>) -> String {
    format!(
        "<msg fromusername=\"{enc}\" encryptusername=\"{enc}\" fromnickname=\"{nick}\" content=\"{greet}\" fullpy=\"\" shortpy=\"\" imagestatus=\"3\" scene=\"{scene}\" country=\"CN\" province=\"{prov}\" city=\"{city}\" sign=\"{sign}\" percard=\"1\" sex=\"{sex}\" alias=\"{alias}\" weibo=\"\" albumflag=\"0\" albumstyle=\"0\" albumbgimgid=\"\" snsflag=\"1\" snsbgimgid=\"\" snsbgobjectid=\"0\" mhash=\"\" mfullhash=\"\" bigheadimgurl=\"\" smallheadimgurl=\"\" ticket=\"{ticket}\" opcode=\"2\" googlecontact=\"\" qrticket=\"\" chatroomusername=\"\" sourceusername=\"\" sourcenickname=\"\"><brandlist count=\"0\" ver=\"0\"></brandlist></msg>",
        enc = xml_escape(r.encrypt_user_name),
        nick = xml_escape(r.nickname),
        greet = xml_escape(r.greeting),
        scene = r.scene,
        prov = xml_escape(r.province),
        city = xml_escape(r.city),
        sign = xml_escape(r.signature),
        sex = r.sex,
        alias = xml_escape(r.alias),
        ticket = xml_escape(r.ticket),
    )
}

/// The MsgType 10002 body announcing that `old_msg_id` was recalled by `who`.
pub(crate) fn revoke_xml(session: &str, old_msg_id: u64, who: &str) -> String {
    format!(
        "<sysmsg type=\"revokemsg\"><revokemsg><session>{s}</session><oldmsgid>{old}</oldmsgid><msgid>{old}</msgid><replacemsg><![CDATA[\"{w}\" 撤回了一条消息]]></replacemsg></revokemsg></sysmsg>",
        s = xml_escape(session),
        old = old_msg_id,
        w = who,
    )
}

/// The MsgType 51 / StatusNotifyCode 4 body sent right after login: the recent-chat list, by
/// permanent id.
pub(crate) fn init_notify_xml(wxids: &[String]) -> String {
    let mut chats = String::new();
    for id in wxids.iter().take(5) {
        chats.push_str(&format!(
            "<chat>\n<username>{}</username>\n<lastreadtime>0</lastreadtime>\n</chat>\n",
            xml_escape(id)
        ));
    }
    format!(
        "<msg>\n<op id='4'>\n<username>{}</username>\n<unreadchatlist>\n{chats}</unreadchatlist>\n<unreadfunctionlist>\n</unreadfunctionlist>\n</op>\n</msg>",
        xml_escape(&wxids.join(","))
    )
}

/// `RecommendInfo` of a message (friend requests and cards); all-empty otherwise.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recommend {
    pub user_name: String,
    pub nickname: String,
    pub province: String,
    pub city: String,
    pub content: String,
    pub signature: String,
    pub alias: String,
    pub scene: u32,
    pub verify_flag: u32,
    pub attr_status: u64,
    pub sex: u32,
    pub ticket: String,
    pub op_code: u32,
}

impl Recommend {
    fn to_json(&self) -> Value {
        json!({
            "UserName": self.user_name,
            "NickName": self.nickname,
            "QQNum": 0,
            "Province": self.province,
            "City": self.city,
            "Content": self.content,
            "Signature": self.signature,
            "Alias": self.alias,
            "Scene": self.scene,
            "VerifyFlag": self.verify_flag,
            "AttrStatus": self.attr_status,
            "Sex": self.sex,
            "Ticket": self.ticket,
            "OpCode": self.op_code,
        })
    }
}

/// One AddMsgList entry. Every §5.1 field is always written; defaults are the values a plain text
/// message carries.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub id: u64,
    pub from: String,
    pub to: String,
    pub msg_type: u32,
    /// Wire form: escaped, group-prefixed where applicable.
    pub content: String,
    pub status: u32,
    pub img_status: u32,
    pub create_time: u64,
    pub voice_length: u64,
    pub play_length: u64,
    pub file_name: String,
    pub file_size: String,
    pub media_id: String,
    pub url: String,
    pub app_msg_type: u32,
    pub status_notify_code: u32,
    pub status_notify_user_name: String,
    pub recommend: Recommend,
    pub forward_flag: u32,
    pub ticket: String,
    pub img_height: u32,
    pub img_width: u32,
    pub sub_msg_type: u32,
    pub ori_content: String,
    pub encry_file_name: String,
}

impl Message {
    pub(crate) fn new(id: u64, from: &str, to: &str, msg_type: u32, content: String) -> Self {
        Message {
            id,
            from: from.to_string(),
            to: to.to_string(),
            msg_type,
            content,
            status: 3,
            img_status: 1,
            create_time: super::ids::unix_now(),
            voice_length: 0,
            play_length: 0,
            file_name: String::new(),
            file_size: String::new(),
            media_id: String::new(),
            url: String::new(),
            app_msg_type: 0,
            status_notify_code: 0,
            status_notify_user_name: String::new(),
            recommend: Recommend::default(),
            forward_flag: 0,
            ticket: String::new(),
            img_height: 0,
            img_width: 0,
            sub_msg_type: 0,
            ori_content: String::new(),
            encry_file_name: String::new(),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "MsgId": self.id.to_string(),
            "FromUserName": self.from,
            "ToUserName": self.to,
            "MsgType": self.msg_type,
            "Content": self.content,
            "Status": self.status,
            "ImgStatus": self.img_status,
            "CreateTime": self.create_time,
            "VoiceLength": self.voice_length,
            "PlayLength": self.play_length,
            "FileName": self.file_name,
            "FileSize": self.file_size,
            "MediaId": self.media_id,
            "Url": self.url,
            "AppMsgType": self.app_msg_type,
            "StatusNotifyCode": self.status_notify_code,
            "StatusNotifyUserName": self.status_notify_user_name,
            "RecommendInfo": self.recommend.to_json(),
            "ForwardFlag": self.forward_flag,
            "AppInfo": {"AppID": "", "Type": 0},
            "HasProductId": 0,
            "Ticket": self.ticket,
            "ImgHeight": self.img_height,
            "ImgWidth": self.img_width,
            "SubMsgType": self.sub_msg_type,
            "NewMsgId": self.id,
            "OriContent": self.ori_content,
            "EncryFileName": self.encry_file_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_content_escapes_markup_and_newlines() {
        assert_eq!(
            escape_content("a<b> & \"c\"\nnext\r\nline"),
            "a&lt;b&gt; &amp; &quot;c&quot;<br/>next<br/>line"
        );
        assert_eq!(escape_content("纯文本 😀"), "纯文本 😀");
    }

    #[test]
    fn emoji_become_spans() {
        assert_eq!(
            text_content("hi 😄<\n"),
            "hi <span class=\"emoji emoji1f604\"></span>&lt;<br/>"
        );
        assert_eq!(
            emoji_spans("🇨🇳☀\u{FE0F}x"),
            "<span class=\"emoji emoji1f1e81f1f3\"></span><span class=\"emoji emoji2600\"></span>x"
        );
        assert_eq!(emoji_spans("纯文本"), "纯文本");
    }

    #[test]
    fn group_prefix_and_mentions() {
        let body = format!("{}hi", mention("Bob"));
        let c = group_prefixed("@abc", &escape_content(&body));
        assert_eq!(c, "@abc:<br/>@Bob\u{2005}hi");
    }

    #[test]
    fn encry_file_name_matches_capture_style() {
        assert_eq!(encry_file_name("IMG_1854.JPG"), "IMG%5F1854%2EJPG");
    }

    #[test]
    fn xml_payloads_survive_content_escaping() {
        let x = appmsg_file_xml("a&b.zip", 10, "@crypt_1");
        assert!(x.contains("<title>a&amp;b.zip</title>"));
        assert!(x.contains("<fileext>zip</fileext>"));
        let escaped = escape_content(&x);
        assert!(escaped.starts_with("&lt;msg&gt;&lt;appmsg"));
        assert!(!escaped.contains("<msg") && !escaped.contains("<appmsg"));
        let t = appmsg_transfer_xml("0.01");
        assert!(t.contains("<![CDATA[收到转账0.01元。"));
        let r = revoke_xml("@x", 42, "Bob");
        assert!(r.contains("<oldmsgid>42</oldmsgid>") && r.contains("\"Bob\" 撤回了一条消息"));
        let n = init_notify_xml(&["filehelper".into(), "wxid_a".into()]);
        assert!(n.contains("<username>filehelper,wxid_a</username>"));
        assert!(n.contains("<op id='4'>"));
    }

    #[test]
    fn message_json_has_every_field_with_spec_types() {
        let m = Message::new(3_000_000_000_000_000_123, "@a", "@b", 1, "hi".into());
        let v = m.to_json();
        assert_eq!(v["MsgId"], "3000000000000000123");
        assert_eq!(v["NewMsgId"].as_u64(), Some(3_000_000_000_000_000_123));
        assert!(v["FileSize"].is_string());
        assert!(v["RecommendInfo"]["QQNum"].is_number());
        for key in [
            "MsgId",
            "FromUserName",
            "ToUserName",
            "MsgType",
            "Content",
            "Status",
            "ImgStatus",
            "CreateTime",
            "VoiceLength",
            "PlayLength",
            "FileName",
            "FileSize",
            "MediaId",
            "Url",
            "AppMsgType",
            "StatusNotifyCode",
            "StatusNotifyUserName",
            "RecommendInfo",
            "ForwardFlag",
            "AppInfo",
            "HasProductId",
            "Ticket",
            "ImgHeight",
            "ImgWidth",
            "SubMsgType",
            "NewMsgId",
            "OriContent",
            "EncryFileName",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
    }
}
