//! Integration tests of fetching task URLs (src/worker/fetch.rs) against a small axum server on
//! loopback that counts every connection it accepts and records every request path.
//!
//! Workplace rule: no test here may even try to connect anywhere but loopback. Refusals are
//! therefore tested only with loopback targets (which the guard refuses by default), and the
//! server's connection count proves the refusal came before any connection. The address guard
//! itself is tested as the pure function `address_allowed` on addresses of every kind.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt as _;
use futures::StreamExt as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wxagent::config::MediaConfig;
use wxagent::worker::fetch::{
    AddressClass, FetchError, Fetched, Fetcher, MAX_REDIRECTS, address_allowed, classify,
};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0";

// ---------------------------------------------------------------------------------------------
// The address guard as a pure decision
// ---------------------------------------------------------------------------------------------

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn refused_class(text: &str, allow_private: bool) -> AddressClass {
    match address_allowed(ip(text), allow_private) {
        Err(FetchError::AddressRefused {
            ip: got,
            class,
            host,
        }) => {
            assert_eq!(got, ip(text));
            assert_eq!(host, None);
            class
        }
        other => {
            panic!("{text} (allow_private = {allow_private}): expected a refusal, got {other:?}")
        }
    }
}

#[test]
fn public_addresses_are_allowed() {
    for text in [
        "1.1.1.1",
        "8.8.8.8",
        "93.184.216.34",
        "172.15.255.255",
        "172.32.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "169.253.255.255",
        "192.0.3.1",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "2400:cb00::1",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:0808:0808::1",
    ] {
        for allow_private in [false, true] {
            assert!(
                address_allowed(ip(text), allow_private).is_ok(),
                "{text} must be allowed"
            );
        }
        assert_eq!(classify(ip(text)), None, "{text}");
    }
}

#[test]
fn loopback_and_private_ranges_are_refused_unless_allowed() {
    let cases = [
        ("127.0.0.1", AddressClass::Loopback),
        ("127.255.255.254", AddressClass::Loopback),
        ("::1", AddressClass::Loopback),
        ("10.0.0.1", AddressClass::Private),
        ("10.255.255.255", AddressClass::Private),
        ("172.16.0.1", AddressClass::Private),
        ("172.31.255.255", AddressClass::Private),
        ("192.168.1.1", AddressClass::Private),
        ("100.64.0.1", AddressClass::SharedCgnat),
        ("100.127.255.255", AddressClass::SharedCgnat),
        ("fc00::1", AddressClass::UniqueLocal),
        ("fd12:3456:789a::1", AddressClass::UniqueLocal),
        // IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms of the same addresses.
        ("::ffff:127.0.0.1", AddressClass::Loopback),
        ("::ffff:7f00:1", AddressClass::Loopback),
        ("::ffff:10.1.2.3", AddressClass::Private),
        ("::ffff:192.168.0.1", AddressClass::Private),
        ("::ffff:100.64.0.1", AddressClass::SharedCgnat),
        ("::127.0.0.1", AddressClass::Loopback),
        ("64:ff9b::7f00:1", AddressClass::Loopback),
        ("64:ff9b::a00:1", AddressClass::Private),
        ("2002:7f00:0001::1", AddressClass::Loopback),
        ("2002:c0a8:0101::1", AddressClass::Private),
    ];
    for (text, expected) in cases {
        assert_eq!(refused_class(text, false), expected, "{text}");
        assert!(
            address_allowed(ip(text), true).is_ok(),
            "{text} must be allowed with allow_private_urls"
        );
    }
    let message = address_allowed(ip("127.0.0.1"), false)
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "refusing to fetch from 127.0.0.1: loopback address; set [media] allow_private_urls = true to allow loopback and private addresses"
    );
}

