//! Embeds the local web page (web/) into the binary: see src/web/assets.rs.
//!
//! Reads web/index.html, web/*.js, web/*.css and uPlot from web/node_modules (as
//! `uplot.js` / `uplot.css`), gives every file but index.html a content-hashed name
//! (`/assets/app.3f2a9c1b.js`), rewrites the references (index.html's attributes, the
//! modules' `'./x.js'` imports and charts.js's `'./uplot.js'`) to those names, gzip-compresses each file and writes
//! OUT_DIR/web_assets.rs, a table that assets.rs `include!`s. Without uPlot (no
//! `make web-deps` yet) a stand-in is embedded: the page works, its charts say so.

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// One file of the page, by the name index.html and the modules use for it.
struct Source {
    name: String,
    text: String,
}

const UPLOT_STANDIN_JS: &str =
    "/* uPlot was not installed when braid was built (run `make web-deps`): \
the page shows no charts. */\n";

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let web = root.join("web");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    // Each file read is listed below; a new module shows up as a change to
    // index.html (its modulepreload) or to the module importing it.

    let mut sources = Vec::new();
    let mut index = None;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&web)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", web.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    for path in names {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let keep = !file.starts_with('.')
            && (file == "index.html" || file.ends_with(".js") || file.ends_with(".css"));
        if !keep {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
        let text = read(&path);
        if file == "index.html" {
            index = Some(text);
        } else {
            sources.push(Source { name: file, text });
        }
    }
    let index = index.unwrap_or_else(|| panic!("{} is missing", web.join("index.html").display()));

    let dist = web.join("node_modules/uplot/dist");
    let (uplot_js, uplot_css) = (dist.join("uPlot.iife.min.js"), dist.join("uPlot.min.css"));
    println!("cargo:rerun-if-changed={}", uplot_js.display());
    println!("cargo:rerun-if-changed={}", uplot_css.display());
    if uplot_js.is_file() && uplot_css.is_file() {
        sources.push(Source {
            name: "uplot.js".into(),
            text: read(&uplot_js),
        });
        sources.push(Source {
            name: "uplot.css".into(),
            text: read(&uplot_css),
        });
    } else {
        println!(
            "cargo:warning=web/node_modules/uplot is missing: the web page is built without charts (run `make web-deps`)"
        );
        sources.push(Source {
            name: "uplot.js".into(),
            text: UPLOT_STANDIN_JS.into(),
        });
        sources.push(Source {
            name: "uplot.css".into(),
            text: String::new(),
        });
    }

    // Hashed names, leaves first: a module's name depends on the names it imports.
    let all: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let mut hashed: BTreeMap<String, String> = BTreeMap::new();
    let mut finished: Vec<(String, String, Vec<u8>)> = Vec::new(); // (url, type, bytes)
    let mut pending: Vec<Source> = sources;
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::new();
        for src in pending {
            let deps: Vec<&String> = all
                .iter()
                .filter(|n| **n != src.name && refers_to_module(&src.text, n))
                .collect();
            if deps.iter().any(|d| !hashed.contains_key(*d)) {
                rest.push(src);
                continue;
            }
            let mut text = src.text.clone();
            for d in deps {
                text = rewrite_module_refs(&text, d, &hashed[d]);
            }
            let url_name = hashed_name(&src.name, text.as_bytes());
            hashed.insert(src.name.clone(), url_name.clone());
            finished.push((
                format!("/assets/{url_name}"),
                content_type(&src.name).into(),
                text.into_bytes(),
            ));
        }
        assert!(
            rest.len() < before,
            "web/: modules import each other in a cycle: {:?}",
            rest.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        pending = rest;
    }

    let mut page = index;
    for (name, url_name) in &hashed {
        page = rewrite_page_refs(&page, name, &format!("/assets/{url_name}"));
    }
    finished.push((
        "/".into(),
        content_type("index.html").into(),
        page.into_bytes(),
    ));

    let dir = out.join("web");
    std::fs::create_dir_all(&dir).expect("create OUT_DIR/web");
    let mut table = String::from(
        "// Generated by build.rs from web/: the page's files, by the path they are served at.\n\
         static ASSETS: &[(&str, Asset)] = &[\n",
    );
    for (i, (url, ctype, bytes)) in finished.iter().enumerate() {
        let plain = dir.join(format!("{i}.plain"));
        let gz = dir.join(format!("{i}.gz"));
        write_if_changed(&plain, bytes);
        write_if_changed(&gz, &gzip(bytes));
        let etag = format!("\"{}\"", hex(&Sha256::digest(bytes)));
        let immutable = url != "/";
        writeln!(
            table,
            "    ({url:?}, Asset {{ gzip: include_bytes!({gz:?}), plain: include_bytes!({plain:?}), \
             content_type: {ctype:?}, etag: {etag:?}, immutable: {immutable} }}),",
            gz = gz.display().to_string(),
            plain = plain.display().to_string(),
        )
        .unwrap();
    }
    table.push_str("];\n");
    write_if_changed(&out.join("web_assets.rs"), table.as_bytes());
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Whether a module's text names `name` as a relative import (`'./name'`).
fn refers_to_module(text: &str, name: &str) -> bool {
    text.contains(&format!("'./{name}'")) || text.contains(&format!("\"./{name}\""))
}

/// `'./name'` becomes `'./hashed'` (the modules all live under /assets/).
fn rewrite_module_refs(text: &str, name: &str, hashed: &str) -> String {
    text.replace(&format!("'./{name}'"), &format!("'./{hashed}'"))
        .replace(&format!("\"./{name}\""), &format!("\"./{hashed}\""))
}

/// index.html's `"name"` / `"./name"` attribute values become `"/assets/hashed"`.
fn rewrite_page_refs(text: &str, name: &str, url: &str) -> String {
    text.replace(&format!("\"./{name}\""), &format!("\"{url}\""))
        .replace(&format!("\"{name}\""), &format!("\"{url}\""))
}

/// `app.js` with content hash `3f2a9c1b…` becomes `app.3f2a9c1b.js`.
fn hashed_name(name: &str, bytes: &[u8]) -> String {
    let h = hex(&Sha256::digest(bytes));
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{}.{ext}", &h[..8]),
        None => format!("{name}.{}", &h[..8]),
    }
}

fn content_type(name: &str) -> &'static str {
    if name.ends_with(".html") {
        "text/html; charset=utf-8"
    } else if name.ends_with(".js") {
        "text/javascript; charset=utf-8"
    } else if name.ends_with(".css") {
        "text/css; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    // No file name and time 0 in the header: the same input gives the same bytes.
    let mut enc: GzEncoder<Vec<u8>> = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Leaves unchanged files alone so their mtime does not trigger recompiles.
fn write_if_changed(path: &Path, bytes: &[u8]) {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return;
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
