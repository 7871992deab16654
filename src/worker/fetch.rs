//! Fetching the URLs that tasks name (media to send) without letting a task reach into this
//! machine's network: http/https only, no credentials in URLs, a size cap enforced while
//! streaming, one total timeout, redirects followed by hand with every hop checked, and an
//! address guard applied to the very addresses the connection uses.
//!
//! The address guard runs in two places that together cover every connection:
//! - a URL whose host is an IP literal is checked before the request (the HTTP client connects
//!   to literals directly, without resolving);
//! - a host name is resolved by [`GuardedResolver`], the client's only resolver, which refuses
//!   the name when *any* of its addresses is refused. The client connects only to the addresses
//!   that resolver returned, so DNS cannot answer differently between check and connect, and a
//!   name with mixed public and private answers cannot be used to probe the private one.
//!
//! The client never uses a proxy (an environment `HTTP_PROXY` would otherwise make the guard
//! check the proxy's address instead of the target's).

use crate::config::MediaConfig;
use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{self, HeaderMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use url::{Host, Url};

/// The most redirects one fetch follows.
pub const MAX_REDIRECTS: usize = 5;

const FALLBACK_CONTENT_TYPE: &str = "application/octet-stream";

/// What kind of address the guard refused (or would refuse without `allow_private_urls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16.
    Private,
    /// 100.64/10 (carrier-grade NAT; also overlay networks such as Tailscale).
    SharedCgnat,
    /// fc00::/7.
    UniqueLocal,
    /// 169.254/16, fe80::/10 (includes cloud metadata services at 169.254.169.254).
    LinkLocal,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// 224/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// Anything else that is not ordinary public unicast: 240/4, 192.0.0/24, 198.18/15,
    /// 192.88.99/24, Teredo 2001::/32, benchmarking 2001:2::/48, deprecated IPv4-compatible
    /// and site-local IPv6 forms, and IPv6 outside 2000::/3.
    Reserved,
}

impl AddressClass {
    /// Whether `[media] allow_private_urls = true` lets this class through. Link-local stays
    /// refused: it is where cloud metadata endpoints live, never where media is served.
    pub fn allowed_with_private_urls(self) -> bool {
        matches!(
            self,
            AddressClass::Loopback
                | AddressClass::Private
                | AddressClass::SharedCgnat
                | AddressClass::UniqueLocal
        )
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::SharedCgnat => "shared (carrier-grade NAT)",
            AddressClass::UniqueLocal => "unique-local",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Documentation => "documentation",
            AddressClass::Reserved => "reserved",
        })
    }
}

/// Why a URL could not be fetched. URLs in messages are shown without credentials, query or
/// fragment (a task URL may carry a token).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("not a valid URL: {reason}")]
    BadUrl { reason: String },
    #[error("unsupported URL scheme {scheme:?}: only http and https URLs are fetched")]
    Scheme { scheme: String },
    #[error("URLs with a user name or password are refused: {url}")]
    Credentials { url: String },
    #[error("URL has no host: {url}")]
    NoHost { url: String },
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    /// The address guard refused `ip` (`host` is the name that resolved to it, if any).
    #[error("{}", refused_message(host.as_deref(), *ip, *class))]
    AddressRefused {
        host: Option<String>,
        ip: IpAddr,
        class: AddressClass,
    },
    #[error("more than {max} redirects fetching {url}")]
    TooManyRedirects { max: usize, url: String },
    #[error("redirect ({status}) without a usable Location from {url}")]
    BadRedirect { status: u16, url: String },
    #[error("server answered {status} for {url}")]
    Status { status: u16, url: String },
    /// `declared` is the Content-Length when the server announced the size up front.
    #[error("{url} is larger than the {limit}-byte limit ([media] max_download_bytes){}",
        declared.map(|d| format!(" (it announced {d} bytes)")).unwrap_or_default())]
    TooLarge {
        limit: u64,
        declared: Option<u64>,
        url: String,
    },
    #[error("fetching {url} took longer than {} ([media] fetch_timeout)", humantime::format_duration(*after))]
    Timeout { after: Duration, url: String },
    #[error("request to {url} failed")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot build the HTTP client for fetching")]
    Client {
        #[source]
        source: reqwest::Error,
    },
}

