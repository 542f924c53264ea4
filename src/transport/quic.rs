//! quinn endpoint and transport configuration.
//!
//! One QUIC connection per cellular link. Media travels in unreliable datagrams
//! (7 x 188-byte TS packets = 1316 bytes plus Braid's ~26-byte header = 1342 bytes), so
//! the configuration is built around datagrams:
//!
//! - datagrams enabled with 2 MB send and receive buffers;
//! - `initial_mtu(1400)`: at 1400 bytes quinn's `max_datagram_size()` is 1362 (1400 minus
//!   1 flags byte, 8-byte connection id, 4-byte worst-case packet number, 16-byte AEAD tag
//!   and 9-byte DATAGRAM frame header), so a 1342-byte media datagram fits from the first
//!   1-RTT packet. MTU discovery stays on and may raise it further (up to 1452 by default).
//!   Caveat: if a path cannot carry 1400-byte packets, quinn's black-hole detection falls
//!   back to the 1200-byte minimum and `send_datagram` returns `TooLarge` for media.
//! - keep-alive 500 ms and idle timeout 10 s so dead links are noticed quickly;
//! - congestion control is [`AppPaced`]: Braid's own sans-IO scheduler paces and windows
//!   each link; quinn must not throttle or queue on its behalf (see [`AppPaced`]).

use std::any::Any;
use std::net::UdpSocket;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use quinn::congestion::{Controller, ControllerFactory};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{EndpointConfig, IdleTimeout, TransportConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::tls::{self, AllowList, AllowListVerifier, RelayTrust};

/// ALPN protocol id of Braid's QUIC protocol.
pub const ALPN: &[u8] = b"braid/1";

/// Largest media datagram Braid sends: 7 TS packets + header.
pub const MEDIA_DATAGRAM_MAX: usize = 7 * 188 + 26;

/// Initial (and, in practice, assumed) path MTU.
pub const INITIAL_MTU: u16 = 1400;
/// Datagram send and receive buffer sizes.
pub const DATAGRAM_BUFFER: usize = 2 * 1024 * 1024;
pub const KEEP_ALIVE: Duration = Duration::from_millis(500);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Window reported by [`AppPaced`]: 4 GiB + 1 byte.
///
/// quinn-proto 0.11's pacer (`connection/pacing.rs`) is a token bucket refilled at
/// `1.25 * window / smoothed_rtt` with a burst of `window * 2 ms / srtt` clamped to
/// 10..=256 MTUs, and it is bypassed only when `window > u32::MAX`. With a 16 MB window
/// the pacer would still be active: harmless at 50 ms RTT (~400 MB/s), but its rate
/// falls with the smoothed RTT, and cellular bufferbloat pushes RTTs into seconds
/// (16 MB at 2 s RTT = 10 MB/s, with bursts capped at 256 packets), so it could
/// add its own send delay exactly when Braid's scheduler is managing a
/// congested link. So the window must exceed `u32::MAX`; this also means the
/// congestion check (`in_flight + packet >= window`) can never trip.
pub const APP_PACED_WINDOW: u64 = u32::MAX as u64 + 1;

/// quinn congestion controller that never limits anything.
///
/// Braid's sender (`core::sender`) is a sans-IO scheduler that estimates each link's
/// capacity from its own acknowledgements (receiver reports), and paces and windows
/// each link itself, including failover between links. A second controller
/// underneath (NewReno/Cubic/BBR) would fight it: on loss it would shrink the
/// window and queue datagrams inside quinn, adding latency Braid cannot see, and
/// datagrams would age in quinn's send buffer instead of being rescheduled on
/// another link. `AppPaced` therefore reports a fixed window larger than
/// `u32::MAX`, which also disables quinn's pacer (see [`APP_PACED_WINDOW`]), and
/// ignores acks, losses and MTU changes. Loss detection, RTT estimation and
/// retransmission of QUIC's own frames are unaffected.
#[derive(Debug, Clone, Copy)]
pub struct AppPaced {
    window: u64,
}

impl Controller for AppPaced {
    fn on_congestion_event(
        &mut self,
        _now: Instant,
        _sent: Instant,
        _is_persistent_congestion: bool,
        _lost_bytes: u64,
    ) {
    }

    fn on_mtu_update(&mut self, _new_mtu: u16) {}

    fn window(&self) -> u64 {
        self.window
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(*self)
    }

    fn initial_window(&self) -> u64 {
        self.window
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Builds [`AppPaced`] controllers.
#[derive(Debug, Clone, Copy)]
pub struct AppPacedFactory {
    /// Keep above `u32::MAX`, or quinn's pacer comes back.
    pub window: u64,
}

impl Default for AppPacedFactory {
    fn default() -> Self {
        Self {
            window: APP_PACED_WINDOW,
        }
    }
}

impl ControllerFactory for AppPacedFactory {
    fn build(self: Arc<Self>, _now: Instant, _current_mtu: u16) -> Box<dyn Controller> {
        Box::new(AppPaced {
            window: self.window,
        })
    }
}

/// Transport parameters shared by the edge and the relay.
pub fn transport_config() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_BUFFER)
        .initial_mtu(INITIAL_MTU)
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(IDLE_TIMEOUT).expect("10 s is a valid idle timeout"),
        ))
        .congestion_controller_factory(Arc::new(AppPacedFactory::default()));
    t
}

