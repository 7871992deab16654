//! The HTTP server: one listener for every "host" (login, main, file, webpush), the router that
//! dispatches protocol endpoints and the test-control API, and the start/shutdown lifecycle.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::{any, get};
use axum::serve::ListenerExt as _;
use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::contacts;
use super::control;
use super::faults;
use super::http::{self, MAX_BODY, Req};
use super::login;
use super::media::{self, Download};
use super::send::{self, SendKind};
use super::state::Sim;
use super::sync;

/// Where to listen and how long long polls hold when nothing happens (the real server holds
/// about 25 s; tests use a few hundred milliseconds).
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub listen: SocketAddr,
    pub hold: Duration,
}

/// A running simulator. Dropping it stops the server without waiting; `shutdown` waits.
pub struct SimHandle {
    addr: SocketAddr,
    token: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, answers held long polls at once, and waits for the server task.
    pub async fn shutdown(mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!("simulator task ended abnormally: {e}");
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Binds, serves in the background and returns at once.
pub async fn start(opts: SimOptions) -> anyhow::Result<SimHandle> {
    let socket = if opts.listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .context("creating the simulator socket")?;
    socket
        .set_reuseaddr(true)
        .context("setting SO_REUSEADDR on the simulator socket")?;
    socket
        .bind(opts.listen)
        .with_context(|| format!("binding the simulator to {}", opts.listen))?;
    // A deep backlog: a thousand clients may connect at once.
    let listener = socket
        .listen(4096)
        .with_context(|| format!("listening on {}", opts.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the simulator's address")?;
    let sim = Arc::new(Sim::new(opts.hold));
    let token = sim.shutdown.clone();
    let app = router(sim.clone());
    let stop = token.clone();
    let task = tokio::spawn(async move {
        let listener = listener.tap_io(|tcp| {
            // Long polls and small bodies: no Nagle delays.
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        let sweeper = async {
            let mut every = tokio::time::interval(Duration::from_secs(30));
            loop {
                every.tick().await;
                sim.sweep();
            }
        };
        tokio::select! {
            r = serve => if let Err(e) = r {
                tracing::error!("simulator server failed: {e}");
            },
            () = sweeper => {}
        }
    });
    tracing::info!(%addr, "simulator listening");
    Ok(SimHandle {
        addr,
        token,
        task: Some(task),
    })
}

/// For `wxagent sim`: start, print `wxagent sim listening on http://ADDR`, serve until
/// `shutdown` is cancelled.
pub async fn run(opts: SimOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let handle = start(opts).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "wxagent sim listening on {}", handle.base_url())
            .and_then(|()| out.flush())
            .context("writing the listening line to stdout")?;
    }
    shutdown.cancelled().await;
    handle.shutdown().await;
    Ok(())
}

fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/", any(|| async { login::root() }))
        .route("/jslogin", any(jslogin))
        .route("/qrcode/{uuid}", get(qrcode))
        .route("/l/{uuid}", get(phone_page))
        .route("/cgi-bin/mmwebwx-bin/{endpoint}", any(protocol))
        .nest("/__sim", control::router())
        .fallback(|| async { http::not_found() })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            faults::middleware,
        ))
        .with_state(sim)
        // The reference control plane shares the listener (its routes live under /wehub, /__cp
        // and /cp, and are not subject to the WeChat fault injection).
        .merge(super::wehub::router(super::wehub::WehubState::new()))
}

async fn jslogin(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    login::jslogin(&sim, &Req::new(method, uri, headers, Bytes::new()))
}

async fn qrcode(State(sim): State<Arc<Sim>>, Path(uuid): Path<String>) -> Response {
    login::qrcode(&sim, &uuid)
}

async fn phone_page(State(sim): State<Arc<Sim>>, Path(uuid): Path<String>) -> Response {
    login::phone_page(&sim, &uuid)
}

/// Every `/cgi-bin/mmwebwx-bin/<endpoint>`, any method, dispatched by endpoint name.
async fn protocol(
    State(sim): State<Arc<Sim>>,
    Path(endpoint): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Req::new(method, uri, headers, body);
    let sim = &*sim;
    match endpoint.to_ascii_lowercase().as_str() {
        "login" => login::login_poll(sim, &req).await,
        "webwxnewloginpage" => login::new_login_page(sim, &req),
        "webwxpushloginurl" => login::push_login(sim, &req),
        "webwxinit" => contacts::init(sim, &req),
        "webwxstatusnotify" => contacts::status_notify(sim, &req),
        "webwxgetcontact" => contacts::get_contact(sim, &req),
        "webwxbatchgetcontact" => contacts::batch_get_contact(sim, &req),
        "synccheck" => sync::synccheck(sim, &req).await,
        "webwxsync" => sync::webwxsync(sim, &req),
        "webwxsendmsg" => send::send(sim, &req, SendKind::Text),
        "webwxsendmsgimg" => send::send(sim, &req, SendKind::Image),
        "webwxsendvideomsg" => send::send(sim, &req, SendKind::Video),
        "webwxsendappmsg" => send::send(sim, &req, SendKind::App),
        "webwxsendemoticon" => send::send(sim, &req, SendKind::Emoticon),
        "webwxrevokemsg" => send::revoke(sim, &req),
        "webwxlogout" => send::logout(sim, &req),
        "webwxuploadmedia" => media::upload(sim, &req).await,
        "webwxcheckupload" => media::check_upload(),
        "webwxgetmsgimg" => media::download(sim, &req, Download::MsgImg),
        "webwxgetvoice" => media::download(sim, &req, Download::Voice),
        "webwxgetvideo" => media::download(sim, &req, Download::Video),
        "webwxgetmedia" => media::get_media(sim, &req),
        "webwxgeticon" | "webwxgetheadimg" => media::avatar(),
        "webwxverifyuser" => contacts::verify_user(sim, &req),
        "webwxoplog" => contacts::oplog(sim, &req),
        "webwxcreatechatroom" => contacts::create_chatroom(sim, &req),
        "webwxupdatechatroom" => contacts::update_chatroom(sim, &req),
        "webwxstatreport" => contacts::ret_resp(0, ""),
        _ => http::not_found(),
    }
}
