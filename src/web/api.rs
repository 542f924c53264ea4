//! The axum router for the local web page (docs/web-api.md, docs/openapi.yaml):
//! the JSON API under `/api/`, the page's static files, plain HTTP or TLS.
//!
//! Layout: [`serve`] loads the password file (taking a first-boot
//! `initial_password_file`), binds, and runs [`router`] until `shutdown` turns
//! `true`. State is [`AppState`]: the config, the [`EdgeControl`] of the running
//! daemon, [`Settings`] over edge.toml, and the sans-IO auth state of
//! [`super::auth`] behind one mutex (held only for short, non-blocking steps;
//! argon2 runs on the blocking pool).
//!
//! Every error answer is `{"error": "reason"}`: handlers answer with [`ApiError`],
//! and a last layer rewrites what axum produces by itself (404, 405, 413) into that
//! form.
//!
//! TLS: `tokio-rustls` (ring provider, like the rest of braid) behind axum's own
//! `serve`, through a small [`axum::serve::Listener`] that does handshakes in their
//! own tasks, so one serving path covers HTTP and HTTPS.

use super::auth::{self, LoginLimiter, PasswordStore, Sessions};
use super::settings::{Apply, Settings, SettingsError};
use super::{assets, logs, EdgeControl};
use crate::config::{WebConfig, WebTls};
use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Largest request body accepted (413 above it).
pub const BODY_LIMIT: usize = 64 * 1024;
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "braid_session";
/// Header carrying the session's CSRF token on state-changing calls.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Time between two `stats` events on `/api/events`.
pub const EVENTS_INTERVAL: Duration = Duration::from_secs(1);
/// Default and largest `lines` of `/api/logs`.
pub const DEFAULT_LOG_LINES: usize = 200;
pub const MAX_LOG_LINES: usize = 2000;
/// A TLS handshake taking longer than this is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `journalctl` taking longer than this is given up (the memory lines are shown).
const JOURNAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Every route of [`router`] as (method, axum path). docs/openapi.yaml documents
/// exactly these (tests/web_api.rs checks both ways).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/assets/{*path}"),
    ("GET", "/api/health"),
    ("GET", "/api/auth"),
    ("POST", "/api/auth/setup"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/logout"),
    ("POST", "/api/auth/password"),
    ("GET", "/api/stats"),
    ("GET", "/api/events"),
    ("GET", "/api/settings"),
    ("PUT", "/api/settings"),
    ("POST", "/api/stream/start"),
    ("POST", "/api/stream/stop"),
    ("POST", "/api/stream/restart"),
    ("POST", "/api/system/reboot"),
    ("GET", "/api/logs"),
    ("GET", "/api/diagnostics"),
    ("GET", "/api/update"),
    ("POST", "/api/update"),
];

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// An error answer: `status` with `{"error": message, ...extra}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// More members of the body (`errors` of a settings validation).
    pub extra: Option<serde_json::Map<String, Value>>,
    /// `Retry-After` seconds (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            extra: None,
            retry_after: None,
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.extra.unwrap_or_default();
        body.insert("error".into(), Value::String(self.message));
        let mut resp = (self.status, Json(Value::Object(body))).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

struct AuthState {
    store: PasswordStore,
    sessions: Sessions,
    limiter: LoginLimiter,
}

/// Saved changes that still wait for a restart (docs/web-api.md, "Settings").
#[derive(Debug, Default)]
struct Pending {
    stream: BTreeSet<String>,
    service: BTreeSet<String>,
}

impl Pending {
    fn list(&self) -> Vec<String> {
        let all: BTreeSet<&String> = self.stream.iter().chain(&self.service).collect();
        all.into_iter().cloned().collect()
    }
}

