//! The rescue's network orders, in dracut's spelling of the kernel command line:
//! `ip=dhcp`, `ip=IFACE:dhcp`, `ip=CLIENT:[PEER]:GATEWAY:NETMASK:[HOSTNAME]:IFACE:none`
//! (static addressing; the netmask also as a prefix length), `nameserver=IP` and
//! `vlan=NAME:PHYS` (a VLAN interface NAME.VID or NAME with a numeric `.VID` suffix on
//! PHYS). Without `ip=`, DHCP on every link, in parallel.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::dhcp::{self, Lease};

/// One `ip=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum IpOrder {
    /// DHCP on this interface, or on every one (None).
    Dhcp { interface: Option<String> },
    Static {
        interface: String,
        address: Ipv4Addr,
        netmask: Ipv4Addr,
        gateway: Option<Ipv4Addr>,
    },
}

/// One `vlan=`: the VLAN interface, its parent and its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vlan {
    pub name: String,
    pub parent: String,
    pub id: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetOrders {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip: Vec<IpOrder>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlan: Vec<Vlan>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameserver: Vec<Ipv4Addr>,
}

impl NetOrders {
    /// Take the word if it is a network order; Ok(false) when it is not one.
    pub fn take(&mut self, word: &str) -> Result<bool> {
        if let Some(v) = word.strip_prefix("ip=") {
            self.ip.push(parse_ip(v).with_context(|| word.to_string())?);
        } else if let Some(v) = word.strip_prefix("vlan=") {
            self.vlan
                .push(parse_vlan(v).with_context(|| word.to_string())?);
        } else if let Some(v) = word.strip_prefix("nameserver=") {
            self.nameserver.push(
                v.parse()
                    .with_context(|| format!("{word}: not an IPv4 address"))?,
            );
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

/// Make the network the orders describe: VLANs first, then each `ip=` in order (DHCP on
/// every link in parallel when there is none); the first address is the one reported.
pub fn bring_up(orders: &NetOrders) -> Result<Lease> {
    const DHCP: Duration = Duration::from_secs(60);
    for v in &orders.vlan {
        add_vlan(v)?;
    }
    let mut first: Option<Lease> = None;
    let any = [IpOrder::Dhcp { interface: None }];
    let wanted = match orders.ip.is_empty() {
        true => &any[..],
        false => &orders.ip[..],
    };
    for o in wanted {
        let mut lease = match o {
            IpOrder::Dhcp { interface: None } => dhcp::configure_any(DHCP)?,
            IpOrder::Dhcp { interface: Some(i) } => dhcp::configure(i, DHCP)?,
            IpOrder::Static {
                interface,
                address,
                netmask,
                gateway,
            } => {
                dhcp::link_up(interface)?;
                let l = Lease {
                    interface: interface.clone(),
                    address: *address,
                    netmask: *netmask,
                    router: *gateway,
                    dns: orders.nameserver.clone(),
                    server: Ipv4Addr::UNSPECIFIED,
                    how: "static".into(),
                };
                dhcp::apply(&l)?;
                l
            }
        };
        if lease.dns.is_empty() && !orders.nameserver.is_empty() {
            lease.dns = orders.nameserver.clone();
            dhcp::apply(&lease)?;
        }
        first.get_or_insert(lease);
    }
    first.context("no network order")
}

/// `vlan=`: the VLAN interface on its parent (the 8021q module's SIOCSIFVLAN), renamed
/// when the name asked is not PARENT.VID, and brought up.
pub fn add_vlan(v: &Vlan) -> Result<()> {
    #[repr(C)]
    struct VlanIoctlArgs {
        cmd: libc::c_int,
        device1: [libc::c_char; 24],
        u: [u8; 24],
        vlan_qos: libc::c_short,
    }
    const SIOCSIFVLAN: libc::c_ulong = 0x8983;
    const ADD_VLAN_CMD: libc::c_int = 0;
    dhcp::link_up(&v.parent)?;
    let mut a = VlanIoctlArgs {
        cmd: ADD_VLAN_CMD,
        device1: [0; 24],
        u: [0; 24],
        vlan_qos: 0,
    };
    for (d, s) in a.device1.iter_mut().zip(v.parent.bytes()) {
        *d = s as libc::c_char;
    }
    a.u[..4].copy_from_slice(&i32::from(v.id).to_ne_bytes());
    let s = std::net::UdpSocket::bind("0.0.0.0:0").context("open a socket")?;
    dhcp::ioctl(
        std::os::fd::AsRawFd::as_raw_fd(&s),
        SIOCSIFVLAN,
        &mut a as *mut _ as *mut _,
        &format!("add VLAN {} on {}", v.id, v.parent),
    )?;
    let made = format!("{}.{}", v.parent, v.id);
    if made != v.name {
        let mut r = dhcp::ifreq(&made)?;
        let to = dhcp::ifreq(&v.name)?;
        r.ifr_ifru.ifru_newname = to.ifr_name;
        dhcp::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SIOCSIFNAME,
            &mut r as *mut _ as *mut _,
            &format!("rename {made} to {}", v.name),
        )?;
    }
    dhcp::link_up(&v.name)
}

fn interface_name(s: &str) -> Result<String> {
    let ok = !s.is_empty()
        && s.len() < 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    match ok {
        true => Ok(s.to_string()),
        false => bail!("{s:?} is not an interface name"),
    }
}

fn parse_ip(v: &str) -> Result<IpOrder> {
    let f: Vec<&str> = v.split(':').collect();
    match f.as_slice() {
        ["dhcp" | "on" | "any"] => Ok(IpOrder::Dhcp { interface: None }),
        [iface, "dhcp" | "on" | "any"] => Ok(IpOrder::Dhcp {
            interface: Some(interface_name(iface)?),
        }),
        [client, _peer, gw, mask, _host, iface, "none" | "off" | "static", ..] => {
            Ok(IpOrder::Static {
                interface: interface_name(iface)?,
                address: client.parse().context("the client address")?,
                netmask: netmask(mask)?,
                gateway: match *gw {
                    "" => None,
                    g => Some(g.parse().context("the gateway")?),
                },
            })
        }
        _ => bail!(
            "expected dhcp, IFACE:dhcp or CLIENT:[PEER]:GATEWAY:NETMASK:[HOSTNAME]:IFACE:none"
        ),
    }
}

/// A dotted netmask or a prefix length.
fn netmask(s: &str) -> Result<Ipv4Addr> {
    if let Ok(bits) = s.parse::<u32>() {
        if bits > 32 {
            bail!("prefix length {bits} is over 32");
        }
        let m = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
        return Ok(Ipv4Addr::from(m));
    }
    s.parse().context("the netmask")
}

fn parse_vlan(v: &str) -> Result<Vlan> {
    let Some((name, parent)) = v.split_once(':') else {
        bail!("expected NAME:PARENT, such as eth0.100:eth0");
    };
    let digits: String = name
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let id: u16 = digits
        .parse()
        .ok()
        .filter(|id| (1..4095).contains(id))
        .with_context(|| format!("{name} does not end in a VLAN id (1 to 4094)"))?;
    Ok(Vlan {
        name: interface_name(name)?,
        parent: interface_name(parent)?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dracut_spellings_are_read_and_bad_ones_refused() {
        let mut n = NetOrders::default();
        for w in [
            "ip=10.0.2.15::10.0.2.2:255.255.255.0:web01:eth0:none",
            "ip=eth1:dhcp",
            "vlan=eth0.100:eth0",
            "nameserver=10.0.2.3",
        ] {
            assert!(n.take(w).unwrap(), "{w}");
        }
        assert!(!n.take("console=ttyS0").unwrap());
        assert_eq!(
            n.ip[0],
            IpOrder::Static {
                interface: "eth0".into(),
                address: Ipv4Addr::new(10, 0, 2, 15),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            }
        );
        assert_eq!(n.vlan[0].id, 100);
        assert_eq!(netmask("22").unwrap(), Ipv4Addr::new(255, 255, 252, 0));
        for bad in [
            "ip=10.0.2.15",
            "ip=1.2.3.4::1.2.3.1:33::eth0:none",
            "vlan=eth0:eth0",
            "vlan=eth0.5000:eth0",
            "ip=../x:dhcp",
        ] {
            assert!(NetOrders::default().take(bad).is_err(), "{bad}");
        }
    }
}