#[test]
fn special_purpose_addresses_are_refused_even_when_private_ones_are_allowed() {
    let cases = [
        ("0.0.0.0", AddressClass::Unspecified),
        ("0.1.2.3", AddressClass::Unspecified),
        ("::", AddressClass::Unspecified),
        ("::ffff:0.0.0.0", AddressClass::Unspecified),
        ("169.254.169.254", AddressClass::LinkLocal),
        ("169.254.0.1", AddressClass::LinkLocal),
        ("fe80::1", AddressClass::LinkLocal),
        ("febf::1", AddressClass::LinkLocal),
        ("::ffff:169.254.169.254", AddressClass::LinkLocal),
        ("64:ff9b::a9fe:a9fe", AddressClass::LinkLocal),
        ("224.0.0.1", AddressClass::Multicast),
        ("239.255.255.250", AddressClass::Multicast),
        ("ff02::1", AddressClass::Multicast),
        ("ff05::1:3", AddressClass::Multicast),
        ("::ffff:224.0.0.251", AddressClass::Multicast),
        ("255.255.255.255", AddressClass::Broadcast),
        ("::ffff:255.255.255.255", AddressClass::Broadcast),
        ("192.0.2.1", AddressClass::Documentation),
        ("198.51.100.7", AddressClass::Documentation),
        ("203.0.113.200", AddressClass::Documentation),
        ("2001:db8::1", AddressClass::Documentation),
        ("3fff::1", AddressClass::Documentation),
        ("::ffff:192.0.2.1", AddressClass::Documentation),
        ("240.0.0.1", AddressClass::Reserved),
        ("198.18.0.1", AddressClass::Reserved),
        ("192.0.0.8", AddressClass::Reserved),
        ("2001::1", AddressClass::Reserved),
        ("2001:2::1", AddressClass::Reserved),
        ("fec0::1", AddressClass::Reserved),
        ("100::1", AddressClass::Reserved),
        ("::8.8.8.8", AddressClass::Reserved),
        ("4000::1", AddressClass::Reserved),
    ];
    for (text, expected) in cases {
        for allow_private in [false, true] {
            assert_eq!(refused_class(text, allow_private), expected, "{text}");
        }
    }
    // No hint to flip a setting that would not help.
    let message = address_allowed(ip("169.254.169.254"), true)
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "refusing to fetch from 169.254.169.254: link-local address"
    );
}

// ---------------------------------------------------------------------------------------------
// A loopback server
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    paths: Mutex<Vec<String>>,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

#[derive(Clone)]
struct AppState {
    seen: Arc<Seen>,
    port: u16,
}

impl Server {
    async fn start() -> Server {
        Server::start_on("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0")
    }

    async fn start_on(bind: &str) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Seen::default());
        let state = AppState {
            seen: seen.clone(),
            port: addr.port(),
        };
        let counter = seen.clone();
        let listener = listener.tap_io(move |_| {
            counter.connections.fetch_add(1, Ordering::SeqCst);
        });
        let app = Router::new().fallback(handle).with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Server { addr, seen })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    fn paths(&self) -> Vec<String> {
        self.seen.paths.lock().unwrap().clone()
    }
}

fn redirect(status: StatusCode, location: &str) -> Response {
    (status, [(header::LOCATION, location.to_owned())]).into_response()
}

async fn handle(State(state): State<AppState>, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    state.seen.paths.lock().unwrap().push(path.clone());
    let port = state.port;
    let number = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<usize>().ok())
    };
    match path.as_str() {
        // A PNG served with a wrong type: the bytes must win.
        "/files/photo.png" => ([(header::CONTENT_TYPE, "text/plain")], PNG).into_response(),
        "/named" => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"fallback.jpg\"; filename*=UTF-8''%E5%9B%BE%E7%89%87.jpg",
                ),
            ],
            JPEG,
        )
            .into_response(),
        "/text" => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "hello").into_response(),
        "/redirect" => redirect(StatusCode::FOUND, "/files/photo.png"),
        "/redirect-by-name" => redirect(
            StatusCode::TEMPORARY_REDIRECT,
            &format!("http://localhost:{port}/files/photo.png?sig=1"),
        ),
        "/loop" => redirect(StatusCode::FOUND, "/loop"),
        "/to-ftp" => redirect(StatusCode::FOUND, "ftp://127.0.0.1/x"),
        "/to-file" => redirect(StatusCode::MOVED_PERMANENTLY, "file:///etc/passwd"),
        "/to-unspecified" => redirect(
            StatusCode::FOUND,
            &format!("http://0.0.0.0:{port}/files/photo.png"),
        ),
        "/to-credentials" => redirect(
            StatusCode::FOUND,
            &format!("http://user:hunter2@127.0.0.1:{port}/files/photo.png"),
        ),
        "/no-location" => StatusCode::FOUND.into_response(),
        "/stall" => futures::future::pending().await,
        "/stall-body" => {
            let first = futures::stream::iter([Ok::<_, std::io::Error>(vec![0u8; 16])]);
            let body = first.chain(futures::stream::pending());
            Body::from_stream(body).into_response()
        }
        _ if path.starts_with("/chain/") => match number("/chain/") {
            Some(0) => redirect(StatusCode::SEE_OTHER, "/files/photo.png"),
            Some(n) => redirect(StatusCode::PERMANENT_REDIRECT, &format!("/chain/{}", n - 1)),
            None => StatusCode::BAD_REQUEST.into_response(),
        },
        // `n` bytes streamed in 1 KiB chunks, without a Content-Length.
        _ if path.starts_with("/stream/") => match number("/stream/") {
            Some(n) => {
                let chunks = (0..n.div_ceil(1024))
                    .map(move |i| Ok::<_, std::io::Error>(vec![b'x'; 1024.min(n - i * 1024)]));
                Body::from_stream(futures::stream::iter(chunks)).into_response()
            }
            None => StatusCode::BAD_REQUEST.into_response(),
        },
        // `n` bytes with a Content-Length.
        _ if path.starts_with("/declared/") => match number("/declared/") {
            Some(n) => vec![b'y'; n].into_response(),
            None => StatusCode::BAD_REQUEST.into_response(),
        },
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn fetcher(allow_private: bool, max_bytes: u64, timeout: Duration) -> Fetcher {
    Fetcher::new(&MediaConfig {
        allow_private_urls: allow_private,
        max_download_bytes: max_bytes,
        fetch_timeout: timeout,
    })
    .expect("client builds")
}