struct Inner {
    cfg: WebConfig,
    config_path: PathBuf,
    edge: Arc<dyn EdgeControl>,
    settings: Settings,
    auth: Mutex<AuthState>,
    pending: Mutex<Pending>,
    shutdown: watch::Receiver<bool>,
    uploads: Arc<super::update::Uploads>,
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// A poisoned mutex only means another handler panicked mid-way; the state in it
/// is still consistent for our short critical sections.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl AppState {
    /// Loads `cfg.password_file`. Does not take the initial password (see
    /// [`take_initial_password`]) and binds nothing.
    pub fn new(
        cfg: WebConfig,
        config_path: PathBuf,
        edge: Arc<dyn EdgeControl>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let store = PasswordStore::load(&cfg.password_file)?;
        let sessions = Sessions::new(cfg.session_idle);
        Ok(AppState(Arc::new(Inner {
            settings: Settings::new(config_path.clone()),
            cfg,
            config_path,
            edge,
            auth: Mutex::new(AuthState {
                store,
                sessions,
                limiter: LoginLimiter::new(),
            }),
            pending: Mutex::new(Pending::default()),
            shutdown,
            uploads: Arc::default(),
        })))
    }

    fn secure(&self) -> bool {
        self.0.cfg.tls.is_some()
    }
}

/// First boot: hashes `cfg.initial_password_file` into `cfg.password_file` when no
/// password is set yet, then deletes it. Returns whether a password was taken.
pub fn take_initial_password(cfg: &WebConfig) -> anyhow::Result<bool> {
    let Some(initial) = &cfg.initial_password_file else {
        return Ok(false);
    };
    let mut store = PasswordStore::load(&cfg.password_file)?;
    Ok(store.take_initial(initial, &mut rand::rngs::OsRng)?)
}

// ---------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------

/// Serves the page per `cfg` until `shutdown` becomes `true` (or its sender is
/// dropped). Takes the first-boot password, prepares TLS (generating the
/// self-signed certificate once), binds `cfg.listen` and returns the bound address
/// with the serving task.
pub async fn serve(
    cfg: WebConfig,
    config_path: PathBuf,
    edge: Arc<dyn EdgeControl>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let c = cfg.clone();
    match tokio::task::spawn_blocking(move || take_initial_password(&c)).await? {
        Ok(true) => tracing::info!(
            file = %cfg.password_file.display(),
            "web: initial password hashed into the password file; the plaintext file is deleted"
        ),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %format!("{e:#}"), "web: initial password not taken"),
    }
    let tls = match &cfg.tls {
        Some(t) => {
            let (t, pw) = (t.clone(), cfg.password_file.clone());
            Some(tokio::task::spawn_blocking(move || tls_config(&t, &pw)).await??)
        }
        None => None,
    };
    let state = AppState::new(cfg.clone(), config_path, edge, shutdown.clone())?;
    let app = router(state).into_make_service_with_connect_info::<Peer>();
    let tcp = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("web: binding {}", cfg.listen))?;
    let addr = tcp.local_addr()?;
    let mut stop = shutdown;
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let task = match tls {
        None => {
            tracing::info!(listen = %addr, "web: serving HTTP");
            tokio::spawn(async move {
                if let Err(e) = axum::serve(tcp, app).with_graceful_shutdown(stopped).await {
                    tracing::error!(error = %e, "web: server failed");
                }
            })
        }
        Some(tls) => {
            tracing::info!(listen = %addr, "web: serving HTTPS");
            let listener = TlsListener::new(tcp, tls)?;
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::error!(error = %e, "web: server failed");
                }
            })
        }
    };
    Ok((addr, task))
}

/// The client's address (for the login rate limit), from either listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// File names of the self-signed certificate, beside `password_file`.
pub const SELF_SIGNED_CERT: &str = "web-cert.pem";
pub const SELF_SIGNED_KEY: &str = "web-key.pem";

