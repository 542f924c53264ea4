//! Eclipse hawkBit DDI client: poll, download with resume, report.
//!
//! Only what a box needs of the DDI API: the controller's base resource (poll), the
//! deployment base, artifact download (HTTP Range to resume after link loss) and
//! deployment feedback. The shapes follow hawkBit's DDI models (`DdiControllerBase`,
//! `DdiDeploymentBase`, `DdiArtifact`, `DdiActionFeedback`/`DdiStatus`); see
//! `docs/ota.md`, section "hawkBit", for what is and is not implemented.
//!
//! Every request has a deadline for connect + request + response headers
//! ([`Timeouts::request`]) and every body read a stall deadline ([`Timeouts::stall`]):
//! a cellular link that goes quiet surfaces as [`HawkbitError::Transport`] instead of
//! a hung task. The client decides nothing: the daemon owns the schedule, the choice
//! to install and what to report.

use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_RANGE, RANGE};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the box polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HawkbitConfig {
    /// e.g. `https://hawkbit.example.com` (no trailing slash).
    pub server: String,
    pub tenant: String,
    /// This box's controller id (default: the device id).
    pub controller_id: String,
    /// Target security token (`Authorization: TargetToken ...`), or None.
    pub token: Option<String>,
}

/// One artifact of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub filename: String,
    pub size: u64,
    /// SHA-256, lowercase hex, as hawkBit gives it.
    pub sha256: String,
    /// Where to fetch it: of hawkBit's `download` (HTTPS) and `download-http` (plain
    /// HTTP) links, the one whose scheme matches [`HawkbitConfig::server`], else the
    /// other one.
    pub url: String,
}

/// A deployment the server wants installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: String,
    /// `forced` / `attempt` / `skip` (hawkBit's `update` handling), as given.
    pub update: String,
    pub artifacts: Vec<Artifact>,
}

/// What the box tells the server about a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feedback {
    /// Working on it (downloading, installing); details for the server's log.
    Proceeding(String),
    /// Installed and confirmed.
    Success(String),
    Failure(String),
}

#[derive(Debug, thiserror::Error)]
pub enum HawkbitError {
    #[error("hawkbit: HTTP {status} from {url}")]
    Status { status: u16, url: String },
    #[error("hawkbit: {0}")]
    Protocol(String),
    #[error("hawkbit: transport: {0}")]
    Transport(String),
    #[error("hawkbit: I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Deadlines for each request; see [`Client::with_timeouts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP (+TLS) connect, sending the request and receiving the response headers,
    /// together. Default [`DEFAULT_TIMEOUT`].
    pub request: Duration,
    /// Longest wait for the next piece of a response body (JSON or artifact); a large
    /// download may take far longer in total, but never stalls longer than this.
    /// Default [`DEFAULT_TIMEOUT`].
    pub stall: Duration,
}

/// Default for both [`Timeouts`]: 30 s, long enough for a congested cellular link,
/// short enough that a dead one is noticed within one polling cycle.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request: DEFAULT_TIMEOUT,
            stall: DEFAULT_TIMEOUT,
        }
    }
}

/// Largest JSON document accepted from the server (base resource, deployment base).
/// A deployment base with a few dozen artifacts is a few tens of KiB.
const MAX_JSON_BYTES: usize = 1 << 20;

/// Read size when hashing the part of an artifact already on disk.
const HASH_READ_BYTES: usize = 64 * 1024;

/// The box's side of the DDI API.
///
/// Call order, as the daemon drives it: [`Client::poll`] every interval it returns;
/// when it returns a [`Deployment`], [`Client::feedback`] `Proceeding`,
/// [`Client::download`] each artifact (calling it again after a transport error
/// resumes), install, then `Success` or `Failure`.
pub struct Client {
    cfg: HawkbitConfig,
    timeouts: Timeouts,
    /// The HTTP client, or why it could not be built (reported on first use, so that
    /// `new` stays infallible).
    http: Result<reqwest::Client, String>,
}

