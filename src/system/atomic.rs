//! Atomic file replacement for config, counters and state.
//!
//! [`write_atomic`] never leaves a reader with a torn, empty or missing file: it
//! writes a temporary file in the same directory (`.NAME.tmp.PID.N`, created with
//! `create_new`), writes everything, `fsync`s it, renames it over the target and
//! `fsync`s the directory. `rename(2)` within one file system replaces the directory
//! entry in one step, so a reader (or the next boot) sees either the old file or the
//! new one.
//!
//! What is tested and what is not: `tests/atomic_write.rs` SIGKILLs a writer at
//! random points and checks the file is always one complete version. A SIGKILL does
//! not lose the page cache, so that test proves the rename protocol, not durability
//! across a power cut. Durability rests on the two `fsync`s (file data before the
//! rename, directory entry after it), which no test here can observe.
//!
//! A kill or power cut between creating the temporary file and the rename leaves that
//! temporary file behind; [`cleanup_stale_temps`] removes such leftovers and is meant
//! to be called at start-up, before this process writes in the directory.
//!
//! Permissions: when the target exists its mode is copied to the temporary file
//! (so a replaced private key stays 0600); a new file gets 0600 (state and config may
//! hold secrets), or the mode given to [`write_atomic_mode`]. Ownership is not
//! copied: the file belongs to the writing user.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of a file that did not exist before, for [`write_atomic`].
pub const DEFAULT_MODE: u32 = 0o600;

/// Replaces `path` with `data` atomically (see the module docs). On error the
/// temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, data, DEFAULT_MODE)
}

/// [`write_atomic`] for text.
pub fn write_atomic_str(path: &Path, data: &str) -> io::Result<()> {
    write_atomic(path, data.as_bytes())
}

/// [`write_atomic`], with `new_mode` for a file that does not exist yet (an existing
/// file keeps its mode). `new_mode` is not reduced by the umask.
pub fn write_atomic_mode(path: &Path, data: &[u8], new_mode: u32) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mode = match fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => new_mode,
        Err(e) => return Err(e),
    };
    let (tmp, f) = create_temp(dir, &name.to_string_lossy())?;
    let r = fill(f, data, mode).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is done: the new contents are what readers see. The directory fsync
    // makes the new entry survive a power cut.
    File::open(dir)?.sync_all()
}

fn fill(mut f: File, data: &[u8], mode: u32) -> io::Result<()> {
    // fchmod, not the open mode: the umask must not change a preserved mode.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(data)?;
    f.sync_all()
}

fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    static N: AtomicU64 = AtomicU64::new(0);
    loop {
        let tmp = dir.join(format!(
            ".{name}.tmp.{}.{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            // Left by an earlier process with our PID: take the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether `name` is a temporary file of [`write_atomic`] (`.NAME.tmp.PID.N`), and
/// its PID.
fn temp_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp.")?;
    let (pid, n) = tail.split_once('.')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the temporary files that killed writers left in `dir` (those of other
/// PIDs; this process's own may be in use). Call at start-up, before other live
/// processes write in `dir`. Returns how many were removed.
pub fn cleanup_stale_temps(dir: &Path) -> io::Result<usize> {
    let me = std::process::id();
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = temp_pid(&name.to_string_lossy()) else {
            continue;
        };
        if pid != me && entry.file_type()?.is_file() {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Names of the [`write_atomic`] temporary files in `dir`, for tests and diagnostics.
pub fn list_temps(dir: &Path) -> io::Result<Vec<String>> {
    let mut v = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if temp_pid(&name).is_some() {
            v.push(name);
        }
    }
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::TempDir;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_new_file_with_default_mode() {
        let d = TempDir::new("atomic").unwrap();
        let p = d.path().join("state.toml");
        write_atomic_str(&p, "a = 1\n").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "a = 1\n");
        assert_eq!(mode(&p), DEFAULT_MODE);
        assert_eq!(entries(d.path()), ["state.toml"]);
    }

    #[test]
    fn replaces_existing_and_preserves_mode() {
        let d = TempDir::new("atomic").unwrap();
        let p = d.path().join("counters");
        fs::write(&p, "old old old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(mode(&p), 0o640);
        write_atomic_mode(&p, b"newer", 0o644).unwrap();
        assert_eq!(mode(&p), 0o640, "an existing file keeps its mode");
        assert_eq!(entries(d.path()), ["counters"]);
    }

    #[test]
    fn new_mode_is_not_reduced_by_umask() {
        let d = TempDir::new("atomic").unwrap();
        let p = d.path().join("id.crt");
        write_atomic_mode(&p, b"cert", 0o644).unwrap();
        assert_eq!(mode(&p), 0o644);
    }

    #[test]
    fn read_only_directory_leaves_old_file_and_no_temp() {
        let d = TempDir::new("atomic").unwrap();
        let p = d.path().join("config.toml");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o555)).unwrap();
        if fs::write(d.path().join("probe"), "").is_ok() {
            // Root (or CAP_DAC_OVERRIDE) ignores directory permissions.
            eprintln!("skipped: a read-only directory is writable here");
            fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
            return;
        }
        let r = write_atomic(&p, b"new");
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(entries(d.path()), ["config.toml"]);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let d = TempDir::new("atomic").unwrap();
        let p = d.path().join("nope").join("state");
        assert_eq!(
            write_atomic(&p, b"x").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(entries(d.path()), Vec::<String>::new());
    }

    #[test]
    fn failed_rename_removes_temp_and_keeps_old() {
        // The target is a non-empty directory: the temp is written, rename fails.
        let d = TempDir::new("atomic").unwrap();
        let p = d.path().join("state");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inside"), "old").unwrap();
        assert!(write_atomic(&p, b"new").is_err());
        assert_eq!(fs::read(p.join("inside")).unwrap(), b"old");
        assert_eq!(entries(d.path()), ["state"]);
    }

    #[test]
    fn path_without_file_name_is_rejected() {
        assert_eq!(
            write_atomic(Path::new("/"), b"x").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn temp_names_and_cleanup() {
        assert_eq!(temp_pid(".state.tmp.123.4"), Some(123));
        assert_eq!(temp_pid(".a.tmp.b.tmp.77.0"), Some(77));
        assert_eq!(temp_pid("state.tmp.123.4"), None);
        assert_eq!(temp_pid(".state.tmp.123."), None);
        assert_eq!(temp_pid(".state.tmp.x.4"), None);
        assert_eq!(temp_pid(".state"), None);

        let d = TempDir::new("atomic").unwrap();
        let me = std::process::id();
        let other = me.wrapping_add(1);
        fs::write(d.path().join("state"), "s").unwrap();
        fs::write(d.path().join(format!(".state.tmp.{other}.0")), "torn").unwrap();
        fs::write(d.path().join(format!(".state.tmp.{me}.9")), "mine").unwrap();
        fs::write(d.path().join(".hidden"), "h").unwrap();
        assert_eq!(list_temps(d.path()).unwrap().len(), 2);
        assert_eq!(cleanup_stale_temps(d.path()).unwrap(), 1);
        assert_eq!(
            entries(d.path()),
            [
                ".hidden".to_string(),
                format!(".state.tmp.{me}.9"),
                "state".into()
            ]
        );
        // A leftover with our own PID does not block the next write.
        write_atomic(&d.path().join("state"), b"t").unwrap();
        assert_eq!(fs::read(d.path().join("state")).unwrap(), b"t");
    }
}
