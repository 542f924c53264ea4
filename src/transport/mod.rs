//! quinn glue: TLS identities and verifiers, endpoint and transport configuration,
//! per-link sockets, interface watching.

pub mod netwatch;
pub mod quic;
pub mod socket;
pub mod tls;