fn refused_message(host: Option<&str>, ip: IpAddr, class: AddressClass) -> String {
    let target = match host {
        Some(host) => format!("{host} ({ip})"),
        None => ip.to_string(),
    };
    let hint = if class.allowed_with_private_urls() {
        "; set [media] allow_private_urls = true to allow loopback and private addresses"
    } else {
        ""
    };
    format!("refusing to fetch from {target}: {class} address{hint}")
}

impl FetchError {
    /// The guard's own errors, rebuilt from a reference found in an HTTP error's source chain.
    fn guard_copy(&self) -> Option<FetchError> {
        Some(match self {
            FetchError::Resolve { host, reason } => FetchError::Resolve {
                host: host.clone(),
                reason: reason.clone(),
            },
            FetchError::NoAddress { host } => FetchError::NoAddress { host: host.clone() },
            FetchError::AddressRefused { host, ip, class } => FetchError::AddressRefused {
                host: host.clone(),
                ip: *ip,
                class: *class,
            },
            _ => return None,
        })
    }
}

/// The class of `ip` when it is anything but ordinary public unicast, `None` when it is public.
/// IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4) take the class of that address.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, c, _] = ip.octets();
    let class = match (a, b, c) {
        (0, _, _) => AddressClass::Unspecified,
        (127, _, _) => AddressClass::Loopback,
        (10, _, _) | (192, 168, _) => AddressClass::Private,
        (172, 16..=31, _) => AddressClass::Private,
        (100, 64..=127, _) => AddressClass::SharedCgnat,
        (169, 254, _) => AddressClass::LinkLocal,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressClass::Documentation,
        (192, 0, 0) | (192, 88, 99) | (198, 18..=19, _) => AddressClass::Reserved,
        (224..=239, _, _) => AddressClass::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => AddressClass::Broadcast,
        (240..=255, _, _) => AddressClass::Reserved,
        _ => return None,
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    if ip.is_unspecified() {
        return Some(AddressClass::Unspecified);
    }
    if ip.is_loopback() {
        return Some(AddressClass::Loopback);
    }
    let seg = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // ::ffff:a.b.c.d — the OS connects to the IPv4 address itself.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    // ::a.b.c.d (deprecated IPv4-compatible form): refused whatever it embeds, but a
    // loopback or private embedded address keeps its own class (and its hint).
    if seg[..6] == [0; 6] {
        return Some(classify_v4(embedded(seg[6], seg[7])).unwrap_or(AddressClass::Reserved));
    }
    // NAT64 (64:ff9b::/96 well-known, 64:ff9b:1::/48 local-use) reaches the embedded address.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || seg[..3] == [0x64, 0xff9b, 1] {
        return classify_v4(embedded(seg[6], seg[7]));
    }
    // 6to4 (2002::/16) embeds the IPv4 address right after the prefix.
    if seg[0] == 0x2002 {
        return classify_v4(embedded(seg[1], seg[2]));
    }
    let class = match seg[0] {
        0xff00..=0xffff => AddressClass::Multicast,
        0xfe80..=0xfebf => AddressClass::LinkLocal,
        // Site-local (deprecated): no longer means anything well defined.
        0xfec0..=0xfeff => AddressClass::Reserved,
        0xfc00..=0xfdff => AddressClass::UniqueLocal,
        0x2001 if seg[1] == 0x0db8 => AddressClass::Documentation,
        0x3fff if seg[1] < 0x1000 => AddressClass::Documentation,
        // Teredo hides the real endpoint; benchmarking is never a real server.
        0x2001 if seg[1] == 0 || (seg[1] == 2 && seg[2] == 0) => AddressClass::Reserved,
        // Only 2000::/3 is allocated for global unicast.
        0x2000..=0x3fff => return None,
        _ => AddressClass::Reserved,
    };
    Some(class)
}

