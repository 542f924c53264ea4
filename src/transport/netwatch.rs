//! Interface watching: links come and go at runtime (modem reset, interface down/up,
//! new address after reattach).
//!
//! A NETLINK_ROUTE socket subscribed to link and address notifications is used only as
//! a trigger; on any message, and on a 2 s fallback tick, the interface table is re-read
//! with `getifaddrs` and diffed against the previous [`Snapshot`] by the pure function
//! [`diff`]. The watcher therefore never parses netlink messages and cannot be confused
//! by a lost notification (socket overflow just triggers another re-read).
//!
//! An interface is *usable* when it is `IFF_UP` and `IFF_RUNNING` (administratively up
//! and carrier/operstate up or unknown). IPv6 link-local addresses (`fe80::/10`) are
//! ignored: they cannot reach the relay, and they appear a moment after every link-up,
//! which would otherwise produce a spurious [`NetEvent::AddrChanged`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::{TimeVal, TimeValLike};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Fallback re-read interval, in case a notification is missed.
pub const FALLBACK_TICK: Duration = Duration::from_secs(2);

/// State of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IfState {
    /// `IFF_UP && IFF_RUNNING`.
    pub usable: bool,
    /// Addresses, sorted, without IPv6 link-local ones.
    pub addrs: Vec<IpAddr>,
}

/// All interfaces by name.
pub type Snapshot = BTreeMap<String, IfState>;

/// A change in the usable interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// The interface became usable (or appeared usable); `addrs` is its address list.
    Up { name: String, addrs: Vec<IpAddr> },
    /// The interface stopped being usable or disappeared.
    Down { name: String },
    /// A usable interface's addresses changed; `addrs` is the new full list.
    AddrChanged { name: String, addrs: Vec<IpAddr> },
}

impl NetEvent {
    pub fn name(&self) -> &str {
        match self {
            NetEvent::Up { name, .. }
            | NetEvent::Down { name }
            | NetEvent::AddrChanged { name, .. } => name,
        }
    }
}

/// Events that turn `prev` into `next`. Only usable interfaces produce `Up` and
/// `AddrChanged`; address changes on an unusable interface are silent (the next `Up`
/// carries the then-current list). Output is ordered by interface name.
pub fn diff(prev: &Snapshot, next: &Snapshot) -> Vec<NetEvent> {
    let mut out = Vec::new();
    for (name, p) in prev {
        let still_usable = next.get(name).is_some_and(|n| n.usable);
        if p.usable && !still_usable {
            out.push(NetEvent::Down { name: name.clone() });
        }
    }
    for (name, n) in next {
        if !n.usable {
            continue;
        }
        match prev.get(name) {
            Some(p) if p.usable => {
                if p.addrs != n.addrs {
                    out.push(NetEvent::AddrChanged {
                        name: name.clone(),
                        addrs: n.addrs.clone(),
                    });
                }
            }
            _ => out.push(NetEvent::Up {
                name: name.clone(),
                addrs: n.addrs.clone(),
            }),
        }
    }
    out.sort_by(|a, b| a.name().cmp(b.name()));
    out
}

fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// Reads the current interface table.
pub fn snapshot() -> Result<Snapshot> {
    let mut snap = Snapshot::new();
    for ifa in nix::ifaddrs::getifaddrs().context("getifaddrs")? {
        let st = snap.entry(ifa.interface_name.clone()).or_default();
        st.usable = ifa
            .flags
            .contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING);
        let ip = ifa.address.as_ref().and_then(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        });
        if let Some(ip) = ip.filter(|ip| !is_ipv6_link_local(ip)) {
            st.addrs.push(ip);
        }
    }
    for st in snap.values_mut() {
        st.addrs.sort();
        st.addrs.dedup();
    }
    Ok(snap)
}

/// How often the netlink reader thread wakes up to notice that the watcher is gone.
const READER_POLL: Duration = Duration::from_millis(500);

fn netlink_socket() -> Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .context("creating NETLINK_ROUTE socket")?;
    let groups = (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))
        .context("binding NETLINK_ROUTE socket to link/address groups")?;
    let poll = TimeVal::milliseconds(READER_POLL.as_millis() as i64);
    setsockopt(&fd, sockopt::ReceiveTimeout, &poll).context("SO_RCVTIMEO on netlink socket")?;
    Ok(fd)
}

/// Running watcher; dropping it stops the background task (and, within
/// `READER_POLL`, the netlink reader thread).
#[derive(Debug)]
pub struct NetWatcher {
    task: JoinHandle<()>,
}

