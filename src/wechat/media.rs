//! Media on the web client: chunked uploads (webwxuploadmedia, spec §3.12), the media sends
//! (§3.13) and the downloads (§3.14), with declared size limits in both directions.
//!
//! Uploads are retried chunk by chunk on transient failures. A retried chunk whose first attempt
//! may have reached the server can be refused as out of order (Ret 1); the upload then starts
//! over under a new ClientMediaId, a bounded number of times.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use md5::{Digest, Md5};
use reqwest::header::{self, HeaderValue};
use reqwest::multipart::{Form, Part};
use serde_json::{Map, Value, json};
use url::Url;

use super::client::{
    Host, SentMessage, WebClient, check_ret, client_msg_id, id_string, now_ms, parse_json,
};
use super::error::WechatError;
use super::parse::parse_xml;
use crate::backoff::Backoff;

/// Upload chunk size of every client (spec §3.12); smaller files go in one part.
pub const CHUNK_SIZE: usize = 512 * 1024;
/// Largest upload accepted. Bigger files need the webwxcheckupload pre-check, which only one
/// client implements and which this client does not speak (spec §3.12).
pub const MAX_UPLOAD_BYTES: u64 = 25 * 1024 * 1024;
/// Largest image upload (the limit one client documents for pictures).
pub const MAX_IMAGE_UPLOAD_BYTES: u64 = 20 * 1024 * 1024;
/// Largest download kept in memory; past it the transfer is stopped.
pub const MAX_DOWNLOAD_BYTES: u64 = 100 * 1024 * 1024;

/// Tries per chunk (first try included) on transient failures.
const CHUNK_ATTEMPTS: u32 = 6;
/// Whole-upload tries when the server loses track of a retried chunk.
const UPLOAD_ATTEMPTS: u32 = 4;
const CHUNK_BACKOFF_MIN: Duration = Duration::from_millis(200);
const CHUNK_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Whole-transfer bound for one download request (bodies may be up to 100 MiB).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on follow-up range requests when a server answers a video in pieces.
const MAX_RANGE_REQUESTS: usize = 64;
/// The app id every client puts in the file appmsg (spec §3.13).
const FILE_APPMSG_APPID: &str = "wxeb7ec651dd0aefa9";

/// What is being uploaded; decides the `mediatype` field and the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UploadKind {
    Image,
    Video,
    File,
    /// An animated GIF, uploaded as `doc` and sent with webwxsendemoticon (spec §3.13, IT).
    Gif,
}

impl UploadKind {
    /// The multipart `mediatype` field.
    pub fn media_type(self) -> &'static str {
        match self {
            UploadKind::Image => "pic",
            UploadKind::Video => "video",
            UploadKind::File | UploadKind::Gif => "doc",
        }
    }

    /// Largest accepted upload of this kind, in bytes.
    pub fn max_bytes(self) -> u64 {
        match self {
            UploadKind::Image => MAX_IMAGE_UPLOAD_BYTES,
            UploadKind::Video | UploadKind::File | UploadKind::Gif => MAX_UPLOAD_BYTES,
        }
    }

    fn what(self) -> &'static str {
        match self {
            UploadKind::Image => "image upload",
            UploadKind::Video => "video upload",
            UploadKind::File => "file upload",
            UploadKind::Gif => "gif upload",
        }
    }
}

/// Errors of uploads, media sends and downloads: the client's own checks, or the protocol's.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{what} is {size} bytes, over the limit of {limit} bytes ({} MiB)", limit / (1024 * 1024))]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("{endpoint}: download stopped past the limit of {limit} bytes ({} MiB)", limit / (1024 * 1024))]
    DownloadTooLarge { endpoint: &'static str, limit: u64 },
    /// The caller's input cannot be sent (empty name, not an appmsg document…).
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    /// The server's answer does not make sense (a range answer for other bytes…).
    #[error("{endpoint}: {detail}")]
    BadAnswer {
        endpoint: &'static str,
        detail: String,
    },
    #[error(transparent)]
    Wechat(#[from] WechatError),
}

impl MediaError {
    /// Worth retrying later (network trouble or a 5xx); the client's own refusals never are.
    pub fn is_transient(&self) -> bool {
        match self {
            MediaError::Wechat(e) => e.is_transient(),
            _ => false,
        }
    }

    /// The server's Ret code, if this is one.
    pub fn ret(&self) -> Option<i64> {
        match self {
            MediaError::Wechat(e) => e.ret(),
            _ => None,
        }
    }
}

/// A downloaded attachment.
#[derive(Clone, PartialEq, Eq)]
pub struct Download {
    pub bytes: Vec<u8>,
    /// The answer's `Content-Type` (`application/octet-stream` when absent).
    pub content_type: String,
    /// The name from `Content-Disposition`, reduced to a plain file name.
    pub file_name: Option<String>,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("content_type", &self.content_type)
            .field("file_name", &self.file_name)
            .finish()
    }
}

