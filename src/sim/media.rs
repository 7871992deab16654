//! Media: the per-account store of attachments (by message id and by MediaId), chunked uploads
//! (webwxuploadmedia, spec §3.12) and the download endpoints (§3.14, §10.5).

use std::collections::{HashMap, VecDeque};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::accounts::OutboxEntry;
use super::assets;
use super::content;
use super::http::{self, Auth, Req, as_u64, auth_any, auth_cookies, get_ci, str_field};
use super::ids;
use super::state::Sim;

/// Stored bytes, or a patterned payload of a given size generated on demand (big injected files
/// cost no memory).
#[derive(Debug, Clone)]
pub(crate) enum BlobData {
    Bytes(Bytes),
    Pattern(u64),
}

#[derive(Debug, Clone)]
pub(crate) struct Blob {
    pub content_type: String,
    pub file_name: String,
    pub data: BlobData,
}

impl Blob {
    pub(crate) fn bytes(content_type: &str, file_name: &str, data: impl Into<Bytes>) -> Self {
        Blob {
            content_type: content_type.into(),
            file_name: file_name.into(),
            data: BlobData::Bytes(data.into()),
        }
    }

    pub(crate) fn len(&self) -> u64 {
        match &self.data {
            BlobData::Bytes(b) => b.len() as u64,
            BlobData::Pattern(n) => *n,
        }
    }

    /// Bytes `start..=end_inclusive` (both within the blob) as a body; patterned payloads are
    /// generated in 64 KiB pieces while streaming, so huge files cost no memory.
    fn body(&self, start: u64, end_inclusive: u64) -> Body {
        match &self.data {
            BlobData::Bytes(b) => Body::from(b.slice(start as usize..=end_inclusive as usize)),
            BlobData::Pattern(_) => {
                const PIECE: u64 = 64 * 1024;
                let stream = futures::stream::unfold(start, move |pos| async move {
                    if pos > end_inclusive {
                        return None;
                    }
                    let n = PIECE.min(end_inclusive - pos + 1);
                    let piece = Bytes::from(assets::pattern(pos, n as usize));
                    Some((Ok::<Bytes, std::convert::Infallible>(piece), pos + n))
                });
                Body::from_stream(stream)
            }
        }
    }
}

/// An upload in progress, keyed by ClientMediaId + name + size.
#[derive(Debug)]
pub(crate) struct Upload {
    next_chunk: u64,
    data: Vec<u8>,
}

const MSG_MEDIA_CAP: usize = 2_000;
const UPLOAD_BYTES_CAP: u64 = 256 * 1024 * 1024;
const MAX_PENDING_UPLOADS: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct MediaStore {
    by_msg: HashMap<u64, Blob>,
    msg_order: VecDeque<u64>,
    by_media_id: HashMap<String, Blob>,
    media_order: VecDeque<String>,
    media_bytes: u64,
    uploads: HashMap<String, Upload>,
}

impl MediaStore {
    pub(crate) fn put_msg(&mut self, msg_id: u64, blob: Blob) {
        if self.by_msg.insert(msg_id, blob).is_none() {
            self.msg_order.push_back(msg_id);
            while self.msg_order.len() > MSG_MEDIA_CAP {
                if let Some(old) = self.msg_order.pop_front() {
                    self.by_msg.remove(&old);
                }
            }
        }
    }

    pub(crate) fn msg(&self, msg_id: u64) -> Option<&Blob> {
        self.by_msg.get(&msg_id)
    }

    pub(crate) fn put_media(&mut self, media_id: String, blob: Blob) {
        if let BlobData::Bytes(b) = &blob.data {
            self.media_bytes += b.len() as u64;
        }
        self.by_media_id.insert(media_id.clone(), blob);
        self.media_order.push_back(media_id);
        while self.media_bytes > UPLOAD_BYTES_CAP && self.media_order.len() > 1 {
            if let Some(old) = self.media_order.pop_front()
                && let Some(Blob {
                    data: BlobData::Bytes(b),
                    ..
                }) = self.by_media_id.remove(&old)
            {
                self.media_bytes -= b.len() as u64;
            }
        }
    }