/// The rustls server configuration for `tls`; a self-signed certificate is
/// generated once and kept beside `password_file`.
pub fn tls_config(tls: &WebTls, password_file: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (cert, key) = match tls {
        WebTls::Files { cert, key } => (cert.clone(), key.clone()),
        WebTls::SelfSigned => {
            let dir = match password_file.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let (cert, key) = (dir.join(SELF_SIGNED_CERT), dir.join(SELF_SIGNED_KEY));
            if !cert.exists() || !key.exists() {
                write_self_signed(&cert, &key)?;
            }
            (cert, key)
        }
    };
    let (certs, key) = crate::transport::tls::load_identity(&cert, &key)?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(crate::transport::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .context("web TLS: protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .with_context(|| format!("web TLS: certificate {}", cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A self-signed ECDSA P-256 certificate for the names a box is reached by.
fn write_self_signed(cert: &Path, key: &Path) -> anyhow::Result<()> {
    let mut names = vec![
        "braid.local".to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_string());
            names.push(format!("{h}.local"));
        }
    }
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("web TLS: generating key")?;
    let mut params = rcgen::CertificateParams::new(names).context("web TLS: certificate names")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "braid edge");
    let c = params.self_signed(&pair).context("web TLS: self-signing")?;
    crate::system::atomic::write_atomic_mode(key, pair.serialize_pem().as_bytes(), 0o600)
        .with_context(|| format!("writing {}", key.display()))?;
    crate::system::atomic::write_atomic_mode(cert, c.pem().as_bytes(), 0o644)
        .with_context(|| format!("writing {}", cert.display()))?;
    tracing::info!(cert = %cert.display(), "web: generated a self-signed certificate");
    Ok(())
}

/// Accepts TCP connections and hands over those whose TLS handshake succeeded
/// (handshakes run in their own tasks: a slow client does not hold up others).
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    local: SocketAddr,
}

impl TlsListener {
    fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> anyhow::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    biased;
                    _ = tx.closed() => return,
                    r = tcp.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::debug!(error = %e, "web: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "web: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "web: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The acceptor task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

// ---------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------

/// The whole API and page (see [`ROUTES`]). Needs `ConnectInfo<Peer>` (as
/// [`serve`] provides); without it logins count as from 0.0.0.0.
pub fn router(state: AppState) -> Router {
    let open = Router::new()
        .route("/", get(asset))
        .route("/assets/{*path}", get(asset))
        .route("/api/health", get(health))
        .route("/api/auth", get(auth_status))
        .route("/api/auth/setup", post(setup))
        .route("/api/auth/login", post(login));
    let private = Router::new()
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/password", post(change_password))
        .route("/api/stats", get(stats))
        .route("/api/events", get(events))
        .route("/api/settings", get(settings_view).put(settings_save))
        .route("/api/stream/start", post(stream_start))
        .route("/api/stream/stop", post(stream_stop))
        .route("/api/stream/restart", post(stream_restart))
        .route("/api/system/reboot", post(reboot))
        .route("/api/logs", get(logs_view))
        .route("/api/diagnostics", get(diagnostics))
        // The body is streamed to the installer with its own limit ([ota]).
        .route(
            "/api/update",
            get(update_status)
                .post(update_upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    open.merge(private)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::map_response(finish_response))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found")
}

/// Gives every error answer the `{"error": ...}` body (axum's own 405, 413 and
/// rejections have plain text or none), and every answer the same safety headers.
async fn finish_response(resp: Response) -> Response {
    let mut resp = if resp.status().as_u16() >= 400 && !is_json(resp.headers()) {
        let status = resp.status();
        let reason = status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase();
        let headers = resp.headers().clone();
        let mut new = ApiError::new(status, reason).into_response();
        for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
            if let Some(v) = headers.get(&name) {
                new.headers_mut().insert(name, v.clone());
            }
        }
        new
    } else {
        resp
    };
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

fn is_json(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

// ---------------------------------------------------------------------------
// Requests: JSON bodies, cookies, sessions
// ---------------------------------------------------------------------------

/// A JSON body: `Content-Type: application/json` (415 otherwise), at most
/// [`BODY_LIMIT`] bytes (413), well-formed (400), an object of the right shape (422).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body larger than {BODY_LIMIT} bytes"),
                )
            } else {
                ApiError::new(r.status(), r.body_text())
            }
        })?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))
        })?;
        // Every body of this API is an object (serde would take an array for a
        // struct, by position).
        if !value.is_object() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid JSON body: expected an object",
            ));
        }
        T::deserialize(value).map(JsonBody).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid JSON body: {e}"),
            )
        })
    }
}