/// The guard's decision for one address: public unicast is allowed; loopback, private,
/// shared (CGNAT) and unique-local addresses only with `allow_private`; everything else never.
pub fn address_allowed(ip: IpAddr, allow_private: bool) -> Result<(), FetchError> {
    match classify(ip) {
        None => Ok(()),
        Some(class) if allow_private && class.allowed_with_private_urls() => Ok(()),
        Some(class) => Err(FetchError::AddressRefused {
            host: None,
            ip,
            class,
        }),
    }
}

/// The HTTP client's resolver: resolves with the system resolver and refuses the name when any
/// answer is refused by [`address_allowed`].
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // `?` boxes the FetchError itself (not a Box of it), so `send_error` can find it
            // again by downcasting the client's error chain.
            let addrs = guarded_lookup(&host, allow_private).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

async fn guarded_lookup(host: &str, allow_private: bool) -> Result<Vec<SocketAddr>, FetchError> {
    // Port 0: the client puts the URL's port in.
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| FetchError::Resolve {
            host: host.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(FetchError::NoAddress {
            host: host.to_owned(),
        });
    }
    for addr in &addrs {
        if let Err(FetchError::AddressRefused { ip, class, .. }) =
            address_allowed(addr.ip(), allow_private)
        {
            return Err(FetchError::AddressRefused {
                host: Some(host.to_owned()),
                ip,
                class,
            });
        }
    }
    Ok(addrs)
}

/// A fetched body and what is known about it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Bytes,
    /// Sniffed from the first bytes when they are recognised, else the Content-Type header
    /// (without parameters), else `application/octet-stream`.
    pub content_type: String,
    /// From Content-Disposition, else the last segment of the final URL's path; reduced to a
    /// plain file name (no directories, no control characters).
    pub file_name: Option<String>,
    /// The URL the body came from, after redirects.
    pub final_url: Url,
}

impl Fetched {
    /// [`Fetched::file_name`], or `file` with an extension that fits the content type.
    pub fn file_name_or_default(&self) -> String {
        self.file_name
            .clone()
            .unwrap_or_else(|| match extension_for(&self.content_type) {
                Some(ext) => format!("file.{ext}"),
                None => "file".to_owned(),
            })
    }
}

/// Fetches task URLs under the `[media]` rules. Cheap to share (`Arc`) or clone.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// Built on the first fetch: a client with its TLS roots costs ~150 KiB, and most workers
    /// never fetch a URL.
    client: Arc<std::sync::OnceLock<reqwest::Client>>,
    allow_private: bool,
    max_bytes: u64,
    timeout: Duration,
}

impl Fetcher {
    pub fn new(config: &MediaConfig) -> Result<Fetcher, FetchError> {
        Ok(Fetcher {
            client: Arc::new(std::sync::OnceLock::new()),
            allow_private: config.allow_private_urls,
            max_bytes: config.max_download_bytes,
            timeout: config.fetch_timeout,
        })
    }

