//! The hawkBit DDI client (src/ota/hawkbit.rs) against a small fake DDI server on
//! 127.0.0.1: polling, resumable downloads over a link that drops, feedback shapes,
//! target-token auth and malformed replies.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use braid::ota::hawkbit::{
    parse_sleep, Artifact, Client, Feedback, HawkbitConfig, HawkbitError, Timeouts,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const TENANT: &str = "DEFAULT";
const CONTROLLER: &str = "braid-0001";
const ACTION: &str = "42";

/// How the fake server behaves; set before `start`.
#[derive(Default, Clone)]
struct Setup {
    /// Required `Authorization: TargetToken <this>`; None accepts anything.
    token: Option<String>,
    /// The base resource links a deployment.
    deployment: bool,
    /// The base resource is broken JSON.
    malformed: bool,
    /// The base resource answers after this long.
    delay: Option<Duration>,
    /// Answer range requests with the whole artifact (200).
    ignore_range: bool,
    /// The deployment base lists the artifact without `hashes.sha256`.
    no_sha256: bool,
    /// At a cut, go silent (keep the connection open) instead of dropping it.
    stall_at_cut: bool,
    /// Artifact links point at this other server (a "CDN") instead of this one.
    artifact_server: Option<String>,
}

/// A fake hawkBit DDI server: one controller, one action, one artifact.
struct Fake {
    setup: Setup,
    artifact: Vec<u8>,
    /// For each successive artifact request: close the connection after this many
    /// body bytes (then the queue moves on; empty = serve in full).
    cuts: Mutex<VecDeque<usize>>,
    /// The Range header of each artifact request, in order.
    ranges: Mutex<Vec<Option<String>>>,
    /// The Authorization header of each artifact request, in order.
    artifact_auth: Mutex<Vec<Option<String>>>,
    /// Feedback bodies received, with the action id from the path.
    feedback: Mutex<Vec<(String, Value)>>,
    addr: Mutex<Option<SocketAddr>>,
}

impl Fake {
    fn base_url(&self) -> String {
        format!("http://{}", self.addr.lock().unwrap().unwrap())
    }

    fn controller_path(&self) -> String {
        format!("{}/{TENANT}/controller/v1/{CONTROLLER}", self.base_url())
    }