/// The `braid_session` cookie's value, if sent.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
}

fn set_cookie(state: &AppState, token: &str) -> HeaderValue {
    let secure = if state.secure() { "; Secure" } else { "" };
    let v = format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{secure}");
    // Tokens are hex: always a valid header value.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("braid_session=; Path=/"))
}

fn clear_cookie(state: &AppState) -> HeaderValue {
    let secure = if state.secure() { "; Secure" } else { "" };
    let v = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}");
    HeaderValue::from_str(&v)
        .unwrap_or_else(|_| HeaderValue::from_static("braid_session=; Max-Age=0"))
}

/// The logged-in session of a request (put there by [`require_session`]).
#[derive(Debug, Clone)]
struct SessionToken(String);

fn is_state_changing(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// 401 without a live session, 403 on a state-changing call without the session's
/// CSRF token.
async fn require_session(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let token = session_cookie(req.headers());
    let verdict = {
        let mut a = lock(&state.0.auth);
        if !a.store.is_set() {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "no password set yet",
            ))
        } else {
            match token
                .as_deref()
                .and_then(|t| a.sessions.touch(t, Instant::now()).map(|_| t))
            {
                None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "not logged in")),
                Some(t) if is_state_changing(req.method()) => {
                    let presented = req
                        .headers()
                        .get(CSRF_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if a.sessions.csrf_ok(t, presented) {
                        Ok(t.to_string())
                    } else {
                        Err(ApiError::new(
                            StatusCode::FORBIDDEN,
                            "missing or wrong X-CSRF-Token",
                        ))
                    }
                }
                Some(t) => Ok(t.to_string()),
            }
        }
    };
    match verdict {
        Ok(t) => {
            req.extensions_mut().insert(SessionToken(t));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

// ---------------------------------------------------------------------------
// Static page
// ---------------------------------------------------------------------------

async fn asset(req: Request) -> Response {
    let path = req.uri().path().to_string();
    asset_response(assets::get(&path), req.headers())
}

/// The answer for `asset` given the request headers: 404 when absent; 304 when
/// `If-None-Match` names its ETag; gzip when accepted.
pub fn asset_response(asset: Option<assets::Asset>, headers: &HeaderMap) -> Response {
    let Some(a) = asset else {
        return ApiError::new(StatusCode::NOT_FOUND, "not found").into_response();
    };
    let cache = if a.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let etag = HeaderValue::from_str(a.etag).ok();
    let not_modified = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == a.etag);
    let mut resp = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let gzip = accepts_gzip(headers);
        let body = if gzip { a.gzip } else { a.plain };
        let mut r = Response::new(Body::from(body));
        if gzip {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if let Ok(ct) = HeaderValue::from_str(a.content_type) {
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        r
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Some(e) = etag {
        h.insert(header::ETAG, e);
    }
    resp
}

/// Whether `Accept-Encoding` allows gzip (`gzip` or `*` without `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        })
}

// ---------------------------------------------------------------------------
// Health and auth
// ---------------------------------------------------------------------------

async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "ok": true,
        "version": env!("CARGO_PKG_VERSION"),
        "state": state.0.edge.state(),
    }))
}

