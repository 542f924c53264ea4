//! edge.toml as the web page's settings form.

/// What a change of a key takes to reach the running box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// Applied to the running stream at once.
    Live,
    /// Needs a stream restart (about a second; the page offers it).
    Stream,
    /// Needs braid itself restarted (`[web]`, `[device]`).
    Service,
}