/// The fetcher for tests that reach the loopback server.
fn local() -> Fetcher {
    fetcher(true, 1 << 20, Duration::from_secs(20))
}

/// The default policy (private addresses refused).
fn guarded() -> Fetcher {
    fetcher(false, 1 << 20, Duration::from_secs(20))
}

async fn fetch_ok(fetcher: &Fetcher, url: &str) -> Fetched {
    match fetcher.fetch(url).await {
        Ok(fetched) => fetched,
        Err(e) => panic!("fetching {url}: {e:#?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals before any connection (default policy, loopback targets)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn loopback_urls_are_refused_before_connecting() {
    let server = Server::start().await;
    let port = server.addr.port();
    for (url, expected) in [
        (server.url("/files/photo.png"), "127.0.0.1"),
        (format!("http://127.0.0.2:{port}/x"), "127.0.0.2"),
        // Other spellings of the same loopback address.
        (format!("http://2130706433:{port}/x"), "127.0.0.1"),
        (format!("http://0x7f.1:{port}/x"), "127.0.0.1"),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/x"),
            "::ffff:127.0.0.1",
        ),
        (format!("https://127.0.0.1:{port}/x"), "127.0.0.1"),
    ] {
        match guarded().fetch(&url).await {
            Err(FetchError::AddressRefused {
                ip,
                class: AddressClass::Loopback,
                host: None,
            }) => assert_eq!(ip, expected.parse::<IpAddr>().unwrap(), "{url}"),
            other => panic!("{url}: expected a loopback refusal, got {other:?}"),
        }
    }
    // `0.0.0.0` would reach this machine too.
    match guarded().fetch(&format!("http://0.0.0.0:{port}/x")).await {
        Err(FetchError::AddressRefused {
            class: AddressClass::Unspecified,
            ..
        }) => {}
        other => panic!("expected an unspecified-address refusal, got {other:?}"),
    }
    assert_eq!(server.connections(), 0);
    assert!(server.paths().is_empty());
}

#[tokio::test]
async fn ipv6_loopback_is_refused_before_connecting() {
    // Without IPv6 on this machine there is nothing to connect to; the refusal is still checked.
    let server = Server::start_on("[::1]:0").await.ok();
    let port = server.as_ref().map_or(9, |s| s.addr.port());
    match guarded().fetch(&format!("http://[::1]:{port}/x")).await {
        Err(FetchError::AddressRefused {
            ip,
            class: AddressClass::Loopback,
            ..
        }) => assert_eq!(ip, "::1".parse::<IpAddr>().unwrap()),
        other => panic!("expected a loopback refusal, got {other:?}"),
    }
    if let Some(server) = server {
        assert_eq!(server.connections(), 0);
    }
}

#[tokio::test]
async fn names_resolving_to_loopback_are_refused_before_connecting() {
    let server = Server::start().await;
    let url = format!("http://localhost:{}/files/photo.png", server.addr.port());
    let e = guarded().fetch(&url).await.unwrap_err();
    match &e {
        FetchError::AddressRefused {
            host: Some(host),
            ip,
            class: AddressClass::Loopback,
        } => {
            assert_eq!(host, "localhost");
            assert!(ip.is_loopback(), "{ip}");
        }
        other => panic!("expected a loopback refusal for localhost, got {other:?}"),
    }
    assert!(
        e.to_string()
            .starts_with("refusing to fetch from localhost ("),
        "{e}"
    );
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn only_http_and_https_are_fetched() {
    for (url, scheme) in [
        ("ftp://127.0.0.1/file.png", "ftp"),
        ("file:///etc/passwd", "file"),
        ("gopher://localhost/", "gopher"),
        ("data:text/plain,hi", "data"),
    ] {
        for fetcher in [guarded(), local()] {
            let e = fetcher.fetch(url).await.unwrap_err();
            match &e {
                FetchError::Scheme { scheme: got } => assert_eq!(got, scheme),
                other => panic!("{url}: expected a scheme refusal, got {other:?}"),
            }
            assert_eq!(
                e.to_string(),
                format!(
                    "unsupported URL scheme \"{scheme}\": only http and https URLs are fetched"
                )
            );
        }
    }
    let e = guarded().fetch("not a url").await.unwrap_err();
    assert!(matches!(e, FetchError::BadUrl { .. }), "{e:?}");
}

#[tokio::test]
async fn urls_with_credentials_are_refused_and_not_echoed() {
    let server = Server::start().await;
    let port = server.addr.port();
    for url in [
        format!("http://user:s3cret-pw@127.0.0.1:{port}/files/photo.png"),
        format!("http://user@127.0.0.1:{port}/files/photo.png"),
        format!("http://:s3cret-pw@127.0.0.1:{port}/files/photo.png"),
    ] {
        // Refused even where the address itself would be allowed.
        let e = local().fetch(&url).await.unwrap_err();
        assert!(matches!(e, FetchError::Credentials { .. }), "{url}: {e:?}");
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains("s3cret-pw") && !text.contains("user@") && !text.contains("user:"),
            "{text}"
        );
    }
    assert_eq!(server.connections(), 0);
}

// ---------------------------------------------------------------------------------------------
// Fetching from loopback with allow_private_urls = true
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn fetches_a_file_and_sniffs_its_type() {
    let server = Server::start().await;
    let url = server.url("/files/photo.png?x=1");
    let got = fetch_ok(&local(), &url).await;
    assert_eq!(&got.bytes[..], PNG);
    // The header said text/plain; the bytes say PNG.
    assert_eq!(got.content_type, "image/png");
    assert_eq!(got.file_name.as_deref(), Some("photo.png"));
    assert_eq!(got.final_url.as_str(), url);

    let got = fetch_ok(&local(), &server.url("/named")).await;
    assert_eq!(got.content_type, "image/jpeg");
    assert_eq!(got.file_name.as_deref(), Some("图片.jpg"));

    // Unrecognised bytes: the header's type, without parameters.
    let got = fetch_ok(&local(), &server.url("/text")).await;
    assert_eq!(&got.bytes[..], b"hello");
    assert_eq!(got.content_type, "text/plain");
    assert_eq!(got.file_name.as_deref(), Some("text"));
    assert_eq!(server.paths(), ["/files/photo.png", "/named", "/text"]);
}

#[tokio::test]
async fn names_are_resolved_and_allowed_with_private_urls() {
    let server = Server::start().await;
    let url = format!("http://localhost:{}/files/photo.png", server.addr.port());
    let got = fetch_ok(&local(), &url).await;
    assert_eq!(got.content_type, "image/png");
    assert_eq!(server.paths(), ["/files/photo.png"]);
}

#[tokio::test]
async fn redirects_are_followed_and_every_hop_is_checked() {
    let server = Server::start().await;
    let got = fetch_ok(&local(), &server.url("/redirect")).await;
    assert_eq!(got.final_url.as_str(), server.url("/files/photo.png"));
    assert_eq!(&got.bytes[..], PNG);

    // To a host name, through the resolver.
    let got = fetch_ok(&local(), &server.url("/redirect-by-name")).await;
    assert_eq!(got.final_url.host_str(), Some("localhost"));
    assert_eq!(got.file_name.as_deref(), Some("photo.png"));

    // Exactly MAX_REDIRECTS hops are fine.
    let got = fetch_ok(
        &local(),
        &server.url(&format!("/chain/{}", MAX_REDIRECTS - 1)),
    )
    .await;
    assert_eq!(got.content_type, "image/png");
    assert_eq!(
        server.paths(),
        [
            "/redirect",
            "/files/photo.png",
            "/redirect-by-name",
            "/files/photo.png",
            "/chain/4",
            "/chain/3",
            "/chain/2",
            "/chain/1",
            "/chain/0",
            "/files/photo.png",
        ]
    );
}

#[tokio::test]
async fn redirect_loops_and_long_chains_are_stopped() {
    let server = Server::start().await;
    let e = local().fetch(&server.url("/loop")).await.unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::TooManyRedirects {
                max: MAX_REDIRECTS,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("more than 5 redirects fetching {}", server.url("/loop"))
    );
    assert_eq!(server.paths().len(), MAX_REDIRECTS + 1);

    let e = local()
        .fetch(&server.url(&format!("/chain/{MAX_REDIRECTS}")))
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::TooManyRedirects { .. }), "{e:?}");
    assert!(!server.paths().contains(&"/files/photo.png".to_owned()));
}

