//! Media decisions of the worker, with no network of their own: what a payload is (magic
//! bytes), how the web protocol can send it, and how a received media message is fetched later
//! and named.

use serde::{Deserialize, Serialize};

use super::events::OutgoingMedia;
use crate::wechat::client::{SentMessage, WebClient};
use crate::wechat::media::{Download, MediaError, UploadKind, encry_file_name, plain_file_name};
use crate::wechat::message::{Message, MessageKind, app_type, msg_type};

/// A payload format recognised by its leading bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
    Gif,
    Bmp,
    Webp,
    Heic,
    Avif,
    Tiff,
    Svg,
    Mp4,
    /// QuickTime (`ftyp qt`): looks like mp4, but the web client's player refuses it.
    Mov,
    Mp3,
    Pdf,
    Other,
}

/// What [`sniff`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sniffed {
    pub content_type: &'static str,
    /// Usual file extension, without the dot.
    pub ext: &'static str,
    pub kind: Format,
}

impl Sniffed {
    const fn of(kind: Format, content_type: &'static str, ext: &'static str) -> Sniffed {
        Sniffed {
            content_type,
            ext,
            kind,
        }
    }
}

/// Recognises a payload by its magic bytes; anything unknown is `Other`
/// (`application/octet-stream`, `bin`).
pub fn sniff(bytes: &[u8]) -> Sniffed {
    use Format as F;
    let b = bytes;
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Sniffed::of(F::Jpeg, "image/jpeg", "jpg");
    }
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Sniffed::of(F::Png, "image/png", "png");
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return Sniffed::of(F::Gif, "image/gif", "gif");
    }
    if is_bmp(b) {
        return Sniffed::of(F::Bmp, "image/bmp", "bmp");
    }
    if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        return Sniffed::of(F::Webp, "image/webp", "webp");
    }
    if b.starts_with(b"II*\0") || b.starts_with(b"MM\0*") {
        return Sniffed::of(F::Tiff, "image/tiff", "tiff");
    }
    if b.starts_with(b"%PDF-") {
        return Sniffed::of(F::Pdf, "application/pdf", "pdf");
    }
    if let Some(brand) = ftyp_brand(b) {
        return match brand {
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => {
                Sniffed::of(F::Heic, "image/heic", "heic")
            }
            b"avif" | b"avis" => Sniffed::of(F::Avif, "image/avif", "avif"),
            b"qt  " => Sniffed::of(F::Mov, "video/quicktime", "mov"),
            b"isom" | b"iso2" | b"iso3" | b"iso4" | b"iso5" | b"iso6" | b"mp41" | b"mp42"
            | b"avc1" | b"dash" | b"M4V " | b"MSNV" => Sniffed::of(F::Mp4, "video/mp4", "mp4"),
            _ => other(),
        };
    }
    if b.starts_with(b"ID3") || is_mpeg_audio_frame(b) {
        return Sniffed::of(F::Mp3, "audio/mpeg", "mp3");
    }
    if is_svg(b) {
        return Sniffed::of(F::Svg, "image/svg+xml", "svg");
    }
    other()
}

fn other() -> Sniffed {
    Sniffed::of(Format::Other, "application/octet-stream", "bin")
}

/// `BM`, then a DIB header whose size field names one of the known header versions (`BM` alone
/// starts too many text files).
fn is_bmp(b: &[u8]) -> bool {
    if b.len() < 18 || !b.starts_with(b"BM") {
        return false;
    }
    let dib = u32::from_le_bytes([b[14], b[15], b[16], b[17]]);
    matches!(dib, 12 | 40 | 52 | 56 | 64 | 108 | 124)
}

/// The major brand of an ISO base media file (`....ftypXXXX`).
fn ftyp_brand(b: &[u8]) -> Option<&[u8; 4]> {
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        b[8..12].try_into().ok()
    } else {
        None
    }
}

