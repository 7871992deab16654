//! Media on the web client against the in-process simulator: chunked uploads checked by
//! downloading them back, every media send in the outbox, the size limits, retried chunks under
//! injected faults, downloads of received media picked out of webwxsync, and range / cap
//! handling against a small hand-written server.
//!
//! Modules (in file order): helpers; uploads; sends; faults; downloads; ranges and caps.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use url::Url;
use wxagent::sim::{SimHandle, SimOptions};
use wxagent::wechat::client::{ClientSettings, WebClient};
use wxagent::wechat::contact::{Contact, ContactBook};
use wxagent::wechat::error::WechatError;
use wxagent::wechat::media::{
    CHUNK_SIZE, MAX_DOWNLOAD_BYTES, MAX_IMAGE_UPLOAD_BYTES, MAX_UPLOAD_BYTES, MediaError,
    UploadKind, encry_file_name,
};
use wxagent::wechat::message::{Message, parse_message};
use wxagent::wechat::parse::LoginPoll;
use wxagent::wechat::session::WebSession;
use wxagent::worker::events::OutgoingMedia;
use wxagent::worker::media::{
    Format, MediaRef, MediaRefKind, SendPlan, download, file_name_for, plan_image_send,
    plan_video_send, send_outgoing, sniff,
};

// ---------------------------------------------------------------------------------------------
// helpers

const HOLD: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(60);

fn settings(login: &str) -> ClientSettings {
    ClientSettings {
        login: Url::parse(login).expect("login url"),
        desktop_mode: false,
        request_timeout: Duration::from_secs(30),
        longpoll_timeout: Duration::from_secs(10),
    }
}

/// A simulator with one account (Alice, friend Bob) and a `WebClient` logged in to it.
struct Env {
    sim: SimHandle,
    http: reqwest::Client,
    uin: u64,
    client: WebClient,
    book: ContactBook,
    me: String,
    bob: String,
}

impl Env {
    async fn start() -> Env {
        let sim = wxagent::sim::start(SimOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            hold: HOLD,
        })
        .await
        .expect("sim starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(WAIT)
            .build()
            .expect("http");
        let base = sim.base_url();
        let ctl = Ctl {
            http: http.clone(),
            base: base.clone(),
        };
        let uin = ctl
            .post(
                "/accounts",
                json!({"nickname": "Alice", "friends": [{"nickname": "Bob"}]}),
            )
            .await["uin"]
            .as_u64()
            .expect("uin");
        let client = WebClient::new(settings(&base)).expect("client");
        let uuid = client.jslogin().await.expect("jslogin");
        ctl.post(&format!("/qr/{uuid}/scan"), json!({"uin": uin}))
            .await;
        ctl.post(&format!("/qr/{uuid}/confirm"), json!({})).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut first = true;
        let redirect = loop {
            match client.poll_login(&uuid, first).await.expect("login poll") {
                LoginPoll::Confirmed { redirect_uri } => break redirect_uri,
                LoginPoll::Waiting | LoginPoll::Scanned { .. } => {}
                other => panic!("unexpected login poll answer {other:?}"),
            }
            first = false;
            assert!(
                tokio::time::Instant::now() < deadline,
                "login not confirmed"
            );
        };
        client
            .new_login_page(&redirect)
            .await
            .expect("newloginpage");
        let init = client.init(false).await.expect("init");
        let me = init.user.user_name.clone();
        let book = ContactBook::new(Contact::from_raw(init.user, &me));
        let account = ctl.get(&format!("/accounts/{uin}")).await;
        let bob = account["contacts"]
            .as_array()
            .expect("contacts")
            .iter()
            .find(|c| c["nickname"] == "Bob")
            .and_then(|c| c["user_name"].as_str())
            .expect("Bob")
            .to_owned();
        Env {
            sim,
            http,
            uin,
            client,
            book,
            me,
            bob,
        }
    }