async fn auth_status(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    let token = session_cookie(&headers);
    let mut a = lock(&state.0.auth);
    let set = a.store.is_set();
    let csrf = match (set, token) {
        (true, Some(t)) => a.sessions.touch(&t, Instant::now()),
        _ => None,
    };
    Json(json!({"password_set": set, "logged_in": csrf.is_some(), "csrf": csrf}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePasswordBody {
    old: String,
    new: String,
}

fn rule_error(e: auth::AuthError) -> ApiError {
    match e {
        auth::AuthError::Length(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        other => ApiError::internal(other.to_string()),
    }
}

async fn hash_blocking(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || auth::hash_password(&password, &mut rand::rngs::OsRng))
        .await
        .map_err(|e| ApiError::internal(format!("hashing task: {e}")))?
        .map_err(rule_error)
}

async fn verify_blocking(password: String, phc: String) -> ApiResult<bool> {
    // A password the rules would never have accepted cannot match; this also
    // keeps megabyte "passwords" away from argon2.
    if !auth::PASSWORD_CHARS.contains(&password.chars().count()) {
        return Ok(false);
    }
    tokio::task::spawn_blocking(move || auth::verify_password(&password, &phc))
        .await
        .map_err(|e| ApiError::internal(format!("verify task: {e}")))
}

fn logged_in(state: &AppState, session: auth::NewSession) -> Response {
    let mut resp = Json(json!({"csrf": session.csrf})).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(state, &session.token));
    resp
}

fn already_set() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "a password is already set")
}

async fn setup(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PasswordBody>,
) -> ApiResult<Response> {
    auth::check_password(&body.password).map_err(rule_error)?;
    if lock(&state.0.auth).store.is_set() {
        return Err(already_set());
    }
    let phc = hash_blocking(body.password).await?;
    let session = {
        let mut a = lock(&state.0.auth);
        // Two first visits racing: the first to get here wins.
        if a.store.is_set() {
            return Err(already_set());
        }
        a.store
            .store(phc)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        a.sessions.clear();
        a.sessions.create(Instant::now(), &mut rand::rngs::OsRng)
    };
    tracing::info!("web: admin password set on first visit");
    Ok(logged_in(&state, session))
}

fn peer_ip(peer: Option<axum::Extension<ConnectInfo<Peer>>>) -> IpAddr {
    peer.map_or(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        |axum::Extension(ConnectInfo(Peer(a)))| a.ip(),
    )
}

fn limited(seconds: u64) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many failed logins; try again in {seconds} s"),
    );
    e.retry_after = Some(seconds);
    e
}

async fn login(
    State(state): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<Peer>>>,
    JsonBody(body): JsonBody<PasswordBody>,
) -> ApiResult<Response> {
    let ip = peer_ip(peer);
    let phc = {
        let mut a = lock(&state.0.auth);
        let Some(phc) = a.store.hash().map(str::to_string) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "no password set yet",
            ));
        };
        a.limiter.check(ip, Instant::now()).map_err(limited)?;
        phc
    };
    let ok = verify_blocking(body.password, phc).await?;
    let mut a = lock(&state.0.auth);
    if ok {
        a.limiter.success(ip);
        let session = a.sessions.create(Instant::now(), &mut rand::rngs::OsRng);
        drop(a);
        Ok(logged_in(&state, session))
    } else {
        a.limiter.failure(ip, Instant::now());
        drop(a);
        tracing::warn!(client = %ip, "web: failed login");
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong password"))
    }
}

async fn logout(
    State(state): State<AppState>,
    axum::Extension(SessionToken(t)): axum::Extension<SessionToken>,
) -> Response {
    lock(&state.0.auth).sessions.remove(&t);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, clear_cookie(&state));
    resp
}