impl Drop for NetWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching (inside a tokio runtime). The receiver first gets an `Up` for every
/// interface usable right now, then changes as they happen, so folding the events gives
/// the current state. The task also ends when the receiver is dropped.
pub fn watch(capacity: usize) -> Result<(NetWatcher, mpsc::Receiver<NetEvent>)> {
    // Subscribe before the first read so no change can fall in between.
    let fd = netlink_socket()?;
    let first = snapshot()?;
    // Capacity 1: a pending trigger already covers any later notifications.
    let (trig_tx, trig_rx) = mpsc::channel(1);
    std::thread::Builder::new()
        .name("braid-netlink".into())
        .spawn(move || read_netlink(fd, trig_tx))
        .context("spawning netlink reader thread")?;
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let task = tokio::spawn(run(trig_rx, tx, first));
    Ok((NetWatcher { task }, rx))
}

async fn run(mut trig: mpsc::Receiver<()>, tx: mpsc::Sender<NetEvent>, first: Snapshot) {
    let mut prev = Snapshot::new();
    let mut next = Some(first);
    let mut tick = tokio::time::interval(FALLBACK_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut netlink_ok = true;
    loop {
        if let Some(snap) = next.take() {
            for ev in diff(&prev, &snap) {
                tracing::debug!(?ev, "interface change");
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            prev = snap;
        }
        tokio::select! {
            t = trig.recv(), if netlink_ok => if t.is_none() {
                tracing::warn!("netlink reader stopped; polling interfaces every {FALLBACK_TICK:?}");
                netlink_ok = false;
            },
            _ = tick.tick() => {}
            _ = tx.closed() => return,
        }
        match snapshot() {
            Ok(s) => next = Some(s),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "reading interfaces"),
        }
    }
}

/// Blocking reader: every netlink notification (or burst of them) becomes one trigger.
/// The messages themselves are discarded. Returns when the watcher is gone or the
/// socket fails.
fn read_netlink(fd: OwnedFd, trig: mpsc::Sender<()>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            // ENOBUFS: notifications were dropped; the re-read that follows covers them.
            Ok(_) | Err(Errno::ENOBUFS) => {
                // Drain the rest of a burst so it costs a single re-read.
                loop {
                    match recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                        Ok(n) if n > 0 => {}
                        Err(Errno::ENOBUFS) => {}
                        _ => break,
                    }
                }
                match trig.try_send(()) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
                    Err(mpsc::error::TrySendError::Closed(())) => return,
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {
                if trig.is_closed() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "netlink recv failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn st(usable: bool, addrs: &[&str]) -> IfState {
        IfState {
            usable,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn snap(items: &[(&str, IfState)]) -> Snapshot {
        items
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect()
    }

    fn ips(a: &[&str]) -> Vec<IpAddr> {
        a.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn diff_cases() {
        let empty = Snapshot::new();
        let a = snap(&[
            ("lo", st(true, &["127.0.0.1"])),
            ("wwan0", st(true, &["10.0.0.2"])),
            ("wwan1", st(false, &[])),
        ]);
        // Initial state: only usable interfaces come up.
        assert_eq!(
            diff(&empty, &a),
            vec![
                NetEvent::Up {
                    name: "lo".into(),
                    addrs: ips(&["127.0.0.1"])
                },
                NetEvent::Up {
                    name: "wwan0".into(),
                    addrs: ips(&["10.0.0.2"])
                },
            ]
        );
        assert!(diff(&a, &a).is_empty());

        // wwan0 changes address, wwan1 comes up, lo disappears.
        let b = snap(&[
            ("wwan0", st(true, &["10.0.0.3"])),
            ("wwan1", st(true, &["100.64.1.1"])),
        ]);
        assert_eq!(
            diff(&a, &b),
            vec![
                NetEvent::Down { name: "lo".into() },
                NetEvent::AddrChanged {
                    name: "wwan0".into(),
                    addrs: ips(&["10.0.0.3"])
                },
                NetEvent::Up {
                    name: "wwan1".into(),
                    addrs: ips(&["100.64.1.1"])
                },
            ]
        );

        // Goes down but keeps its address; address changes while down are silent.
        let c = snap(&[
            ("wwan0", st(false, &["10.0.0.3"])),
            ("wwan1", st(true, &["100.64.1.1"])),
        ]);
        assert_eq!(
            diff(&b, &c),
            vec![NetEvent::Down {
                name: "wwan0".into()
            }]
        );
        let d = snap(&[
            ("wwan0", st(false, &["10.0.0.9"])),
            ("wwan1", st(true, &["100.64.1.1"])),
        ]);
        assert!(diff(&c, &d).is_empty());
        // Up again with the current list.
        let e = snap(&[
            ("wwan0", st(true, &["10.0.0.9"])),
            ("wwan1", st(true, &["100.64.1.1"])),
        ]);
        assert_eq!(
            diff(&d, &e),
            vec![NetEvent::Up {
                name: "wwan0".into(),
                addrs: ips(&["10.0.0.9"])
            }]
        );
        // Unusable interface vanishing: nothing.
        let f = snap(&[("wwan1", st(true, &["100.64.1.1"]))]);
        assert!(diff(&d, &f).is_empty());
        // Up without addresses is still Up (the address follows as AddrChanged).
        let g = snap(&[("x", st(true, &[]))]);
        assert_eq!(
            diff(&empty, &g),
            vec![NetEvent::Up {
                name: "x".into(),
                addrs: vec![]
            }]
        );
    }

    #[test]
    fn link_local_filter() {
        assert!(is_ipv6_link_local(&"fe80::1".parse().unwrap()));
        assert!(is_ipv6_link_local(&"febf::1".parse().unwrap()));
        assert!(!is_ipv6_link_local(&"fec0::1".parse().unwrap()));
        assert!(!is_ipv6_link_local(&"2001:db8::1".parse().unwrap()));
        assert!(!is_ipv6_link_local(&"169.254.0.1".parse().unwrap()));
    }

    #[test]
    fn snapshot_sees_loopback() {
        let s = snapshot().unwrap();
        let lo = s.get("lo").expect("lo present");
        assert!(lo.usable);
        assert!(lo.addrs.contains(&"127.0.0.1".parse().unwrap()));
    }

    const TEST_IF: &str = "braidt0";

    /// Effective uid 0 (`/proc/self` is owned by the effective uid).
    fn is_root() -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }

    fn ip(args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("running ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Deletes the test interface on drop, also when the test fails.
    struct IfGuard;
    impl Drop for IfGuard {
        fn drop(&mut self) {
            let _ = ip(&["link", "del", TEST_IF]);
        }
    }

    /// Creates the test interface: `dummy` if the kernel has it, else `ifb` (also a
    /// carrier-up virtual device; some containers lack the dummy module).
    fn create_test_if() -> Result<IfGuard, String> {
        let _ = ip(&["link", "del", TEST_IF]);
        match ip(&["link", "add", TEST_IF, "type", "dummy"]) {
            Ok(()) => Ok(IfGuard),
            Err(e1) => ip(&["link", "add", TEST_IF, "type", "ifb"])
                .map(|()| IfGuard)
                .map_err(|e2| format!("{e1}; {e2}")),
        }
    }

    async fn expect(
        rx: &mut mpsc::Receiver<NetEvent>,
        what: &str,
        pred: impl Fn(&NetEvent) -> bool,
    ) -> NetEvent {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(ev)) if ev.name() == TEST_IF && pred(&ev) => return ev,
                Ok(Some(ev)) if ev.name() == TEST_IF => println!("(skipping {ev:?})"),
                Ok(Some(_)) => {}
                Ok(None) => panic!("watcher ended while waiting for {what}"),
                Err(_) => panic!("no {what} for {TEST_IF} within 1 s"),
            }
        }
    }

    #[tokio::test]
    async fn watcher_reports_real_interface_changes() {
        if !is_root() {
            println!(
                "skipping watcher_reports_real_interface_changes: needs root to create interfaces"
            );
            return;
        }
        let (_watcher, mut rx) = watch(64).unwrap();
        let _guard = match create_test_if() {
            Ok(g) => g,
            Err(e) => {
                println!("skipping watcher_reports_real_interface_changes: {e}");
                return;
            }
        };
        let addr: IpAddr = "10.254.77.1".parse().unwrap();

        ip(&["link", "set", TEST_IF, "up"]).unwrap();
        expect(&mut rx, "Up", |e| matches!(e, NetEvent::Up { .. })).await;

        ip(&["addr", "add", "10.254.77.1/24", "dev", TEST_IF]).unwrap();
        expect(&mut rx, "address", |e| match e {
            NetEvent::AddrChanged { addrs, .. } | NetEvent::Up { addrs, .. } => {
                addrs.contains(&addr)
            }
            NetEvent::Down { .. } => false,
        })
        .await;

        ip(&["link", "set", TEST_IF, "down"]).unwrap();
        expect(&mut rx, "Down", |e| matches!(e, NetEvent::Down { .. })).await;

        // Up again: the IPv4 address survived the down and is reported with the Up.
        ip(&["link", "set", TEST_IF, "up"]).unwrap();
        expect(
            &mut rx,
            "Up with address",
            |e| matches!(e, NetEvent::Up { addrs, .. } if addrs.contains(&addr)),
        )
        .await;

        // Deleting a usable interface is a Down.
        ip(&["link", "del", TEST_IF]).unwrap();
        expect(&mut rx, "Down on delete", |e| {
            matches!(e, NetEvent::Down { .. })
        })
        .await;
    }
}
