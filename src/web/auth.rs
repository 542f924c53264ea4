//! Admin password, sessions, CSRF tokens and the login rate limit.
//!
//! Plain state, no HTTP and no clock: every call that depends on time takes `now`,
//! every call that makes a secret takes the random generator. The server
//! ([`super::api`]) owns one of each behind a mutex and runs the slow argon2 work
//! ([`hash_password`], [`verify_password`]) on the blocking pool.
//!
//! - [`PasswordStore`]: the argon2id PHC string in `password_file`, written
//!   atomically; [`PasswordStore::take_initial`] turns a first-boot plaintext file
//!   into the hash and deletes it.
//! - [`Sessions`]: 32 random bytes per session (hex in the `braid_session` cookie),
//!   a CSRF token per session, idle expiry, at most [`MAX_SESSIONS`]. The map is
//!   keyed by the SHA-256 of the token, so lookups take no time that depends on how
//!   much of a guessed token is right; CSRF tokens are compared in constant time.
//! - [`LoginLimiter`]: failed logins per client address and in all, over a sliding
//!   minute (docs/web-api.md, "Login rate limit").

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Allowed password length, in characters (docs/web-api.md).
pub const PASSWORD_CHARS: RangeInclusive<usize> = 8..=128;
/// Most sessions kept at once; a new login past it ends the least recently used.
pub const MAX_SESSIONS: usize = 32;
/// Failed logins allowed per client address per [`LIMIT_WINDOW`].
pub const FAILURES_PER_ADDRESS: usize = 5;
/// Failed logins allowed from all addresses together per [`LIMIT_WINDOW`].
pub const FAILURES_IN_ALL: usize = 20;
/// The sliding window of the login rate limit.
pub const LIMIT_WINDOW: Duration = Duration::from_secs(60);

/// Why a password operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The new password breaks the length rule.
    #[error("password must be {min} to {max} characters, got {0}", min = PASSWORD_CHARS.start(), max = PASSWORD_CHARS.end())]
    Length(usize),
    /// `password_file` holds something that is not an argon2 PHC string.
    #[error("{}: not an argon2 password hash", .0.display())]
    BadHashFile(PathBuf),
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// argon2 itself failed (parameters, salt).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Checks the length rule for a new password.
pub fn check_password(password: &str) -> Result<(), AuthError> {
    let n = password.chars().count();
    if PASSWORD_CHARS.contains(&n) {
        Ok(())
    } else {
        Err(AuthError::Length(n))
    }
}