async fn change_password(
    State(state): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<Peer>>>,
    axum::Extension(SessionToken(t)): axum::Extension<SessionToken>,
    JsonBody(body): JsonBody<ChangePasswordBody>,
) -> ApiResult<StatusCode> {
    auth::check_password(&body.new).map_err(rule_error)?;
    let ip = peer_ip(peer);
    let phc = {
        let mut a = lock(&state.0.auth);
        a.limiter.check(ip, Instant::now()).map_err(limited)?;
        a.store.hash().map(str::to_string).unwrap_or_default()
    };
    if !verify_blocking(body.old, phc).await? {
        lock(&state.0.auth).limiter.failure(ip, Instant::now());
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong password"));
    }
    let new = hash_blocking(body.new).await?;
    let mut a = lock(&state.0.auth);
    a.store
        .store(new)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    a.limiter.success(ip);
    a.sessions.remove_others(&t);
    drop(a);
    tracing::info!("web: admin password changed; other sessions logged out");
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------
// Stats and events
// ---------------------------------------------------------------------------

async fn stats(State(state): State<AppState>) -> Json<Value> {
    Json(state.0.edge.stats())
}

async fn events(
    State(state): State<AppState>,
    axum::Extension(SessionToken(token)): axum::Extension<SessionToken>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let mut interval = tokio::time::interval(EVENTS_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = state.0.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (state, token, interval, shutdown),
        |(state, token, mut interval, mut shutdown)| async move {
            if *shutdown.borrow() {
                return None;
            }
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => return None,
                _ = interval.tick() => {}
            }
            // A logout or password change ends the stream.
            lock(&state.0.auth).sessions.touch(&token, Instant::now())?;
            let data = state.0.edge.stats().to_string();
            let ev = Event::default().event("stats").data(data);
            Some((Ok(ev), (state, token, interval, shutdown)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

// ---------------------------------------------------------------------------
// Settings and stream control
// ---------------------------------------------------------------------------

fn settings_error(e: SettingsError) -> ApiError {
    match e {
        SettingsError::Stale { revision } => {
            let mut err = ApiError::new(
                StatusCode::CONFLICT,
                "the settings changed since they were read; reload them",
            );
            let mut extra = serde_json::Map::new();
            extra.insert("revision".into(), Value::String(revision));
            err.extra = Some(extra);
            err
        }
        SettingsError::Invalid(errors) => {
            let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid settings");
            let mut extra = serde_json::Map::new();
            extra.insert("errors".into(), json!(errors));
            err.extra = Some(extra);
            err
        }
        SettingsError::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
        SettingsError::Io(m) => ApiError::internal(m),
    }
}

async fn settings_view(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let settings = state.0.settings.clone();
    let view = tokio::task::spawn_blocking(move || settings.view())
        .await
        .map_err(|e| ApiError::internal(format!("settings task: {e}")))?
        .map_err(settings_error)?;
    let mut view = match view {
        Value::Object(m) => m,
        other => {
            let mut m = serde_json::Map::new();
            m.insert("values".into(), other);
            m
        }
    };
    view.insert(
        "restart_pending".into(),
        json!(lock(&state.0.pending).list()),
    );
    Ok(Json(Value::Object(view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsPut {
    revision: String,
    changes: serde_json::Map<String, Value>,
}

async fn settings_save(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SettingsPut>,
) -> ApiResult<Json<Value>> {
    let settings = state.0.settings.clone();
    let saved = tokio::task::spawn_blocking(move || settings.save(&body.revision, &body.changes))
        .await
        .map_err(|e| ApiError::internal(format!("settings task: {e}")))?
        .map_err(settings_error)?;
    let mut applied = Vec::new();
    let restart_needed = {
        let mut p = lock(&state.0.pending);
        for (key, apply) in &saved.changed {
            match apply {
                Apply::Live => applied.push(key.clone()),
                Apply::Stream => {
                    p.stream.insert(key.clone());
                }
                Apply::Service => {
                    p.service.insert(key.clone());
                }
            }
        }
        p.list()
    };
    if !applied.is_empty() {
        state.0.edge.apply_live(&saved.config);
    }
    tracing::info!(changed = saved.changed.len(), "web: settings saved");
    Ok(Json(json!({
        "revision": saved.revision,
        "applied": applied,
        "restart_needed": restart_needed,
        "values": saved.values,
    })))
}

async fn update_status(State(state): State<AppState>) -> Json<Value> {
    Json(serde_json::to_value(state.0.uploads.progress()).unwrap_or(Value::Null))
}

async fn update_upload(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    req: Request,
) -> ApiResult<Json<Value>> {
    use super::update::UploadError;
    let force = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|kv| kv == "force=1" || kv == "force=true"));
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let updater = state.0.edge.updater();
    let uploads = state.0.uploads.clone();
    match uploads.run(updater, req.into_body(), len, force).await {
        Ok(v) => Ok(Json(json!({"installed": v}))),
        Err(UploadError::NotConfigured) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "over-the-air updates are not configured on this box ([ota] in edge.toml)",
        )),
        Err(UploadError::Busy) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "another update is being installed",
        )),
        Err(UploadError::TooLarge { max }) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("update bundle over the limit of {max} bytes"),
        )),
        Err(UploadError::Refused(r)) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, r)),
        Err(UploadError::Broken(r)) => Err(ApiError::new(StatusCode::BAD_REQUEST, r)),
    }
}