    /// The HTTP client, built on first use.
    fn client(&self) -> Result<&reqwest::Client, FetchError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: self.allow_private,
            }))
            .user_agent(concat!("wxagent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| FetchError::Client { source })?;
        // A concurrent first fetch may have won the race; either client is as good.
        Ok(self.client.get_or_init(|| client))
    }

    /// Fetches `url` (GET), following up to [`MAX_REDIRECTS`] redirects, within the
    /// configured total time and size.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, FetchError> {
        let url = Url::parse(url.trim()).map_err(|e| FetchError::BadUrl {
            reason: e.to_string(),
        })?;
        let first = shown(&url);
        match tokio::time::timeout(self.timeout, self.follow(url)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout {
                after: self.timeout,
                url: first,
            }),
        }
    }

    async fn follow(&self, mut url: Url) -> Result<Fetched, FetchError> {
        let mut redirects = 0;
        loop {
            self.check(&url)?;
            tracing::debug!(url = %shown(&url), "fetching task URL");
            let response = self
                .client()?
                .get(url.clone())
                .send()
                .await
                .map_err(|e| send_error(e, &url))?;
            let status = response.status();
            if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                let next = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|location| url.join(location.trim()).ok())
                    .ok_or_else(|| FetchError::BadRedirect {
                        status: status.as_u16(),
                        url: shown(&url),
                    })?;
                if redirects == MAX_REDIRECTS {
                    return Err(FetchError::TooManyRedirects {
                        max: MAX_REDIRECTS,
                        url: shown(&url),
                    });
                }
                redirects += 1;
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    status: status.as_u16(),
                    url: shown(&url),
                });
            }
            return self.read(response, url).await;
        }
    }

    /// The rules every hop must pass before any connection is made.
    fn check(&self, url: &Url) -> Result<(), FetchError> {
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(FetchError::Scheme {
                    scheme: other.to_owned(),
                });
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::Credentials { url: shown(url) });
        }
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            // Names are checked by the resolver, on the addresses actually used.
            Some(Host::Domain(_)) => return Ok(()),
            None => return Err(FetchError::NoHost { url: shown(url) }),
        };
        address_allowed(ip, self.allow_private)
    }

    async fn read(&self, mut response: reqwest::Response, url: Url) -> Result<Fetched, FetchError> {
        let too_large = |declared| FetchError::TooLarge {
            limit: self.max_bytes,
            declared,
            url: shown(&url),
        };
        let declared = response.content_length();
        if let Some(length) = declared
            && length > self.max_bytes
        {
            return Err(too_large(Some(length)));
        }
        let headers = response.headers().clone();
        // The announced size is only a hint for the first allocation, never trusted further.
        let capacity = declared.unwrap_or(0).min(self.max_bytes).min(1 << 20);
        let mut body = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        while let Some(chunk) = response.chunk().await.map_err(|e| send_error(e, &url))? {
            if (body.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(too_large(None));
            }
            body.extend_from_slice(&chunk);
        }
        let content_type = content_type(&body, &headers);
        let file_name = headers
            .get(header::CONTENT_DISPOSITION)
            .and_then(|v| disposition_file_name(v.as_bytes()))
            .or_else(|| url_file_name(&url));
        Ok(Fetched {
            bytes: Bytes::from(body),
            content_type,
            file_name,
            final_url: url,
        })
    }
}

/// An HTTP error, or the guard's refusal when that is what made it fail.
fn send_error(error: reqwest::Error, url: &Url) -> FetchError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = cause {
        if let Some(guard) = e
            .downcast_ref::<FetchError>()
            .and_then(FetchError::guard_copy)
        {
            return guard;
        }
        cause = e.source();
    }
    FetchError::Http {
        url: shown(url),
        source: error,
    }
}

/// A URL for messages and logs: no credentials, query or fragment.
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    // These fail only for URLs that cannot carry credentials, which then carry none.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

// ---------------------------------------------------------------------------------------------
// Content type and file name
// ---------------------------------------------------------------------------------------------

fn content_type(body: &[u8], headers: &HeaderMap) -> String {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| v.contains('/') && !v.contains(char::is_whitespace));
    match (sniff(body), declared) {
        // A container format says little; a specific type declared for it (a .docx is a zip)
        // is kept.
        (Some(sniffed), Some(declared))
            if is_container(sniffed) && is_container_type(&declared) =>
        {
            declared
        }
        (Some(sniffed), _) => sniffed.to_owned(),
        (None, Some(declared)) => declared,
        (None, None) => FALLBACK_CONTENT_TYPE.to_owned(),
    }
}

fn is_container(sniffed: &str) -> bool {
    matches!(sniffed, "application/zip" | "application/x-ole-storage")
}

fn is_container_type(declared: &str) -> bool {
    declared.ends_with("+zip")
        || declared.contains("openxmlformats")
        || declared.contains("opendocument")
        || declared.contains("ms-excel")
        || declared.contains("ms-powerpoint")
        || declared == "application/msword"
        || declared == "application/java-archive"
        || declared == "application/vnd.android.package-archive"
}