    fn artifact_url(&self) -> String {
        let server = match &self.setup.artifact_server {
            Some(other) => format!("{other}/{TENANT}/controller/v1/{CONTROLLER}"),
            None => self.controller_path(),
        };
        format!("{server}/softwaremodules/7/artifacts/braid.bundle")
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.setup.token else {
            return true;
        };
        let want = format!("TargetToken {token}");
        headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == want.as_bytes())
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic, non-repeating-looking artifact bytes.
fn artifact_bytes(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

async fn base(State(f): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    if !f.authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if let Some(d) = f.setup.delay {
        tokio::time::sleep(d).await;
    }
    if f.setup.malformed {
        return (
            [(header::CONTENT_TYPE, "application/hal+json")],
            "{\"config\": {\"polling\":",
        )
            .into_response();
    }
    let mut doc = json!({ "config": { "polling": { "sleep": "00:05:30" } } });
    if f.setup.deployment {
        doc["_links"] = json!({
            "deploymentBase": {
                "href": format!("{}/deploymentBase/{ACTION}?c=-2129030598", f.controller_path())
            },
            "configData": { "href": format!("{}/configData", f.controller_path()) }
        });
    }
    axum::Json(doc).into_response()
}

async fn deployment_base(
    State(f): State<Arc<Fake>>,
    UrlPath((_t, _c, action)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if !f.authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if action != ACTION {
        return StatusCode::NOT_FOUND.into_response();
    }
    let url = f.artifact_url();
    let https_url = url.replacen("http://", "https://", 1);
    let mut doc = json!({
        "id": ACTION,
        "deployment": {
            "download": "forced",
            "update": "attempt",
            "chunks": [{
                "part": "os",
                "version": "0.2.0",
                "name": "braid",
                "artifacts": [{
                    "filename": "braid.bundle",
                    "hashes": {
                        "sha1": "0000000000000000000000000000000000000000",
                        "md5": "00000000000000000000000000000000",
                        "sha256": sha256_hex(&f.artifact).to_uppercase()
                    },
                    "size": f.artifact.len(),
                    "_links": {
                        "download": { "href": https_url },
                        "download-http": { "href": url },
                        "md5sum-http": { "href": format!("{url}.MD5SUM") }
                    }
                }]
            }]
        },
        "actionHistory": { "status": "RUNNING", "messages": [] }
    });
    if f.setup.no_sha256 {
        doc["deployment"]["chunks"][0]["artifacts"][0]["hashes"]
            .as_object_mut()
            .unwrap()
            .remove("sha256");
    }
    axum::Json(doc).into_response()
}

async fn feedback(
    State(f): State<Arc<Fake>>,
    UrlPath((_t, _c, action)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !f.authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    f.feedback.lock().unwrap().push((action, v));
    StatusCode::OK.into_response()
}

/// Serves the artifact with `Range: bytes=N-` support; may cut the connection.
async fn serve_artifact(State(f): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    f.artifact_auth.lock().unwrap().push(
        headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_string()),
    );
    if !f.authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let range = headers
        .get(header::RANGE)
        .map(|v| v.to_str().unwrap().to_string());
    f.ranges.lock().unwrap().push(range.clone());
    let total = f.artifact.len();
    let start = match range.as_deref().filter(|_| !f.setup.ignore_range) {
        None => None,
        Some(r) => {
            let n: usize = r
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse().ok())
                .expect("the client sends bytes=N-");
            if n >= total {
                return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            }
            Some(n)
        }
    };
    let from = start.unwrap_or(0);
    let body = Bytes::copy_from_slice(&f.artifact[from..]);
    let len = body.len();
    let cut = f.cuts.lock().unwrap().pop_front();
    let body = match cut {
        None => Body::from(body),
        Some(k) => {
            // Send K bytes, let them reach the client, then drop the connection
            // mid-body (hyper closes it when the body stream fails).
            let first = body.slice(..k);
            let stall = f.setup.stall_at_cut;
            let parts = futures_util::stream::unfold(Some(first), move |state| async move {
                match state {
                    Some(first) => Some((Ok::<Bytes, std::io::Error>(first), None)),
                    None if stall => {
                        // A link that goes quiet without closing.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        None
                    }
                    None => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((Err(std::io::Error::other("link lost")), None))
                    }
                }
            });
            Body::from_stream(parts)
        }
    };
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, len.to_string().parse().unwrap());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().unwrap(),
    );
    if let Some(n) = start {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        resp.headers_mut().insert(
            header::CONTENT_RANGE,
            format!("bytes {n}-{}/{total}", total - 1).parse().unwrap(),
        );
    }
    resp
}

