//! The local web page's API (docs/web-api.md) over a real socket: a server from
//! `braid::web::api::serve` on 127.0.0.1:0, a real HTTP client (reqwest), and a
//! fake `EdgeControl` that records what the API asked of the daemon.

use braid::config::{EdgeConfig, WebConfig, WebTls};
use braid::device::leds::BoxState;
use braid::system::TempDir;
use braid::web::api::{self, ROUTES};
use braid::web::{BoxFuture, EdgeControl, Updater};
use reqwest::header::{HeaderMap, CONTENT_TYPE, COOKIE, RETRY_AFTER, SET_COOKIE};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const PASSWORD: &str = "correct horse battery";
const SECRET: &str = "very-secret-srt-passphrase";

/// Records the calls the API makes.
#[derive(Default)]
struct FakeEdge {
    calls: Mutex<Vec<String>>,
    live: AtomicBool,
    polls: AtomicU64,
    updater: Mutex<Option<Arc<dyn Updater>>>,
}

/// Takes bundles that start with `GOOD` (reading them to the end) and refuses the
/// rest after their first 4 bytes, as a signature check would.
struct FakeUpdater;

impl Updater for FakeUpdater {
    fn max_bytes(&self) -> u64 {
        1 << 20
    }
    fn install(&self, body: &mut dyn Read, force: bool) -> Result<Value, String> {
        let mut head = [0u8; 4];
        body.read_exact(&mut head)
            .map_err(|e| format!("truncated: {e}"))?;
        if &head != b"GOOD" {
            return Err("signature does not verify with any configured key".into());
        }
        let mut rest = Vec::new();
        body.read_to_end(&mut rest).map_err(|e| e.to_string())?;
        Ok(json!({"bytes": 4 + rest.len(), "force": force}))
    }
}

impl FakeEdge {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl EdgeControl for FakeEdge {
    fn stats(&self) -> Value {
        let n = self.polls.fetch_add(1, Ordering::Relaxed);
        json!({"device": "cam1", "poll": n, "live": self.live.load(Ordering::Relaxed)})
    }
    fn state(&self) -> BoxState {
        BoxState::Ready
    }
    fn set_live(&self, live: bool) -> bool {
        self.calls.lock().unwrap().push(format!("set_live({live})"));
        self.live.store(live, Ordering::Relaxed);
        live
    }
    fn apply_live(&self, cfg: &EdgeConfig) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("apply_live({})", cfg.device.id));
    }
    fn restart_stream(&self, cfg: EdgeConfig) -> BoxFuture<Result<(), String>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("restart_stream({})", cfg.device.id));
        Box::pin(async { Ok(()) })
    }
    fn updater(&self) -> Option<Arc<dyn Updater>> {
        self.updater.lock().unwrap().clone()
    }
}

fn edge_toml() -> String {
    format!(
        r#"[device]
id = "cam1"
cert = "device.crt"
key = "device.key"

[relay]
address = "127.0.0.1:7000"
fingerprint = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
latency_ms = 500

[input]
kind = "srt"
passphrase = "{SECRET}"

[[link]]
name = "modem0"
bind = "127.0.0.1"

[web]
listen = "127.0.0.1:0"
"#
    )
}

struct Server {
    addr: SocketAddr,
    dir: TempDir,
    cfg: WebConfig,
    edge: Arc<FakeEdge>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    http: Client,
    base: String,
}

fn web_config(dir: &TempDir) -> WebConfig {
    WebConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        password_file: dir.path().join("web-password"),
        initial_password_file: None,
        tls: None,
        session_idle: Duration::from_secs(720 * 60),
        reboot_command: vec!["true".into()],
        log_unit: "braid-edge".into(),
    }
}

async fn start_with(dir: TempDir, cfg: WebConfig) -> Server {
    let config_path = dir.path().join("edge.toml");
    if !config_path.exists() {
        std::fs::write(&config_path, edge_toml()).unwrap();
    }
    let edge = Arc::new(FakeEdge::default());
    let (stop, rx) = watch::channel(false);
    let (addr, task) = api::serve(cfg.clone(), config_path, edge.clone(), rx)
        .await
        .expect("serve");
    let http = Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    Server {
        base: format!("http://{addr}"),
        addr,
        dir,
        cfg,
        edge,
        stop,
        task,
        http,
    }
}

async fn start() -> Server {
    let dir = TempDir::new("webapi").unwrap();
    let cfg = web_config(&dir);
    start_with(dir, cfg).await
}