#[tokio::test]
async fn redirect_hops_are_refused_by_the_same_rules() {
    let server = Server::start().await;
    let e = local().fetch(&server.url("/to-ftp")).await.unwrap_err();
    assert!(
        matches!(&e, FetchError::Scheme { scheme } if scheme == "ftp"),
        "{e:?}"
    );
    let e = local().fetch(&server.url("/to-file")).await.unwrap_err();
    assert!(
        matches!(&e, FetchError::Scheme { scheme } if scheme == "file"),
        "{e:?}"
    );
    let e = local()
        .fetch(&server.url("/to-credentials"))
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Credentials { .. }), "{e:?}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    // 0.0.0.0 would land on this very server: the guard must stop it first.
    let e = local()
        .fetch(&server.url("/to-unspecified"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::AddressRefused {
                class: AddressClass::Unspecified,
                ..
            }
        ),
        "{e:?}"
    );
    let e = local()
        .fetch(&server.url("/no-location"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, FetchError::BadRedirect { status: 302, .. }),
        "{e:?}"
    );
    assert_eq!(
        server.paths(),
        [
            "/to-ftp",
            "/to-file",
            "/to-credentials",
            "/to-unspecified",
            "/no-location"
        ]
    );
}

#[tokio::test]
async fn error_statuses_are_reported() {
    let server = Server::start().await;
    let e = local()
        .fetch(&server.url("/missing?token=abc"))
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Status { status: 404, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("server answered 404 for {}", server.url("/missing"))
    );
}