async fn stream_start(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"live": state.0.edge.set_live(true)}))
}

async fn stream_stop(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"live": state.0.edge.set_live(false)}))
}

async fn stream_restart(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let path = state.0.config_path.clone();
    let cfg = tokio::task::spawn_blocking(move || crate::config::load_edge(&path))
        .await
        .map_err(|e| ApiError::internal(format!("config task: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    state
        .0
        .edge
        .restart_stream(cfg)
        .await
        .map_err(|e| ApiError::internal(format!("stream restart failed: {e}")))?;
    let pending = {
        let mut p = lock(&state.0.pending);
        p.stream.clear();
        p.list()
    };
    tracing::info!("web: stream restarted with the saved settings");
    Ok(Json(json!({"restarted": true, "restart_pending": pending})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RebootBody {
    confirm: bool,
}

async fn reboot(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<RebootBody>,
) -> ApiResult<Response> {
    if !body.confirm {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "confirm must be true",
        ));
    }
    let argv = &state.0.cfg.reboot_command;
    let Some((program, args)) = argv.split_first() else {
        return Err(ApiError::internal("no reboot command"));
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| ApiError::internal(format!("cannot run {program}: {e}")))?;
    tracing::warn!(command = ?argv, "web: reboot requested");
    tokio::spawn(async move {
        match child.wait().await {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::error!(status = %s, "web: reboot command failed"),
            Err(e) => tracing::error!(error = %e, "web: reboot command"),
        }
    });
    Ok((StatusCode::ACCEPTED, Json(json!({"rebooting": true}))).into_response())
}

// ---------------------------------------------------------------------------
// Logs and diagnostics
// ---------------------------------------------------------------------------

/// `lines` of `/api/logs`: 1..=2000, default 200.
fn parse_lines(query: Option<&str>) -> ApiResult<usize> {
    let mut n = DEFAULT_LOG_LINES;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "lines" {
            n = v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LOG_LINES).contains(n))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("lines: expected an integer from 1 to {MAX_LOG_LINES}"),
                    )
                })?;
        }
    }
    Ok(n)
}

/// The last `n` log lines: journald's for `unit` when running under systemd and
/// `journalctl` works, else the daemon's own from memory.
pub async fn recent_logs(unit: &str, n: usize) -> (&'static str, Vec<String>) {
    if std::env::var_os("INVOCATION_ID").is_some() {
        let out = tokio::time::timeout(
            JOURNAL_TIMEOUT,
            tokio::process::Command::new("journalctl")
                .args([
                    "-u",
                    unit,
                    "-n",
                    &n.to_string(),
                    "-o",
                    "short-iso",
                    "--no-pager",
                ])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await;
        if let Ok(Ok(out)) = out {
            if out.status.success() {
                let text = String::from_utf8_lossy(&out.stdout);
                let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
                let skip = lines.len().saturating_sub(n);
                lines.drain(..skip);
                return ("journal", lines);
            }
        }
    }
    ("memory", logs::memory().last(n))
}

async fn logs_view(State(state): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let n = parse_lines(q.as_deref())?;
    let (source, lines) = recent_logs(&state.0.cfg.log_unit, n).await;
    Ok(Json(json!({"source": source, "lines": lines})))
}

/// The diagnostics bundle: a gzip-compressed tar of `files` (name, contents).
pub fn tar_gz(files: &[(&str, Vec<u8>)], mtime: u64) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_cksum();
        tar.append_data(&mut h, name, data.as_slice())?;
    }
    tar.into_inner()?.finish()
}

