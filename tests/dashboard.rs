//! The admin dashboard page (`/` of the admin API) in headless Chromium: a pending session's row
//! with its QR code (fetched over HTTP and decoded to the simulator's login URL), then the same
//! row online after the simulator's scan and confirm.
//!
//! Needs a `chromium` binary (CI installs Debian's package in `.ci/run`). Without one the test
//! says so and passes, unless `CI` is set: then a missing browser is a failure. The browser is
//! kept on loopback: no background networking, no component updates, and a host-resolver rule
//! that makes every other name unresolvable.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The page's DOM after its script has run (`--dump-dom` with a virtual time budget).
fn dump_dom(chromium: &PathBuf, url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-breakpad",
            "--disable-domain-reliability",
            "--metrics-recording-only",
            "--no-pings",
            "--no-proxy-server",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        out
    });
    // A browser that hangs must not hang the test run.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match child.try_wait().expect("wait for chromium") {
            Some(status) => {
                let dom = reader.join().expect("reader");
                assert!(status.success(), "chromium failed: {status}\n{dom}");
                return dom;
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within 120 s");
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The `<tr>` of session `id` in the dumped DOM.
fn row<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let start = dom.find(&format!("<tr id=\"session-{id}\""))?;
    let len = dom[start..].find("</tr>")?;
    Some(&dom[start..start + len])
}

fn attr<'a>(html: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = html.find(&key)? + key.len();
    let len = html[start..].find('"')?;
    Some(&html[start..start + len])
}

#[test]
fn dashboard_shows_the_qr_code_then_the_session_online() {
    let Some(chromium) = find_chromium() else {
        assert!(
            !in_ci(),
            "no chromium binary on PATH; CI must have it (.ci/run installs Debian's chromium)"
        );
        eprintln!("SKIPPED: no chromium binary on PATH (install Debian's `chromium` to run this)");
        return;
    };
    let sim = Sim::start();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let sup = Supervisor::start(&cfg.path);
    let id = "dash-1";
    let uin = sim.account_with_bob("Alice");
    let uuid = sim.request_qr_session(id);
    sup.wait_session("a QR code to offer", id, |s| s["qr"].is_string());
    let page = format!("http://{}/", sup.admin);

    // The pending session, with an <img> of its QR code.
    let dom = wait_until("the page to list the waiting session", || {
        let dom = dump_dom(&chromium, &page);
        row(&dom, id).is_some().then_some(dom)
    });
    let tr = row(&dom, id).expect("row");
    assert_eq!(attr(tr, "data-state"), Some("waiting_for_scan"), "{tr}");
    let img = &tr[tr
        .find("<img")
        .unwrap_or_else(|| panic!("no <img> in {tr}"))..];
    let src = attr(img, "src").expect("img src");
    assert!(src.starts_with(&format!("/qr/{id}.png")), "{src}");
    let png = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
        .get(format!("http://{}{}", sup.admin, src.replace("&amp;", "&")))
        .send()
        .expect("GET the QR image");
    assert_eq!(png.status().as_u16(), 200);
    assert_eq!(
        png.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("image/png")
    );
    let text = decode_qr(&png.bytes().expect("png"));
    assert!(
        text.ends_with(&format!("/l/{uuid}")),
        "the QR code is the simulator's login URL for {uuid}: {text}"
    );

    // The phone scans and confirms: the row turns online and the QR code goes.
    sim.confirm_qr(&sup, uin, &uuid, id);
    let dom = wait_until("the page to show the session online", || {
        let dom = dump_dom(&chromium, &page);
        row(&dom, id)
            .is_some_and(|tr| attr(tr, "data-state") == Some("online"))
            .then_some(dom)
    });
    let tr = row(&dom, id).expect("row");
    assert!(!tr.contains("<img"), "no QR code once online: {tr}");
    assert!(tr.contains("Alice"), "the account is shown: {tr}");
}

#[test]
fn dashboard_with_a_token_sends_it_as_a_header() {
    const TOKEN: &str = "dash-t0ken";
    let Some(chromium) = find_chromium() else {
        assert!(
            !in_ci(),
            "no chromium binary on PATH; CI must have it (.ci/run installs Debian's chromium)"
        );
        eprintln!("SKIPPED: no chromium binary on PATH (install Debian's `chromium` to run this)");
        return;
    };
    let sim = Sim::start();
    let cfg = TestConfig::supervisor(&sim, &SupervisorSettings::default());
    let text = std::fs::read_to_string(&cfg.path).expect("config");
    write_config(
        &cfg.path,
        &text.replacen(
            "[agent]\n",
            &format!("[agent]\nadmin_token = \"{TOKEN}\"\n"),
            1,
        ),
    );
    let sup = Supervisor::start(&cfg.path);
    let id = "dash-t";
    sim.request_qr_session(id);
    // The page was opened once with the token; its requests carry it as a bearer header, and
    // the QR image, fetched the same way, is shown from memory.
    let page = format!("http://{}/?token={TOKEN}", sup.admin);
    let dom = wait_until("the page to show the waiting session's QR code", || {
        let dom = dump_dom(&chromium, &page);
        row(&dom, id)
            .is_some_and(|tr| tr.contains("<img"))
            .then_some(dom)
    });
    let tr = row(&dom, id).expect("row");
    let img = &tr[tr.find("<img").expect("img")..];
    assert!(
        attr(img, "src").is_some_and(|s| s.starts_with("blob:")),
        "{img}"
    );
    assert!(dom.contains("<div id=\"error\"></div>"), "{dom}");
}