#[tokio::test]
async fn the_size_cap_holds_while_streaming_and_up_front() {
    let server = Server::start().await;
    let small = fetcher(true, 10_000, Duration::from_secs(20));
    // At the cap exactly: fine, with or without a Content-Length.
    let got = fetch_ok(&small, &server.url("/stream/10000")).await;
    assert_eq!(got.bytes.len(), 10_000);
    let got = fetch_ok(&small, &server.url("/declared/10000")).await;
    assert_eq!(got.bytes.len(), 10_000);

    // One byte over, streamed without a Content-Length: stopped while reading.
    let e = small.fetch(&server.url("/stream/10001")).await.unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::TooLarge {
                limit: 10_000,
                declared: None,
                ..
            }
        ),
        "{e:?}"
    );
    // Far over: stopped long before the end.
    let e = small
        .fetch(&server.url("/stream/50000000"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, FetchError::TooLarge { declared: None, .. }),
        "{e:?}"
    );

    // Announced too large: refused on the Content-Length.
    let e = small
        .fetch(&server.url("/declared/10001"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::TooLarge {
                limit: 10_000,
                declared: Some(10_001),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().ends_with(
            "is larger than the 10000-byte limit ([media] max_download_bytes) (it announced 10001 bytes)"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn a_stalled_server_hits_the_total_timeout() {
    let server = Server::start().await;
    let quick = fetcher(true, 1 << 20, Duration::from_millis(300));
    for path in ["/stall", "/stall-body"] {
        let started = std::time::Instant::now();
        let e = quick.fetch(&server.url(path)).await.unwrap_err();
        match &e {
            FetchError::Timeout { after, url } => {
                assert_eq!(*after, Duration::from_millis(300));
                assert_eq!(url, &server.url(path));
            }
            other => panic!("{path}: expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(10), "{path}");
        assert!(
            e.to_string()
                .ends_with("took longer than 300ms ([media] fetch_timeout)"),
            "{e}"
        );
    }
    assert_eq!(server.paths(), ["/stall", "/stall-body"]);
}