/// The type the first bytes announce, for the formats a chat client sends.
pub fn sniff(body: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| body.get(offset..offset + magic.len()) == Some(magic);
    let found = if at(0, b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if at(0, b"\xff\xd8\xff") {
        "image/jpeg"
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        "image/gif"
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        "image/webp"
    } else if at(0, b"RIFF") && at(8, b"WAVE") {
        "audio/wav"
    } else if at(0, b"RIFF") && at(8, b"AVI ") {
        "video/x-msvideo"
    } else if at(0, b"II*\0") || at(0, b"MM\0*") {
        "image/tiff"
    } else if at(0, b"BM") && bmp_header(body) {
        "image/bmp"
    } else if at(4, b"ftyp") {
        match body.get(8..12) {
            Some(b"heic" | b"heix" | b"mif1" | b"msf1") => "image/heic",
            Some(b"avif" | b"avis") => "image/avif",
            Some(b"qt  ") => "video/quicktime",
            Some(b"M4A " | b"M4B ") => "audio/mp4",
            _ => "video/mp4",
        }
    } else if at(0, b"\x1a\x45\xdf\xa3") {
        // The EBML header names the document type near the start.
        if body[..body.len().min(64)].windows(4).any(|w| w == b"webm") {
            "video/webm"
        } else {
            "video/x-matroska"
        }
    } else if at(0, b"%PDF-") {
        "application/pdf"
    } else if at(0, b"PK\x03\x04") {
        "application/zip"
    } else if at(0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") {
        "application/x-ole-storage"
    } else if at(0, b"\x1f\x8b") {
        "application/gzip"
    } else if at(0, b"7z\xbc\xaf\x27\x1c") {
        "application/x-7z-compressed"
    } else if at(0, b"Rar!\x1a\x07") {
        "application/vnd.rar"
    } else if at(0, b"#!AMR") {
        "audio/amr"
    } else if at(0, b"#!SILK_V3") || at(0, b"\x02#!SILK_V3") {
        "audio/silk"
    } else if at(0, b"OggS") {
        "audio/ogg"
    } else if at(0, b"fLaC") {
        "audio/flac"
    } else if at(0, b"ID3") {
        "audio/mpeg"
    } else if let [0xff, second, ..] = body {
        // MPEG audio frame sync: 11 set bits. Layer bits 00 is AAC in an ADTS frame.
        match (second & 0xe0 == 0xe0, (second >> 1) & 0b11) {
            (false, _) => return None,
            (true, 0) => "audio/aac",
            (true, _) => "audio/mpeg",
        }
    } else {
        return None;
    };
    Some(found)
}

/// "BM" starts plenty of text; a real bitmap also has a known DIB header size at offset 14.
fn bmp_header(body: &[u8]) -> bool {
    body.get(14..18)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .is_some_and(|size| matches!(size, 12 | 40 | 52 | 56 | 64 | 108 | 124))
}

fn extension_for(content_type: &str) -> Option<&'static str> {
    Some(match content_type {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/bmp" => "bmp",
        "image/tiff" => "tif",
        "image/heic" => "heic",
        "image/avif" => "avif",
        "video/mp4" => "mp4",
        "video/quicktime" => "mov",
        "video/webm" => "webm",
        "video/x-matroska" => "mkv",
        "video/x-msvideo" => "avi",
        "audio/mp4" => "m4a",
        "audio/mpeg" => "mp3",
        "audio/aac" => "aac",
        "audio/wav" => "wav",
        "audio/ogg" => "ogg",
        "audio/flac" => "flac",
        "audio/amr" => "amr",
        "audio/silk" => "silk",
        "application/pdf" => "pdf",
        "application/zip" => "zip",
        "application/gzip" => "gz",
        "application/x-7z-compressed" => "7z",
        "application/vnd.rar" => "rar",
        "text/plain" => "txt",
        _ => return None,
    })
}

/// The file name a Content-Disposition header gives: `filename*` (RFC 5987, UTF-8 or
/// ISO-8859-1) wins over `filename`.
fn disposition_file_name(value: &[u8]) -> Option<String> {
    // Header bytes outside ASCII are taken as UTF-8: servers that send raw names send that.
    let value = String::from_utf8_lossy(value);
    let mut plain = None;
    let mut extended = None;
    for (name, raw) in disposition_params(&value) {
        if name.eq_ignore_ascii_case("filename*") {
            extended = extended.or_else(|| decode_ext_value(&raw));
        } else if name.eq_ignore_ascii_case("filename") {
            plain = plain.or(Some(raw));
        }
    }
    extended.or(plain).and_then(|name| clean_file_name(&name))
}