impl Client {
    pub fn new(cfg: HawkbitConfig) -> Client {
        Client::with_timeouts(cfg, Timeouts::default())
    }

    /// Like [`Client::new`] with other deadlines (tests use short ones).
    pub fn with_timeouts(cfg: HawkbitConfig, timeouts: Timeouts) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.request)
            // The box talks to its server directly over its links; an HTTP(S)_PROXY
            // left in the service's environment must not reroute updates.
            .no_proxy()
            .user_agent(concat!("braid/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| describe(&e));
        Client {
            cfg,
            timeouts,
            http,
        }
    }

    pub fn config(&self) -> &HawkbitConfig {
        &self.cfg
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Polls the controller's base resource: the pending deployment, if any, and
    /// the polling interval the server asks for.
    ///
    /// `GET {server}/{tenant}/controller/v1/{controllerId}`; the interval is
    /// `config.polling.sleep` (`HH:MM:SS`). If `_links.deploymentBase.href` is present
    /// that resource is fetched too and returned as a [`Deployment`]. Other links
    /// (`configData`, `cancelAction`, `installedBase`, `confirmationBase`) are ignored.
    pub async fn poll(&self) -> Result<(Option<Deployment>, Duration), HawkbitError> {
        let url = self.controller_url()?;
        let base = self.get_json(&url).await?;
        let sleep = base
            .pointer("/config/polling/sleep")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                HawkbitError::Protocol(format!("base resource {url}: missing config.polling.sleep"))
            })?;
        let interval = parse_sleep(sleep).ok_or_else(|| {
            HawkbitError::Protocol(format!(
                "base resource {url}: config.polling.sleep {sleep:?} is not HH:MM:SS"
            ))
        })?;
        let Some(link) = base.pointer("/_links/deploymentBase") else {
            return Ok((None, interval));
        };
        let href = link.get("href").and_then(Value::as_str).ok_or_else(|| {
            HawkbitError::Protocol(format!(
                "base resource {url}: _links.deploymentBase has no href"
            ))
        })?;
        let dep_url = url.join(href).map_err(|e| {
            HawkbitError::Protocol(format!(
                "base resource {url}: deploymentBase href {href:?}: {e}"
            ))
        })?;
        let doc = self.get_json(&dep_url).await?;
        let deployment = parse_deployment(&doc, self.server_scheme())
            .map_err(|what| HawkbitError::Protocol(format!("deployment base {dep_url}: {what}")))?;
        Ok((Some(deployment), interval))
    }

    /// Downloads `artifact` to `dest`, resuming from what `dest` already holds (HTTP
    /// Range), and checks its size and SHA-256. `progress` gets bytes held so far.
    ///
    /// - `dest` holds N bytes (0 < N < size): `Range: bytes=N-`; a 206 whose
    ///   `Content-Range` starts at N is appended, a 200 (range ignored) starts over.
    /// - A transport error or stall leaves what arrived in `dest` (synced to disk) for
    ///   the next call to resume.
    /// - A wrong SHA-256, more bytes than `size`, a 206 that starts elsewhere than N,
    ///   or a 416 deletes `dest`, so the next call starts from zero.
    /// - `dest` already complete: no request, only the hash check.
    pub async fn download(
        &self,
        artifact: &Artifact,
        dest: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), HawkbitError> {
        let url = Url::parse(&artifact.url).map_err(|e| {
            HawkbitError::Protocol(format!(
                "artifact {}: download URL {:?}: {e}",
                artifact.filename, artifact.url
            ))
        })?;
        let mut held = match tokio::fs::metadata(dest).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        if held > artifact.size {
            // Not a prefix of this artifact: start over.
            tokio::fs::remove_file(dest).await?;
            held = 0;
        }
        if held == artifact.size && held > 0 {
            progress(held);
            let mut file = tokio::fs::File::open(dest).await?;
            let mut hasher = Sha256::new();
            hash_prefix(&mut file, held, &mut hasher).await?;
            return finish_hash(artifact, dest, hasher).await;
        }

        let mut req = self.http()?.get(url.clone());
        if held > 0 {
            req = req.header(RANGE, format!("bytes={held}-"));
        }
        let req = self.authorize(req, &url);
        let mut resp = match self.send(req, &url).await {
            Err(HawkbitError::Status { status: 416, url }) => {
                // The server says our offset is past its end: what we hold is not a
                // prefix of what it serves. Drop it so the next call starts clean.
                tokio::fs::remove_file(dest).await?;
                return Err(HawkbitError::Status { status: 416, url });
            }
            other => other?,
        };

        let mut hasher = Sha256::new();
        let mut file = match resp.status() {
            StatusCode::PARTIAL_CONTENT if held > 0 => {
                let start = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(content_range_start);
                if start != Some(held) {
                    // Asking again would get the same answer: start over next time.
                    tokio::fs::remove_file(dest).await?;
                    return Err(HawkbitError::Protocol(format!(
                        "{url}: asked for bytes {held}-, got Content-Range {:?}",
                        resp.headers().get(CONTENT_RANGE)
                    )));
                }
                let mut file = tokio::fs::OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(dest)
                    .await?;
                hash_prefix(&mut file, held, &mut hasher).await?;
                file
            }
            StatusCode::OK => {
                held = 0;
                tokio::fs::File::create(dest).await?
            }
            other => {
                return Err(HawkbitError::Protocol(format!(
                    "{url}: unexpected HTTP {} for an artifact download",
                    other.as_u16()
                )))
            }
        };
        progress(held);

        loop {
            let chunk = match self.next_chunk(&mut resp, &url).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    // Keep what arrived for the next call; make it durable first.
                    file.flush().await?;
                    file.sync_all().await?;
                    return Err(e);
                }
            };
            if held + chunk.len() as u64 > artifact.size {
                drop(file);
                tokio::fs::remove_file(dest).await?;
                return Err(HawkbitError::Protocol(format!(
                    "{url}: more than the {} bytes the deployment announced",
                    artifact.size
                )));
            }
            file.write_all(&chunk).await?;
            hasher.update(&chunk);
            held += chunk.len() as u64;
            progress(held);
        }
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        if held < artifact.size {
            return Err(HawkbitError::Transport(format!(
                "{url}: response ended after {held} of {} bytes",
                artifact.size
            )));
        }
        finish_hash(artifact, dest, hasher).await
    }

    /// Sends deployment feedback.
    ///
    /// `POST .../deploymentBase/{actionId}/feedback` with
    /// `{"id": actionId, "status": {"execution": ..., "result": {"finished": ...},
    /// "details": [text]}}`: see [`feedback_body`].
    pub async fn feedback(&self, deployment: &str, f: &Feedback) -> Result<(), HawkbitError> {
        let mut url = self.controller_url()?;
        url.path_segments_mut()
            .map_err(|_| HawkbitError::Protocol("server URL cannot take a path".into()))?
            .extend(["deploymentBase", deployment, "feedback"]);
        let req = self
            .http()?
            .post(url.clone())
            .json(&feedback_body(deployment, f));
        let req = self.authorize(req, &url);
        let mut resp = self.send(req, &url).await?;
        // Drain the (normally empty) body so the connection can be reused.
        while self.next_chunk(&mut resp, &url).await?.is_some() {}
        Ok(())
    }

    fn http(&self) -> Result<&reqwest::Client, HawkbitError> {
        self.http
            .as_ref()
            .map_err(|e| HawkbitError::Transport(format!("HTTP client: {e}")))
    }

    /// `{server}/{tenant}/controller/v1/{controllerId}`, each part percent-encoded.
    fn controller_url(&self) -> Result<Url, HawkbitError> {
        let mut url = Url::parse(&self.cfg.server).map_err(|e| {
            HawkbitError::Protocol(format!("server URL {:?}: {e}", self.cfg.server))
        })?;
        url.path_segments_mut()
            .map_err(|_| {
                HawkbitError::Protocol(format!(
                    "server URL {:?} cannot take a path",
                    self.cfg.server
                ))
            })?
            .pop_if_empty()
            .extend([
                self.cfg.tenant.as_str(),
                "controller",
                "v1",
                self.cfg.controller_id.as_str(),
            ]);
        Ok(url)
    }

    fn server_scheme(&self) -> &str {
        self.cfg.server.split(':').next().unwrap_or("")
    }

    /// Adds `Authorization: TargetToken ...` when a token is configured and `url` is
    /// on the server's own origin: artifact links may point at a CDN, which must not
    /// see the token.
    fn authorize(&self, req: reqwest::RequestBuilder, url: &Url) -> reqwest::RequestBuilder {
        let Some(token) = &self.cfg.token else {
            return req;
        };
        let same_origin = Url::parse(&self.cfg.server)
            .map(|server| server.origin() == url.origin())
            .unwrap_or(false);
        if !same_origin {
            return req;
        }
        match HeaderValue::from_str(&format!("TargetToken {token}")) {
            Ok(mut v) => {
                v.set_sensitive(true);
                req.header(AUTHORIZATION, v)
            }
            // A token with control characters cannot be sent; the server's 401 says so.
            Err(_) => req,
        }
    }

    /// Sends `req` within [`Timeouts::request`]; a non-2xx status is an error.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<reqwest::Response, HawkbitError> {
        let resp = tokio::time::timeout(self.timeouts.request, req.send())
            .await
            .map_err(|_| {
                HawkbitError::Transport(format!(
                    "{url}: no response within {:?}",
                    self.timeouts.request
                ))
            })?
            .map_err(|e| HawkbitError::Transport(format!("{url}: {}", describe(&e))))?;
        if !resp.status().is_success() {
            return Err(HawkbitError::Status {
                status: resp.status().as_u16(),
                url: url.to_string(),
            });
        }
        Ok(resp)
    }

    /// The next piece of `resp`'s body within [`Timeouts::stall`].
    async fn next_chunk(
        &self,
        resp: &mut reqwest::Response,
        url: &Url,
    ) -> Result<Option<bytes::Bytes>, HawkbitError> {
        tokio::time::timeout(self.timeouts.stall, resp.chunk())
            .await
            .map_err(|_| {
                HawkbitError::Transport(format!(
                    "{url}: body stalled for {:?}",
                    self.timeouts.stall
                ))
            })?
            .map_err(|e| HawkbitError::Transport(format!("{url}: {}", describe(&e))))
    }

    async fn get_json(&self, url: &Url) -> Result<Value, HawkbitError> {
        let req = self.http()?.get(url.clone()).header(
            reqwest::header::ACCEPT,
            "application/hal+json, application/json",
        );
        let req = self.authorize(req, url);
        let mut resp = self.send(req, url).await?;
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk(&mut resp, url).await? {
            if body.len() + chunk.len() > MAX_JSON_BYTES {
                return Err(HawkbitError::Protocol(format!(
                    "{url}: response larger than {MAX_JSON_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|e| HawkbitError::Protocol(format!("{url}: malformed JSON: {e}")))
    }
}

/// The feedback document for action `action_id`, as hawkBit's `DdiActionFeedback`:
///
/// | [`Feedback`] | `status.execution` | `status.result.finished` |
/// |---|---|---|
/// | `Proceeding` | `proceeding` | `none` |
/// | `Success` | `closed` | `success` |
/// | `Failure` | `closed` | `failure` |
///
/// `status.details` is the text as a one-element array. `id` is the action id, as a
/// number when it is one (older servers read it as a long; newer ones ignore it).
/// No `time` (optional in DDI; the server stamps its own).
pub fn feedback_body(action_id: &str, f: &Feedback) -> Value {
    let (execution, finished, details) = match f {
        Feedback::Proceeding(d) => ("proceeding", "none", d),
        Feedback::Success(d) => ("closed", "success", d),
        Feedback::Failure(d) => ("closed", "failure", d),
    };
    let id = match action_id.parse::<u64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(action_id),
    };
    serde_json::json!({
        "id": id,
        "status": {
            "execution": execution,
            "result": { "finished": finished },
            "details": [details],
        }
    })
}

/// Parses DDI's `config.polling.sleep`, `HH:MM:SS` (hours may exceed 23).
pub fn parse_sleep(s: &str) -> Option<Duration> {
    let mut parts = s.split(':');
    let mut field = || -> Option<u64> {
        let p = parts.next()?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let (h, m, sec) = (field()?, field()?, field()?);
    if parts.next().is_some() || m >= 60 || sec >= 60 {
        return None;
    }
    Some(Duration::from_secs(
        h.checked_mul(3600)?.checked_add(m * 60 + sec)?,
    ))
}

/// A deployment base document -> [`Deployment`]; the error names what is missing.
fn parse_deployment(doc: &Value, server_scheme: &str) -> Result<Deployment, String> {
    let id = match doc.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("missing id".into()),
    };
    let update = doc
        .pointer("/deployment/update")
        .and_then(Value::as_str)
        .ok_or("missing deployment.update")?
        .to_string();
    let chunks = doc
        .pointer("/deployment/chunks")
        .and_then(Value::as_array)
        .ok_or("missing deployment.chunks")?;
    let mut artifacts = Vec::new();
    for (c, chunk) in chunks.iter().enumerate() {
        let list = chunk
            .get("artifacts")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("missing deployment.chunks[{c}].artifacts"))?;
        for (a, art) in list.iter().enumerate() {
            let at = |what: &str| format!("deployment.chunks[{c}].artifacts[{a}]: {what}");
            let filename = art
                .get("filename")
                .and_then(Value::as_str)
                .ok_or_else(|| at("missing filename"))?
                .to_string();
            let size = art
                .get("size")
                .and_then(Value::as_u64)
                .ok_or_else(|| at("missing size"))?;
            let sha256 = art
                .pointer("/hashes/sha256")
                .and_then(Value::as_str)
                .ok_or_else(|| at("missing hashes.sha256"))?
                .to_ascii_lowercase();
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(at("hashes.sha256 is not 64 hex digits"));
            }
            let https = art.pointer("/_links/download/href").and_then(Value::as_str);
            let http = art
                .pointer("/_links/download-http/href")
                .and_then(Value::as_str);
            let url = if server_scheme.eq_ignore_ascii_case("https") {
                https.or(http)
            } else {
                http.or(https)
            }
            .ok_or_else(|| at("missing _links.download-http.href and _links.download.href"))?
            .to_string();
            artifacts.push(Artifact {
                filename,
                size,
                sha256,
                url,
            });
        }
    }
    Ok(Deployment {
        id,
        update,
        artifacts,
    })
}

/// The start offset of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range_start(v: &HeaderValue) -> Option<u64> {
    let rest = v.to_str().ok()?.trim().strip_prefix("bytes ")?;
    let (start, _) = rest.split_once('-')?;
    start.trim().parse().ok()
}

/// Feeds the first `len` bytes of `file` (positioned at its start) to `hasher`.
async fn hash_prefix(
    file: &mut tokio::fs::File,
    len: u64,
    hasher: &mut Sha256,
) -> Result<(), HawkbitError> {
    let mut buf = vec![0u8; HASH_READ_BYTES];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(HawkbitError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "partial download shrank while resuming",
            )));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// Compares the digest with the artifact's; on mismatch deletes `dest`.
async fn finish_hash(artifact: &Artifact, dest: &Path, hasher: Sha256) -> Result<(), HawkbitError> {
    let got = hex::encode(hasher.finalize());
    if got != artifact.sha256.to_ascii_lowercase() {
        tokio::fs::remove_file(dest).await?;
        return Err(HawkbitError::Protocol(format!(
            "artifact {}: SHA-256 {got}, expected {} (file removed)",
            artifact.filename, artifact.sha256
        )));
    }
    Ok(())
}

/// An error and its sources, `a: b: c` (reqwest's own message alone is terse).
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