/// Numbers the multipart `id` field per upload, like the browser's `WU_FILE_<n>`.
static NEXT_FILE_ID: AtomicU64 = AtomicU64::new(0);

/// Everything one upload sends, fixed across chunks and retries.
struct UploadJob<'a> {
    to: &'a str,
    name: String,
    content_type: String,
    bytes: &'a [u8],
    kind: UploadKind,
    file_md5: String,
    modified: String,
}

/// How one pass over the chunks failed.
enum UploadFailure {
    /// The server lost track of this upload after an ambiguous retry; a fresh upload may work.
    Restart(WechatError),
    Fatal(MediaError),
}

impl WebClient {
    // ---- upload ------------------------------------------------------------------------

    /// webwxuploadmedia (spec §3.12): uploads `bytes` to the file host, in 512 KiB chunks when
    /// larger than one, and returns the MediaId to send. The size limit of `kind` is checked
    /// before any request is made.
    pub async fn upload_media(
        &self,
        to: &str,
        file_name: &str,
        content_type: &str,
        bytes: &[u8],
        kind: UploadKind,
    ) -> Result<String, MediaError> {
        const EP: &str = "webwxuploadmedia";
        let size = bytes.len() as u64;
        let limit = kind.max_bytes();
        if size > limit {
            return Err(MediaError::TooLarge {
                what: kind.what(),
                size,
                limit,
            });
        }
        if bytes.is_empty() {
            return Err(MediaError::Invalid {
                what: kind.what(),
                detail: "the file is empty".into(),
            });
        }
        if to.is_empty() {
            return Err(MediaError::Invalid {
                what: kind.what(),
                detail: "no recipient".into(),
            });
        }
        let name = plain_file_name(file_name).ok_or_else(|| MediaError::Invalid {
            what: kind.what(),
            detail: format!("{file_name:?} is not a usable file name"),
        })?;
        let content_type = if content_type.trim().is_empty() {
            "application/octet-stream".to_owned()
        } else {
            content_type.trim().to_owned()
        };
        let job = UploadJob {
            to,
            name,
            content_type,
            bytes,
            kind,
            file_md5: hex::encode(Md5::digest(bytes)),
            modified: js_date(SystemTime::now()),
        };
        let mut attempt = 1;
        loop {
            match self.upload_once(&job).await {
                Ok(media_id) => return Ok(media_id),
                Err(UploadFailure::Restart(e)) if attempt < UPLOAD_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "{EP}: the server lost a retried chunk; starting the upload over");
                    attempt += 1;
                }
                Err(UploadFailure::Restart(e)) => return Err(e.into()),
                Err(UploadFailure::Fatal(e)) => return Err(e),
            }
        }
    }

    /// One pass over all chunks under a fresh ClientMediaId.
    async fn upload_once(&self, job: &UploadJob<'_>) -> Result<String, UploadFailure> {
        const EP: &str = "webwxuploadmedia";
        let fatal = |e: WechatError| UploadFailure::Fatal(e.into());
        let mut url = self.api(Host::File, EP).map_err(fatal)?;
        url.query_pairs_mut().append_pair("f", "json");
        let size = job.bytes.len() as u64;
        let client_media_id: i64 = client_msg_id().parse().unwrap_or_else(|_| now_ms());
        let request = json!({
            "UploadType": 2,
            "BaseRequest": self.base_request(),
            "ClientMediaId": client_media_id,
            "TotalLen": size,
            "StartPos": 0,
            "DataLen": size,
            "MediaType": 4,
            "FromUserName": self.self_user_name(),
            "ToUserName": job.to,
            "FileMd5": job.file_md5,
        })
        .to_string();
        let file_id = format!("WU_FILE_{}", NEXT_FILE_ID.fetch_add(1, Ordering::Relaxed));
        let data_ticket = self
            .lock()
            .cookies
            .get("webwx_data_ticket")
            .unwrap_or_default()
            .to_owned();
        if data_ticket.is_empty() {
            tracing::debug!("{EP}: no webwx_data_ticket cookie; uploading without one");
        }
        let pass_ticket = self.pass_ticket();
        let chunks: Vec<&[u8]> = job.bytes.chunks(CHUNK_SIZE).collect();
        let count = chunks.len();
        for (index, chunk) in chunks.into_iter().enumerate() {
            let last = index + 1 == count;
            let mut backoff = Backoff::new(CHUNK_BACKOFF_MIN, CHUNK_BACKOFF_MAX);
            let mut tries = 0;
            let answer = loop {
                tries += 1;
                let mut form = Form::new()
                    .text("id", file_id.clone())
                    .text("name", job.name.clone())
                    .text("type", job.content_type.clone())
                    .text("lastModifiedDate", job.modified.clone())
                    .text("size", size.to_string());
                if count > 1 {
                    form = form
                        .text("chunks", count.to_string())
                        .text("chunk", index.to_string());
                }
                let part = Part::bytes(chunk.to_vec())
                    .file_name(job.name.clone())
                    .mime_str("application/octet-stream")
                    .expect("a static MIME type parses");
                let form = form
                    .text("mediatype", job.kind.media_type())
                    .text("uploadmediarequest", request.clone())
                    .text("webwx_data_ticket", data_ticket.clone())
                    .text("pass_ticket", pass_ticket.clone())
                    .part("filename", part);
                match self.post_chunk(EP, url.clone(), form).await {
                    Ok(v) => break v,
                    Err(e) if e.is_transient() && tries < CHUNK_ATTEMPTS => {
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %e, chunk = index, chunks = count, retry_in_ms = delay.as_millis() as u64, "{EP}: chunk failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    // An earlier try of this chunk may have been stored; the server then refuses
                    // the repeat as a bad request (spec §9: Ret 1 on upload).
                    Err(e) if tries > 1 && e.ret() == Some(1) => {
                        return Err(UploadFailure::Restart(e));
                    }
                    Err(e) => return Err(fatal(e)),
                }
            };
            let media_id = answer.get("MediaId").map(id_string).unwrap_or_default();
            if last {
                if media_id.is_empty() {
                    return Err(fatal(WechatError::Missing {
                        endpoint: EP,
                        what: "MediaId after the last chunk",
                    }));
                }
                return Ok(media_id);
            }
        }
        // `chunks` of a non-empty slice is never empty, so the loop returned.
        Err(fatal(WechatError::Missing {
            endpoint: EP,
            what: "MediaId",
        }))
    }

    async fn post_chunk(
        &self,
        endpoint: &'static str,
        url: Url,
        form: Form,
    ) -> Result<Value, WechatError> {
        let req = self.http().post(url).multipart(form);
        let (status, _, text) = self
            .send(endpoint, req, self.settings().request_timeout)
            .await?;
        if !(200..300).contains(&status) {
            return Err(WechatError::Status { endpoint, status });
        }
        let v = parse_json(endpoint, &text)?;
        check_ret(endpoint, &v)?;
        Ok(v)
    }

    // ---- sends -------------------------------------------------------------------------

    /// webwxsendmsgimg: an uploaded image (MsgType 3).
    pub async fn send_image(&self, to: &str, media_id: &str) -> Result<SentMessage, MediaError> {
        const EP: &str = "webwxsendmsgimg";
        require_media_id(EP, media_id)?;
        let msg = json!({"Type": 3, "MediaId": media_id, "Content": ""});
        self.send_media_msg(EP, "async", to, msg).await
    }

    /// webwxsendvideomsg: an uploaded mp4 (MsgType 43).
    pub async fn send_video(&self, to: &str, media_id: &str) -> Result<SentMessage, MediaError> {
        const EP: &str = "webwxsendvideomsg";
        require_media_id(EP, media_id)?;
        let msg = json!({"Type": 43, "MediaId": media_id, "Content": ""});
        self.send_media_msg(EP, "async", to, msg).await
    }

    /// webwxsendemoticon: an uploaded GIF as a sticker (MsgType 47, EmojiFlag 2).
    pub async fn send_emoticon(&self, to: &str, media_id: &str) -> Result<SentMessage, MediaError> {
        const EP: &str = "webwxsendemoticon";
        require_media_id(EP, media_id)?;
        let msg = json!({"Type": 47, "EmojiFlag": 2, "MediaId": media_id});
        self.send_media_msg(EP, "sys", to, msg).await
    }

    /// webwxsendappmsg with the file appmsg (Type 6) for an uploaded attachment.
    pub async fn send_file(
        &self,
        to: &str,
        file_name: &str,
        size: u64,
        media_id: &str,
    ) -> Result<SentMessage, MediaError> {
        const EP: &str = "webwxsendappmsg";
        require_media_id(EP, media_id)?;
        let name = plain_file_name(file_name).ok_or_else(|| MediaError::Invalid {
            what: EP,
            detail: format!("{file_name:?} is not a usable file name"),
        })?;
        let msg = json!({"Type": 6, "Content": file_appmsg_xml(&name, size, media_id)});
        self.send_media_msg(EP, "async", to, msg).await
    }

    /// webwxsendappmsg with a link card (appmsg type 5).
    pub async fn send_link(
        &self,
        to: &str,
        title: &str,
        desc: &str,
        url: &str,
        thumb_url: &str,
    ) -> Result<SentMessage, MediaError> {
        const EP: &str = "webwxsendappmsg";
        if url.trim().is_empty() {
            return Err(MediaError::Invalid {
                what: EP,
                detail: "a link needs a url".into(),
            });
        }
        let msg = json!({"Type": 5, "Content": link_appmsg_xml(title, desc, url, thumb_url)});
        self.send_media_msg(EP, "async", to, msg).await
    }

    /// webwxsendappmsg with caller-made appmsg XML (mini-program cards and other shares). The
    /// XML must be an `<appmsg>` document, or a received `<msg>` wrapping one; `Msg.Type` is
    /// its `<type>`.
    pub async fn send_app_xml(&self, to: &str, xml: &str) -> Result<SentMessage, MediaError> {
        const EP: &str = "webwxsendappmsg";
        let (content, app_type) = appmsg_document(xml)?;
        let msg = json!({"Type": app_type, "Content": content});
        self.send_media_msg(EP, "async", to, msg).await
    }

    /// Posts `{"BaseRequest","Msg","Scene":0}` to a media send endpoint; `msg` gets the sender,
    /// recipient and client ids added.
    async fn send_media_msg(
        &self,
        endpoint: &'static str,
        fun: &str,
        to: &str,
        msg: Value,
    ) -> Result<SentMessage, MediaError> {
        if to.trim().is_empty() {
            return Err(MediaError::Invalid {
                what: endpoint,
                detail: "no recipient".into(),
            });
        }
        let mut url = self.api(Host::Main, endpoint)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("fun", fun);
            if fun == "async" {
                q.append_pair("f", "json");
            }
            q.append_pair("lang", "zh_CN")
                .append_pair("pass_ticket", &self.pass_ticket());
        }
        let id = client_msg_id();
        let mut fields = match msg {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        fields.insert("FromUserName".into(), self.self_user_name().into());
        fields.insert("ToUserName".into(), to.into());
        fields.insert("LocalID".into(), id.clone().into());
        fields.insert("ClientMsgId".into(), id.clone().into());
        let body = json!({
            "BaseRequest": self.base_request(),
            "Msg": Value::Object(fields),
            "Scene": 0,
        });
        let v = self.post_json(endpoint, url, body).await?;
        let msg_id = v
            .get("MsgID")
            .map(id_string)
            .filter(|s| !s.is_empty())
            .ok_or(WechatError::Missing {
                endpoint,
                what: "MsgID",
            })?;
        Ok(SentMessage {
            msg_id,
            local_id: id,
        })
    }

    // ---- downloads ---------------------------------------------------------------------

    /// webwxgetmsgimg: the image (or emoticon) of a message.
    pub async fn get_msg_img(&self, msg_id: &str) -> Result<Download, MediaError> {
        self.get_by_msg_id("webwxgetmsgimg", "MsgID", msg_id, false)
            .await
    }

    /// webwxgetvoice: the mp3 of a voice message.
    pub async fn get_voice(&self, msg_id: &str) -> Result<Download, MediaError> {
        self.get_by_msg_id("webwxgetvoice", "msgid", msg_id, false)
            .await
    }

    /// webwxgetvideo: the mp4 of a video message, asked for with `Range: bytes=0-` (spec §3.14).
    pub async fn get_video(&self, msg_id: &str) -> Result<Download, MediaError> {
        self.get_by_msg_id("webwxgetvideo", "msgid", msg_id, true)
            .await
    }

    async fn get_by_msg_id(
        &self,
        endpoint: &'static str,
        param: &str,
        msg_id: &str,
        ranged: bool,
    ) -> Result<Download, MediaError> {
        let msg_id = msg_id.trim();
        if msg_id.is_empty() || !msg_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MediaError::Invalid {
                what: endpoint,
                detail: format!("{msg_id:?} is not a message id"),
            });
        }
        let mut url = self.api(Host::Main, endpoint)?;
        let skey = self.lock().credentials.skey.clone();
        url.query_pairs_mut()
            .append_pair(param, msg_id)
            .append_pair("skey", &skey);
        self.fetch(endpoint, url, ranged, None).await
    }

    /// webwxgetmedia on the file host: an attachment by MediaId (spec §3.14). `sender` is the
    /// message's FromUserName; both name forms are passed, as clients differ in which they send.
    pub async fn get_media(
        &self,
        sender: &str,
        media_id: &str,
        file_name: &str,
        encry_file_name: &str,
    ) -> Result<Download, MediaError> {
        const EP: &str = "webwxgetmedia";
        require_media_id(EP, media_id)?;
        let mut url = self.api(Host::File, EP)?;
        let referer = self.origin(Host::Main, EP)?;
        let (uin, pass_ticket, data_ticket) = {
            let s = self.lock();
            (
                s.credentials.uin.clone(),
                s.credentials.pass_ticket.clone(),
                s.cookies
                    .get("webwx_data_ticket")
                    .unwrap_or_default()
                    .to_owned(),
            )
        };
        url.query_pairs_mut()
            .append_pair("sender", sender)
            .append_pair("mediaid", media_id)
            .append_pair("encryfilename", encry_file_name)
            .append_pair("filename", file_name)
            .append_pair("fromuser", &uin)
            .append_pair("pass_ticket", &pass_ticket)
            .append_pair("webwx_data_ticket", &data_ticket);
        self.fetch(EP, url, false, Some(referer)).await
    }

    /// GETs a media body with the session cookies, keeping at most [`MAX_DOWNLOAD_BYTES`].
    /// With `ranged`, asks for `bytes=0-` and, should the server answer only part of it, for
    /// the rest in further range requests.
    async fn fetch(
        &self,
        endpoint: &'static str,
        url: Url,
        ranged: bool,
        referer: Option<Url>,
    ) -> Result<Download, MediaError> {
        let limit = MAX_DOWNLOAD_BYTES;
        let transport = |e: reqwest::Error| WechatError::transport(endpoint, e, DOWNLOAD_TIMEOUT);
        let mut bytes: Vec<u8> = Vec::new();
        let mut content_type: Option<String> = None;
        let mut file_name: Option<String> = None;
        for _ in 0..MAX_RANGE_REQUESTS {
            let start = bytes.len() as u64;
            let mut req = self.http().get(url.clone()).timeout(DOWNLOAD_TIMEOUT);
            if let Some(c) = self.lock().cookies.header_value() {
                req = req.header(header::COOKIE, c);
            }
            if ranged {
                req = req.header(header::RANGE, format!("bytes={start}-"));
            }
            if let Some(r) = &referer {
                req = req.header(header::REFERER, r.as_str());
            }
            let mut resp = req.send().await.map_err(transport)?;
            self.lock().cookies.store_from_headers(resp.headers());
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(WechatError::Status { endpoint, status }.into());
            }
            let headers = resp.headers();
            if content_type.is_none() {
                content_type = header_str(headers.get(header::CONTENT_TYPE)).map(str::to_owned);
            }
            if file_name.is_none() {
                file_name = header_str(headers.get(header::CONTENT_DISPOSITION))
                    .and_then(content_disposition_file_name);
            }
            let range = if status == 206 {
                header_str(headers.get(header::CONTENT_RANGE)).and_then(parse_content_range)
            } else {
                None
            };
            if status != 206 && start > 0 {
                // The server ignored the follow-up range and sent everything again.
                bytes.clear();
            }
            let base = bytes.len() as u64;
            if let Some(r) = range {
                if r.first != base {
                    return Err(MediaError::BadAnswer {
                        endpoint,
                        detail: format!(
                            "asked for bytes from {base}, got a range from {}",
                            r.first
                        ),
                    });
                }
                if let Some(total) = r.total.filter(|t| *t > limit) {
                    return Err(MediaError::TooLarge {
                        what: endpoint,
                        size: total,
                        limit,
                    });
                }
            }
            if let Some(len) = resp.content_length()
                && base + len > limit
            {
                return Err(MediaError::TooLarge {
                    what: endpoint,
                    size: base + len,
                    limit,
                });
            }
            while let Some(piece) = resp.chunk().await.map_err(transport)? {
                if bytes.len() as u64 + piece.len() as u64 > limit {
                    return Err(MediaError::DownloadTooLarge { endpoint, limit });
                }
                bytes.extend_from_slice(&piece);
            }
            let got = bytes.len() as u64 - base;
            match range.and_then(|r| r.total) {
                Some(total) if (bytes.len() as u64) < total => {
                    if got == 0 {
                        return Err(MediaError::BadAnswer {
                            endpoint,
                            detail: format!("empty range answer at byte {base} of {total}"),
                        });
                    }
                    tracing::debug!(
                        endpoint,
                        have = bytes.len(),
                        total,
                        "partial answer; asking for the rest"
                    );
                }
                _ => {
                    return Ok(Download {
                        bytes,
                        content_type: content_type
                            .unwrap_or_else(|| "application/octet-stream".to_owned()),
                        file_name,
                    });
                }
            }
        }
        Err(MediaError::BadAnswer {
            endpoint,
            detail: format!("still incomplete after {MAX_RANGE_REQUESTS} range requests"),
        })
    }
}