/// A logged-in browser: its cookie header value and CSRF token.
#[derive(Clone)]
struct Login {
    cookie: String,
    csrf: String,
}

fn session_from(resp_headers: &HeaderMap) -> String {
    let set = resp_headers
        .get(SET_COOKIE)
        .expect("Set-Cookie")
        .to_str()
        .unwrap();
    set.split(';').next().unwrap().trim().to_string()
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post_json(&self, path: &str, body: Value) -> Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn setup(&self) -> Login {
        let r = self
            .post_json("/api/auth/setup", json!({"password": PASSWORD}))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let cookie = session_from(r.headers());
        let csrf = r.json::<Value>().await.unwrap()["csrf"]
            .as_str()
            .unwrap()
            .to_string();
        Login { cookie, csrf }
    }

    async fn login(&self, password: &str) -> Response {
        self.post_json("/api/auth/login", json!({"password": password}))
            .await
    }

    async fn login_ok(&self) -> Login {
        let r = self.login(PASSWORD).await;
        assert_eq!(r.status(), StatusCode::OK);
        let cookie = session_from(r.headers());
        let csrf = r.json::<Value>().await.unwrap()["csrf"]
            .as_str()
            .unwrap()
            .to_string();
        Login { cookie, csrf }
    }

    /// A call as `who` (cookie and CSRF header), with an optional JSON body.
    async fn call(&self, who: &Login, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut rb = self
            .http
            .request(method, self.url(path))
            .header(COOKIE, &who.cookie)
            .header("X-CSRF-Token", &who.csrf);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        rb.send().await.unwrap()
    }

    async fn get(&self, who: &Login, path: &str) -> Response {
        self.call(who, Method::GET, path, None).await
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops on shutdown")
            .unwrap();
    }
}

async fn error_of(r: Response) -> String {
    assert_eq!(
        r.headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string()),
        Some("application/json".to_string())
    );
    let v: Value = r.json().await.unwrap();
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error member in {v}"))
        .to_string()
}

#[tokio::test]
async fn first_visit_setup_then_conflict() {
    let s = start().await;
    let r = s.http.get(s.url("/api/auth")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"password_set": false, "logged_in": false, "csrf": null})
    );
    // Before a password exists, only auth, setup, health and the page answer.
    let r = s.http.get(s.url("/api/stats")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s.login(PASSWORD).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Too short / too long.
    let r = s
        .post_json("/api/auth/setup", json!({"password": "short"}))
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error_of(r).await.contains("8 to 128"));
    let r = s
        .post_json("/api/auth/setup", json!({"password": "x".repeat(129)}))
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let me = s.setup().await;
    assert!(s.cfg.password_file.exists());
    let phc = std::fs::read_to_string(&s.cfg.password_file).unwrap();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    assert!(!phc.contains(PASSWORD));
    let r = s.get(&me, "/api/auth").await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["password_set"], true);
    assert_eq!(v["logged_in"], true);
    assert_eq!(v["csrf"], me.csrf.as_str());

    let r = s
        .post_json("/api/auth/setup", json!({"password": "another password"}))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    error_of(r).await;
    // The first password still works, the second does not.
    s.login_ok().await;
    assert_eq!(
        s.login("another password").await.status(),
        StatusCode::UNAUTHORIZED
    );
    s.stop().await;
}