    pub(crate) fn media(&self, media_id: &str) -> Option<&Blob> {
        self.by_media_id.get(media_id)
    }
}

fn upload_reply(
    ret: i64,
    msg: &str,
    media_id: &str,
    start_pos: u64,
    pic: bool,
    name: &str,
) -> Response {
    http::json_resp(&json!({
        "BaseResponse": http::base_response(ret, msg),
        "MediaId": media_id,
        "StartPos": start_pos,
        "CDNThumbImgHeight": if pic { 100 } else { 0 },
        "CDNThumbImgWidth": if pic { 66 } else { 0 },
        "EncryFileName": if media_id.is_empty() { String::new() } else { content::encry_file_name(name) },
    }))
}

/// `POST webwxuploadmedia?f=json` (multipart, fields in any order, optionally chunked).
pub(crate) async fn upload(sim: &Sim, req: &Req) -> Response {
    let bad = |msg: &str| upload_reply(1, msg, "", 0, false, "");
    if req.method == axum::http::Method::OPTIONS {
        return bad("preflight");
    }
    let Some(boundary) = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
    else {
        return bad("expected multipart/form-data");
    };
    let body = req.body.clone();
    let stream = futures::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut file: Option<Bytes> = None;
    loop {
        match form.next_field().await {
            Ok(Some(f)) => {
                let name = f.name().unwrap_or("").to_ascii_lowercase();
                let is_file = f.file_name().is_some() || name == "filename";
                let Ok(data) = f.bytes().await else {
                    return bad("unreadable multipart field");
                };
                if is_file {
                    file = Some(data);
                } else {
                    fields.insert(name, String::from_utf8_lossy(&data).into_owned());
                }
            }
            Ok(None) => break,
            Err(_) => return bad("malformed multipart body"),
        }
    }
    let Some(file) = file else {
        return bad("missing file part");
    };
    let request: Value = fields
        .get("uploadmediarequest")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let session = match auth_any(sim, req, Some(&request)) {
        Auth::Live(s) => s,
        Auth::Dead(code) => {
            return upload_reply(http::json_ret_for(code) as i64, "", "", 0, false, "");
        }
        Auth::Missing => return upload_reply(1101, "", "", 0, false, ""),
    };
    let Some(account) = sim.account(session.uin) else {
        return upload_reply(1101, "", "", 0, false, "");
    };
    let name = fields.get("name").cloned().unwrap_or_default();
    let size = fields
        .get("size")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .or_else(|| get_ci(&request, "TotalLen").and_then(as_u64))
        .unwrap_or(file.len() as u64);
    let chunks = fields
        .get("chunks")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1)
        .max(1);
    let chunk = fields
        .get("chunk")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if chunk >= chunks {
        return bad("chunk index out of range");
    }
    let client_media_id = get_ci(&request, "ClientMediaId")
        .map(http::as_string)
        .unwrap_or_else(|| fields.get("id").cloned().unwrap_or_default());
    let key = format!("{client_media_id}|{name}|{size}");
    let mediatype = fields.get("mediatype").cloned().unwrap_or_default();
    let pic = mediatype == "pic";

    let mut a = account.inner.lock().unwrap_or_else(|p| p.into_inner());
    let received = {
        let up = if chunk == 0 {
            if a.media.uploads.len() >= MAX_PENDING_UPLOADS {
                a.media.uploads.clear();
            }
            a.media.uploads.insert(
                key.clone(),
                Upload {
                    next_chunk: 0,
                    data: Vec::new(),
                },
            );
            a.media.uploads.get_mut(&key)
        } else {
            a.media.uploads.get_mut(&key)
        };
        let Some(up) = up else {
            return bad(&format!("chunk {chunk} arrived before chunk 0"));
        };
        if up.next_chunk != chunk {
            let expected = up.next_chunk;
            a.media.uploads.remove(&key);
            return bad(&format!("chunk {chunk} out of order, expected {expected}"));
        }
        if up.data.len() as u64 + file.len() as u64 > size {
            a.media.uploads.remove(&key);
            return bad("more bytes than the declared size");
        }
        up.data.extend_from_slice(&file);
        up.next_chunk += 1;
        up.data.len() as u64
    };
    if chunk + 1 < chunks {
        return upload_reply(0, "", "", received, false, &name);
    }
    let Some(up) = a.media.uploads.remove(&key) else {
        return bad("upload vanished");
    };
    if received != size {
        return bad(&format!("received {received} bytes, declared {size}"));
    }
    let media_id = ids::media_id();
    let content_type = fields
        .get("type")
        .cloned()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "application/octet-stream".into());
    a.media
        .put_media(media_id.clone(), Blob::bytes(&content_type, &name, up.data));
    let to = str_field(&request, "ToUserName");
    let to_nickname = a.book.nickname_of(&to);
    a.record(OutboxEntry {
        endpoint: "webwxuploadmedia".into(),
        msg_type: 0,
        from: str_field(&request, "FromUserName"),
        to,
        to_nickname,
        content: name.clone(),
        media_id: media_id.clone(),
        msg_id: String::new(),
        local_id: client_media_id,
        time_ms: ids::unix_ms_now(),
        detail: json!({"size": size, "chunks": chunks, "mediatype": mediatype, "type": content_type}),
    });
    drop(a);
    upload_reply(0, "", &media_id, size, pic, &name)
}