/// An MPEG-1/2 layer III frame header (sync bits, layer III) at the start.
fn is_mpeg_audio_frame(b: &[u8]) -> bool {
    b.len() >= 3 && b[0] == 0xFF && (b[1] & 0xE6) == 0xE2 && (b[2] & 0xF0) != 0xF0
}

/// Markup whose first element is `<svg` (after an optional BOM, XML declaration, comments and
/// doctype).
fn is_svg(b: &[u8]) -> bool {
    let head = &b[..b.len().min(4096)];
    let Ok(text) =
        std::str::from_utf8(head).or_else(|e| std::str::from_utf8(&head[..e.valid_up_to()]))
    else {
        return false;
    };
    let mut rest = text.trim_start_matches('\u{feff}').trim_start();
    loop {
        if rest.starts_with("<svg") {
            return true;
        }
        let skip_to = if rest.starts_with("<?") {
            rest.find("?>").map(|i| i + 2)
        } else if rest.starts_with("<!--") {
            rest.find("-->").map(|i| i + 3)
        } else if rest.starts_with("<!") {
            rest.find('>').map(|i| i + 1)
        } else {
            None
        };
        match skip_to {
            Some(i) => rest = rest[i..].trim_start(),
            None => return false,
        }
    }
}

/// How a payload goes out over the web protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPlan {
    /// Upload as `pic`, send with webwxsendmsgimg.
    Image,
    /// Upload as `doc`, send with webwxsendemoticon.
    Gif,
    /// Upload as `video`, send with webwxsendvideomsg.
    Video,
    /// Upload as `doc`, send as a file appmsg.
    AsFile,
}

impl SendPlan {
    pub fn upload_kind(self) -> UploadKind {
        match self {
            SendPlan::Image => UploadKind::Image,
            SendPlan::Gif => UploadKind::Gif,
            SendPlan::Video => UploadKind::Video,
            SendPlan::AsFile => UploadKind::File,
        }
    }
}

/// An image task: JPEG, PNG and BMP go as pictures, GIF as a sticker; what the web client
/// cannot show as a picture (WebP, HEIC, AVIF, TIFF, SVG, anything unknown) goes as a file.
pub fn plan_image_send(sniffed: &Sniffed) -> SendPlan {
    match sniffed.kind {
        Format::Jpeg | Format::Png | Format::Bmp => SendPlan::Image,
        Format::Gif => SendPlan::Gif,
        _ => SendPlan::AsFile,
    }
}

/// A video task: only mp4 plays as a video message; anything else goes as a file. The bytes
/// decide, not the URL's extension.
pub fn plan_video_send(sniffed: &Sniffed) -> SendPlan {
    match sniffed.kind {
        Format::Mp4 => SendPlan::Video,
        _ => SendPlan::AsFile,
    }
}

/// Uploads (where needed) and sends one outgoing media message. The variant is taken as
/// chosen: pick it with [`plan_image_send`] / [`plan_video_send`] first.
pub async fn send_outgoing(
    client: &WebClient,
    to: &str,
    media: &OutgoingMedia,
) -> Result<SentMessage, MediaError> {
    match media {
        OutgoingMedia::Image {
            bytes,
            name,
            content_type,
        } => {
            let id = client
                .upload_media(to, name, content_type, bytes, UploadKind::Image)
                .await?;
            client.send_image(to, &id).await
        }
        OutgoingMedia::Gif { bytes, name } => {
            let id = client
                .upload_media(to, name, "image/gif", bytes, UploadKind::Gif)
                .await?;
            client.send_emoticon(to, &id).await
        }
        OutgoingMedia::Video { bytes, name } => {
            let id = client
                .upload_media(to, name, "video/mp4", bytes, UploadKind::Video)
                .await?;
            client.send_video(to, &id).await
        }
        OutgoingMedia::File {
            bytes,
            name,
            content_type,
        } => {
            let id = client
                .upload_media(to, name, content_type, bytes, UploadKind::File)
                .await?;
            client.send_file(to, name, bytes.len() as u64, &id).await
        }
        OutgoingMedia::Link {
            title,
            desc,
            url,
            thumb_url,
        } => client.send_link(to, title, desc, url, thumb_url).await,
        OutgoingMedia::AppXml { xml } => client.send_app_xml(to, xml).await,
    }
}