/// The edge's transport: as [`transport_config`], and it asks the relay to
/// acknowledge rarely. Media datagrams are never retransmitted by QUIC and Braid
/// acknowledges them in its own reports, so the relay's QUIC ACKs only serve
/// keep-alive: the ACK frequency extension (draft-ietf-quic-ack-frequency) asks for
/// one every 10th packet or 25 ms, and no hurry for reordering, which takes the
/// relay's ACK-only packets from one per two media datagrams to one per ten. The
/// relay does not ask the same of the edge: the edge's prompt ACKs of the relay's
/// reports are what keeps the relay's RTT estimate (its clock model) tight.
pub fn edge_transport_config() -> TransportConfig {
    let mut t = transport_config();
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(quinn::VarInt::from_u32(9))
        .max_ack_delay(Some(Duration::from_millis(25)))
        .reordering_threshold(quinn::VarInt::from_u32(0));
    t.ack_frequency_config(Some(ack));
    t
}

/// Relay endpoint configuration: presents `cert_chain`/`key`, requires a client
/// certificate in `allow`, counts rejections in `rejected`.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    allow: AllowList,
    rejected: Arc<AtomicU64>,
) -> Result<quinn::ServerConfig> {
    let mut tls_cfg = rustls::ServerConfig::builder_with_provider(tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_client_cert_verifier(AllowListVerifier::new(allow, rejected))
        .with_single_cert(cert_chain, key)
        .context("relay certificate and key")?;
    tls_cfg.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls_cfg).context("QUIC server TLS config")?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    Ok(cfg)
}

/// Edge endpoint configuration: presents `cert_chain`/`key` as the device identity and
/// authenticates the relay according to `trust`.
pub fn client_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    trust: &RelayTrust,
) -> Result<quinn::ClientConfig> {
    let mut tls_cfg = rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .dangerous()
        .with_custom_certificate_verifier(tls::server_verifier(trust)?)
        .with_client_auth_cert(cert_chain, key)
        .context("device certificate and key")?;
    tls_cfg.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls_cfg).context("QUIC client TLS config")?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(edge_transport_config()));
    Ok(cfg)
}