#[tokio::test]
async fn session_cookie_attributes_and_logout() {
    let s = start().await;
    let r = s
        .post_json("/api/auth/setup", json!({"password": PASSWORD}))
        .await;
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let parts: Vec<&str> = set.split(';').map(str::trim).collect();
    let token = parts[0]
        .strip_prefix("braid_session=")
        .expect("cookie name");
    assert_eq!(token.len(), 64, "32 random bytes in hex");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(parts.contains(&attr), "{set}");
    }
    assert!(!parts.contains(&"Secure"), "no Secure without TLS: {set}");

    let me = s.login_ok().await;
    assert_eq!(s.get(&me, "/api/stats").await.status(), StatusCode::OK);
    let r = s.call(&me, Method::POST, "/api/auth/logout", None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let cleared = r.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cleared.starts_with("braid_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(
        s.get(&me, "/api/stats").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let v: Value = s.get(&me, "/api/auth").await.json().await.unwrap();
    assert_eq!(v["logged_in"], false);
    s.stop().await;
}

#[tokio::test]
async fn unauthenticated_calls_are_401_and_csrf_is_checked() {
    let s = start().await;
    let me = s.setup().await;
    let nobody = Login {
        cookie: "braid_session=00".into(),
        csrf: me.csrf.clone(),
    };
    for (method, path) in ROUTES {
        if !path.starts_with("/api/")
            || [
                "/api/health",
                "/api/auth",
                "/api/auth/setup",
                "/api/auth/login",
            ]
            .contains(path)
        {
            continue;
        }
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let r = s.http.request(m.clone(), s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        error_of(r).await;
        let r = s.call(&nobody, m, path, None).await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a made-up cookie"
        );
    }
    // Health needs nothing.
    let r = s.http.get(s.url("/api/health")).send().await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"ok": true, "version": env!("CARGO_PKG_VERSION"), "state": "ready"})
    );

    // CSRF: missing and wrong header on state-changing calls.
    let r = s
        .http
        .post(s.url("/api/stream/start"))
        .header(COOKIE, &me.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    error_of(r).await;
    let wrong = Login {
        cookie: me.cookie.clone(),
        csrf: "0".repeat(64),
    };
    for (method, path, body) in [
        ("POST", "/api/stream/start", None),
        ("POST", "/api/stream/stop", None),
        ("POST", "/api/stream/restart", None),
        ("POST", "/api/auth/logout", None),
        (
            "POST",
            "/api/auth/password",
            Some(json!({"old": PASSWORD, "new": "whatever123"})),
        ),
        ("POST", "/api/system/reboot", Some(json!({"confirm": true}))),
        (
            "PUT",
            "/api/settings",
            Some(json!({"revision": "x", "changes": {}})),
        ),
    ] {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let r = s.call(&wrong, m, path, body).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
    }
    assert!(
        s.edge.calls().is_empty(),
        "nothing reached the edge: {:?}",
        s.edge.calls()
    );
    // GETs need no CSRF token.
    let r = s
        .http
        .get(s.url("/api/stats"))
        .header(COOKIE, &me.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Still logged in after all that.
    assert_eq!(s.get(&me, "/api/stats").await.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn bodies_malformed_wrong_type_oversized_and_not_json() {
    let s = start().await;
    let raw = |path: &str, ct: Option<&str>, body: Vec<u8>| {
        let mut rb = s.http.post(s.url(path)).body(body);
        if let Some(ct) = ct {
            rb = rb.header(CONTENT_TYPE, ct);
        }
        rb.send()
    };
    // Not JSON: 415 (a cross-site form cannot send application/json).
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let r = raw("/api/auth/setup", ct, b"password=abcdefghij".to_vec())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        error_of(r).await;
        let r = raw("/api/auth/login", ct, b"{}".to_vec()).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
    }
    // With parameters and any case it is JSON.
    let r = raw(
        "/api/auth/setup",
        Some("Application/JSON; charset=utf-8"),
        br#"{"password": 5}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Malformed.
    for body in [&b"{"[..], b"not json", b"", b"\xff\xfe"] {
        let r = raw("/api/auth/setup", Some("application/json"), body.to_vec())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body:?}");
        assert!(error_of(r).await.contains("JSON"));
    }
    // Wrong types / shape.
    for body in [
        json!({"password": 12345678}),
        json!({"pass": "abcdefghij"}),
        json!(["abcdefghij"]),
        json!({"password": "abcdefghij", "extra": 1}),
        json!(null),
    ] {
        let r = s.post_json("/api/auth/setup", body.clone()).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        error_of(r).await;
    }
    // Oversized.
    let big = format!(r#"{{"password": "{}"}}"#, "a".repeat(70 * 1024));
    let r = raw(
        "/api/auth/setup",
        Some("application/json"),
        big.into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    error_of(r).await;
    // Nothing of that set a password.
    let v: Value = s
        .http
        .get(s.url("/api/auth"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["password_set"], false);

    // Same rules with a session.
    let me = s.setup().await;
    let r = s
        .http
        .post(s.url("/api/system/reboot"))
        .header(COOKIE, &me.cookie)
        .header("X-CSRF-Token", &me.csrf)
        .header(CONTENT_TYPE, "application/json")
        .body("{\"confirm\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = s
        .call(
            &me,
            Method::POST,
            "/api/system/reboot",
            Some(json!({"confirm": "yes"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = s
        .call(
            &me,
            Method::POST,
            "/api/system/reboot",
            Some(json!({"confirm": false})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = s
        .call(
            &me,
            Method::PUT,
            "/api/settings",
            Some(json!({"revision": 1, "changes": []})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Unknown paths and methods answer in JSON too.
    let r = s.get(&me, "/api/nope").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    error_of(r).await;
    let r = s.call(&me, Method::DELETE, "/api/stats", None).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    error_of(r).await;
    s.stop().await;
}

#[tokio::test]
async fn login_rate_limit_per_address_and_in_all() {
    let s = start().await;
    s.setup().await;
    for i in 0..5 {
        let r = s.login("wrong password").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
        assert_eq!(error_of(r).await, "wrong password");
    }
    let r = s.login(PASSWORD).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    let after: u64 = r.headers()[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&after), "{after}");
    error_of(r).await;

    // Other addresses (127.0.0.0/8 is all loopback) are not held up until 20
    // failures in all.
    let from = |last: u8| {
        Client::builder()
            .local_address(IpAddr::from([127, 0, 0, last]))
            .build()
            .unwrap()
    };
    let body = json!({"password": "wrong password"});
    for last in 2..=4u8 {
        let c = from(last);
        for _ in 0..5 {
            let r = c
                .post(s.url("/api/auth/login"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "127.0.0.{last}");
        }
    }
    // 20 failures in all now: a fresh address is refused too.
    let r = from(9)
        .post(s.url("/api/auth/login"))
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key(RETRY_AFTER));
    s.stop().await;
}

#[tokio::test]
async fn success_clears_the_address_count() {
    let s = start().await;
    s.setup().await;
    for _ in 0..4 {
        assert_eq!(
            s.login("wrong password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    s.login_ok().await;
    for _ in 0..4 {
        assert_eq!(
            s.login("wrong password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    s.login_ok().await;
    s.stop().await;
}

#[tokio::test]
async fn password_change_logs_other_sessions_out() {
    let s = start().await;
    let a = s.setup().await;
    let b = s.login_ok().await;
    let new = "a brand new password";
    let r = s
        .call(
            &a,
            Method::POST,
            "/api/auth/password",
            Some(json!({"old": "nope nope", "new": new})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    error_of(r).await;
    let r = s
        .call(
            &a,
            Method::POST,
            "/api/auth/password",
            Some(json!({"old": PASSWORD, "new": "short"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s.get(&b, "/api/stats").await.status(), StatusCode::OK);

    let r = s
        .call(
            &a,
            Method::POST,
            "/api/auth/password",
            Some(json!({"old": PASSWORD, "new": new})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        s.get(&a, "/api/stats").await.status(),
        StatusCode::OK,
        "this session stays"
    );
    assert_eq!(
        s.get(&b, "/api/stats").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(s.login(PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.login(new).await.status(), StatusCode::OK);
    // The new hash is what the file holds (a restart keeps it).
    let phc = std::fs::read_to_string(&s.cfg.password_file).unwrap();
    assert!(braid::web::auth::verify_password(new, phc.trim()));
    s.stop().await;
}

#[tokio::test]
async fn stats_stream_control_and_reboot() {
    let dir = TempDir::new("webapi").unwrap();
    let mut cfg = web_config(&dir);
    let marker = dir.path().join("rebooted");
    cfg.reboot_command = vec![
        "sh".into(),
        "-c".into(),
        format!("echo yes > '{}'", marker.display()),
    ];
    let s = start_with(dir, cfg).await;
    let me = s.setup().await;
    let v: Value = s.get(&me, "/api/stats").await.json().await.unwrap();
    assert_eq!(v["device"], "cam1");

    let r = s.call(&me, Method::POST, "/api/stream/start", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"live": true}));
    let r = s.call(&me, Method::POST, "/api/stream/stop", None).await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"live": false}));

    let r = s.call(&me, Method::POST, "/api/stream/restart", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["restart_pending"], json!([]));
    assert_eq!(
        s.edge.calls(),
        ["set_live(true)", "set_live(false)", "restart_stream(cam1)"]
    );

    let r = s
        .call(
            &me,
            Method::POST,
            "/api/system/reboot",
            Some(json!({"confirm": true})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reboot command not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn restart_with_a_broken_file_is_an_error() {
    let s = start().await;
    let me = s.setup().await;
    std::fs::write(s.dir.path().join("edge.toml"), "[device]\nid = 5\n").unwrap();
    let r = s.call(&me, Method::POST, "/api/stream/restart", None).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(error_of(r).await.contains("edge.toml"));
    assert!(s.edge.calls().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn events_deliver_stats_every_second() {
    let s = start().await;
    let me = s.setup().await;
    let mut r = s.get(&me, "/api/events").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut text = String::new();
    let t0 = std::time::Instant::now();
    while text.matches("event: stats").count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), r.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("stream open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(800),
        "once a second, not faster: {elapsed:?}"
    );
    let data: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(data.len() >= 2, "{text}");
    assert_eq!(data[0]["device"], "cam1");
    assert_ne!(data[0]["poll"], data[1]["poll"], "fresh snapshots");

    // Logging out ends the stream.
    s.call(&me, Method::POST, "/api/auth/logout", None).await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = r.chunk().await {}
    })
    .await;
    assert!(end.is_ok(), "stream ends after logout");
    s.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_event_streams() {
    let s = start().await;
    let me = s.setup().await;
    let mut r = s.get(&me, "/api/events").await;
    let _ = tokio::time::timeout(Duration::from_secs(5), r.chunk()).await;
    // stop() waits (bounded) for the serving task to end.
    s.stop().await;
}

#[tokio::test]
async fn logs_from_memory() {
    let s = start().await;
    let me = s.setup().await;
    braid::web::logs::memory().push_text("web-api-test line one\nweb-api-test line two\n");
    let v: Value = s
        .get(&me, "/api/logs?lines=2000")
        .await
        .json()
        .await
        .unwrap();
    let expected = if std::env::var_os("INVOCATION_ID").is_some() {
        None
    } else {
        Some("memory")
    };
    if let Some(src) = expected {
        assert_eq!(v["source"], src);
        let lines: Vec<&str> = v["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert!(lines.contains(&"web-api-test line two"), "{lines:?}");
    }
    let v: Value = s.get(&me, "/api/logs?lines=1").await.json().await.unwrap();
    assert!(v["lines"].as_array().unwrap().len() <= 1);
    let v: Value = s.get(&me, "/api/logs").await.json().await.unwrap();
    assert!(v["lines"].as_array().unwrap().len() <= 200);
    for bad in ["0", "2001", "x", "-3"] {
        let r = s.get(&me, &format!("/api/logs?lines={bad}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        error_of(r).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn diagnostics_is_a_tar_gz_without_secrets() {
    let s = start().await;
    let me = s.setup().await;
    let r = s.get(&me, "/api/diagnostics").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/gzip");
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains(".tar.gz"));
    let body = r.bytes().await.unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&body[..]));
    let mut files = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut e = entry.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        e.read_to_string(&mut text).unwrap();
        assert!(!text.contains(SECRET), "{name} holds the SRT passphrase");
        assert!(!text.contains(PASSWORD), "{name} holds the admin password");
        assert!(!text.contains("$argon2"), "{name} holds the password hash");
        files.push((name, text));
    }
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["config.toml", "stats.json", "logs.txt", "version.txt"]
    );
    let stats: Value = serde_json::from_str(&files[1].1).unwrap();
    assert_eq!(stats["device"], "cam1");
    assert!(files[3].1.contains(env!("CARGO_PKG_VERSION")));
    s.stop().await;
}

#[tokio::test]
async fn initial_password_file_is_consumed() {
    let dir = TempDir::new("webapi").unwrap();
    let mut cfg = web_config(&dir);
    let initial = dir.path().join("first-boot.txt");
    std::fs::write(&initial, "from the sd card\n").unwrap();
    cfg.initial_password_file = Some(initial.clone());
    let s = start_with(dir, cfg).await;
    assert!(!initial.exists(), "the plaintext is deleted");
    assert!(s.cfg.password_file.exists());
    let v: Value = s
        .http
        .get(s.url("/api/auth"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["password_set"], true);
    assert_eq!(s.login("from the sd card").await.status(), StatusCode::OK);
    let r = s
        .post_json("/api/auth/setup", json!({"password": "somebody else"}))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    s.stop().await;
}

#[tokio::test]
async fn page_answers_without_a_session() {
    let s = start().await;
    for path in ["/", "/assets/app.js"] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_ne!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        match braid::web::assets::get(path) {
            Some(a) => {
                assert_eq!(r.status(), StatusCode::OK, "{path}");
                let etag = r.headers()["etag"].to_str().unwrap().to_string();
                assert_eq!(etag, a.etag);
                let r = s
                    .http
                    .get(s.url(path))
                    .header("If-None-Match", &etag)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{path}");
            }
            None => assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}"),
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn every_route_exists_and_other_methods_are_405() {
    let s = start().await;
    // Logged in for the methods that are not routed (the session check comes
    // before the method check); routed ones are called without a session, so they
    // do nothing.
    let me = s.setup().await;
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let mut paths: Vec<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
    paths.dedup();
    for path in paths {
        let url_path = path.replace("{*path}", "app.js");
        for m in methods {
            let routed = ROUTES.iter().any(|(rm, rp)| *rm == m && *rp == path);
            let mut rb = s
                .http
                .request(Method::from_bytes(m.as_bytes()).unwrap(), s.url(&url_path))
                .header(CONTENT_TYPE, "application/json")
                .body("{}");
            if !routed {
                rb = rb
                    .header(COOKIE, &me.cookie)
                    .header("X-CSRF-Token", &me.csrf);
            }
            let r = rb.send().await.unwrap();
            if routed {
                assert_ne!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
                if !path.starts_with("/assets") && path != "/" {
                    assert_ne!(r.status(), StatusCode::NOT_FOUND, "{m} {path}");
                }
            } else {
                assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
            }
        }
    }
    s.stop().await;
}

#[test]
fn openapi_documents_exactly_the_routes() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml"),
    )
    .unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        let path = path.as_str().unwrap();
        for (method, op) in item.as_mapping().unwrap() {
            let method = method.as_str().unwrap().to_ascii_uppercase();
            assert!(
                op["responses"].as_mapping().is_some_and(|r| !r.is_empty()),
                "{method} {path} has no responses"
            );
            documented.push(format!("{method} {path}"));
        }
    }
    documented.sort();
    let mut routes: Vec<String> = ROUTES
        .iter()
        .map(|(m, p)| format!("{m} {}", p.replace("{*path}", "{path}")))
        .collect();
    routes.sort();
    assert_eq!(documented, routes);
    // Every $ref points at something.
    for r in text.lines().filter_map(|l| l.split("$ref: '").nth(1)) {
        let target = r.trim_end_matches('\'');
        let mut node = &doc;
        for part in target.trim_start_matches("#/").split('/') {
            node = &node[part];
        }
        assert!(!node.is_null(), "dangling {target}");
    }
}

#[tokio::test]
async fn tls_serves_with_the_self_signed_certificate() {
    let dir = TempDir::new("webapi").unwrap();
    let mut cfg = web_config(&dir);
    cfg.tls = Some(WebTls::SelfSigned);
    let s = start_with(dir, cfg).await;
    let cert_path = s.dir.path().join("web-cert.pem");
    let key_path = s.dir.path().join("web-key.pem");
    let pem = std::fs::read(&cert_path).expect("certificate generated beside password_file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let client = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve("localhost", s.addr)
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", s.addr.port());
    let r = client
        .get(format!("{base}/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .post(format!("{base}/api/auth/setup"))
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let set = r.headers()[SET_COOKIE].to_str().unwrap();
    assert!(set.split(';').any(|p| p.trim() == "Secure"), "{set}");
    // Plain HTTP on the TLS port gets nothing useful.
    assert!(s.http.get(s.url("/api/health")).send().await.is_err());
    s.stop().await;
}

#[tokio::test]
async fn tls_with_given_files_and_restart_keeps_the_certificate() {
    let dir = TempDir::new("webapi").unwrap();
    let mut cfg = web_config(&dir);
    cfg.tls = Some(WebTls::SelfSigned);
    let pw = cfg.password_file.clone();
    let first = api::tls_config(&WebTls::SelfSigned, &pw);
    assert!(first.is_ok());
    let pem1 = std::fs::read(dir.path().join("web-cert.pem")).unwrap();
    api::tls_config(&WebTls::SelfSigned, &pw).unwrap();
    let pem2 = std::fs::read(dir.path().join("web-cert.pem")).unwrap();
    assert_eq!(pem1, pem2, "generated once");
    // The same files given explicitly.
    cfg.tls = Some(WebTls::Files {
        cert: dir.path().join("web-cert.pem"),
        key: dir.path().join("web-key.pem"),
    });
    let s = start_with(dir, cfg).await;
    let client = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem1).unwrap())
        .resolve("localhost", s.addr)
        .build()
        .unwrap();
    let r = client
        .get(format!("https://localhost:{}/api/health", s.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Missing files are an error at start, not a panic.
    let dir = TempDir::new("webapi").unwrap();
    let mut bad = web_config(&dir);
    bad.tls = Some(WebTls::Files {
        cert: dir.path().join("nope.pem"),
        key: dir.path().join("nope.key"),
    });
    let (_tx, rx) = watch::channel(false);
    let e = api::serve(bad, dir.path().join("edge.toml"), s.edge.clone(), rx).await;
    assert!(e.is_err());
    s.stop().await;
}

#[tokio::test]
async fn session_cap_ends_the_least_recently_used() {
    let s = start().await;
    let first = s.setup().await;
    let second = s.login_ok().await;
    // Keep `second` the more recently used of the two.
    assert_eq!(s.get(&second, "/api/stats").await.status(), StatusCode::OK);
    for _ in 0..braid::web::auth::MAX_SESSIONS - 1 {
        s.login_ok().await;
    }
    assert_eq!(
        s.get(&first, "/api/stats").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(s.get(&second, "/api/stats").await.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn junk_input_never_breaks_the_server() {
    use rand::{Rng, SeedableRng};
    let s = start().await;
    let me = s.setup().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let json_like: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "null",
        "true",
        "1e999",
        "-0",
        "\\u0000",
        "\\ud800",
        "password",
        "confirm",
        "revision",
        "changes",
        " ",
        "\u{1F600}",
    ];
    for i in 0..300 {
        let body: Vec<u8> = if i % 2 == 0 {
            (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect()
        } else {
            (0..rng.gen_range(0..30))
                .map(|_| json_like[rng.gen_range(0..json_like.len())])
                .collect::<String>()
                .into_bytes()
        };
        let (method, path) = ROUTES[rng.gen_range(0..ROUTES.len())];
        let path = path.replace("{*path}", "x%00%2e%2e/..%2f");
        let cookie = match rng.gen_range(0..3) {
            0 => me.cookie.clone(),
            1 => format!("braid_session={}", "f".repeat(rng.gen_range(0..100))),
            _ => "braid_session".to_string(),
        };
        let csrf = if rng.gen_bool(0.5) {
            me.csrf.clone()
        } else {
            "\u{7f}x".into()
        };
        // Never log out or change the password: the loop needs the session.
        if path == "/api/auth/logout"
            || path == "/api/auth/password"
            || path == "/api/system/reboot"
        {
            continue;
        }
        let query = if rng.gen_bool(0.3) {
            "?lines=%FF&lines="
        } else {
            ""
        };
        let r = s
            .http
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                s.url(&format!("{path}{query}")),
            )
            .header(CONTENT_TYPE, "application/json")
            .header(COOKIE, cookie)
            .header("X-CSRF-Token", csrf.replace('\u{7f}', ""))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(
            status.is_success() || status.is_client_error() || path == "/api/settings",
            "{method} {path}: {status}"
        );
        if !status.is_success() {
            error_of(r).await;
        }
    }
    // Still serving, still logged in.
    assert_eq!(s.get(&me, "/api/stats").await.status(), StatusCode::OK);
    s.stop().await;
}

// ---------------------------------------------------------------------------
// Settings (against the contract; the settings engine lands separately)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn settings_view_and_save() {
    let s = start().await;
    let me = s.setup().await;
    let r = s.get(&me, "/api/settings").await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let revision = v["revision"].as_str().unwrap().to_string();
    assert_eq!(v["values"]["device"]["id"], "cam1");
    assert_eq!(v["values"]["input"]["passphrase"], "<redacted>");
    assert!(v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["key"] == "relay.latency_ms"));
    assert_eq!(v["restart_pending"], json!([]));

    // Invalid value: 422 with the field.
    let r = s
        .call(
            &me,
            Method::PUT,
            "/api/settings",
            Some(json!({"revision": revision, "changes": {"relay.latency_ms": 5}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["errors"][0]["field"], "relay.latency_ms");
    assert!(e["error"].is_string());

    // A valid change.
    let r = s
        .call(
            &me,
            Method::PUT,
            "/api/settings",
            Some(json!({"revision": revision, "changes": {"relay.latency_ms": 800}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let saved: Value = r.json().await.unwrap();
    assert_ne!(saved["revision"], revision.as_str());
    assert_eq!(saved["values"]["relay"]["latency_ms"], 800);
    let text = std::fs::read_to_string(s.dir.path().join("edge.toml")).unwrap();
    assert!(text.contains("latency_ms = 800"));
    assert!(text.contains(SECRET), "secrets are kept");
    let applied: Vec<Value> = saved["applied"].as_array().unwrap().clone();
    let needed: Vec<Value> = saved["restart_needed"].as_array().unwrap().clone();
    let key = json!("relay.latency_ms");
    assert!(applied.contains(&key) || needed.contains(&key), "{saved}");
    if applied.contains(&key) {
        assert_eq!(s.edge.calls(), ["apply_live(cam1)"]);
    }

    // The old revision is stale now.
    let r = s
        .call(
            &me,
            Method::PUT,
            "/api/settings",
            Some(json!({"revision": revision, "changes": {"relay.latency_ms": 900}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    error_of(r).await;

    // A key that cannot be placed.
    let r = s
        .call(
            &me,
            Method::PUT,
            "/api/settings",
            Some(json!({"revision": saved["revision"], "changes": {"link.x.y.z": 1}})),
        )
        .await;
    assert!(
        r.status() == StatusCode::BAD_REQUEST || r.status() == StatusCode::UNPROCESSABLE_ENTITY
    );

    // What waits for a stream restart is listed until the restart.
    let pending: Value = s.get(&me, "/api/settings").await.json().await.unwrap();
    assert_eq!(pending["restart_pending"], json!(needed));
    let r = s.call(&me, Method::POST, "/api/stream/restart", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let after: Value = s.get(&me, "/api/settings").await.json().await.unwrap();
    assert!(!after["restart_pending"].as_array().unwrap().contains(&key));
    s.stop().await;
}

#[tokio::test]
async fn settings_service_keys_stay_pending_after_a_stream_restart() {
    let s = start().await;
    let me = s.setup().await;
    let v: Value = s.get(&me, "/api/settings").await.json().await.unwrap();
    let revision = v["revision"].as_str().unwrap();
    let r = s
        .call(
            &me,
            Method::PUT,
            "/api/settings",
            Some(json!({"revision": revision, "changes": {"web.session_idle_minutes": 60}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let saved: Value = r.json().await.unwrap();
    assert_eq!(saved["restart_needed"], json!(["web.session_idle_minutes"]));
    s.call(&me, Method::POST, "/api/stream/restart", None).await;
    let v: Value = s.get(&me, "/api/settings").await.json().await.unwrap();
    assert_eq!(v["restart_pending"], json!(["web.session_idle_minutes"]));
    s.stop().await;
}

#[tokio::test]
async fn update_upload_streams_to_the_installer() {
    let s = start().await;
    let me = s.setup().await;
    let upload = |who: Option<&Login>, path: &str, body: Vec<u8>| {
        let mut rb = s
            .http
            .post(s.url(path))
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(w) = who {
            rb = rb.header(COOKIE, &w.cookie).header("X-CSRF-Token", &w.csrf);
        }
        rb.send()
    };
    // No [ota]: 404 with a reason.
    let r = upload(Some(&me), "/api/update", b"GOOD".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(error_of(r).await.contains("[ota]"));

    *s.edge.updater.lock().unwrap() = Some(Arc::new(FakeUpdater));
    // Without a session, without CSRF.
    let r = upload(None, "/api/update", b"GOOD".to_vec()).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s
        .http
        .post(s.url("/api/update"))
        .header(COOKIE, &me.cookie)
        .body(b"GOOD".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A good bundle far over the 64 KiB JSON limit streams through.
    let mut good = b"GOOD".to_vec();
    good.resize(300_000, 7);
    let r = upload(Some(&me), "/api/update?force=1", good)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["installed"], json!({"bytes": 300_000, "force": true}));
    let p: Value = s.get(&me, "/api/update").await.json().await.unwrap();
    assert_eq!(p["stage"], "done");
    assert_eq!(p["received_bytes"], 300_000);

    // A refused bundle: 422 with the installer's reason, without reading it all.
    let mut evil = b"EVIL".to_vec();
    evil.resize(900_000, 0);
    let r = upload(Some(&me), "/api/update", evil).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(error_of(r).await.contains("signature"));
    let p: Value = s.get(&me, "/api/update").await.json().await.unwrap();
    assert_eq!(p["stage"], "failed");
    assert!(p["received_bytes"].as_u64().unwrap() < 900_000);

    // Over the installer's limit: 413 from Content-Length, before anything is read.
    let mut big = b"GOOD".to_vec();
    big.resize(2 << 20, 1);
    let r = upload(Some(&me), "/api/update", big).await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    s.stop().await;
}
