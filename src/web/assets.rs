//! The page's static files, compiled into the binary.
//!
//! `build.rs` reads `web/` (index.html, the modules, the stylesheet and uPlot from
//! `web/node_modules`), names every file but the page by its content hash
//! (`/assets/app.3f2a9c1b.js`, so it can be cached for good), rewrites the references
//! to those names and gzip-compresses each file. Without uPlot installed the build
//! embeds a stand-in and the page shows no charts (`make web-deps` installs it).

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

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The asset served at `path` (`/` is the page itself), if any.
pub fn get(path: &str) -> Option<Asset> {
    let path = if path == "/index.html" { "/" } else { path };
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn page() -> String {
        String::from_utf8(get("/").expect("index").plain.to_vec()).expect("utf-8")
    }

    /// Every `/assets/...` path the page refers to.
    fn referenced(text: &str) -> Vec<String> {
        text.split('"')
            .filter(|s| s.starts_with("/assets/"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn index_is_the_page_and_not_cached_for_good() {
        let a = get("/").expect("index");
        assert!(a.content_type.starts_with("text/html"));
        assert!(!a.immutable);
        assert!(page().contains("<main"));
        assert_eq!(get("/index.html").expect("alias").etag, a.etag);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"') && a.etag.len() == 66);
    }

    #[test]
    fn hashed_names_in_the_page_resolve() {
        let refs = referenced(&page());
        for (stem, ext) in [
            ("app", "js"),
            ("app", "css"),
            ("dash", "js"),
            ("charts", "js"),
        ] {
            assert!(
                refs.iter()
                    .any(|r| r.starts_with(&format!("/assets/{stem}."))
                        && r.ends_with(&format!(".{ext}"))),
                "{stem}.{ext} not referenced from index.html: {refs:?}"
            );
        }
        for r in &refs {
            let a = get(r).unwrap_or_else(|| panic!("{r} referenced but not embedded"));
            assert!(a.immutable, "{r}");
            // name.<8 hex>.ext
            let file = r.trim_start_matches("/assets/");
            let parts: Vec<&str> = file.split('.').collect();
            assert_eq!(parts.len(), 3, "{file}");
            assert!(parts[1].len() == 8 && parts[1].chars().all(|c| c.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn module_references_point_at_embedded_files() {
        let mut uplot = Vec::new();
        for (path, a) in ASSETS.iter().filter(|(p, _)| p.ends_with(".js")) {
            let text = String::from_utf8_lossy(a.plain);
            for name in text
                .split('\'')
                .filter(|s| s.starts_with("./") && (s.ends_with(".js") || s.ends_with(".css")))
            {
                let target = format!("/assets/{}", &name[2..]);
                assert!(
                    get(&target).is_some(),
                    "{path} refers to {name}, not embedded"
                );
                if name.starts_with("./uplot.") {
                    uplot.push(target);
                }
            }
        }
        // charts.js loads uPlot (or its stand-in) on demand, by its hashed names
        assert_eq!(uplot.len(), 2, "{uplot:?}");
    }

    #[test]
    fn gzip_decompresses_to_plain() {
        for (path, a) in ASSETS {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(a.gzip)
                .read_to_end(&mut out)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(out, a.plain, "{path}");
        }
    }

    #[test]
    fn unknown_paths_are_none() {
        assert!(get("/nope").is_none());
        assert!(get("/assets/app.js").is_none());
        assert!(get("/assets/").is_none());
        assert!(get("").is_none());
        assert!(get("/api/stats").is_none());
    }

    #[test]
    fn no_external_urls() {
        for (path, a) in ASSETS.iter().filter(|(p, _)| !p.contains("uplot")) {
            let text = String::from_utf8_lossy(a.plain);
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{path} names an external URL"
            );
        }
    }
}