fn require_media_id(endpoint: &'static str, media_id: &str) -> Result<(), MediaError> {
    if media_id.trim().is_empty() {
        return Err(MediaError::Invalid {
            what: endpoint,
            detail: "no MediaId".into(),
        });
    }
    Ok(())
}

fn header_str(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn xml_escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// The extension of a file name (without the dot), or `""`.
fn extension(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.contains(char::is_whitespace) => ext,
        _ => "",
    }
}

/// The file appmsg XML sent for attachments (spec §3.13); name and extension escaped.
pub fn file_appmsg_xml(file_name: &str, size: u64, media_id: &str) -> String {
    format!(
        "<appmsg appid='{FILE_APPMSG_APPID}' sdkver=''><title>{title}</title><des></des><action></action><type>6</type><content></content><url></url><lowurl></lowurl><appattach><totallen>{size}</totallen><attachid>{id}</attachid><fileext>{ext}</fileext></appattach><extinfo></extinfo></appmsg>",
        title = xml_escape(file_name),
        id = xml_escape(media_id),
        ext = xml_escape(extension(file_name)),
    )
}

/// A link card appmsg (type 5); every value escaped.
pub fn link_appmsg_xml(title: &str, desc: &str, url: &str, thumb_url: &str) -> String {
    format!(
        "<appmsg appid='' sdkver=''><title>{}</title><des>{}</des><action>view</action><type>5</type><content></content><url>{}</url><thumburl>{}</thumburl><lowurl></lowurl><appattach><totallen>0</totallen><attachid></attachid><fileext></fileext></appattach><extinfo></extinfo></appmsg>",
        xml_escape(title),
        xml_escape(desc),
        xml_escape(url),
        xml_escape(thumb_url),
    )
}