    fn ctl(&self) -> Ctl {
        Ctl {
            http: self.http.clone(),
            base: self.sim.base_url(),
        }
    }

    async fn outbox(&self) -> Vec<Value> {
        self.ctl()
            .get(&format!("/sessions/{}/outbox", self.uin))
            .await["messages"]
            .as_array()
            .expect("messages")
            .clone()
    }

    async fn stats(&self) -> Value {
        self.ctl().get("/stats").await
    }

    async fn requests(&self, route: &str) -> u64 {
        self.stats().await["requests"][route].as_u64().unwrap_or(0)
    }

    async fn inject(&self, body: Value) -> Value {
        self.ctl()
            .post(&format!("/sessions/{}/inject", self.uin), body)
            .await
    }

    /// Syncs until the message `msg_id` arrives; synccheck's long poll does the waiting.
    async fn receive(&self, msg_id: &str) -> Message {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (data, keys) = self.client.sync().await.expect("webwxsync");
            self.client.commit_sync_keys(keys);
            if let Some(raw) = data.messages.into_iter().find(|m| m.msg_id == msg_id) {
                return parse_message(raw, &self.book);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "message {msg_id} never arrived"
            );
            self.client.sync_check().await.expect("synccheck");
        }
    }
}

struct Ctl {
    http: reqwest::Client,
    base: String,
}

impl Ctl {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self
            .http
            .request(method.clone(), format!("{}/__sim{path}", self.base));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("control request");
        let status = resp.status();
        let v: Value = resp.json().await.expect("control json");
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn delete(&self, path: &str) -> Value {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

/// Distinct bytes per position and seed, so a misplaced or repeated chunk shows.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 7) as u8).wrapping_mul(13) ^ (i as u8) ^ seed)
        .collect()
}

/// The simulator's patterned bytes for injected files (src/sim/assets.rs).
fn sim_pattern(len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((i.wrapping_mul(31).wrapping_add(7)) % 251) as u8)
        .collect()
}

/// The outbox entries of one endpoint.
fn entries<'a>(out: &'a [Value], endpoint: &str) -> Vec<&'a Value> {
    out.iter().filter(|e| e["endpoint"] == endpoint).collect()
}

// ---------------------------------------------------------------------------------------------
// uploads

