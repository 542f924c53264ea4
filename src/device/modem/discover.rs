//! Finding modems in sysfs: each USB device with serial ttys, the tty that speaks AT,
//! and the network interface the same device exposes.
//!
//! For `/sys/class/tty/ttyUSB*` and `ttyACM*`, `device` resolves into the USB tree:
//! `.../usb1/1-3/1-3:1.2/ttyUSB2` (usb-serial) or `.../usb1/1-3/1-3:1.2` (cdc-acm). The
//! first ancestor with `bInterfaceNumber` is the USB interface, and its parent (with
//! `idVendor`) the USB device. A `/sys/class/net/*/device` resolving to an interface of
//! the same USB device (qmi_wwan, cdc_mbim, cdc_ether, rndis) is its network interface.
//!
//! The AT tty is chosen from a table of vendors' interface numbers; for a device not in
//! the table, each tty is offered to a probe (send `AT`, expect `OK`) in interface order.
//! Everything is read under a root path so tests can build a fake tree.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// One modem found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModemPort {
    /// The AT port, e.g. `/dev/ttyUSB2`.
    pub tty: PathBuf,
    /// Its USB interface number.
    pub interface: u8,
    /// The modem's network interface (`wwan0`, `usb0`, `eth1`), if any.
    pub netdev: Option<String>,
    /// The USB device's sysfs name, e.g. `1-3` or `2-1.4`: stable per physical slot.
    pub usb_path: String,
    /// USB vendor and product ids.
    pub vendor: u16,
    pub product: u16,
    /// USB descriptor strings, when present.
    pub manufacturer: Option<String>,
    pub product_name: Option<String>,
}

/// The AT interface number for a known vendor (and product, where it differs).
pub fn known_at_interface(vendor: u16, product: u16) -> Option<u8> {
    match (vendor, product) {
        // Quectel EC2x/EG2x/EM/RM5xx: 0 DM, 1 NMEA, 2 AT, 3 modem.
        (0x2c7c, _) => Some(2),
        // Sierra Wireless MC/EM74xx, EM75xx: 0 DM, 2 NMEA, 3 AT.
        (0x1199, _) => Some(3),
        // SIMCom SIM7600/SIM8200 (1e0e:9001, 9011): 0 DM, 1 NMEA, 2 AT, 3 modem.
        (0x1e0e, _) => Some(2),
        // Huawei ME909s/ME906 in ECM/NCM mode: PCUI (AT) on 2. Sticks vary; the
        // caller's probe checks it answers.
        (0x12d1, _) => Some(2),
        _ => None,
    }
}

/// Vendors whose devices are modems even when no table entry matches.
fn is_modem_vendor(vendor: u16) -> bool {
    matches!(
        vendor,
        0x2c7c | 0x1199 | 0x1e0e | 0x12d1 | 0x05c6 | 0x1bc7 | 0x2cb7 | 0x19d2
    )
}

#[derive(Debug)]
struct UsbTty {
    name: String,
    interface: u8,
}

#[derive(Debug, Default)]
struct UsbDev {
    vendor: u16,
    product: u16,
    manufacturer: Option<String>,
    product_name: Option<String>,
    ttys: Vec<UsbTty>,
    netdevs: Vec<String>,
}

