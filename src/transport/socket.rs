//! Per-link UDP sockets.
//!
//! Each cellular link gets its own QUIC connection on its own UDP socket, pinned to the
//! link either by interface (`SO_BINDTODEVICE`, which also makes the kernel route via
//! that interface regardless of the main routing table) or by source address (which
//! needs policy routing by source to send out of the right interface).

use std::ffi::OsString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use anyhow::{bail, Context, Result};
use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};

/// Requested kernel socket buffer size (`SO_SNDBUF`/`SO_RCVBUF`). The kernel silently
/// caps it at `net.core.wmem_max`/`rmem_max`; raise those sysctls on the box for the full
/// size. Large send buffers only matter for bursts: Braid paces itself.
pub const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// How a link's socket is tied to its network path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkBind {
    /// `SO_BINDTODEVICE` to this interface (e.g. `wwan0`); needs CAP_NET_RAW.
    Interface(String),
    /// Bind to this local source address.
    Address(IpAddr),
}

impl std::fmt::Display for LinkBind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkBind::Interface(name) => write!(f, "interface {name}"),
            LinkBind::Address(ip) => write!(f, "address {ip}"),
        }
    }
}

/// Linux `IFNAMSIZ` minus the terminating NUL.
const IFNAME_MAX: usize = 15;

/// A non-blocking UDP socket for a link towards `remote`, bound according to `bind`,
/// ready for `quic::endpoint_on`.
pub fn bind_link_socket(bind: &LinkBind, remote: SocketAddr) -> Result<UdpSocket> {
    let domain = Domain::for_address(remote);
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .with_context(|| format!("creating UDP socket for {bind}"))?;
    let local = match bind {
        LinkBind::Address(ip) => {
            if ip.is_ipv4() != remote.is_ipv4() {
                bail!("link {bind}: address family does not match relay address {remote}");
            }
            SocketAddr::new(*ip, 0)
        }
        LinkBind::Interface(name) => {
            if name.is_empty() || name.len() > IFNAME_MAX || name.contains(['/', '\0']) {
                bail!("link {bind}: invalid interface name {name:?}");
            }
            setsockopt(&sock, sockopt::BindToDevice, &OsString::from(name)).map_err(|errno| {
                let hint = match errno {
                    nix::errno::Errno::ENODEV => "no such interface",
                    nix::errno::Errno::EPERM => "permission denied (needs CAP_NET_RAW)",
                    _ => "",
                };
                anyhow::Error::new(io::Error::from(errno)).context(format!(
                    "link {bind}: SO_BINDTODEVICE failed{}{hint}",
                    if hint.is_empty() { "" } else { ": " }
                ))
            })?;
            let unspecified: IpAddr = if remote.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            };
            SocketAddr::new(unspecified, 0)
        }
    };
    if remote.is_ipv6() {
        // Only v6 traffic on a v6 link socket; no v4-mapped surprises.
        sock.set_only_v6(true)
            .with_context(|| format!("link {bind}: IPV6_V6ONLY"))?;
    }
    sock.bind(&local.into()).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::AddrNotAvailable {
            " (address not configured on this host)"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!("link {bind}: binding {local}{hint}"))
    })?;
    set_buffers(&sock, bind);
    sock.set_nonblocking(true)
        .with_context(|| format!("link {bind}: setting non-blocking"))?;
    Ok(sock.into())
}

/// Best effort: a small buffer is a performance problem, not an error.
fn set_buffers(sock: &Socket, bind: &LinkBind) {
    if let Err(e) = sock.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(%bind, error = %e, "SO_SNDBUF");
    }
    if let Err(e) = sock.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(%bind, error = %e, "SO_RCVBUF");
    }
    // Linux reports twice the usable size.
    let snd = sock.send_buffer_size().unwrap_or(0) / 2;
    let rcv = sock.recv_buffer_size().unwrap_or(0) / 2;
    if snd < SOCKET_BUFFER || rcv < SOCKET_BUFFER {
        tracing::debug!(
            %bind,
            snd,
            rcv,
            wanted = SOCKET_BUFFER,
            "socket buffers capped by net.core.wmem_max/rmem_max"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        // `/proc/self` is owned by the effective uid.
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }

    fn echo_source(sock: &UdpSocket) -> SocketAddr {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        sock.send_to(b"ping", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        from
    }

    #[test]
    fn address_bind_sets_source() {
        let remote: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let ip: IpAddr = "127.0.0.11".parse().unwrap();
        let sock = bind_link_socket(&LinkBind::Address(ip), remote).unwrap();
        assert_eq!(sock.local_addr().unwrap().ip(), ip);
        assert_eq!(echo_source(&sock).ip(), ip);
        // Non-blocking: an empty receive would block otherwise.
        let mut buf = [0u8; 4];
        let err = sock.recv_from(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn address_bind_errors() {
        let remote: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let err = bind_link_socket(&LinkBind::Address("::1".parse().unwrap()), remote)
            .unwrap_err()
            .to_string();
        assert!(err.contains("family"), "{err}");
        // TEST-NET-3 is not configured locally.
        let err = format!(
            "{:#}",
            bind_link_socket(&LinkBind::Address("203.0.113.7".parse().unwrap()), remote)
                .unwrap_err()
        );
        assert!(
            err.contains("203.0.113.7") && err.contains("not configured"),
            "{err}"
        );
    }

    #[test]
    fn interface_bind_lo() {
        if !is_root() {
            println!("skipping interface_bind_lo: SO_BINDTODEVICE needs root/CAP_NET_RAW");
            return;
        }
        let remote: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let sock = bind_link_socket(&LinkBind::Interface("lo".into()), remote).unwrap();
        assert!(sock.local_addr().unwrap().ip().is_unspecified());
        assert_eq!(echo_source(&sock).ip(), IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn interface_bind_missing() {
        let remote: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let err = format!(
            "{:#}",
            bind_link_socket(&LinkBind::Interface("braidnope0".into()), remote).unwrap_err()
        );
        assert!(err.contains("braidnope0"), "{err}");
        if is_root() {
            assert!(err.contains("no such interface"), "{err}");
        }
        let err = bind_link_socket(&LinkBind::Interface("a-name-way-too-long".into()), remote)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid interface name"), "{err}");
    }
}