/// Parses `Range: bytes=a-b` / `a-` / `-n` against `len`; `Err` for an unsatisfiable range.
fn parse_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    let spec = spec.split(',').next().unwrap_or("").trim();
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    if len == 0 {
        return Err(());
    }
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            (len.saturating_sub(n), len - 1)
        }
        (s, "") => (s.parse().map_err(|_| ())?, len - 1),
        (s, e) => (
            s.parse().map_err(|_| ())?,
            e.parse::<u64>().map_err(|_| ())?.min(len - 1),
        ),
    };
    if start > end || start >= len {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn serve_blob(req: &Req, blob: &Blob, allow_range: bool, attachment: bool) -> Response {
    let len = blob.len();
    let range = if allow_range {
        match req
            .headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(|v| parse_range(v, len))
        {
            Some(Err(())) => {
                let mut r = (StatusCode::RANGE_NOT_SATISFIABLE, "").into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return r;
            }
            Some(Ok(r)) => r,
            None => None,
        }
    } else {
        None
    };
    let (status, body, body_len, content_range) = match range {
        Some((s, e)) => (
            StatusCode::PARTIAL_CONTENT,
            blob.body(s, e),
            e - s + 1,
            Some(format!("bytes {s}-{e}/{len}")),
        ),
        None if len == 0 => (StatusCode::OK, Body::empty(), 0, None),
        None => (StatusCode::OK, blob.body(0, len - 1), len, None),
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&blob.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    if allow_range {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    if let Some(cr) = content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
        h.insert(header::CONTENT_RANGE, cr);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=604800"),
    );
    if attachment {
        let ascii: String = blob
            .file_name
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '"' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let encoded: String = url::form_urlencoded::byte_serialize(blob.file_name.as_bytes())
            .collect::<String>()
            .replace('+', "%20");
        if let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
        )) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    r
}

/// Which download endpoint is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Download {
    MsgImg,
    Voice,
    Video,
}