#[tokio::test]
async fn single_and_chunked_uploads_arrive_whole() {
    let env = Env::start().await;
    let c = &env.client;

    // One part.
    let small = payload(10_000, 1);
    let small_id = c
        .upload_media(
            &env.bob,
            "notes.txt",
            "text/plain",
            &small,
            UploadKind::File,
        )
        .await
        .expect("small upload");
    assert!(small_id.starts_with("@crypt_"), "{small_id}");
    assert_eq!(env.requests("webwxuploadmedia").await, 1);

    // 3 full chunks and a short fourth.
    let big = payload(3 * CHUNK_SIZE + 1234, 2);
    let name = "报告 v1.pdf";
    let big_id = c
        .upload_media(&env.bob, name, "application/pdf", &big, UploadKind::File)
        .await
        .expect("chunked upload");
    assert_eq!(env.requests("webwxuploadmedia").await, 1 + 4);

    let out = env.outbox().await;
    let ups = entries(&out, "webwxuploadmedia");
    assert_eq!(ups.len(), 2, "{out:?}");
    assert_eq!(ups[0]["media_id"], small_id.as_str());
    assert_eq!(ups[0]["detail"]["chunks"], 1);
    assert_eq!(ups[0]["detail"]["size"], 10_000);
    assert_eq!(ups[0]["detail"]["mediatype"], "doc");
    assert_eq!(ups[0]["to"], env.bob.as_str());
    assert_eq!(ups[0]["from"], env.me.as_str());
    assert_eq!(ups[1]["media_id"], big_id.as_str());
    assert_eq!(ups[1]["detail"]["chunks"], 4);
    assert_eq!(ups[1]["detail"]["size"], big.len());
    assert_eq!(ups[1]["content"], name);

    // Downloaded back from the file host, byte for byte, with the name and type given.
    let d = c
        .get_media(
            &env.me,
            &small_id,
            "notes.txt",
            &encry_file_name("notes.txt"),
        )
        .await
        .expect("small back");
    assert_eq!(d.bytes, small);
    assert_eq!(d.content_type, "text/plain");
    assert_eq!(d.file_name.as_deref(), Some("notes.txt"));
    let d = c
        .get_media(&env.me, &big_id, name, &encry_file_name(name))
        .await
        .expect("big back");
    assert_eq!(d.bytes.len(), big.len());
    assert!(d.bytes == big, "chunked upload reassembled differently");
    assert_eq!(d.content_type, "application/pdf");
    assert_eq!(d.file_name.as_deref(), Some(name));

    // A file of exactly one chunk is not chunked; one byte more is.
    let one = payload(CHUNK_SIZE, 3);
    c.upload_media(&env.bob, "one.bin", "", &one, UploadKind::File)
        .await
        .expect("one chunk");
    let two = payload(CHUNK_SIZE + 1, 4);
    let two_id = c
        .upload_media(&env.bob, "two.bin", "", &two, UploadKind::Video)
        .await
        .expect("two chunks");
    let out = env.outbox().await;
    let ups = entries(&out, "webwxuploadmedia");
    assert_eq!(ups[2]["detail"]["chunks"], 1);
    assert_eq!(ups[2]["detail"]["type"], "application/octet-stream");
    assert_eq!(ups[3]["detail"]["chunks"], 2);
    assert_eq!(ups[3]["detail"]["mediatype"], "video");
    let d = c
        .get_media(&env.me, &two_id, "two.bin", "")
        .await
        .expect("two back");
    assert!(d.bytes == two);
    env.sim.shutdown().await;
}