/// Which download endpoint serves a received media message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaRefKind {
    /// webwxgetmsgimg.
    Image,
    /// webwxgetmsgimg (MsgType 47, or AppMsgType 8).
    Emoticon,
    /// webwxgetvoice.
    Voice,
    /// webwxgetvideo (MsgType 43 and 62).
    Video,
    /// webwxgetmedia on the file host.
    File,
}

/// Everything needed to download a received media message later (kept after the message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRef {
    pub kind: MediaRefKind,
    pub msg_type: i64,
    pub msg_id: String,
    /// FromUserName of the message (`sender` of webwxgetmedia).
    pub from: String,
    pub media_id: String,
    pub file_name: String,
    pub encry_file_name: String,
}

impl MediaRef {
    /// The media of a message, or `None` when it has none that can be downloaded (text, links,
    /// a file without MediaId, a message without id).
    pub fn from_message(m: &Message) -> Option<MediaRef> {
        let msg_id = if m.msg_id.trim().is_empty() {
            (m.new_msg_id > 0).then(|| m.new_msg_id.to_string())?
        } else {
            m.msg_id.trim().to_owned()
        };
        let by_id = |kind| MediaRef {
            kind,
            msg_type: m.msg_type,
            msg_id: msg_id.clone(),
            from: m.from.clone(),
            media_id: String::new(),
            file_name: String::new(),
            encry_file_name: String::new(),
        };
        match &m.kind {
            MessageKind::Image { media_id, .. } => Some(MediaRef {
                media_id: media_id.clone(),
                ..by_id(MediaRefKind::Image)
            }),
            MessageKind::Emoticon { .. }
                if m.msg_type == msg_type::EMOTICON
                    || (m.msg_type == msg_type::APP && m.app_msg_type == app_type::EMOJI) =>
            {
                Some(by_id(MediaRefKind::Emoticon))
            }
            MessageKind::Voice { .. } => Some(by_id(MediaRefKind::Voice)),
            MessageKind::Video { .. } => Some(by_id(MediaRefKind::Video)),
            MessageKind::File { name, media_id, .. } if !media_id.trim().is_empty() => {
                Some(MediaRef {
                    media_id: media_id.trim().to_owned(),
                    file_name: name.clone(),
                    // Not carried by `MessageKind::File`; the server's form is derived from the
                    // name by a fixed escaping rule (spec §5.1).
                    encry_file_name: encry_file_name(name),
                    ..by_id(MediaRefKind::File)
                })
            }
            _ => None,
        }
    }
}

/// Downloads the media of `r` from the endpoint its kind calls for.
pub async fn download(client: &WebClient, r: &MediaRef) -> Result<Download, MediaError> {
    match r.kind {
        MediaRefKind::Image | MediaRefKind::Emoticon => client.get_msg_img(&r.msg_id).await,
        MediaRefKind::Voice => client.get_voice(&r.msg_id).await,
        MediaRefKind::Video => client.get_video(&r.msg_id).await,
        MediaRefKind::File => {
            client
                .get_media(&r.from, &r.media_id, &r.file_name, &r.encry_file_name)
                .await
        }
    }
}

