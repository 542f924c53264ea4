//! Relay daemon end to end on 127.0.0.1: a hand-written QUIC edge, the relay's
//! UDP outputs, its release tap and its stats HTTP endpoints.

use braid::config::{DeviceEntry, OutputConfig, RelayConfig};
use braid::core::wire::{self, Control, Flags, MediaHeader, TS_PACKET, VERSION};
use braid::relay::{
    self, RelayHandle, RelayOptions, ReleaseEvent, CLOSE_REJECTED, CLOSE_REPLACED, UDP_GROUP,
};
use braid::system::TempDir;
use braid::transport::{quic, tls};
use bytes::Bytes;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(2);
const LATENCY: Duration = Duration::from_millis(100);

struct Ident {
    fp: tls::Fingerprint,
    cert: PathBuf,
    key: PathBuf,
}

fn ident(dir: &Path, name: &str) -> Ident {
    let fp = tls::write_identity(dir, name).unwrap();
    Ident {
        fp,
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    }
}

struct Fixture {
    dir: TempDir,
    relay: RelayHandle,
    relay_fp: tls::Fingerprint,
    tap: mpsc::UnboundedReceiver<ReleaseEvent>,
    /// Per device (`cam1`, `cam2`, ...): its identity and the socket its UDP output sends to.
    devices: Vec<(Ident, tokio::net::UdpSocket)>,
}

async fn fixture(tag: &str, n_devices: usize) -> Fixture {
    let dir = TempDir::new(tag).unwrap();
    let r = ident(dir.path(), "relay");
    let mut devices = Vec::new();
    let mut entries = Vec::new();
    for i in 1..=n_devices {
        let id = ident(dir.path(), &format!("cam{i}"));
        let out = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        entries.push(DeviceEntry {
            id: format!("cam{i}"),
            fingerprint: id.fp,
            latency: LATENCY,
            outputs: vec![OutputConfig::Udp {
                address: out.local_addr().unwrap(),
            }],
        });
        devices.push((id, out));
    }
    let cfg = RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: r.cert.clone(),
        key: r.key.clone(),
        latency: Duration::from_millis(500),
        stats_listen: "127.0.0.1:0".parse().unwrap(),
        devices: entries,
    };
    let (tx, tap) = mpsc::unbounded_channel();
    let relay = relay::start(
        cfg,
        RelayOptions {
            release_tap: Some(tx),
        },
    )
    .await
    .unwrap();
    Fixture {
        dir,
        relay,
        relay_fp: r.fp,
        tap,
        devices,
    }
}

/// Connects with `id` as the device certificate.
async fn connect(
    relay: SocketAddr,
    relay_fp: tls::Fingerprint,
    id: &Ident,
) -> (
    quinn::Endpoint,
    Result<quinn::Connection, quinn::ConnectionError>,
) {
    let (chain, key) = tls::load_identity(&id.cert, &id.key).unwrap();
    let mut ep =
        quic::endpoint_on(std::net::UdpSocket::bind("127.0.0.1:0").unwrap(), None).unwrap();
    ep.set_default_client_config(
        quic::client_config(chain, key, &tls::RelayTrust::Pinned(relay_fp)).unwrap(),
    );
    let c = timeout(T, ep.connect(relay, "braid-relay").unwrap())
        .await
        .expect("handshake timed out");
    (ep, c)
}

async fn read_control(recv: &mut quinn::RecvStream) -> anyhow::Result<Control> {
    let mut len = [0u8; 2];
    recv.read_exact(&mut len).await?;
    let mut f = vec![0u8; u16::from_be_bytes(len) as usize];
    recv.read_exact(&mut f).await?;
    Ok(wire::decode_control(&f)?)
}

/// A hand-written edge with one link.
struct Edge {
    _ep: quinn::Endpoint,
    conn: quinn::Connection,
    _send: quinn::SendStream,
    recv: quinn::RecvStream,
    session: u32,
    link_seq: u32,
    epoch: Instant,
    marker: u8,
}

