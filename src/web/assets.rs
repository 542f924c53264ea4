//! The page's static files, compiled into the binary.

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The file, gzip-compressed (served with `Content-Encoding: gzip`; the few
    /// clients that do not accept gzip get [`Asset::plain`]).
    pub gzip: &'static [u8],
    /// The file as it is.
    pub plain: &'static [u8],
    pub content_type: &'static str,
    /// Strong ETag (quoted hex of the content's hash).
    pub etag: &'static str,
    /// Whether the path carries a content hash, so it can be cached for a year
    /// (`immutable`); otherwise `no-cache` with the ETag.
    pub immutable: bool,
}

/// The asset served at `path` (`/` is the page itself), if any.
pub fn get(path: &str) -> Option<Asset> {
    let _ = path;
    None
}