/// The name to store or forward a download under: `<msgid>.<ext>` for images and stickers (the
/// extension from the bytes), `.mp3` voice, `.mp4` video, and the original name of a file.
pub fn file_name_for(r: &MediaRef, d: &Download) -> String {
    let id = plain_file_name(&r.msg_id).unwrap_or_else(|| "media".to_owned());
    match r.kind {
        MediaRefKind::Image | MediaRefKind::Emoticon => {
            let s = sniff(&d.bytes);
            let ext = match s.kind {
                Format::Other => match r.kind {
                    MediaRefKind::Emoticon => "gif",
                    _ => "jpg",
                },
                _ => s.ext,
            };
            format!("{id}.{ext}")
        }
        MediaRefKind::Voice => format!("{id}.mp3"),
        MediaRefKind::Video => format!("{id}.mp4"),
        MediaRefKind::File => plain_file_name(&r.file_name)
            .or_else(|| d.file_name.as_deref().and_then(plain_file_name))
            .unwrap_or_else(|| format!("{id}.{}", sniff(&d.bytes).ext)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::message::Chat;

    fn padded(head: &[u8]) -> Vec<u8> {
        let mut v = head.to_vec();
        v.resize(64, 0x20);
        v
    }

    fn bmp() -> Vec<u8> {
        let mut v = b"BM".to_vec();
        v.extend_from_slice(&[0; 12]);
        v.extend_from_slice(&40u32.to_le_bytes());
        v.resize(64, 0);
        v
    }

    fn ftyp(brand: &[u8; 4]) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 0x18];
        v.extend_from_slice(b"ftyp");
        v.extend_from_slice(brand);
        v.resize(64, 0);
        v
    }

    #[test]
    fn sniffs_by_magic() {
        let cases: Vec<(Vec<u8>, Format, &str, &str)> = vec![
            (
                padded(&[0xFF, 0xD8, 0xFF, 0xE0]),
                Format::Jpeg,
                "image/jpeg",
                "jpg",
            ),
            (
                padded(b"\x89PNG\r\n\x1a\n"),
                Format::Png,
                "image/png",
                "png",
            ),
            (padded(b"GIF89a"), Format::Gif, "image/gif", "gif"),
            (padded(b"GIF87a"), Format::Gif, "image/gif", "gif"),
            (bmp(), Format::Bmp, "image/bmp", "bmp"),
            (
                padded(b"RIFF\x10\0\0\0WEBPVP8 "),
                Format::Webp,
                "image/webp",
                "webp",
            ),
            (padded(b"II*\0"), Format::Tiff, "image/tiff", "tiff"),
            (padded(b"MM\0*"), Format::Tiff, "image/tiff", "tiff"),
            (padded(b"%PDF-1.7"), Format::Pdf, "application/pdf", "pdf"),
            (ftyp(b"isom"), Format::Mp4, "video/mp4", "mp4"),
            (ftyp(b"mp42"), Format::Mp4, "video/mp4", "mp4"),
            (ftyp(b"heic"), Format::Heic, "image/heic", "heic"),
            (ftyp(b"mif1"), Format::Heic, "image/heic", "heic"),
            (ftyp(b"avif"), Format::Avif, "image/avif", "avif"),
            (ftyp(b"qt  "), Format::Mov, "video/quicktime", "mov"),
            (padded(b"ID3\x04"), Format::Mp3, "audio/mpeg", "mp3"),
            (
                padded(&[0xFF, 0xFB, 0x90, 0x64]),
                Format::Mp3,
                "audio/mpeg",
                "mp3",
            ),
            (
                padded(b"<?xml version=\"1.0\"?>\n<!-- x --><!DOCTYPE svg><svg xmlns="),
                Format::Svg,
                "image/svg+xml",
                "svg",
            ),
            (
                padded(b"\xef\xbb\xbf  <svg>"),
                Format::Svg,
                "image/svg+xml",
                "svg",
            ),
        ];
        for (bytes, kind, ct, ext) in cases {
            let s = sniff(&bytes);
            assert_eq!((s.kind, s.content_type, s.ext), (kind, ct, ext), "{kind:?}");
        }
    }

    #[test]
    fn unknown_and_truncated_are_other() {
        for b in [
            &b""[..],
            b"\xFF\xD8",
            b"BM not a bitmap at all, just text",
            b"RIFF\x10\0\0\0WAVEfmt ",
            b"hello world",
            b"<html><svg></svg></html>",
            b"\0\0\0\x18ftypM4A \0\0\0\0",
            b"\0\0\0\x18ftyp",
            b"PK\x03\x04",
        ] {
            let s = sniff(b);
            assert_eq!(s.kind, Format::Other, "{b:?}");
            assert_eq!((s.content_type, s.ext), ("application/octet-stream", "bin"));
        }
    }

    #[test]
    fn image_plans() {
        let plan = |b: &[u8]| plan_image_send(&sniff(b));
        assert_eq!(plan(&padded(&[0xFF, 0xD8, 0xFF])), SendPlan::Image);
        assert_eq!(plan(&padded(b"\x89PNG\r\n\x1a\n")), SendPlan::Image);
        assert_eq!(plan(&bmp()), SendPlan::Image);
        assert_eq!(plan(&padded(b"GIF89a")), SendPlan::Gif);
        for rejected in [
            padded(b"RIFF\x10\0\0\0WEBPVP8 "),
            ftyp(b"heic"),
            ftyp(b"avif"),
            padded(b"II*\0"),
            padded(b"<svg>"),
            padded(b"%PDF-1.4"),
            padded(b"random"),
        ] {
            assert_eq!(plan(&rejected), SendPlan::AsFile, "{:?}", sniff(&rejected));
        }
        assert_eq!(SendPlan::Image.upload_kind(), UploadKind::Image);
        assert_eq!(SendPlan::Gif.upload_kind(), UploadKind::Gif);
        assert_eq!(SendPlan::AsFile.upload_kind(), UploadKind::File);
    }

    #[test]
    fn video_plans() {
        assert_eq!(plan_video_send(&sniff(&ftyp(b"isom"))), SendPlan::Video);
        assert_eq!(SendPlan::Video.upload_kind(), UploadKind::Video);
        for other in [
            ftyp(b"qt  "),
            ftyp(b"3gp4"),
            padded(b"RIFF\0\0\0\0AVI "),
            padded(b"x"),
        ] {
            assert_eq!(plan_video_send(&sniff(&other)), SendPlan::AsFile);
        }
    }

    fn message(msg_type: i64, app_msg_type: i64, kind: MessageKind) -> Message {
        Message {
            msg_id: "4410".into(),
            new_msg_id: 4410,
            create_time: 0,
            msg_type,
            app_msg_type,
            from: "@bob".into(),
            to: "@me".into(),
            chat: Chat::Private {
                peer: "@bob".into(),
            },
            outgoing: false,
            kind,
            raw_content: String::new(),
        }
    }

    #[test]
    fn media_refs_from_messages() {
        let img = message(
            3,
            0,
            MessageKind::Image {
                media_id: String::new(),
                width: 1,
                height: 1,
            },
        );
        let r = MediaRef::from_message(&img).expect("image");
        assert_eq!(
            (r.kind, r.msg_id.as_str(), r.msg_type),
            (MediaRefKind::Image, "4410", 3)
        );
        let emo = |t, a| {
            message(
                t,
                a,
                MessageKind::Emoticon {
                    md5: None,
                    cdn_url: None,
                },
            )
        };
        assert_eq!(
            MediaRef::from_message(&emo(47, 0)).map(|r| r.kind),
            Some(MediaRefKind::Emoticon)
        );
        assert_eq!(
            MediaRef::from_message(&emo(49, 8)).map(|r| r.kind),
            Some(MediaRefKind::Emoticon)
        );
        let voice = message(34, 0, MessageKind::Voice { length_ms: 3 });
        assert_eq!(
            MediaRef::from_message(&voice).map(|r| r.kind),
            Some(MediaRefKind::Voice)
        );
        for t in [43, 62] {
            let v = message(
                t,
                0,
                MessageKind::Video {
                    play_length: 1,
                    micro: t == 62,
                },
            );
            assert_eq!(
                MediaRef::from_message(&v).map(|r| r.kind),
                Some(MediaRefKind::Video)
            );
        }
        let file = message(
            49,
            6,
            MessageKind::File {
                name: "Q3 report.pdf".into(),
                size: 10,
                media_id: "@crypt_9".into(),
                ext: "pdf".into(),
            },
        );
        let r = MediaRef::from_message(&file).expect("file");
        assert_eq!(r.kind, MediaRefKind::File);
        assert_eq!(r.from, "@bob");
        assert_eq!(r.media_id, "@crypt_9");
        assert_eq!(r.file_name, "Q3 report.pdf");
        assert_eq!(r.encry_file_name, "Q3%20report%2Epdf");
        // Serialisable, so it can be kept until the download is wanted.
        let back: MediaRef =
            serde_json::from_str(&serde_json::to_string(&r).expect("ser")).expect("de");
        assert_eq!(back, r);

        let no_media = message(
            49,
            6,
            MessageKind::File {
                name: "x".into(),
                size: 1,
                media_id: " ".into(),
                ext: String::new(),
            },
        );
        assert_eq!(MediaRef::from_message(&no_media), None);
        let text = message(
            1,
            0,
            MessageKind::Text {
                text: "hi".into(),
                mentions: vec![],
                mentions_me: false,
            },
        );
        assert_eq!(MediaRef::from_message(&text), None);
        let mut no_id = voice.clone();
        no_id.msg_id = String::new();
        no_id.new_msg_id = 0;
        assert_eq!(MediaRef::from_message(&no_id), None);
        no_id.new_msg_id = 77;
        assert_eq!(
            MediaRef::from_message(&no_id).map(|r| r.msg_id),
            Some("77".into())
        );
    }

    fn dl(bytes: &[u8], name: Option<&str>) -> Download {
        Download {
            bytes: bytes.to_vec(),
            content_type: "application/octet-stream".into(),
            file_name: name.map(str::to_owned),
        }
    }

    #[test]
    fn file_names() {
        let r = |kind, file_name: &str| MediaRef {
            kind,
            msg_type: 0,
            msg_id: "123".into(),
            from: String::new(),
            media_id: String::new(),
            file_name: file_name.into(),
            encry_file_name: String::new(),
        };
        let png = padded(b"\x89PNG\r\n\x1a\n");
        assert_eq!(
            file_name_for(&r(MediaRefKind::Image, ""), &dl(&png, None)),
            "123.png"
        );
        assert_eq!(
            file_name_for(
                &r(MediaRefKind::Image, ""),
                &dl(&padded(&[0xFF, 0xD8, 0xFF]), None)
            ),
            "123.jpg"
        );
        assert_eq!(
            file_name_for(&r(MediaRefKind::Image, ""), &dl(b"??", None)),
            "123.jpg"
        );
        assert_eq!(
            file_name_for(&r(MediaRefKind::Emoticon, ""), &dl(b"??", None)),
            "123.gif"
        );
        assert_eq!(
            file_name_for(
                &r(MediaRefKind::Emoticon, ""),
                &dl(&padded(b"GIF89a"), None)
            ),
            "123.gif"
        );
        assert_eq!(
            file_name_for(&r(MediaRefKind::Voice, ""), &dl(b"ID3", None)),
            "123.mp3"
        );
        assert_eq!(
            file_name_for(&r(MediaRefKind::Video, ""), &dl(b"", None)),
            "123.mp4"
        );
        assert_eq!(
            file_name_for(
                &r(MediaRefKind::File, "dir/报告.docx"),
                &dl(b"x", Some("other.docx"))
            ),
            "报告.docx"
        );
        assert_eq!(
            file_name_for(&r(MediaRefKind::File, ""), &dl(b"x", Some("served.zip"))),
            "served.zip"
        );
        assert_eq!(
            file_name_for(
                &r(MediaRefKind::File, ".."),
                &dl(&padded(b"%PDF-1.4"), None)
            ),
            "123.pdf"
        );
        let mut odd = r(MediaRefKind::Voice, "");
        odd.msg_id = "../../x".into();
        assert_eq!(file_name_for(&odd, &dl(b"", None)), "x.mp3");
    }
}