/// `webwxgetmsgimg` / `webwxgetvoice` / `webwxgetvideo`: media of a message by its id
/// (`MsgID` or `msgid`), cookies required. Video honours `Range` with 206.
pub(crate) fn download(sim: &Sim, req: &Req, which: Download) -> Response {
    let session = match auth_cookies(sim, req) {
        Auth::Live(s) => s,
        _ => return (StatusCode::UNAUTHORIZED, "").into_response(),
    };
    let Some(id) = req
        .param("msgid")
        .and_then(|m| m.trim().parse::<u64>().ok())
    else {
        return http::not_found();
    };
    let Some(account) = sim.account(session.uin) else {
        return http::not_found();
    };
    let blob = {
        let a = account.inner.lock().unwrap_or_else(|p| p.into_inner());
        a.media.msg(id).cloned()
    };
    let Some(blob) = blob else {
        return http::not_found();
    };
    serve_blob(
        req,
        &blob,
        which == Download::Video || which == Download::Voice,
        false,
    )
}

/// `webwxgetmedia?mediaid=…` on the file host: an attachment by MediaId. Cookies, or a
/// `webwx_data_ticket` matching the `fromuser` account's live session, are enough.
pub(crate) fn get_media(sim: &Sim, req: &Req) -> Response {
    let account = match auth_cookies(sim, req) {
        Auth::Live(s) => sim.account(s.uin),
        _ => {
            let ticket = req
                .param("webwx_data_ticket")
                .map(str::to_string)
                .or_else(|| req.cookie("webwx_data_ticket"));
            req.param("fromuser")
                .and_then(|u| u.parse::<u64>().ok())
                .and_then(|u| sim.account(u))
                .filter(|a| {
                    let g = a.inner.lock().unwrap_or_else(|p| p.into_inner());
                    g.session
                        .as_ref()
                        .is_some_and(|s| s.is_alive() && Some(&s.data_ticket) == ticket.as_ref())
                })
        }
    };
    let Some(account) = account else {
        return (StatusCode::UNAUTHORIZED, "").into_response();
    };
    let Some(media_id) = req.param("mediaid") else {
        return http::not_found();
    };
    let blob = {
        let a = account.inner.lock().unwrap_or_else(|p| p.into_inner());
        a.media.media(media_id).cloned()
    };
    match blob {
        Some(b) => serve_blob(req, &b, true, true),
        None => http::not_found(),
    }
}

/// `webwxgeticon` / `webwxgetheadimg`: every avatar is the same small JPEG.
pub(crate) fn avatar() -> Response {
    http::bytes_resp(
        StatusCode::OK,
        "image/jpeg",
        Bytes::from_static(assets::jpeg()),
    )
}

/// `webwxcheckupload`: nothing is ever "already uploaded".
pub(crate) fn check_upload() -> Response {
    http::json_resp(&json!({
        "BaseResponse": http::base_response(0, ""),
        "MediaId": "",
        "AESKey": "",
        "Signature": "",
        "EncryFileName": "",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=2-4", 10), Ok(Some((2, 4))));
        assert_eq!(parse_range("bytes=-3", 10), Ok(Some((7, 9))));
        assert_eq!(parse_range("bytes=5-100", 10), Ok(Some((5, 9))));
        assert_eq!(parse_range("bytes=10-", 10), Err(()));
        assert_eq!(parse_range("items=0-1", 10), Ok(None));
    }

    #[tokio::test]
    async fn pattern_blob_bodies_match_pattern() {
        let b = Blob {
            content_type: "application/octet-stream".into(),
            file_name: "x".into(),
            data: BlobData::Pattern(200_000),
        };
        let got = axum::body::to_bytes(b.body(10, 150_009), usize::MAX)
            .await
            .expect("body");
        assert_eq!(got.as_ref(), assets::pattern(10, 150_000).as_slice());
    }

    #[test]
    fn media_store_evicts_by_bytes() {
        let mut s = MediaStore::default();
        let big = vec![0u8; (UPLOAD_BYTES_CAP / 2 + 1) as usize];
        s.put_media("a".into(), Blob::bytes("x", "a", big.clone()));
        s.put_media("b".into(), Blob::bytes("x", "b", big.clone()));
        assert!(s.media("a").is_none());
        assert!(s.media("b").is_some());
    }
}