/// `type; key=value; key="quoted \" value"` → (key, unquoted value) pairs after the type.
fn disposition_params(value: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = value.chars().peekable();
    // Skip the disposition type.
    for c in chars.by_ref() {
        if c == ';' {
            break;
        }
    }
    loop {
        let mut name = String::new();
        for c in chars.by_ref() {
            if c == '=' || c == ';' {
                break;
            }
            name.push(c);
        }
        let name = name.trim().to_owned();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
            for c in chars.by_ref() {
                if c == ';' {
                    break;
                }
            }
        } else {
            for c in chars.by_ref() {
                if c == ';' {
                    break;
                }
                val.push(c);
            }
            val = val.trim().to_owned();
        }
        if !name.is_empty() {
            params.push((name, val));
        }
        if chars.peek().is_none() {
            return params;
        }
    }
}

/// `UTF-8''%E5%9B%BE.png` → `图.png`.
fn decode_ext_value(raw: &str) -> Option<String> {
    let mut parts = raw.splitn(3, '\'');
    let charset = parts.next()?.trim();
    let _language = parts.next()?;
    let encoded = parts.next()?;
    let bytes = percent_decode(encoded);
    if charset.eq_ignore_ascii_case("utf-8") {
        String::from_utf8(bytes).ok()
    } else if charset.eq_ignore_ascii_case("iso-8859-1") {
        Some(bytes.into_iter().map(char::from).collect())
    } else {
        None
    }
}

