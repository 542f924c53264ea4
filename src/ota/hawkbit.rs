//! Eclipse hawkBit DDI client: poll, download with resume, report.
//!
//! Only what a box needs of the DDI API: the controller's base resource (poll), the
//! deployment base, artifact download (HTTP Range to resume after link loss) and
//! deployment feedback.

use std::path::Path;

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
    /// The `download-http` (or `download`) link.
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

/// The box's side of the DDI API.
pub struct Client {
    cfg: HawkbitConfig,
}

impl Client {
    pub fn new(cfg: HawkbitConfig) -> Client {
        Client { cfg }
    }

    pub fn config(&self) -> &HawkbitConfig {
        &self.cfg
    }

    /// Polls the controller's base resource: the pending deployment, if any, and
    /// the polling interval the server asks for.
    pub async fn poll(&self) -> Result<(Option<Deployment>, std::time::Duration), HawkbitError> {
        Err(HawkbitError::Protocol("not built yet".into()))
    }

    /// Downloads `artifact` to `dest`, resuming from what `dest` already holds (HTTP
    /// Range), and checks its size and SHA-256. `progress` gets bytes held so far.
    pub async fn download(
        &self,
        artifact: &Artifact,
        dest: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), HawkbitError> {
        let _ = (artifact, dest, progress);
        Err(HawkbitError::Protocol("not built yet".into()))
    }

    /// Sends deployment feedback.
    pub async fn feedback(&self, deployment: &str, f: &Feedback) -> Result<(), HawkbitError> {
        let _ = (deployment, f);
        Err(HawkbitError::Protocol("not built yet".into()))
    }
}