impl Edge {
    /// Connects, sends `Join`, expects `Accept`.
    async fn join(f: &Fixture, device: usize, session: u32, link: u8, epoch: Instant) -> Edge {
        let (ep, conn) = connect(f.relay.local_addr(), f.relay_fp, &f.devices[device].0).await;
        let conn = conn.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&wire::encode_control(&Control::Join {
            version: VERSION,
            session,
            link_id: link,
            latency_ms: 500,
            link_name: format!("lte{link}"),
        }))
        .await
        .unwrap();
        let reply = timeout(T, read_control(&mut recv)).await.unwrap().unwrap();
        assert_eq!(
            reply,
            Control::Accept {
                session,
                latency_ms: LATENCY.as_millis() as u32
            },
            "the relay's configured latency is authoritative"
        );
        Edge {
            _ep: ep,
            conn,
            _send: send,
            recv,
            session,
            link_seq: 0,
            epoch,
            marker: device as u8 + 1,
        }
    }

    /// A media datagram of 7 TS packets carrying (marker, seq) in every packet.
    fn media(&mut self, seq: u64) -> Bytes {
        let h = MediaHeader {
            flags: Flags(0),
            session: self.session,
            link_seq: self.link_seq,
            seq,
            send_time_us: self.epoch.elapsed().as_micros() as u64,
            capture_age: 0,
        };
        self.link_seq += 1;
        wire::encode_media(&h, &ts_packets(self.marker, seq))
    }

    fn send(&self, d: Bytes) {
        self.conn.send_datagram(d).unwrap();
    }

    /// Sends media `seq`, returns when it was sent.
    fn send_seq(&mut self, seq: u64) -> Instant {
        let d = self.media(seq);
        let at = Instant::now();
        self.send(d);
        at
    }
}

fn ts_packets(marker: u8, seq: u64) -> Vec<u8> {
    let mut v = vec![0xffu8; 7 * TS_PACKET];
    for (i, p) in v.chunks_mut(TS_PACKET).enumerate() {
        p[0] = 0x47;
        p[1] = 0x01;
        p[2] = 0x00;
        p[3] = 0x10 | (i as u8 & 0x0f);
        p[4] = marker;
        p[5..13].copy_from_slice(&seq.to_be_bytes());
        p[13] = i as u8;
    }
    v
}

/// One output datagram: checks its shape, returns (marker, seq of its first packet).
async fn recv_output(sock: &tokio::net::UdpSocket) -> (u8, u64, Instant) {
    let mut buf = [0u8; 4096];
    let n = timeout(T, sock.recv(&mut buf))
        .await
        .expect("no output datagram")
        .unwrap();
    let at = Instant::now();
    assert_eq!(n, UDP_GROUP, "output datagrams are 7 x 188 bytes");
    for p in buf[..n].chunks(TS_PACKET) {
        assert_eq!(p[0], 0x47, "TS sync byte");
    }
    let seq = u64::from_be_bytes(buf[5..13].try_into().unwrap());
    (buf[4], seq, at)
}

async fn expect_outputs(sock: &tokio::net::UdpSocket, marker: u8, seqs: std::ops::Range<u64>) {
    for want in seqs {
        let (m, seq, _) = recv_output(sock).await;
        assert_eq!((m, seq), (marker, want), "in order, from the right device");
    }
}

/// Sends `seqs` at one datagram every `gap`.
async fn send_paced(e: &mut Edge, seqs: std::ops::Range<u64>, gap: Duration) -> Vec<Instant> {
    let mut at = Vec::new();
    for s in seqs {
        at.push(e.send_seq(s));
        tokio::time::sleep(gap).await;
    }
    at
}

async fn session_stats(f: &Fixture, device: &str) -> relay::SessionStats {
    f.relay
        .stats()
        .await
        .sessions
        .into_iter()
        .find(|s| s.device == device)
        .unwrap_or_else(|| panic!("no session for {device}"))
}