#[tokio::test]
async fn size_limits_are_checked_before_any_request() {
    let env = Env::start().await;
    let c = &env.client;
    let image = vec![0xFFu8; MAX_IMAGE_UPLOAD_BYTES as usize + 1];
    let e = c
        .upload_media(&env.bob, "big.jpg", "image/jpeg", &image, UploadKind::Image)
        .await
        .expect_err("image over the limit");
    assert!(
        matches!(e, MediaError::TooLarge { size, limit, .. } if size == MAX_IMAGE_UPLOAD_BYTES + 1 && limit == MAX_IMAGE_UPLOAD_BYTES),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("image upload") && msg.contains("20971521") && msg.contains("20 MiB"),
        "{msg}"
    );
    assert!(!e.is_transient());
    // The same bytes are fine as a file, under the general limit.
    c.upload_media(&env.bob, "big.jpg", "image/jpeg", &image, UploadKind::File)
        .await
        .expect("20 MiB file");
    assert_eq!(env.requests("webwxuploadmedia").await, 41);

    let file = vec![0u8; MAX_UPLOAD_BYTES as usize + 1];
    for kind in [UploadKind::File, UploadKind::Video, UploadKind::Gif] {
        let e = c
            .upload_media(&env.bob, "x.bin", "", &file, kind)
            .await
            .expect_err("over the limit");
        assert!(
            matches!(e, MediaError::TooLarge { limit, .. } if limit == MAX_UPLOAD_BYTES),
            "{e:?}"
        );
        assert!(e.to_string().contains("25 MiB"), "{e}");
    }
    // Empty files and unusable names are refused too, also without a request.
    for (name, bytes) in [("x.txt", &[][..]), ("..", &b"x"[..]), ("dir/", &b"x"[..])] {
        let e = c
            .upload_media(&env.bob, name, "", bytes, UploadKind::File)
            .await
            .expect_err("refused");
        assert!(matches!(e, MediaError::Invalid { .. }), "{e:?}");
    }
    assert_eq!(env.requests("webwxuploadmedia").await, 41);
    env.sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// sends

#[tokio::test]
async fn every_media_send_reaches_its_endpoint() {
    let env = Env::start().await;
    let c = &env.client;
    let jpeg = [&[0xFF, 0xD8, 0xFF, 0xE0][..], &payload(2000, 5)].concat();
    let image_id = c
        .upload_media(&env.bob, "a.jpg", "image/jpeg", &jpeg, UploadKind::Image)
        .await
        .expect("image upload");
    let video_id = c
        .upload_media(
            &env.bob,
            "v.mp4",
            "video/mp4",
            &payload(3000, 6),
            UploadKind::Video,
        )
        .await
        .expect("video upload");
    let gif_id = c
        .upload_media(
            &env.bob,
            "g.gif",
            "image/gif",
            b"GIF89a....",
            UploadKind::Gif,
        )
        .await
        .expect("gif upload");
    let doc = payload(5000, 7);
    let doc_id = c
        .upload_media(&env.bob, "a&b <1>.tar.gz", "", &doc, UploadKind::File)
        .await
        .expect("file upload");

    let sent = vec![
        c.send_image(&env.bob, &image_id).await.expect("image"),
        c.send_video(&env.bob, &video_id).await.expect("video"),
        c.send_emoticon(&env.bob, &gif_id).await.expect("emoticon"),
        c.send_file(&env.bob, "a&b <1>.tar.gz", doc.len() as u64, &doc_id)
            .await
            .expect("file"),
        c.send_link(
            &env.bob,
            "Title & <more>",
            "Desc \"quoted\"",
            "https://example.invalid/a?b=1&c=2",
            "https://example.invalid/t.jpg",
        )
        .await
        .expect("link"),
        c.send_app_xml(
            &env.bob,
            "<appmsg appid=\"wx0123\" sdkver=\"\"><title>Coffee</title><type>33</type><weappinfo><appid>wx0123</appid></weappinfo></appmsg>",
        )
        .await
        .expect("mini program"),
    ];

    let out = env.outbox().await;
    let sends: Vec<&Value> = out
        .iter()
        .filter(|e| e["endpoint"] != "webwxuploadmedia")
        .collect();
    let seen: Vec<(&str, u64, u64)> = sends
        .iter()
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap_or(""),
                e["msg_type"].as_u64().unwrap_or(0),
                e["detail"]["Type"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("webwxsendmsgimg", 3, 3),
            ("webwxsendvideomsg", 43, 43),
            ("webwxsendemoticon", 47, 47),
            ("webwxsendappmsg", 49, 6),
            ("webwxsendappmsg", 49, 5),
            ("webwxsendappmsg", 49, 33),
        ]
    );
    for (e, s) in sends.iter().zip(&sent) {
        assert_eq!(e["msg_id"], s.msg_id.as_str());
        assert_eq!(e["local_id"], s.local_id.as_str());
        assert_eq!(e["to"], env.bob.as_str());
        assert_eq!(e["from"], env.me.as_str());
    }
    assert_eq!(sends[0]["media_id"], image_id.as_str());
    assert_eq!(sends[1]["media_id"], video_id.as_str());
    assert_eq!(sends[2]["media_id"], gif_id.as_str());
    let file_xml = sends[3]["content"].as_str().expect("file xml");
    assert!(
        file_xml.contains("<title>a&amp;b &lt;1&gt;.tar.gz</title>"),
        "{file_xml}"
    );
    assert!(file_xml.contains(&format!(
        "<totallen>5000</totallen><attachid>{doc_id}</attachid><fileext>gz</fileext>"
    )));
    let link_xml = sends[4]["content"].as_str().expect("link xml");
    assert!(
        link_xml.contains("<title>Title &amp; &lt;more&gt;</title>")
            && link_xml.contains("<des>Desc &quot;quoted&quot;</des>")
            && link_xml.contains("<url>https://example.invalid/a?b=1&amp;c=2</url>")
            && link_xml.contains("<thumburl>https://example.invalid/t.jpg</thumburl>")
            && link_xml.contains("<type>5</type>"),
        "{link_xml}"
    );
    assert!(
        sends[5]["content"]
            .as_str()
            .is_some_and(|x| x.contains("<weappinfo>"))
    );

    // Refused locally, before any request.
    let before = env.requests("webwxsendappmsg").await;
    for bad in ["<msg><img/></msg>", "not xml", "<appmsg><title>cut"] {
        let e = c.send_app_xml(&env.bob, bad).await.expect_err(bad);
        assert!(matches!(e, MediaError::Invalid { .. }), "{e:?}");
    }
    let e = c.send_image(&env.bob, "").await.expect_err("no media id");
    assert!(matches!(e, MediaError::Invalid { .. }), "{e:?}");
    assert_eq!(env.requests("webwxsendappmsg").await, before);

    // The server's refusals come back as its Ret.
    let e = c
        .send_image(&env.bob, "@crypt_unknown")
        .await
        .expect_err("unknown media");
    assert_eq!(e.ret(), Some(1), "{e:?}");
    env.sim.shutdown().await;
}