/// Checks caller-made appmsg XML: returns the `<appmsg>` element's text (cut out of a `<msg>`
/// wrapper if there is one) and its `<type>` (6 when absent).
pub fn appmsg_document(xml: &str) -> Result<(String, i64), MediaError> {
    const WHAT: &str = "app message xml";
    let invalid = |detail: String| MediaError::Invalid { what: WHAT, detail };
    let trimmed = xml.trim();
    let root = parse_xml(trimmed).map_err(|e| invalid(format!("not well-formed: {e}")))?;
    let content = match root.name.as_str() {
        "appmsg" => trimmed.to_owned(),
        "msg" if root.child("appmsg").is_some() => {
            let start = trimmed
                .find("<appmsg")
                .ok_or_else(|| invalid("no <appmsg>".into()))?;
            let end = trimmed
                .rfind("</appmsg>")
                .map(|i| i + "</appmsg>".len())
                .filter(|e| *e > start)
                .ok_or_else(|| invalid("no </appmsg>".into()))?;
            trimmed[start..end].to_owned()
        }
        other => {
            return Err(invalid(format!(
                "the document is <{other}>, not an <appmsg>"
            )));
        }
    };
    let appmsg = parse_xml(&content).map_err(|e| invalid(format!("not well-formed: {e}")))?;
    if appmsg.name != "appmsg" {
        return Err(invalid("the document is not an <appmsg>".into()));
    }
    let app_type = match appmsg.child_text("type").map(str::trim) {
        None | Some("") => 6,
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| invalid(format!("<type> {t:?} is not a number")))?,
    };
    Ok((content, app_type))
}