async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = timeout(T, tokio::net::TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: braid\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    timeout(T, s.read_to_end(&mut raw)).await.unwrap().unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (head.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legit_session_is_released_in_order_at_the_configured_latency() {
    let mut f = fixture("legit", 1).await;
    let epoch = Instant::now();
    let mut e = Edge::join(&f, 0, 0x1234_5678, 0, epoch).await;
    let sent = send_paced(&mut e, 0..20, Duration::from_millis(5)).await;
    for (want, sent_at) in sent.iter().enumerate() {
        let (m, seq, at) = recv_output(&f.devices[0].1).await;
        assert_eq!((m, seq), (1, want as u64));
        let delay = at - *sent_at;
        assert!(
            delay >= LATENCY - Duration::from_millis(15)
                && delay <= LATENCY + Duration::from_millis(80),
            "seq {seq} out after {delay:?}, latency is {LATENCY:?}"
        );
    }
    for want in 0..20u64 {
        let ev = f.tap.recv().await.unwrap();
        assert_eq!(
            (ev.device.as_str(), ev.session, ev.seq, ev.bytes),
            ("cam1", 0x1234_5678, want, UDP_GROUP)
        );
        let sent_us = ev.send_time_us;
        let out_us = (ev.at - epoch).as_micros() as u64;
        let d = Duration::from_micros(out_us - sent_us);
        assert!(
            d >= LATENCY - Duration::from_millis(15) && d <= LATENCY + Duration::from_millis(80),
            "{d:?}"
        );
    }
    let s = session_stats(&f, "cam1").await;
    assert_eq!(
        (s.receiver.released, s.receiver.lost, s.receiver.late),
        (20, 0, 0)
    );
    assert_eq!((s.output_datagrams, s.output_errors), (20, 0));
    assert_eq!(s.latency_ms, 100);
    assert_eq!(s.links.len(), 1);
    assert_eq!(s.links[0].name, "lte0");
    f.relay.shutdown().await;
    drop(f.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_wrong_session_and_replay_are_counted_and_the_stream_keeps_flowing() {
    let f = fixture("junk", 1).await;
    let mut e = Edge::join(&f, 0, 77, 0, Instant::now()).await;
    let mut replay = None;
    for s in 0..10 {
        let d = e.media(s);
        if s == 5 {
            replay = Some(d.clone());
        }
        e.send(d);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // Junk: random bytes with a version nibble that is not ours.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let mut junk: Vec<u8> = (0..300).map(|_| rng.gen()).collect();
    junk[0] = 0xf0 | (junk[0] & 0x0f);
    e.send(Bytes::from(junk));
    // A media header cut short.
    e.send(Bytes::from_static(&[
        0x20, 0x00, 0x00, 0x00, 0x00, 0x4d, 0x00,
    ]));
    // A well-formed media datagram of another session.
    let other = wire::encode_media(
        &MediaHeader {
            flags: Flags(0),
            session: 78,
            link_seq: 999,
            seq: 10,
            send_time_us: 0,
            capture_age: 0,
        },
        &ts_packets(9, 10),
    );
    e.send(other);
    // The exact same datagram again.
    e.send(replay.unwrap());
    send_paced(&mut e, 10..20, Duration::from_millis(3)).await;
    expect_outputs(&f.devices[0].1, 1, 0..20).await;

    let s = session_stats(&f, "cam1").await;
    let r = &s.receiver;
    assert_eq!((r.junk, r.wrong_session, r.duplicates), (2, 1, 1), "{r:?}");
    assert_eq!((r.released, r.lost, r.late), (20, 0, 0), "{r:?}");
    // Nothing of the other session reached the output.
    assert_eq!(s.output_datagrams, 20);
    f.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_device_is_refused_without_disturbing_the_live_session() {
    let f = fixture("unknown", 1).await;
    let mut e = Edge::join(&f, 0, 1, 0, Instant::now()).await;
    send_paced(&mut e, 0..5, Duration::from_millis(3)).await;

    // Same name, another key: not the configured certificate.
    let stranger_dir = TempDir::new("stranger").unwrap();
    let stranger = ident(stranger_dir.path(), "cam1");
    let (_ep, conn) = connect(f.relay.local_addr(), f.relay_fp, &stranger).await;
    if let Ok(conn) = conn {
        // TLS 1.3: the client may finish before the relay checks its certificate;
        // the relay then closes the connection. It must never see an Accept.
        let joined = async {
            let (mut send, mut recv) = conn.open_bi().await?;
            send.write_all(&wire::encode_control(&Control::Join {
                version: VERSION,
                session: 1,
                link_id: 1,
                latency_ms: 100,
                link_name: "evil".into(),
            }))
            .await?;
            read_control(&mut recv).await
        };
        match timeout(T, joined).await {
            Ok(Ok(c)) => panic!("unknown device got {c:?}"),
            Ok(Err(_)) => {}
            Err(_) => panic!("unknown device's connection stayed open"),
        }
        timeout(T, conn.closed()).await.expect("connection closed");
    }
    send_paced(&mut e, 5..15, Duration::from_millis(3)).await;
    expect_outputs(&f.devices[0].1, 1, 0..15).await;

    let st = f.relay.stats().await;
    assert_eq!(st.rejected_devices, 1);
    assert_eq!(
        st.connections_total, 1,
        "only the legit link got through TLS"
    );
    assert_eq!(st.sessions.len(), 1);
    let r = &st.sessions[0].receiver;
    assert_eq!((r.released, r.lost), (15, 0));
    f.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_json_and_prometheus_metrics() {
    let f = fixture("http", 1).await;
    let mut e = Edge::join(&f, 0, 4242, 3, Instant::now()).await;
    send_paced(&mut e, 0..5, Duration::from_millis(2)).await;
    expect_outputs(&f.devices[0].1, 1, 0..5).await;
    // A junk datagram so a non-zero refusal counter shows up too.
    e.send(Bytes::from_static(&[0xff, 1, 2, 3]));
    tokio::time::sleep(Duration::from_millis(50)).await;

    let (head, body) = http_get(f.relay.stats_addr(), "/api/stats").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("application/json"),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["connections_total"], 1);
    assert_eq!(v["rejected_devices"], 0);
    let s = &v["sessions"][0];
    assert_eq!(s["device"], "cam1");
    assert_eq!(s["session"], 4242);
    assert_eq!(s["latency_ms"], 100);
    assert_eq!(s["receiver"]["released"], 5);
    assert_eq!(s["receiver"]["junk"], 1);
    assert_eq!(s["links"][0]["id"], 3);
    assert_eq!(s["links"][0]["name"], "lte3");
    assert_eq!(s["output_datagrams"], 5);

    let (head, body) = http_get(f.relay.stats_addr(), "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(
        body.contains("# TYPE braid_relay_released_total counter"),
        "{body}"
    );
    let released = body
        .lines()
        .find_map(|l| {
            l.strip_prefix("braid_relay_released_total{device=\"cam1\",session=\"4242\"} ")
        })
        .unwrap_or_else(|| panic!("{body}"));
    assert!(released.parse::<f64>().unwrap() > 0.0, "{released}");
    for name in [
        "braid_relay_lost_total{",
        "braid_relay_late_total{",
        "braid_relay_duplicates_total{",
        "braid_relay_junk_total{device=\"cam1\",session=\"4242\"} 1",
        "braid_relay_wrong_session_total{",
        "braid_relay_rejected_devices_total 0",
        "braid_relay_sessions 1",
        "braid_relay_buffered_packets{",
        "braid_relay_link_rtt_seconds{device=\"cam1\",session=\"4242\",link=\"3\",link_name=\"lte3\"}",
        "braid_relay_link_bytes_total{",
    ] {
        assert!(body.contains(name), "missing {name} in\n{body}");
    }
    let (head, _) = http_get(f.relay.stats_addr(), "/nope").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    f.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_at_once_get_their_own_outputs() {
    let mut f = fixture("two", 2).await;
    let epoch = Instant::now();
    let mut a = Edge::join(&f, 0, 100, 0, epoch).await;
    let mut b = Edge::join(&f, 1, 200, 0, epoch).await;
    for s in 0..12 {
        a.send_seq(s);
        b.send_seq(s);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let (oa, ob) = (&f.devices[0].1, &f.devices[1].1);
    tokio::join!(expect_outputs(oa, 1, 0..12), expect_outputs(ob, 2, 0..12));
    let mut per_device = std::collections::HashMap::<String, Vec<u64>>::new();
    for _ in 0..24 {
        let ev = f.tap.recv().await.unwrap();
        per_device
            .entry(format!("{}/{}", ev.device, ev.session))
            .or_default()
            .push(ev.seq);
    }
    let want: Vec<u64> = (0..12).collect();
    assert_eq!(per_device["cam1/100"], want);
    assert_eq!(per_device["cam2/200"], want);
    let st = f.relay.stats().await;
    assert_eq!(st.sessions.len(), 2);
    assert_eq!(
        (st.sessions[0].device.as_str(), st.sessions[0].session),
        ("cam1", 100)
    );
    assert_eq!(
        (st.sessions[1].device.as_str(), st.sessions[1].session),
        ("cam2", 200)
    );
    for s in &st.sessions {
        assert_eq!(
            (
                s.receiver.released,
                s.receiver.wrong_session,
                s.output_datagrams
            ),
            (12, 0, 12)
        );
    }
    f.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_first_frame_or_version_gets_reject_and_close() {
    let f = fixture("reject", 1).await;
    for (frame, why) in [
        (
            wire::encode_control(&Control::Join {
                version: VERSION + 1,
                session: 1,
                link_id: 0,
                latency_ms: 100,
                link_name: "x".into(),
            }),
            "version",
        ),
        (
            wire::encode_control(&Control::Accept {
                session: 1,
                latency_ms: 1,
            }),
            "Join",
        ),
        (Bytes::from_static(&[0, 1, 99]), "control frame"),
    ] {
        let (_ep, conn) = connect(f.relay.local_addr(), f.relay_fp, &f.devices[0].0).await;
        let conn = conn.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&frame).await.unwrap();
        match timeout(T, read_control(&mut recv)).await.unwrap().unwrap() {
            Control::Reject { reason } => assert!(reason.contains(why), "{reason}"),
            other => panic!("{other:?}"),
        }
        match timeout(T, conn.closed()).await.unwrap() {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code, CLOSE_REJECTED.into())
            }
            other => panic!("{other:?}"),
        }
    }
    let st = f.relay.stats().await;
    assert_eq!(st.rejected_joins, 3);
    assert!(st.sessions.is_empty());
    f.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_session_tag_replaces_the_device_session() {
    let f = fixture("restart", 1).await;
    let epoch = Instant::now();
    let mut old = Edge::join(&f, 0, 1, 0, epoch).await;
    send_paced(&mut old, 0..3, Duration::from_millis(2)).await;
    expect_outputs(&f.devices[0].1, 1, 0..3).await;

    // The edge restarted: new tag, sequence numbers from 0 again.
    let mut new = Edge::join(&f, 0, 2, 0, Instant::now()).await;
    match timeout(T, old.conn.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, CLOSE_REPLACED.into())
        }
        other => panic!("{other:?}"),
    }
    send_paced(&mut new, 0..4, Duration::from_millis(2)).await;
    expect_outputs(&f.devices[0].1, 1, 0..4).await;
    let st = f.relay.stats().await;
    assert_eq!(st.sessions.len(), 1);
    assert_eq!(st.sessions[0].session, 2);
    assert_eq!(st.sessions[0].receiver.released, 4);
    // Summaries arrive on the control stream of the live link.
    let mut new = new;
    let got = timeout(T, async {
        loop {
            if let Control::Summary(s) = read_control(&mut new.recv).await.unwrap() {
                if s.released == 4 {
                    return s;
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got.latency_ms, 100);
    f.relay.shutdown().await;
    // Shutdown closes the live link.
    timeout(T, new.conn.closed()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_links_of_one_session_merge_in_order_and_a_closed_link_leaves() {
    let f = fixture("bond", 1).await;
    let epoch = Instant::now();
    let mut l0 = Edge::join(&f, 0, 9, 0, epoch).await;
    let mut l1 = Edge::join(&f, 0, 9, 1, epoch).await;
    // Odd seqs on link 1, even on link 0, each pair sent out of order.
    for s in (0..16).step_by(2) {
        let odd = l1.media(s + 1);
        l1.send(odd);
        l0.send_seq(s);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    expect_outputs(&f.devices[0].1, 1, 0..16).await;
    let s = session_stats(&f, "cam1").await;
    assert_eq!(s.links.len(), 2);
    assert_eq!((s.links[0].datagrams, s.links[1].datagrams), (8, 8));
    assert_eq!((s.receiver.released, s.receiver.lost), (16, 0));

    l1.conn.close(0u32.into(), b"link down");
    let gone = timeout(T, async {
        loop {
            let s = session_stats(&f, "cam1").await;
            if s.links.len() == 1 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("closed link leaves the session");
    assert_eq!(gone.links[0].id, 0);
    send_paced(&mut l0, 16..20, Duration::from_millis(2)).await;
    expect_outputs(&f.devices[0].1, 1, 16..20).await;
    assert_eq!(f.relay.stats().await.connections_total, 2);
    f.relay.shutdown().await;
}