#[tokio::test]
async fn outgoing_media_follows_the_plan() {
    let env = Env::start().await;
    let with_head = |head: &[u8], len: usize, seed: u8| [head, &payload(len, seed)].concat();
    let payloads = [
        (
            "a.jpg",
            with_head(&[0xFF, 0xD8, 0xFF, 0xE0], 3000, 1),
            false,
        ),
        ("b.gif", with_head(b"GIF89a", 500, 2), false),
        (
            "c.webp",
            with_head(b"RIFF\x10\0\0\0WEBPVP8 ", 800, 3),
            false,
        ),
        (
            "d.mp4",
            with_head(b"\0\0\0\x18ftypisom", CHUNK_SIZE + 10, 4),
            true,
        ),
        ("e.mov", with_head(b"\0\0\0\x14ftypqt  ", 900, 5), true),
    ];
    for (name, bytes, video) in payloads {
        let s = sniff(&bytes);
        let plan = if video {
            plan_video_send(&s)
        } else {
            plan_image_send(&s)
        };
        let name = name.to_owned();
        let media = match plan {
            SendPlan::Image => OutgoingMedia::Image {
                bytes,
                name,
                content_type: s.content_type.into(),
            },
            SendPlan::Gif => OutgoingMedia::Gif { bytes, name },
            SendPlan::Video => OutgoingMedia::Video { bytes, name },
            SendPlan::AsFile => OutgoingMedia::File {
                bytes,
                name,
                content_type: s.content_type.into(),
            },
        };
        send_outgoing(&env.client, &env.bob, &media)
            .await
            .expect("sent");
    }
    for media in [
        OutgoingMedia::Link {
            title: "T".into(),
            desc: "D".into(),
            url: "https://example.invalid/".into(),
            thumb_url: String::new(),
        },
        OutgoingMedia::AppXml {
            xml: "<appmsg><title>M</title><type>33</type></appmsg>".into(),
        },
    ] {
        send_outgoing(&env.client, &env.bob, &media)
            .await
            .expect("sent");
    }
    let out = env.outbox().await;
    let uploads: Vec<&str> = entries(&out, "webwxuploadmedia")
        .iter()
        .filter_map(|e| e["detail"]["mediatype"].as_str())
        .collect();
    assert_eq!(uploads, vec!["pic", "doc", "doc", "video", "doc"]);
    let sends: Vec<(&str, &str)> = out
        .iter()
        .filter(|e| e["endpoint"] != "webwxuploadmedia")
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap_or(""),
                e["content"].as_str().unwrap_or(""),
            )
        })
        .map(|(ep, content)| {
            let title = content
                .split_once("<title>")
                .and_then(|(_, rest)| rest.split_once("</title>"))
                .map_or("", |(t, _)| t);
            (ep, title)
        })
        .collect();
    assert_eq!(
        sends,
        vec![
            ("webwxsendmsgimg", ""),
            ("webwxsendemoticon", ""),
            ("webwxsendappmsg", "c.webp"),
            ("webwxsendvideomsg", ""),
            ("webwxsendappmsg", "e.mov"),
            ("webwxsendappmsg", "T"),
            ("webwxsendappmsg", "M"),
        ]
    );
    env.sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// faults