/// The `EncryFileName` form of a file name: every byte but ASCII letters, digits and `-` as
/// `%XX` (spec §5.1, e.g. `IMG%5F1854%2EJPG`).
pub fn encry_file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The last path component of a name, without control characters, bounded in length; `None`
/// when nothing usable is left (`""`, `.`, `..`).
pub fn plain_file_name(name: &str) -> Option<String> {
    const MAX_CHARS: usize = 200;
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last.chars().filter(|c| !c.is_control()).collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return None;
    }
    if cleaned.chars().count() <= MAX_CHARS {
        return Some(cleaned.to_owned());
    }
    // Keep the extension when shortening.
    let ext = extension(cleaned);
    let keep_ext = !ext.is_empty() && ext.chars().count() < 16;
    let tail = if keep_ext {
        format!(".{ext}")
    } else {
        String::new()
    };
    let head: String = cleaned
        .chars()
        .take(MAX_CHARS - tail.chars().count())
        .collect();
    Some(format!("{head}{tail}"))
}

/// The file name of a `Content-Disposition` value: `filename*=UTF-8''…` first, then
/// `filename=`; reduced by [`plain_file_name`].
pub fn content_disposition_file_name(value: &str) -> Option<String> {
    let mut plain: Option<String> = None;
    let mut extended: Option<String> = None;
    for param in split_params(value) {
        let Some((key, val)) = param.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let val = val.trim();
        match key.as_str() {
            "filename*" => {
                // charset'language'percent-encoded
                let mut parts = val.splitn(3, '\'');
                let (charset, _, encoded) = (parts.next(), parts.next(), parts.next());
                if let (Some(cs), Some(enc)) = (charset, encoded)
                    && (cs.eq_ignore_ascii_case("utf-8") || cs.is_empty())
                {
                    extended = percent_decode(enc);
                }
            }
            "filename" => {
                let unquoted = val
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .map(|v| v.replace("\\\"", "\"").replace("\\\\", "\\"))
                    .unwrap_or_else(|| val.to_owned());
                plain = Some(unquoted);
            }
            _ => {}
        }
    }
    extended.or(plain).and_then(|n| plain_file_name(&n))
}