/// argon2id (the crate's default parameters: 19 MiB, 2 passes) PHC string of
/// `password` with a fresh random salt. Slow on purpose: call it off the async
/// threads.
pub fn hash_password(
    password: &str,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<String, AuthError> {
    check_password(password)?;
    let salt = SaltString::generate(rng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc` (the comparison of the hashes
/// is constant-time in the argon2 crate). A malformed `phc` matches nothing.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// The admin password's hash and the file it lives in.
#[derive(Debug)]
pub struct PasswordStore {
    path: PathBuf,
    hash: Option<String>,
}

impl PasswordStore {
    /// Reads `path`; a missing file means no password yet.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let hash = match std::fs::read_to_string(path) {
            Ok(text) => {
                let phc = text.trim().to_string();
                if PasswordHash::new(&phc).is_err() {
                    return Err(AuthError::BadHashFile(path.to_path_buf()));
                }
                Some(phc)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(AuthError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Ok(PasswordStore {
            path: path.to_path_buf(),
            hash,
        })
    }

    /// Whether a password is set.
    pub fn is_set(&self) -> bool {
        self.hash.is_some()
    }

    /// The PHC string, if a password is set.
    pub fn hash(&self) -> Option<&str> {
        self.hash.as_deref()
    }

    /// The file the hash is kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `phc` (from [`hash_password`]) atomically, mode 0600, and keeps it.
    pub fn store(&mut self, phc: String) -> Result<(), AuthError> {
        crate::system::atomic::write_atomic_str(&self.path, &format!("{phc}\n")).map_err(
            |source| AuthError::Io {
                path: self.path.clone(),
                source,
            },
        )?;
        self.hash = Some(phc);
        Ok(())
    }

    /// First boot: when no password is set and `initial` exists, hashes its
    /// contents (one line; the trailing newline is not part of the password) into
    /// the store, then deletes `initial`. A file that breaks the length rule is
    /// left in place and reported. Returns whether a password was taken.
    pub fn take_initial(
        &mut self,
        initial: &Path,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<bool, AuthError> {
        if self.is_set() {
            return Ok(false);
        }
        let text = match std::fs::read_to_string(initial) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(AuthError::Io {
                    path: initial.to_path_buf(),
                    source,
                })
            }
        };
        let password = text.strip_suffix('\n').unwrap_or(&text);
        let password = password.strip_suffix('\r').unwrap_or(password);
        let phc = hash_password(password, rng)?;
        self.store(phc)?;
        std::fs::remove_file(initial).map_err(|source| AuthError::Io {
            path: initial.to_path_buf(),
            source,
        })?;
        Ok(true)
    }
}

/// A random 32-byte token as 64 lowercase hex digits.
fn token(rng: &mut (impl RngCore + CryptoRng)) -> String {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    hex::encode(b)
}

fn key_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Debug)]
struct Session {
    csrf: String,
    last_used: Instant,
}

/// A session that was just created: the cookie value and its CSRF token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub token: String,
    pub csrf: String,
}

/// Logged-in browsers, in memory only (a restart logs everyone out).
#[derive(Debug)]
pub struct Sessions {
    by_key: HashMap<[u8; 32], Session>,
    idle: Duration,
    cap: usize,
}

impl Sessions {
    /// Sessions that end after `idle` without use, at most [`MAX_SESSIONS`].
    pub fn new(idle: Duration) -> Self {
        Self::with_cap(idle, MAX_SESSIONS)
    }

    /// As [`Sessions::new`] with another cap (at least 1).
    pub fn with_cap(idle: Duration, cap: usize) -> Self {
        Sessions {
            by_key: HashMap::new(),
            idle,
            cap: cap.max(1),
        }
    }

    /// Number of live sessions (expired ones may still count until the next call
    /// that takes `now`).
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        let idle = self.idle;
        self.by_key
            .retain(|_, s| now.saturating_duration_since(s.last_used) < idle);
    }

    /// Starts a session. When the cap is reached the least recently used one ends.
    pub fn create(&mut self, now: Instant, rng: &mut (impl RngCore + CryptoRng)) -> NewSession {
        self.expire(now);
        while self.by_key.len() >= self.cap {
            let oldest = self
                .by_key
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => {
                    self.by_key.remove(&k);
                }
                None => break,
            }
        }
        let t = token(rng);
        let csrf = token(rng);
        self.by_key.insert(
            key_of(&t),
            Session {
                csrf: csrf.clone(),
                last_used: now,
            },
        );
        NewSession { token: t, csrf }
    }

    /// The CSRF token of the live session `token`, marking it used; `None` when
    /// there is no such session or it has been idle too long (then it ends).
    pub fn touch(&mut self, token: &str, now: Instant) -> Option<String> {
        let key = key_of(token);
        let s = self.by_key.get_mut(&key)?;
        if now.saturating_duration_since(s.last_used) >= self.idle {
            self.by_key.remove(&key);
            return None;
        }
        s.last_used = s.last_used.max(now);
        Some(s.csrf.clone())
    }

    /// Whether `presented` is the CSRF token of session `token` (constant-time
    /// comparison). Does not mark the session used.
    pub fn csrf_ok(&self, token: &str, presented: &str) -> bool {
        match self.by_key.get(&key_of(token)) {
            Some(s) => bool::from(s.csrf.as_bytes().ct_eq(presented.as_bytes())),
            None => false,
        }
    }

    /// Ends session `token` (logout).
    pub fn remove(&mut self, token: &str) {
        self.by_key.remove(&key_of(token));
    }

    /// Ends every session but `keep` (password change).
    pub fn remove_others(&mut self, keep: &str) {
        let k = key_of(keep);
        self.by_key.retain(|key, _| *key == k);
    }

    /// Ends every session.
    pub fn clear(&mut self) {
        self.by_key.clear();
    }
}

/// Failed logins per client address and in all over the last [`LIMIT_WINDOW`].
///
/// Call order for one login: [`LoginLimiter::check`] (refuse with 429 and
/// `Retry-After` when it says so), verify the password, then
/// [`LoginLimiter::failure`] or [`LoginLimiter::success`].
#[derive(Debug, Default)]
pub struct LoginLimiter {
    /// Times of recent failures, oldest first, with their address.
    recent: VecDeque<(Instant, IpAddr)>,
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
        v4 => v4,
    }
}

/// Whole seconds until `t + LIMIT_WINDOW`, at least 1.
fn seconds_until_free(t: Instant, now: Instant) -> u64 {
    let left = (t + LIMIT_WINDOW).saturating_duration_since(now);
    let s = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    s.max(1)
}

impl LoginLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    fn prune(&mut self, now: Instant) {
        while let Some((t, _)) = self.recent.front() {
            if now.saturating_duration_since(*t) >= LIMIT_WINDOW {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }

    /// `Err(seconds)` when a login from `addr` must be refused now, with the
    /// seconds until one would be allowed (`Retry-After`).
    pub fn check(&mut self, addr: IpAddr, now: Instant) -> Result<(), u64> {
        self.prune(now);
        let addr = canonical(addr);
        let mine: Vec<Instant> = self
            .recent
            .iter()
            .filter(|(_, a)| *a == addr)
            .map(|(t, _)| *t)
            .collect();
        let mut wait = 0;
        if mine.len() >= FAILURES_PER_ADDRESS {
            // Free again when enough of this address's failures have aged out.
            let t = mine[mine.len() - FAILURES_PER_ADDRESS];
            wait = wait.max(seconds_until_free(t, now));
        }
        if self.recent.len() >= FAILURES_IN_ALL {
            let (t, _) = self.recent[self.recent.len() - FAILURES_IN_ALL];
            wait = wait.max(seconds_until_free(t, now));
        }
        if wait > 0 {
            Err(wait)
        } else {
            Ok(())
        }
    }

    /// A wrong password from `addr`.
    pub fn failure(&mut self, addr: IpAddr, now: Instant) {
        self.prune(now);
        self.recent.push_back((now, canonical(addr)));
        // The checks refuse before this grows past the global limit, but logins
        // racing past `check` together could add a few more: keep it bounded.
        while self.recent.len() > 4 * FAILURES_IN_ALL {
            self.recent.pop_front();
        }
    }

    /// A correct password from `addr`: its failures are forgotten.
    pub fn success(&mut self, addr: IpAddr) {
        let addr = canonical(addr);
        self.recent.retain(|(_, a)| *a != addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::TempDir;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn password_rules_count_characters() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(
            check_password(&"é".repeat(128)).is_ok(),
            "characters, not bytes"
        );
        assert!(check_password(&"x".repeat(129)).is_err());
        assert_eq!(
            check_password("short").unwrap_err().to_string(),
            "password must be 8 to 128 characters, got 5"
        );
    }

    #[test]
    fn hash_and_verify() {
        let phc = hash_password("correct horse", &mut rng()).unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct horsE", &phc));
        assert!(!verify_password("correct horse", "not a hash"));
        assert!(hash_password("short", &mut rng()).is_err());
    }

    #[test]
    fn store_writes_the_file_and_takes_the_initial_password() {
        let d = TempDir::new("auth").unwrap();
        let pw = d.path().join("web-password");
        let initial = d.path().join("initial.txt");
        let mut s = PasswordStore::load(&pw).unwrap();
        assert!(!s.is_set());
        assert!(
            !s.take_initial(&initial, &mut rng()).unwrap(),
            "no file: nothing"
        );

        std::fs::write(&initial, "short\n").unwrap();
        assert!(matches!(
            s.take_initial(&initial, &mut rng()),
            Err(AuthError::Length(5))
        ));
        assert!(
            initial.exists(),
            "a refused file stays for the operator to fix"
        );

        std::fs::write(&initial, "first boot pw\r\n").unwrap();
        assert!(s.take_initial(&initial, &mut rng()).unwrap());
        assert!(!initial.exists());
        assert!(verify_password("first boot pw", s.hash().unwrap()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pw).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let again = PasswordStore::load(&pw).unwrap();
        assert_eq!(again.hash(), s.hash());
        // Already set: a new initial file is left alone.
        std::fs::write(&initial, "another one").unwrap();
        let mut again = again;
        assert!(!again.take_initial(&initial, &mut rng()).unwrap());
        assert!(initial.exists());

        std::fs::write(&pw, "garbage").unwrap();
        assert!(matches!(
            PasswordStore::load(&pw),
            Err(AuthError::BadHashFile(_))
        ));
    }

    #[test]
    fn sessions_expire_when_idle_and_csrf_is_per_session() {
        let t0 = Instant::now();
        let mut s = Sessions::new(Duration::from_secs(300));
        let mut r = rng();
        let a = s.create(t0, &mut r);
        let b = s.create(t0, &mut r);
        assert_eq!(a.token.len(), 64);
        assert_ne!(a.token, b.token);
        assert_ne!(a.csrf, b.csrf);
        assert_eq!(
            s.touch(&a.token, t0 + Duration::from_secs(299)),
            Some(a.csrf.clone())
        );
        // Used at 299 s: alive until 599 s.
        assert!(s.touch(&a.token, t0 + Duration::from_secs(598)).is_some());
        assert!(s.csrf_ok(&a.token, &a.csrf));
        assert!(!s.csrf_ok(&a.token, &b.csrf));
        assert!(!s.csrf_ok(&a.token, ""));
        assert!(!s.csrf_ok("nope", &a.csrf));
        // b was never used again.
        assert_eq!(s.touch(&b.token, t0 + Duration::from_secs(300)), None);
        assert_eq!(s.len(), 1);
        assert_eq!(s.touch("", t0), None);
        s.remove(&a.token);
        assert!(s.is_empty());
    }

    #[test]
    fn session_cap_ends_the_least_recently_used() {
        let t0 = Instant::now();
        let mut s = Sessions::with_cap(Duration::from_secs(3600), 3);
        let mut r = rng();
        let v: Vec<NewSession> = (0..3)
            .map(|i| s.create(t0 + Duration::from_secs(i), &mut r))
            .collect();
        s.touch(&v[0].token, t0 + Duration::from_secs(10));
        let d = s.create(t0 + Duration::from_secs(11), &mut r);
        assert_eq!(s.len(), 3);
        assert!(s.touch(&v[1].token, t0 + Duration::from_secs(12)).is_none());
        assert!(s.touch(&v[0].token, t0 + Duration::from_secs(12)).is_some());
        assert!(s.touch(&v[2].token, t0 + Duration::from_secs(12)).is_some());
        s.remove_others(&d.token);
        assert_eq!(s.len(), 1);
        assert!(s.touch(&d.token, t0 + Duration::from_secs(12)).is_some());
        s.clear();
        assert!(s.is_empty());
    }

    #[test]
    fn limiter_per_address_and_in_all() {
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut l = LoginLimiter::new();
        for i in 0..5 {
            assert_eq!(l.check(a, t0 + Duration::from_secs(i)), Ok(()));
            l.failure(a, t0 + Duration::from_secs(i));
        }
        // The first failure (t0) ages out at t0 + 60 s.
        assert_eq!(l.check(a, t0 + Duration::from_secs(10)), Err(50));
        assert_eq!(l.check(a, t0 + Duration::from_millis(59_500)), Err(1));
        assert_eq!(l.check(b, t0 + Duration::from_secs(10)), Ok(()));
        // IPv4-mapped IPv6 is the same client.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(l.check(mapped, t0 + Duration::from_secs(10)), Err(50));
        assert_eq!(l.check(a, t0 + Duration::from_secs(60)), Ok(()));
        // A success clears the address.
        l.failure(a, t0 + Duration::from_secs(60));
        assert_eq!(l.check(a, t0 + Duration::from_millis(60_500)), Err(1));
        l.success(mapped);
        assert_eq!(l.check(a, t0 + Duration::from_millis(60_500)), Ok(()));

        // 20 in all from 20 addresses.
        let mut l = LoginLimiter::new();
        for i in 0..20u8 {
            let c = IpAddr::from([10, 0, 0, i]);
            assert_eq!(l.check(c, t0), Ok(()));
            l.failure(c, t0 + Duration::from_secs(u64::from(i)));
        }
        assert_eq!(l.check(b, t0 + Duration::from_secs(20)), Err(40));
        assert_eq!(l.check(b, t0 + Duration::from_secs(60)), Ok(()));
    }
}