/// A quinn endpoint on an already bound socket (see `socket::bind_link_socket`). Must
/// be called inside a tokio runtime.
pub fn endpoint_on(
    socket: UdpSocket,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint> {
    let local = socket.local_addr().ok();
    quinn::Endpoint::new(
        EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .with_context(|| format!("creating QUIC endpoint on {local:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tls::{fingerprint, load_identity, write_identity, Fingerprint};
    use bytes::Bytes;
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::atomic::Ordering;
    use std::sync::RwLock;
    use tokio::time::timeout;

    use crate::system::TempDir;

    const T: Duration = Duration::from_secs(2);

    type Chain = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

    fn ident(dir: &Path, name: &str) -> (Fingerprint, Chain) {
        let fp = write_identity(dir, name).unwrap();
        let id = load_identity(
            &dir.join(format!("{name}.crt")),
            &dir.join(format!("{name}.key")),
        )
        .unwrap();
        (fp, id)
    }

    fn localhost() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").unwrap()
    }

    struct Relay {
        ep: quinn::Endpoint,
        addr: SocketAddr,
        allow: AllowList,
        rejected: Arc<AtomicU64>,
    }

    fn relay(chain: Chain) -> Relay {
        let allow: AllowList = Arc::new(RwLock::new(HashMap::new()));
        let rejected = Arc::new(AtomicU64::new(0));
        let cfg = server_config(chain.0, chain.1, allow.clone(), rejected.clone()).unwrap();
        let ep = endpoint_on(localhost(), Some(cfg)).unwrap();
        let addr = ep.local_addr().unwrap();
        Relay {
            ep,
            addr,
            allow,
            rejected,
        }
    }

    fn client(chain: Chain, trust: &RelayTrust) -> quinn::Endpoint {
        let mut ep = endpoint_on(localhost(), None).unwrap();
        ep.set_default_client_config(client_config(chain.0, chain.1, trust).unwrap());
        ep
    }

    /// Server side of one connection attempt.
    async fn accept(relay: &Relay) -> Result<quinn::Connection, quinn::ConnectionError> {
        let incoming = timeout(T, relay.ep.accept()).await.unwrap().unwrap();
        timeout(T, incoming).await.unwrap()
    }

    /// A client whose handshake the server rejects may still see `connect` succeed
    /// (TLS 1.3: the client finishes before the server checks its certificate); the
    /// server then closes the connection. Either way it must not stay usable.
    async fn assert_client_fails(
        connecting: quinn::Connecting,
    ) -> Result<quinn::ConnectionError, quinn::ConnectionError> {
        match timeout(T, connecting).await.unwrap() {
            Err(e) => Err(e),
            Ok(conn) => Ok(timeout(T, conn.closed())
                .await
                .expect("rejected connection stays open")),
        }
    }

    #[tokio::test]
    async fn pinned_handshake_datagrams_and_device_id() {
        let dir = TempDir::new("ok").unwrap();
        let (relay_fp, relay_id) = ident(dir.path(), "relay");
        let (dev_fp, dev_id) = ident(dir.path(), "dev1");
        let r = relay(relay_id);
        r.allow.write().unwrap().insert(dev_fp, "dev1".into());
        let c = client(dev_id, &RelayTrust::Pinned(relay_fp));

        let connecting = c.connect(r.addr, "whatever-name").unwrap();
        let (server_conn, client_conn) = tokio::join!(accept(&r), connecting);
        let server_conn = server_conn.unwrap();
        let client_conn = client_conn.unwrap();

        assert_eq!(
            tls::device_of(&server_conn, &r.allow).as_deref(),
            Some("dev1")
        );
        assert_eq!(tls::peer_fingerprint(&client_conn), Some(relay_fp));
        assert_eq!(
            server_conn.handshake_data().and_then(|h| h
                .downcast::<quinn::crypto::rustls::HandshakeData>()
                .ok()
                .and_then(|h| h.protocol)),
            Some(ALPN.to_vec())
        );

        let max_c = client_conn.max_datagram_size().unwrap();
        let max_s = server_conn.max_datagram_size().unwrap();
        println!("max_datagram_size client={max_c} server={max_s}");
        assert!(max_c >= MEDIA_DATAGRAM_MAX && max_s >= MEDIA_DATAGRAM_MAX);

        let up = Bytes::from(vec![0xA5; MEDIA_DATAGRAM_MAX]);
        client_conn.send_datagram(up.clone()).unwrap();
        let got = timeout(T, server_conn.read_datagram())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, up);
        let down = Bytes::from(vec![0x5A; MEDIA_DATAGRAM_MAX]);
        server_conn.send_datagram(down.clone()).unwrap();
        let got = timeout(T, client_conn.read_datagram())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, down);
        assert_eq!(r.rejected.load(Ordering::Relaxed), 0);

        // Larger than the current path allows: rejected, not fragmented. (MTU discovery
        // may already have raised the limit above the initial 1362 on loopback.)
        let max_now = client_conn.max_datagram_size().unwrap();
        println!("max_datagram_size after discovery: {max_now}");
        assert!(max_now >= max_c);
        let too_big = Bytes::from(vec![0; max_now + 1]);
        assert!(matches!(
            client_conn.send_datagram(too_big),
            Err(quinn::SendDatagramError::TooLarge)
        ));

        client_conn.close(0u32.into(), b"done");
        c.wait_idle().await;
    }

    #[tokio::test]
    async fn wrong_pin_fails() {
        let dir = TempDir::new("pin").unwrap();
        let (_relay_fp, relay_id) = ident(dir.path(), "relay");
        let (dev_fp, dev_id) = ident(dir.path(), "dev1");
        let r = relay(relay_id);
        r.allow.write().unwrap().insert(dev_fp, "dev1".into());
        let c = client(dev_id, &RelayTrust::Pinned(fingerprint(b"someone else")));

        let connecting = c.connect(r.addr, "relay").unwrap();
        let (server, client) = tokio::join!(accept(&r), connecting);
        assert!(client.is_err(), "client must reject the relay");
        assert!(server.is_err());
        // The device was never asked to prove anything to a relay it does not trust.
        assert_eq!(r.rejected.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn unknown_device_rejected_then_allowed_at_runtime() {
        let dir = TempDir::new("allow").unwrap();
        let (relay_fp, relay_id) = ident(dir.path(), "relay");
        let (dev_fp, dev_id) = ident(dir.path(), "dev2");
        let r = relay(relay_id);
        let c = client(dev_id, &RelayTrust::Pinned(relay_fp));

        let connecting = c.connect(r.addr, "relay").unwrap();
        let (server, client) = tokio::join!(accept(&r), assert_client_fails(connecting));
        assert!(server.is_err(), "relay must reject an unknown device");
        println!("client sees: {client:?}");
        assert_eq!(r.rejected.load(Ordering::Relaxed), 1);

        // Runtime update of the shared allow-list: next handshake succeeds.
        r.allow.write().unwrap().insert(dev_fp, "dev2".into());
        let connecting = c.connect(r.addr, "relay").unwrap();
        let (server, client) = tokio::join!(accept(&r), connecting);
        let server = server.unwrap();
        let client = client.unwrap();
        assert_eq!(tls::device_of(&server, &r.allow).as_deref(), Some("dev2"));
        client.send_datagram(Bytes::from_static(b"hi")).unwrap();
        let got = timeout(T, server.read_datagram()).await.unwrap().unwrap();
        assert_eq!(&got[..], b"hi");
        assert_eq!(r.rejected.load(Ordering::Relaxed), 1);

        // Removing the device afterwards: device_of no longer resolves it.
        r.allow.write().unwrap().remove(&dev_fp);
        assert_eq!(tls::device_of(&server, &r.allow), None);
        client.close(0u32.into(), b"done");
    }

    /// Presents a client certificate with a mismatched key (bypassing rustls' own
    /// key/cert consistency check).
    #[derive(Debug)]
    struct StolenCert(Arc<rustls::sign::CertifiedKey>);
    impl rustls::client::ResolvesClientCert for StolenCert {
        fn resolve(
            &self,
            _hints: &[&[u8]],
            _schemes: &[rustls::SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }

    /// An allowed device's certificate is public; presenting it without its private
    /// key must fail: the relay verifies the CertificateVerify signature.
    #[tokio::test]
    async fn stolen_certificate_without_key_fails() {
        let dir = TempDir::new("stolen").unwrap();
        let (relay_fp, relay_id) = ident(dir.path(), "relay");
        let (dev_fp, dev_id) = ident(dir.path(), "victim");
        let (_, thief_id) = ident(dir.path(), "thief");
        let r = relay(relay_id);
        r.allow.write().unwrap().insert(dev_fp, "victim".into());

        let provider = tls::crypto_provider();
        let thief_key = provider.key_provider.load_private_key(thief_id.1).unwrap();
        let forged = rustls::sign::CertifiedKey::new(dev_id.0, thief_key);
        let mut tls_cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(tls::PinnedServerVerifier::new(relay_fp))
            .with_client_cert_resolver(Arc::new(StolenCert(Arc::new(forged))));
        tls_cfg.alpn_protocols = vec![ALPN.to_vec()];
        let mut cfg =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls_cfg).unwrap()));
        cfg.transport_config(Arc::new(transport_config()));
        let c = endpoint_on(localhost(), None).unwrap();

        let connecting = c.connect_with(cfg, r.addr, "relay").unwrap();
        let (server, client) = tokio::join!(accept(&r), assert_client_fails(connecting));
        assert!(
            server.is_err(),
            "relay must reject a certificate without its key"
        );
        println!("client sees: {client:?}");
    }

    /// `RelayTrust::Ca`: relay certificate issued by a private CA, validated with the
    /// normal WebPKI rules (name must match).
    #[tokio::test]
    async fn ca_trust() {
        let dir = TempDir::new("ca").unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "braid test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["relay.example".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        let relay_chain = (
            vec![leaf.der().clone()],
            PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        );

        let (dev_fp, dev_id) = ident(dir.path(), "dev3");
        let r = relay(relay_chain);
        r.allow.write().unwrap().insert(dev_fp, "dev3".into());
        let c = client(dev_id, &RelayTrust::Ca(ca_path.clone()));

        let (server, client) =
            tokio::join!(accept(&r), c.connect(r.addr, "relay.example").unwrap());
        assert_eq!(
            tls::device_of(&server.unwrap(), &r.allow).as_deref(),
            Some("dev3")
        );
        client.unwrap().close(0u32.into(), b"done");

        // Wrong name: rejected by the client.
        let (server, client) =
            tokio::join!(accept(&r), c.connect(r.addr, "other.example").unwrap());
        assert!(client.is_err() && server.is_err());

        // A CA file without certificates is a clear configuration error.
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let (_, dev_id) = ident(dir.path(), "dev4");
        let err = format!(
            "{:#}",
            client_config(dev_id.0, dev_id.1, &RelayTrust::Ca(empty)).unwrap_err()
        );
        assert!(err.contains("empty.pem"), "{err}");
    }

    #[test]
    fn app_paced_window_disables_pacer() {
        // quinn-proto's pacer is bypassed only for windows above u32::MAX.
        let c = Arc::new(AppPacedFactory::default()).build(Instant::now(), 1200);
        assert!(c.window() > u64::from(u32::MAX));
        assert_eq!(c.window(), c.initial_window());
    }
}