fn url_file_name(url: &Url) -> Option<String> {
    let last = url.path_segments()?.rev().find(|s| !s.is_empty())?;
    clean_file_name(&String::from_utf8_lossy(&percent_decode(last)))
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// A name safe to use as a file name: the part after any directory separator, without control
/// characters, not `.`/`..`, at most 200 bytes (keeping the extension).
fn clean_file_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    if cleaned.is_empty() {
        return None;
    }
    const MAX: usize = 200;
    if cleaned.len() <= MAX {
        return Some(cleaned.to_owned());
    }
    let (stem, ext) = match cleaned.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && ext.len() <= 16 => (stem, Some(ext)),
        _ => (cleaned, None),
    };
    let room = MAX - ext.map_or(0, |e| e.len() + 1);
    let mut cut = room.min(stem.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(match ext {
        Some(ext) => format!("{}.{ext}", &stem[..cut]),
        None => stem[..cut].to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        h
    }

    #[test]
    fn sniffing_recognises_common_formats() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "image/png"),
            (b"\xff\xd8\xff\xe0\0\x10JFIF", "image/jpeg"),
            (b"GIF89a\x01\0", "image/gif"),
            (b"RIFF\0\0\0\0WEBPVP8 ", "image/webp"),
            (b"RIFF\0\0\0\0WAVEfmt ", "audio/wav"),
            (b"\0\0\0\x18ftypmp42\0\0\0\0", "video/mp4"),
            (b"\0\0\0\x18ftypqt  \0\0\0\0", "video/quicktime"),
            (b"\0\0\0\x18ftypheic\0\0\0\0", "image/heic"),
            (b"%PDF-1.7\n", "application/pdf"),
            (b"PK\x03\x04\x14\0", "application/zip"),
            (b"#!AMR\n", "audio/amr"),
            (b"\x02#!SILK_V3", "audio/silk"),
            (b"ID3\x04\0", "audio/mpeg"),
            (b"\xff\xfb\x90\x64", "audio/mpeg"),
            (b"\xff\xf1\x50\x80", "audio/aac"),
            (b"OggS\0\x02", "audio/ogg"),
            (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01webm", "video/webm"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(sniff(bytes), Some(*expected), "{bytes:?}");
        }
        let mut bmp = b"BM\0\0\0\0\0\0\0\0\x36\0\0\0".to_vec();
        bmp.extend_from_slice(&40u32.to_le_bytes());
        assert_eq!(sniff(&bmp), Some("image/bmp"));
        for unknown in [
            &b""[..],
            b"BMW is a car maker",
            b"hello",
            b"\xff",
            b"\xff\x00",
            b"<html>",
        ] {
            assert_eq!(sniff(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn content_type_prefers_the_bytes_then_the_header() {
        let png = b"\x89PNG\r\n\x1a\nrest";
        assert_eq!(content_type(png, &headers("text/plain")), "image/png");
        assert_eq!(
            content_type(b"hello", &headers("Text/Plain; charset=UTF-8")),
            "text/plain"
        );
        assert_eq!(
            content_type(b"hello", &HeaderMap::new()),
            FALLBACK_CONTENT_TYPE
        );
        assert_eq!(
            content_type(b"hello", &headers("nonsense")),
            FALLBACK_CONTENT_TYPE
        );
        // A specific zip-based type is kept; a wrong one is not.
        let docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
        assert_eq!(content_type(b"PK\x03\x04", &headers(docx)), docx);
        assert_eq!(
            content_type(b"PK\x03\x04", &headers("image/png")),
            "application/zip"
        );
    }

    #[test]
    fn file_names_come_from_the_disposition_or_the_path() {
        let d = |v: &str| disposition_file_name(v.as_bytes());
        assert_eq!(
            d("attachment; filename=\"a b.png\""),
            Some("a b.png".into())
        );
        assert_eq!(
            d("attachment; filename=plain.jpg"),
            Some("plain.jpg".into())
        );
        assert_eq!(
            d("attachment; filename=\"fallback.png\"; filename*=UTF-8''%E5%9B%BE%20x.png"),
            Some("图 x.png".into())
        );
        assert_eq!(
            d("inline; filename*=iso-8859-1'en'caf%E9.txt"),
            Some("café.txt".into())
        );
        assert_eq!(
            d("attachment; filename=\"q\\\"uote.txt\""),
            Some("q\"uote.txt".into())
        );
        assert_eq!(
            d("attachment; filename=\"../../etc/passwd\""),
            Some("passwd".into())
        );
        assert_eq!(d("attachment; filename=\"..\""), None);
        assert_eq!(d("attachment"), None);
        assert_eq!(d("inline; size=3"), None);

        let u = |s: &str| url_file_name(&Url::parse(s).unwrap());
        assert_eq!(
            u("http://h/a/b/photo%201.png?x=1"),
            Some("photo 1.png".into())
        );
        assert_eq!(u("http://h/a/dir/"), Some("dir".into()));
        assert_eq!(u("http://h/"), None);
        assert_eq!(u("http://h/%2e%2e"), None);
        assert_eq!(u("http://h/a%2Fb%5Cc.txt"), Some("c.txt".into()));
    }

    #[test]
    fn long_file_names_are_cut_keeping_the_extension() {
        let long = format!("{}.jpeg", "图".repeat(100));
        let cut = clean_file_name(&long).unwrap();
        assert!(cut.len() <= 200, "{}", cut.len());
        assert!(cut.ends_with("图.jpeg"), "{cut}");
        assert_eq!(clean_file_name("a\u{0}b\nc.png"), Some("abc.png".into()));
    }

    #[test]
    fn shown_urls_carry_no_secrets() {
        let url = Url::parse("https://user:pw@host.example/p/q?token=abc#frag").unwrap();
        assert_eq!(shown(&url), "https://host.example/p/q");
    }

    #[test]
    fn default_file_names_follow_the_content_type() {
        let fetched = |content_type: &str, name: Option<&str>| Fetched {
            bytes: Bytes::new(),
            content_type: content_type.to_owned(),
            file_name: name.map(str::to_owned),
            final_url: Url::parse("http://127.0.0.1/").unwrap(),
        };
        assert_eq!(
            fetched("image/png", None).file_name_or_default(),
            "file.png"
        );
        assert_eq!(fetched("x/unknown", None).file_name_or_default(), "file");
        assert_eq!(
            fetched("image/png", Some("a.gif")).file_name_or_default(),
            "a.gif"
        );
    }
}