/// Splits header parameters on `;` outside double quotes.
fn split_params(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// Decodes `%XX` escapes to UTF-8; `None` for a broken escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A parsed `Content-Range: bytes first-last/total` (total `None` for `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ContentRange {
    first: u64,
    last: u64,
    total: Option<u64>,
}

fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.trim().split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    if last < first {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => {
            let t: u64 = t.parse().ok()?;
            if last >= t {
                return None;
            }
            Some(t)
        }
    };
    Some(ContentRange { first, last, total })
}

/// A JavaScript `Date.toString()`-style time for `lastModifiedDate`, in UTC:
/// `Tue Nov 21 2023 04:45:00 GMT+0000 (Coordinated Universal Time)`.
fn js_date(t: SystemTime) -> String {
    // httpdate gives `Tue, 21 Nov 2023 04:45:00 GMT`; only the field order differs.
    let http = httpdate::fmt_http_date(t);
    let parts: Vec<&str> = http.split_whitespace().collect();
    match parts.as_slice() {
        [weekday, day, month, year, time, _] => format!(
            "{} {month} {day} {year} {time} GMT+0000 (Coordinated Universal Time)",
            weekday.trim_end_matches(',')
        ),
        _ => http,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn upload_kinds() {
        assert_eq!(UploadKind::Image.media_type(), "pic");
        assert_eq!(UploadKind::Video.media_type(), "video");
        assert_eq!(UploadKind::File.media_type(), "doc");
        assert_eq!(UploadKind::Gif.media_type(), "doc");
        assert_eq!(UploadKind::Image.max_bytes(), 20 * 1024 * 1024);
        assert_eq!(UploadKind::File.max_bytes(), MAX_UPLOAD_BYTES);
    }

    #[test]
    fn too_large_names_size_and_limit() {
        let e = MediaError::TooLarge {
            what: "image upload",
            size: 21 * 1024 * 1024,
            limit: MAX_IMAGE_UPLOAD_BYTES,
        };
        assert_eq!(
            e.to_string(),
            "image upload is 22020096 bytes, over the limit of 20971520 bytes (20 MiB)"
        );
        assert!(!e.is_transient());
    }

    #[test]
    fn file_xml_escapes_title_and_ext() {
        let x = file_appmsg_xml("a<b>&'c\".t&t", 42, "@crypt_1");
        assert!(
            x.contains("<title>a&lt;b&gt;&amp;&apos;c&quot;.t&amp;t</title>"),
            "{x}"
        );
        assert!(x.contains("<fileext>t&amp;t</fileext>"), "{x}");
        assert!(x.contains("<totallen>42</totallen><attachid>@crypt_1</attachid>"));
        assert!(x.starts_with("<appmsg appid='wxeb7ec651dd0aefa9' sdkver=''>"));
        let root = parse_xml(&x).expect("well-formed");
        assert_eq!(root.child_text("title"), Some("a<b>&'c\".t&t"));
        assert_eq!(root.child_text("type"), Some("6"));
        // No extension: empty fileext; dot files have none either.
        assert!(file_appmsg_xml("README", 1, "m").contains("<fileext></fileext>"));
        assert!(file_appmsg_xml(".bashrc", 1, "m").contains("<fileext></fileext>"));
    }

    #[test]
    fn link_xml_escapes_everything() {
        let x = link_appmsg_xml("T<1>", "d & e", "https://x/?a=1&b=2", "https://t/\"q\"");
        let root = parse_xml(&x).expect("well-formed");
        assert_eq!(root.child_text("title"), Some("T<1>"));
        assert_eq!(root.child_text("des"), Some("d & e"));
        assert_eq!(root.child_text("url"), Some("https://x/?a=1&b=2"));
        assert_eq!(root.child_text("thumburl"), Some("https://t/\"q\""));
        assert_eq!(root.child_text("type"), Some("5"));
        assert!(x.contains("?a=1&amp;b=2"));
    }

    #[test]
    fn appmsg_documents() {
        let (c, t) =
            appmsg_document("  <appmsg appid=\"wx1\"><title>Mini</title><type>33</type></appmsg> ")
                .expect("appmsg");
        assert_eq!(t, 33);
        assert!(c.starts_with("<appmsg") && c.ends_with("</appmsg>"));
        let (c, t) = appmsg_document(
            "<?xml version=\"1.0\"?><msg><appmsg><title>x</title><type>5</type></appmsg><fromusername>a</fromusername></msg>",
        )
        .expect("wrapped");
        assert_eq!(c, "<appmsg><title>x</title><type>5</type></appmsg>");
        assert_eq!(t, 5);
        assert_eq!(
            appmsg_document("<appmsg><title>x</title></appmsg>")
                .expect("no type")
                .1,
            6
        );
        for bad in [
            "",
            "hello",
            "<msg><img/></msg>",
            "<appmsg><title>x</title>",
            "<appmsg><type>five</type></appmsg>",
            "<html><appmsg></appmsg></html>",
        ] {
            let e = appmsg_document(bad).expect_err(bad);
            assert!(matches!(e, MediaError::Invalid { .. }), "{bad}: {e}");
            assert!(e.to_string().starts_with("app message xml: "), "{e}");
        }
        assert!(
            appmsg_document("<img/>")
                .unwrap_err()
                .to_string()
                .contains("<img>, not an <appmsg>")
        );
    }

    #[test]
    fn encry_file_names() {
        assert_eq!(encry_file_name("IMG_1854.JPG"), "IMG%5F1854%2EJPG");
        assert_eq!(encry_file_name("a-b c.zip"), "a-b%20c%2Ezip");
        assert_eq!(encry_file_name("é"), "%C3%A9");
    }

    #[test]
    fn plain_file_names() {
        assert_eq!(plain_file_name("a/b/c.txt").as_deref(), Some("c.txt"));
        assert_eq!(plain_file_name("..\\..\\x.exe").as_deref(), Some("x.exe"));
        assert_eq!(plain_file_name("a\u{0}b\n.txt").as_deref(), Some("ab.txt"));
        assert_eq!(plain_file_name(" 报告.pdf ").as_deref(), Some("报告.pdf"));
        for bad in ["", "   ", "..", ".", "a/", "dir/.."] {
            assert_eq!(plain_file_name(bad), None, "{bad:?}");
        }
        let long = format!("{}.docx", "x".repeat(500));
        let short = plain_file_name(&long).expect("long");
        assert_eq!(short.chars().count(), 200);
        assert!(short.ends_with(".docx"));
    }

    #[test]
    fn content_disposition() {
        let f = content_disposition_file_name;
        assert_eq!(
            f("attachment; filename=\"a_b.zip\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A%20v1.zip")
                .as_deref(),
            Some("报告 v1.zip")
        );
        assert_eq!(
            f("attachment; filename=\"x;y.txt\"").as_deref(),
            Some("x;y.txt")
        );
        assert_eq!(
            f("attachment; filename=plain.txt").as_deref(),
            Some("plain.txt")
        );
        assert_eq!(
            f("attachment; filename=\"../../etc/passwd\"").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            f("attachment; filename*=UTF-8''%ZZ; filename=\"ok.txt\"").as_deref(),
            Some("ok.txt")
        );
        assert_eq!(f("inline"), None);
        assert_eq!(f("attachment; filename=\"\""), None);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 0-65535/65536"),
            Some(ContentRange {
                first: 0,
                last: 65535,
                total: Some(65536)
            })
        );
        assert_eq!(
            parse_content_range("bytes 10-19/*"),
            Some(ContentRange {
                first: 10,
                last: 19,
                total: None
            })
        );
        for bad in [
            "bytes 5-4/10",
            "bytes 0-10/10",
            "bytes */10",
            "items 0-1/2",
            "",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn js_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_541_900);
        assert_eq!(
            js_date(t),
            "Tue Nov 21 2023 04:45:00 GMT+0000 (Coordinated Universal Time)"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%E2%9C%93").as_deref(), Some("✓"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%FF"), None);
    }
}