async fn diagnostics(State(state): State<AppState>) -> ApiResult<Response> {
    let (source, lines) = recent_logs(&state.0.cfg.log_unit, MAX_LOG_LINES).await;
    let stats = serde_json::to_vec_pretty(&state.0.edge.stats())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let path = state.0.config_path.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = tokio::task::spawn_blocking(move || {
        let config = match std::fs::read_to_string(&path) {
            Ok(text) => super::settings::redacted_toml(&text),
            Err(e) => format!("# cannot read {}: {e}\n", path.display()),
        };
        let mut logs = format!("# source: {source}\n");
        for l in &lines {
            logs.push_str(l);
            logs.push('\n');
        }
        let version = format!(
            "braid {}\nbundle written at unix time {now}\n",
            env!("CARGO_PKG_VERSION")
        );
        tar_gz(
            &[
                ("config.toml", config.into_bytes()),
                ("stats.json", stats),
                ("logs.txt", logs.into_bytes()),
                ("version.txt", version.into_bytes()),
            ],
            now,
        )
    })
    .await
    .map_err(|e| ApiError::internal(format!("diagnostics task: {e}")))?
    .map_err(|e| ApiError::internal(format!("diagnostics: {e}")))?;
    let disposition = format!("attachment; filename=\"braid-diagnostics-{now}.tar.gz\"");
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const PAGE: assets::Asset = assets::Asset {
        gzip: b"GZ",
        plain: b"<html>",
        content_type: "text/html; charset=utf-8",
        etag: "\"abc\"",
        immutable: false,
    };

    #[test]
    fn asset_gzip_etag_and_cache() {
        let r = asset_response(
            Some(PAGE),
            &headers(&[(header::ACCEPT_ENCODING, "br, gzip;q=0.8")]),
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(r.headers()[header::ETAG], "\"abc\"");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );

        let r = asset_response(
            Some(PAGE),
            &headers(&[(header::ACCEPT_ENCODING, "gzip;q=0")]),
        );
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        let r = asset_response(Some(PAGE), &HeaderMap::new());
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());

        let r = asset_response(
            Some(PAGE),
            &headers(&[(header::IF_NONE_MATCH, "\"x\", W/\"abc\"")]),
        );
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[header::ETAG], "\"abc\"");
        let r = asset_response(Some(PAGE), &headers(&[(header::IF_NONE_MATCH, "\"x\"")]));
        assert_eq!(r.status(), StatusCode::OK);

        let immutable = assets::Asset {
            immutable: true,
            ..PAGE
        };
        let r = asset_response(Some(immutable), &HeaderMap::new());
        assert_eq!(
            r.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(
            asset_response(None, &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn cookies_and_lines() {
        let h = headers(&[
            (header::COOKIE, "a=b; braid_session=abc123"),
            (header::COOKIE, "c=d"),
        ]);
        assert_eq!(session_cookie(&h).as_deref(), Some("abc123"));
        assert_eq!(
            session_cookie(&headers(&[(header::COOKIE, "braid_sessionx=1; =; ;")])),
            None
        );
        assert_eq!(parse_lines(None).unwrap(), 200);
        assert_eq!(parse_lines(Some("lines=1")).unwrap(), 1);
        assert_eq!(parse_lines(Some("x=y&lines=2000")).unwrap(), 2000);
        for bad in [
            "lines=0",
            "lines=2001",
            "lines=-1",
            "lines=ab",
            "lines",
            "lines=99999999999999999999999",
        ] {
            assert_eq!(
                parse_lines(Some(bad)).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }
}