#[tokio::test]
async fn failing_chunks_are_retried() {
    let env = Env::start().await;
    let ctl = env.ctl();
    ctl.post(
        "/faults",
        json!({"route": "webwxuploadmedia", "http500": 0.15}),
    )
    .await;
    let data = payload(2 * CHUNK_SIZE + 100, 8);
    let mut uploads = 0u64;
    // Upload until the sim has failed at least two chunk requests; every upload must succeed.
    while env.stats().await["faults_injected"]["http500"]
        .as_u64()
        .unwrap_or(0)
        < 2
    {
        uploads += 1;
        assert!(uploads <= 40, "no faults injected in 40 uploads");
        let id = env
            .client
            .upload_media(&env.bob, "r.bin", "", &data, UploadKind::File)
            .await
            .expect("upload survives http 500s");
        let back = env
            .client
            .get_media(&env.me, &id, "r.bin", "")
            .await
            .expect("download");
        assert!(back.bytes == data, "retried upload reassembled differently");
    }
    let failed = env.stats().await["faults_injected"]["http500"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(
        env.requests("webwxuploadmedia").await,
        uploads * 3 + failed,
        "each failed chunk was sent once more"
    );
    ctl.delete("/faults").await;
    env.sim.shutdown().await;
}

#[tokio::test]
async fn lost_chunk_answers_restart_the_upload() {
    let env = Env::start().await;
    let ctl = env.ctl();
    // A dropped answer comes after the sim stored the chunk: the repeat is out of order, and
    // the upload has to start over.
    ctl.post("/faults", json!({"route": "webwxuploadmedia", "drop": 0.1}))
        .await;
    let data = payload(CHUNK_SIZE + 4321, 9);
    let mut uploads = 0;
    while env.stats().await["faults_injected"]["drop"]
        .as_u64()
        .unwrap_or(0)
        < 2
    {
        uploads += 1;
        assert!(uploads <= 60, "no drops injected in 60 uploads");
        let id = env
            .client
            .upload_media(&env.bob, "d.bin", "", &data, UploadKind::File)
            .await
            .expect("upload survives lost answers");
        let back = env
            .client
            .get_media(&env.me, &id, "d.bin", "")
            .await
            .expect("download");
        assert!(back.bytes == data);
    }
    ctl.delete("/faults").await;
    env.sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// downloads

#[tokio::test]
async fn received_media_downloads_by_type() {
    let env = Env::start().await;

    struct Case {
        inject: Value,
        kind: MediaRefKind,
        content_type: &'static str,
        format: Format,
        ext: &'static str,
    }
    let cases = [
        Case {
            inject: json!({"type": "image", "from": "Bob"}),
            kind: MediaRefKind::Image,
            content_type: "image/jpeg",
            format: Format::Jpeg,
            ext: "jpg",
        },
        Case {
            inject: json!({"type": "emoji", "from": "Bob"}),
            kind: MediaRefKind::Emoticon,
            content_type: "image/gif",
            format: Format::Gif,
            ext: "gif",
        },
        Case {
            inject: json!({"type": "voice", "from": "Bob", "length_ms": 2000}),
            kind: MediaRefKind::Voice,
            content_type: "audio/mp3",
            format: Format::Mp3,
            ext: "mp3",
        },
        Case {
            inject: json!({"type": "video", "from": "Bob"}),
            kind: MediaRefKind::Video,
            content_type: "video/mp4",
            format: Format::Mp4,
            ext: "mp4",
        },
        Case {
            inject: json!({"type": "microvideo", "from": "Bob"}),
            kind: MediaRefKind::Video,
            content_type: "video/mp4",
            format: Format::Mp4,
            ext: "mp4",
        },
    ];
    for case in cases {
        let injected = env.inject(case.inject.clone()).await;
        let id = injected["msg_id"].as_str().expect("msg_id").to_owned();
        let m = env.receive(&id).await;
        let r = MediaRef::from_message(&m).expect("a media message");
        assert_eq!(r.kind, case.kind, "{}", case.inject);
        assert_eq!(r.msg_id, id);
        assert_eq!(r.from, env.bob);
        let d = download(&env.client, &r).await.expect("download");
        assert_eq!(d.content_type, case.content_type, "{}", case.inject);
        assert_eq!(sniff(&d.bytes).kind, case.format, "{}", case.inject);
        assert_eq!(file_name_for(&r, &d), format!("{id}.{}", case.ext));
        if case.kind == MediaRefKind::Video {
            // The whole video, though the server answers the range request with 206.
            assert_eq!(d.bytes.len(), 64 * 1024);
        }
        if case.kind == MediaRefKind::Voice {
            assert_eq!(d.bytes.len(), 4096);
            assert!(d.bytes.starts_with(b"ID3"));
        }
    }

    // A file attachment comes from the file host under its own name.
    let name = "季度 report (final).xlsx";
    let size = 700_000;
    let injected = env
        .inject(json!({"type": "file", "from": "Bob", "file_name": name, "size": size}))
        .await;
    let m = env
        .receive(injected["msg_id"].as_str().expect("msg_id"))
        .await;
    let r = MediaRef::from_message(&m).expect("file ref");
    assert_eq!(r.kind, MediaRefKind::File);
    assert_eq!(r.media_id, injected["media_id"].as_str().expect("media_id"));
    assert_eq!(r.file_name, name);
    let d = download(&env.client, &r).await.expect("file download");
    assert!(d.bytes == sim_pattern(size), "file bytes differ");
    assert_eq!(d.file_name.as_deref(), Some(name));
    assert_eq!(file_name_for(&r, &d), name);

    // Text is not media; unknown ids are the server's 404.
    let injected = env
        .inject(json!({"type": "text", "from": "Bob", "text": "hi"}))
        .await;
    let m = env
        .receive(injected["msg_id"].as_str().expect("msg_id"))
        .await;
    assert_eq!(MediaRef::from_message(&m), None);
    let e = env
        .client
        .get_msg_img("123456789")
        .await
        .expect_err("unknown id");
    assert!(
        matches!(
            e,
            MediaError::Wechat(WechatError::Status {
                endpoint: "webwxgetmsgimg",
                status: 404
            })
        ),
        "{e:?}"
    );
    let e = env.client.get_voice("12ab").await.expect_err("not an id");
    assert!(matches!(e, MediaError::Invalid { .. }), "{e:?}");
    env.sim.shutdown().await;
}

#[tokio::test]
async fn oversized_downloads_stop_at_the_declared_length() {
    let env = Env::start().await;
    let size = MAX_DOWNLOAD_BYTES + 1;
    let injected = env
        .inject(json!({"type": "file", "from": "Bob", "file_name": "huge.iso", "size": size}))
        .await;
    let media_id = injected["media_id"].as_str().expect("media_id");
    let e = env
        .client
        .get_media(&env.bob, media_id, "huge.iso", "")
        .await
        .expect_err("over the cap");
    assert!(
        matches!(e, MediaError::TooLarge { what: "webwxgetmedia", size: s, limit } if s == size && limit == MAX_DOWNLOAD_BYTES),
        "{e:?}"
    );
    env.sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// ranges and caps (a hand-written server, so the answers can be shaped)

/// What the shaped server saw.
#[derive(Default)]
struct Seen {
    ranges: Vec<Option<String>>,
}

const VIDEO_LEN: usize = 2500;
const PIECE: usize = 1000;

/// A main host whose webwxgetvideo answers ranges at most 1000 bytes at a time, whose
/// webwxgetvoice ignores ranges, and whose webwxgetmsgimg streams without a length forever.
async fn shaped_server() -> (String, Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let video = Bytes::from(payload(VIDEO_LEN, 11));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/cgi-bin/mmwebwx-bin/{endpoint}",
        axum::routing::get(
            move |axum::extract::Path(endpoint): axum::extract::Path<String>,
                  headers: HeaderMap| {
                let seen = s.clone();
                let video = video.clone();
                async move {
                    let range = headers
                        .get(header::RANGE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    seen.lock().expect("seen").ranges.push(range.clone());
                    match endpoint.as_str() {
                        "webwxgetvideo" => {
                            let start: usize = range
                                .as_deref()
                                .and_then(|r| r.strip_prefix("bytes="))
                                .and_then(|r| r.strip_suffix('-'))
                                .and_then(|r| r.parse().ok())
                                .unwrap_or(0);
                            let end = (start + PIECE).min(VIDEO_LEN);
                            Response::builder()
                                .status(StatusCode::PARTIAL_CONTENT)
                                .header(header::CONTENT_TYPE, "video/mp4")
                                .header(
                                    header::CONTENT_RANGE,
                                    format!("bytes {start}-{}/{VIDEO_LEN}", end - 1),
                                )
                                .body(Body::from(video.slice(start..end)))
                                .expect("response")
                        }
                        "webwxgetvoice" => {
                            ([(header::CONTENT_TYPE, "audio/mpeg")], video).into_response()
                        }
                        _ => {
                            // 1 MiB pieces with no Content-Length, without end.
                            let piece = Bytes::from(vec![7u8; 1024 * 1024]);
                            let stream = futures::stream::repeat_with(move || {
                                Ok::<Bytes, std::convert::Infallible>(piece.clone())
                            });
                            Response::new(Body::from_stream(stream))
                        }
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/"), seen, task)
}

fn client_for(origin: &str) -> WebClient {
    let session = WebSession {
        main_origin: origin.to_owned(),
        file_origin: origin.to_owned(),
        webpush_origin: origin.to_owned(),
        ..WebSession::default()
    };
    WebClient::with_session(settings(origin), session).expect("client")
}

#[tokio::test]
async fn video_ranges_are_followed_to_the_end() {
    let (origin, seen, task) = shaped_server().await;
    let c = client_for(&origin);
    let d = c.get_video("42").await.expect("video");
    assert!(
        d.bytes == payload(VIDEO_LEN, 11),
        "pieces reassembled wrongly"
    );
    assert_eq!(d.content_type, "video/mp4");
    assert_eq!(
        seen.lock().expect("seen").ranges,
        vec![
            Some("bytes=0-".to_owned()),
            Some("bytes=1000-".to_owned()),
            Some("bytes=2000-".to_owned())
        ]
    );
    // Voice is asked for without a range and taken whole.
    seen.lock().expect("seen").ranges.clear();
    let d = c.get_voice("43").await.expect("voice");
    assert_eq!(d.bytes.len(), VIDEO_LEN);
    assert_eq!(seen.lock().expect("seen").ranges, vec![None]);
    task.abort();
}

#[tokio::test]
async fn endless_bodies_stop_at_the_cap() {
    let (origin, _seen, task) = shaped_server().await;
    let c = client_for(&origin);
    let e = c.get_msg_img("44").await.expect_err("endless body");
    assert!(
        matches!(e, MediaError::DownloadTooLarge { endpoint: "webwxgetmsgimg", limit } if limit == MAX_DOWNLOAD_BYTES),
        "{e:?}"
    );
    assert!(e.to_string().contains("100 MiB"), "{e}");
    task.abort();
}
