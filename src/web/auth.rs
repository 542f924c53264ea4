//! Admin password, sessions, CSRF tokens and the login rate limit.