fn read_trim(p: &Path) -> Option<String> {
    let s = fs::read_to_string(p).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn read_hex(p: &Path) -> Option<u16> {
    u16::from_str_radix(&read_trim(p)?, 16).ok()
}

/// From a resolved sysfs device path, the USB interface dir and the USB device dir.
fn usb_ancestors(dev: &Path, stop: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut cur = Some(dev);
    while let Some(p) = cur {
        if p == stop || !p.starts_with(stop) {
            return None;
        }
        if p.join("bInterfaceNumber").is_file() {
            let parent = p.parent()?;
            return parent
                .join("idVendor")
                .is_file()
                .then(|| (p.to_path_buf(), parent.to_path_buf()));
        }
        cur = p.parent();
    }
    None
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Finds modems under `sys_root` (normally `/sys`), naming ttys under `dev_root`
/// (normally `/dev`). `probe` is asked, for devices whose AT interface is not in the
/// table, whether a tty answers AT; it is never called for known vendors.
pub fn discover(
    sys_root: &Path,
    dev_root: &Path,
    mut probe: impl FnMut(&Path) -> bool,
) -> Vec<ModemPort> {
    // Canonical form of the root, so resolved links can be checked to stay under it.
    let root = fs::canonicalize(sys_root).unwrap_or_else(|_| sys_root.to_path_buf());
    let mut devs: BTreeMap<PathBuf, UsbDev> = BTreeMap::new();
    for name in entries(&sys_root.join("class/tty")) {
        if !(name.starts_with("ttyUSB") || name.starts_with("ttyACM")) {
            continue;
        }
        let Ok(dev) = fs::canonicalize(sys_root.join("class/tty").join(&name).join("device"))
        else {
            continue;
        };
        let Some((iface, usb)) = usb_ancestors(&dev, &root) else {
            continue;
        };
        let Some(interface) = read_trim(&iface.join("bInterfaceNumber"))
            .and_then(|s| u8::from_str_radix(&s, 16).ok())
        else {
            continue;
        };
        let entry = devs.entry(usb.clone()).or_insert_with(|| UsbDev {
            vendor: read_hex(&usb.join("idVendor")).unwrap_or(0),
            product: read_hex(&usb.join("idProduct")).unwrap_or(0),
            manufacturer: read_trim(&usb.join("manufacturer")),
            product_name: read_trim(&usb.join("product")),
            ..UsbDev::default()
        });
        entry.ttys.push(UsbTty { name, interface });
    }
    for name in entries(&sys_root.join("class/net")) {
        let Ok(dev) = fs::canonicalize(sys_root.join("class/net").join(&name).join("device"))
        else {
            continue;
        };
        if let Some((_, usb)) = usb_ancestors(&dev, &root) {
            if let Some(d) = devs.get_mut(&usb) {
                d.netdevs.push(name);
            }
        }
    }
    let mut out = Vec::new();
    for (usb, mut d) in devs {
        d.ttys.sort_by_key(|t| (t.interface, t.name.clone()));
        let chosen = match known_at_interface(d.vendor, d.product)
            .and_then(|i| d.ttys.iter().find(|t| t.interface == i))
        {
            Some(t) => Some(t),
            None => d.ttys.iter().find(|t| probe(&dev_root.join(&t.name))),
        };
        let Some(t) = chosen else {
            if is_modem_vendor(d.vendor) {
                tracing::warn!(usb = %usb.display(), "modem without an answering AT port");
            }
            continue;
        };
        out.push(ModemPort {
            tty: dev_root.join(&t.name),
            interface: t.interface,
            netdev: d.netdevs.first().cloned(),
            usb_path: usb
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            vendor: d.vendor,
            product: d.product,
            manufacturer: d.manufacturer,
            product_name: d.product_name,
        });
    }
    out
}

/// [`discover`] on the real `/sys` and `/dev`, probing unknown devices with
/// [`probe_at`](super::poller::probe_at) (500 ms each).
pub fn discover_system() -> Vec<ModemPort> {
    discover(Path::new("/sys"), Path::new("/dev"), |p| {
        super::poller::probe_at(p, std::time::Duration::from_millis(500))
    })
}

/// Builds fake sysfs trees for tests.
#[doc(hidden)]
pub mod fake {
    use std::fs;
    use std::io;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    /// Adds USB device `usb` (e.g. `1-3`) with ids and strings under
    /// `root/devices/usb1/`.
    pub fn usb_device(
        root: &Path,
        usb: &str,
        vendor: u16,
        product: u16,
        maker: &str,
        name: &str,
    ) -> io::Result<()> {
        let d = root.join("devices/usb1").join(usb);
        fs::create_dir_all(&d)?;
        fs::write(d.join("idVendor"), format!("{vendor:04x}\n"))?;
        fs::write(d.join("idProduct"), format!("{product:04x}\n"))?;
        fs::write(d.join("manufacturer"), format!("{maker}\n"))?;
        fs::write(d.join("product"), format!("{name}\n"))
    }

    fn interface(root: &Path, usb: &str, iface: u8) -> io::Result<std::path::PathBuf> {
        let d = root
            .join("devices/usb1")
            .join(usb)
            .join(format!("{usb}:1.{iface}"));
        fs::create_dir_all(&d)?;
        fs::write(d.join("bInterfaceNumber"), format!("{iface:02x}\n"))?;
        Ok(d)
    }

    /// Adds tty `name` on interface `iface`; usb-serial style (`ttyUSB*`, with a port
    /// dir under the interface) or cdc-acm style (`ttyACM*`, the interface itself).
    pub fn tty(root: &Path, usb: &str, iface: u8, name: &str) -> io::Result<()> {
        let i = interface(root, usb, iface)?;
        let dev = if name.starts_with("ttyUSB") {
            let p = i.join(name);
            fs::create_dir_all(&p)?;
            p
        } else {
            i
        };
        let class = root.join("class/tty").join(name);
        fs::create_dir_all(&class)?;
        symlink(&dev, class.join("device"))
    }

    /// Adds network interface `name` on interface `iface` of `usb`.
    pub fn netdev(root: &Path, usb: &str, iface: u8, name: &str) -> io::Result<()> {
        let i = interface(root, usb, iface)?;
        let class = root.join("class/net").join(name);
        fs::create_dir_all(&class)?;
        symlink(&i, class.join("device"))
    }

    /// Adds a tty or netdev that is not on USB (`ttyS0`, `eth0` on PCI).
    pub fn platform(root: &Path, class: &str, name: &str) -> io::Result<()> {
        let d = root.join("devices/platform").join(name);
        fs::create_dir_all(&d)?;
        let c = root.join("class").join(class).join(name);
        fs::create_dir_all(&c)?;
        symlink(&d, c.join("device"))
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;
    use crate::system::TempDir;

    #[test]
    fn finds_known_vendors_with_their_netdevs() {
        let dir = TempDir::new("sysfs").unwrap();
        let r = dir.path();
        usb_device(r, "1-3", 0x2c7c, 0x0125, "Quectel", "EG25-G").unwrap();
        for (i, n) in ["ttyUSB0", "ttyUSB1", "ttyUSB2", "ttyUSB3"]
            .iter()
            .enumerate()
        {
            tty(r, "1-3", i as u8, n).unwrap();
        }
        netdev(r, "1-3", 4, "wwan0").unwrap();
        usb_device(
            r,
            "1-4",
            0x1199,
            0x9071,
            "Sierra Wireless, Incorporated",
            "EM7455",
        )
        .unwrap();
        tty(r, "1-4", 0, "ttyUSB4").unwrap();
        tty(r, "1-4", 2, "ttyUSB5").unwrap();
        tty(r, "1-4", 3, "ttyUSB6").unwrap();
        netdev(r, "1-4", 8, "wwan1").unwrap();
        usb_device(
            r,
            "1-5",
            0x1e0e,
            0x9001,
            "SimTech, Incorporated",
            "SimTech, Incorporated",
        )
        .unwrap();
        for i in 0..4u8 {
            tty(r, "1-5", i, &format!("ttyUSB{}", 7 + i)).unwrap();
        }
        netdev(r, "1-5", 5, "usb0").unwrap();
        platform(r, "tty", "ttyS0").unwrap();
        platform(r, "net", "eth0").unwrap();
        let found = discover(r, Path::new("/dev"), |p| panic!("probed {p:?}"));
        let got: Vec<_> = found
            .iter()
            .map(|m| {
                (
                    m.tty.to_str().unwrap(),
                    m.netdev.as_deref(),
                    m.usb_path.as_str(),
                    m.vendor,
                    m.interface,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("/dev/ttyUSB2", Some("wwan0"), "1-3", 0x2c7c, 2),
                ("/dev/ttyUSB6", Some("wwan1"), "1-4", 0x1199, 3),
                ("/dev/ttyUSB9", Some("usb0"), "1-5", 0x1e0e, 2),
            ]
        );
        assert_eq!(found[0].product, 0x0125);
        assert_eq!(found[0].product_name.as_deref(), Some("EG25-G"));
        assert_eq!(
            found[1].manufacturer.as_deref(),
            Some("Sierra Wireless, Incorporated")
        );
    }

    #[test]
    fn unknown_vendor_is_probed_in_interface_order() {
        let dir = TempDir::new("sysfs-probe").unwrap();
        let r = dir.path();
        usb_device(r, "2-1", 0x1bc7, 0x1201, "Telit", "LE910C4").unwrap();
        tty(r, "2-1", 0, "ttyACM0").unwrap();
        tty(r, "2-1", 2, "ttyACM1").unwrap();
        tty(r, "2-1", 3, "ttyACM2").unwrap();
        netdev(r, "2-1", 4, "eth1").unwrap();
        // A USB-serial adapter that never answers.
        usb_device(r, "2-2", 0x0403, 0x6001, "FTDI", "FT232R").unwrap();
        tty(r, "2-2", 0, "ttyUSB0").unwrap();
        let mut asked = Vec::new();
        let found = discover(r, Path::new("/dev"), |p| {
            asked.push(p.to_path_buf());
            p.ends_with("ttyACM1")
        });
        assert_eq!(
            asked,
            ["/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyUSB0"].map(PathBuf::from)
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].tty, PathBuf::from("/dev/ttyACM1"));
        assert_eq!(found[0].netdev.as_deref(), Some("eth1"));
        assert_eq!(found[0].interface, 2);
    }

    #[test]
    fn known_vendor_missing_interface_falls_back_to_probe() {
        let dir = TempDir::new("sysfs-huawei").unwrap();
        let r = dir.path();
        usb_device(r, "1-1", 0x12d1, 0x1506, "HUAWEI_MOBILE", "HUAWEI_MOBILE").unwrap();
        tty(r, "1-1", 0, "ttyUSB0").unwrap();
        tty(r, "1-1", 1, "ttyUSB1").unwrap();
        let found = discover(r, Path::new("/dev"), |p| p.ends_with("ttyUSB1"));
        assert_eq!(found[0].tty, PathBuf::from("/dev/ttyUSB1"));
        assert_eq!(found[0].netdev, None);
        assert!(discover(&r.join("nowhere"), Path::new("/dev"), |_| true).is_empty());
    }
}