async fn start(setup: Setup, artifact: Vec<u8>, cuts: &[usize]) -> Arc<Fake> {
    let fake = Arc::new(Fake {
        setup,
        artifact,
        cuts: Mutex::new(cuts.iter().copied().collect()),
        ranges: Mutex::new(Vec::new()),
        artifact_auth: Mutex::new(Vec::new()),
        feedback: Mutex::new(Vec::new()),
        addr: Mutex::new(None),
    });
    let app = Router::new()
        .route("/{tenant}/controller/v1/{id}", get(base))
        .route(
            "/{tenant}/controller/v1/{id}/deploymentBase/{action}",
            get(deployment_base),
        )
        .route(
            "/{tenant}/controller/v1/{id}/deploymentBase/{action}/feedback",
            post(feedback),
        )
        .route(
            "/{tenant}/controller/v1/{id}/softwaremodules/7/artifacts/braid.bundle",
            get(serve_artifact),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    *fake.addr.lock().unwrap() = Some(listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    fake
}

fn client(fake: &Fake, token: Option<&str>) -> Client {
    Client::with_timeouts(
        HawkbitConfig {
            server: fake.base_url(),
            tenant: TENANT.into(),
            controller_id: CONTROLLER.into(),
            token: token.map(str::to_string),
        },
        Timeouts {
            request: Duration::from_secs(5),
            stall: Duration::from_secs(5),
        },
    )
}

/// A fresh scratch directory per test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "braid-ota-hawkbit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn pending_artifact(c: &Client) -> Artifact {
    let (dep, _) = c.poll().await.expect("poll");
    let dep = dep.expect("a deployment");
    assert_eq!(dep.artifacts.len(), 1);
    dep.artifacts[0].clone()
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test]
async fn poll_with_nothing_pending_parses_the_interval() {
    let fake = start(Setup::default(), Vec::new(), &[]).await;
    let (dep, interval) = client(&fake, None).poll().await.unwrap();
    assert_eq!(dep, None);
    assert_eq!(interval, Duration::from_secs(5 * 60 + 30));
}

#[tokio::test]
async fn poll_with_a_deployment_parses_its_artifacts() {
    let data = artifact_bytes(1000);
    let setup = Setup {
        deployment: true,
        ..Setup::default()
    };
    let fake = start(setup, data.clone(), &[]).await;
    let (dep, interval) = client(&fake, None).poll().await.unwrap();
    let dep = dep.expect("a deployment");
    assert_eq!(interval, Duration::from_secs(330));
    assert_eq!(dep.id, ACTION);
    assert_eq!(dep.update, "attempt");
    assert_eq!(
        dep.artifacts,
        vec![Artifact {
            filename: "braid.bundle".into(),
            size: 1000,
            // hawkBit may send upper case; the client keeps lower case.
            sha256: sha256_hex(&data),
            // The server is plain http, so the download-http link.
            url: fake.artifact_url(),
        }]
    );
}

#[tokio::test]
async fn download_whole_artifact() {
    let data = artifact_bytes(300_000);
    let setup = Setup {
        deployment: true,
        ..Setup::default()
    };
    let fake = start(setup, data.clone(), &[]).await;
    let c = client(&fake, None);
    let art = pending_artifact(&c).await;
    let dir = Scratch::new();
    let dest = dir.file("a.bundle");
    let mut seen = Vec::new();
    c.download(&art, &dest, &mut |n| seen.push(n))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(*fake.ranges.lock().unwrap(), vec![None]);
    assert_eq!(seen.first(), Some(&0));
    assert_eq!(seen.last(), Some(&300_000));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
}

#[tokio::test]
async fn download_cut_twice_then_resumed_to_completion() {
    let data = artifact_bytes(250_000);
    let setup = Setup {
        deployment: true,
        ..Setup::default()
    };
    let fake = start(setup, data.clone(), &[70_000, 50_000]).await;
    let c = client(&fake, None);
    let art = pending_artifact(&c).await;
    let dir = Scratch::new();
    let dest = dir.file("a.bundle");
    let mut last = 0;

    let e = c
        .download(&art, &dest, &mut |n| last = n)
        .await
        .unwrap_err();
    assert!(matches!(e, HawkbitError::Transport(_)), "{e:?}");
    assert_eq!(file_len(&dest), 70_000, "the partial file stays");
    assert_eq!(last, 70_000);

    let e = c
        .download(&art, &dest, &mut |n| last = n)
        .await
        .unwrap_err();
    assert!(matches!(e, HawkbitError::Transport(_)), "{e:?}");
    assert_eq!(file_len(&dest), 120_000);

    c.download(&art, &dest, &mut |n| last = n).await.unwrap();
    assert_eq!(last, 250_000);
    let got = std::fs::read(&dest).unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    assert_eq!(
        *fake.ranges.lock().unwrap(),
        vec![
            None,
            Some("bytes=70000-".to_string()),
            Some("bytes=120000-".to_string())
        ]
    );

    // Already complete: a further call checks the file and asks nothing.
    c.download(&art, &dest, &mut |_| {}).await.unwrap();
    assert_eq!(fake.ranges.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_body_that_stalls_times_out_and_the_download_resumes() {
    let data = artifact_bytes(80_000);
    let setup = Setup {
        deployment: true,
        stall_at_cut: true,
        ..Setup::default()
    };
    let fake = start(setup, data.clone(), &[30_000]).await;
    let c = Client::with_timeouts(
        client(&fake, None).config().clone(),
        Timeouts {
            request: Duration::from_secs(5),
            stall: Duration::from_millis(300),
        },
    );
    let art = pending_artifact(&c).await;
    let dir = Scratch::new();
    let dest = dir.file("a.bundle");
    let e = tokio::time::timeout(Duration::from_secs(5), c.download(&art, &dest, &mut |_| {}))
        .await
        .expect("the stall deadline ends the download")
        .unwrap_err();
    match e {
        HawkbitError::Transport(m) => assert!(m.contains("stalled"), "{m}"),
        other => panic!("expected a Transport error, got {other:?}"),
    }
    assert_eq!(file_len(&dest), 30_000);
    c.download(&art, &dest, &mut |_| {}).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(
        fake.ranges
            .lock()
            .unwrap()
            .last()
            .cloned()
            .flatten()
            .as_deref(),
        Some("bytes=30000-")
    );
}

#[tokio::test]
async fn the_target_token_does_not_go_to_another_origin() {
    let data = artifact_bytes(4_000);
    // The "CDN": another port, so another origin; it accepts anyone.
    let cdn = start(Setup::default(), data.clone(), &[]).await;
    let setup = Setup {
        token: Some("s3cret".into()),
        deployment: true,
        artifact_server: Some(cdn.base_url()),
        ..Setup::default()
    };
    let hawkbit = start(setup, data.clone(), &[]).await;
    let c = client(&hawkbit, Some("s3cret"));
    let art = pending_artifact(&c).await;
    assert!(art.url.starts_with(&cdn.base_url()), "{}", art.url);
    let dir = Scratch::new();
    let dest = dir.file("a.bundle");
    c.download(&art, &dest, &mut |_| {}).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(*cdn.artifact_auth.lock().unwrap(), vec![None]);
}

#[tokio::test]
async fn server_ignoring_range_restarts_cleanly() {
    let data = artifact_bytes(100_000);
    let setup = Setup {
        deployment: true,
        ignore_range: true,
        ..Setup::default()
    };
    let fake = start(setup, data.clone(), &[]).await;
    let c = client(&fake, None);
    let art = pending_artifact(&c).await;
    let dir = Scratch::new();
    let dest = dir.file("a.bundle");
    // A partial file that is not even a prefix: appending to it would fail the hash.
    std::fs::write(&dest, vec![0xAA; 30_000]).unwrap();
    c.download(&art, &dest, &mut |_| {}).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(
        *fake.ranges.lock().unwrap(),
        vec![Some("bytes=30000-".to_string())]
    );
}

#[tokio::test]
async fn wrong_hash_is_an_error_and_removes_the_file() {
    let data = artifact_bytes(20_000);
    let setup = Setup {
        deployment: true,
        ..Setup::default()
    };
    let fake = start(setup, data, &[]).await;
    let c = client(&fake, None);
    let mut art = pending_artifact(&c).await;
    art.sha256 = sha256_hex(b"something else");
    let dir = Scratch::new();
    let dest = dir.file("a.bundle");
    let e = c.download(&art, &dest, &mut |_| {}).await.unwrap_err();
    match e {
        HawkbitError::Protocol(m) => assert!(m.contains("SHA-256"), "{m}"),
        other => panic!("expected a Protocol error, got {other:?}"),
    }
    assert!(!dest.exists(), "a file with the wrong hash must not stay");
}

#[tokio::test]
async fn feedback_bodies_have_the_ddi_shape() {
    let fake = start(Setup::default(), Vec::new(), &[]).await;
    let c = client(&fake, None);
    c.feedback(ACTION, &Feedback::Proceeding("downloading".into()))
        .await
        .unwrap();
    c.feedback(ACTION, &Feedback::Success("installed 0.2.0".into()))
        .await
        .unwrap();
    c.feedback(ACTION, &Feedback::Failure("health check failed".into()))
        .await
        .unwrap();
    let got = fake.feedback.lock().unwrap().clone();
    let expect = |execution: &str, finished: &str, detail: &str| {
        (
            ACTION.to_string(),
            json!({
                "id": 42,
                "status": {
                    "execution": execution,
                    "result": { "finished": finished },
                    "details": [detail]
                }
            }),
        )
    };
    assert_eq!(
        got,
        vec![
            expect("proceeding", "none", "downloading"),
            expect("closed", "success", "installed 0.2.0"),
            expect("closed", "failure", "health check failed"),
        ]
    );
}

#[tokio::test]
async fn target_token_is_sent_and_a_wrong_or_missing_one_is_status_401() {
    let data = artifact_bytes(5_000);
    let setup = Setup {
        token: Some("s3cret".into()),
        deployment: true,
        ..Setup::default()
    };
    let fake = start(setup, data.clone(), &[]).await;
    for token in [None, Some("wrong")] {
        match client(&fake, token).poll().await {
            Err(HawkbitError::Status { status: 401, url }) => {
                assert!(url.ends_with("/DEFAULT/controller/v1/braid-0001"), "{url}")
            }
            other => panic!("token {token:?}: expected Status 401, got {other:?}"),
        }
    }
    let c = client(&fake, Some("s3cret"));
    let art = pending_artifact(&c).await;
    let dir = Scratch::new();
    let dest = dir.file("a.bundle");
    c.download(&art, &dest, &mut |_| {}).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    c.feedback(ACTION, &Feedback::Proceeding("ok".into()))
        .await
        .unwrap();
    let e = client(&fake, Some("wrong"))
        .feedback(ACTION, &Feedback::Proceeding("ok".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(e, HawkbitError::Status { status: 401, .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn malformed_json_is_a_protocol_error() {
    let setup = Setup {
        malformed: true,
        ..Setup::default()
    };
    let fake = start(setup, Vec::new(), &[]).await;
    match client(&fake, None).poll().await {
        Err(HawkbitError::Protocol(m)) => assert!(m.contains("malformed JSON"), "{m}"),
        other => panic!("expected a Protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_field_is_a_protocol_error_naming_it() {
    let setup = Setup {
        deployment: true,
        no_sha256: true,
        ..Setup::default()
    };
    let fake = start(setup, artifact_bytes(10), &[]).await;
    match client(&fake, None).poll().await {
        Err(HawkbitError::Protocol(m)) => assert!(
            m.contains("deployment.chunks[0].artifacts[0]: missing hashes.sha256"),
            "{m}"
        ),
        other => panic!("expected a Protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_does_not_answer_times_out() {
    let setup = Setup {
        delay: Some(Duration::from_secs(30)),
        ..Setup::default()
    };
    let fake = start(setup, Vec::new(), &[]).await;
    let c = Client::with_timeouts(
        client(&fake, None).config().clone(),
        Timeouts {
            request: Duration::from_millis(300),
            stall: Duration::from_millis(300),
        },
    );
    let e = tokio::time::timeout(Duration::from_secs(5), c.poll())
        .await
        .expect("poll gives up on its own")
        .unwrap_err();
    assert!(matches!(e, HawkbitError::Transport(_)), "{e:?}");
}

#[test]
fn polling_sleep_parses_hh_mm_ss_only() {
    assert_eq!(parse_sleep("00:05:00"), Some(Duration::from_secs(300)));
    assert_eq!(parse_sleep("12:00:01"), Some(Duration::from_secs(43_201)));
    assert_eq!(parse_sleep("48:00:00"), Some(Duration::from_secs(172_800)));
    for bad in [
        "",
        "5",
        "00:05",
        "00:60:00",
        "00:00:60",
        "a:b:c",
        "-1:00:00",
        "00:05:00:00",
        " 00:05:00",
    ] {
        assert_eq!(parse_sleep(bad), None, "{bad:?}");
    }
}
