//! Getting an address by DHCP: packets from the dhcproto crate over a UDP socket bound to
//! the interface (SO_BINDTODEVICE) on port 68, broadcast flag set; the lease applied with
//! the classic SIOCSIF*/SIOCADDRT ioctls, DNS servers written to /etc/resolv.conf.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Encodable};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Lease {
    pub interface: String,
    pub address: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// The DHCP server; unspecified for a static address.
    pub server: Ipv4Addr,
    /// "dhcp", or "static" (`ip=...:none`).
    #[serde(default)]
    pub how: String,
}

/// Network interfaces other than loopback, by name.
pub fn interfaces() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.retain(|n| n != "lo");
    v.sort();
    v
}

fn mac_of(iface: &str) -> Result<Vec<u8>> {
    let s = fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .with_context(|| format!("read the address of {iface}"))?;
    s.trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).context("parse a MAC address"))
        .collect()
}

pub(super) fn ifreq(name: &str) -> Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all zeros is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= r.ifr_name.len() {
        bail!("interface name {name} is too long");
    }
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; this reinterprets the bytes.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

pub(super) fn ioctl(fd: i32, req: libc::c_ulong, arg: *mut libc::c_void, what: &str) -> Result<()> {
    // SAFETY: arg points at a live, properly typed struct for this request.
    if unsafe { libc::ioctl(fd, req as _, arg) } < 0 {
        return Err(std::io::Error::last_os_error()).context(what.to_string());
    }
    Ok(())
}

/// Bring an interface up.
pub fn link_up(iface: &str) -> Result<()> {
    let s = UdpSocket::bind("0.0.0.0:0").context("open a socket")?;
    let mut r = ifreq(iface)?;
    ioctl(
        s.as_raw_fd(),
        libc::SIOCGIFFLAGS,
        &mut r as *mut _ as *mut _,
        &format!("read the flags of {iface}"),
    )?;
    // SAFETY: the flags member of the union was just filled by SIOCGIFFLAGS.
    unsafe { r.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(
        s.as_raw_fd(),
        libc::SIOCSIFFLAGS,
        &mut r as *mut _ as *mut _,
        &format!("bring {iface} up"),
    )
}

fn link_has_carrier(iface: &str) -> bool {
    fs::read_to_string(format!("/sys/class/net/{iface}/carrier"))
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

pub fn apply(lease: &Lease) -> Result<()> {
    let s = UdpSocket::bind("0.0.0.0:0").context("open a socket")?;
    let fd = s.as_raw_fd();
    let iface = &lease.interface;
    // The address and the netmask sit in the same slot of ifreq's union.
    for (req, addr, what) in [
        (libc::SIOCSIFADDR, lease.address, "address"),
        (libc::SIOCSIFNETMASK, lease.netmask, "netmask"),
    ] {
        let mut r = ifreq(iface)?;
        r.ifr_ifru.ifru_addr = sockaddr(addr);
        ioctl(
            fd,
            req,
            &mut r as *mut _ as *mut _,
            &format!("set the {what} of {iface}"),
        )?;
    }
    if let Some(gw) = lease.router {
        // SAFETY: rtentry is plain data; zeros are valid.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        let name = std::ffi::CString::new(iface.as_str())?;
        rt.rt_dev = name.as_ptr() as *mut _;
        match ioctl(
            fd,
            libc::SIOCADDRT,
            &mut rt as *mut _ as *mut _,
            "add the default route",
        ) {
            Ok(()) => {}
            Err(e) if e.root_cause().to_string().contains("exists") => {}
            Err(e) => return Err(e),
        }
    }
    if !lease.dns.is_empty() {
        let text: String = lease
            .dns
            .iter()
            .map(|d| format!("nameserver {d}\n"))
            .collect();
        fs::create_dir_all("/etc").ok();
        fs::write("/etc/resolv.conf", text).context("write /etc/resolv.conf")?;
    }
    Ok(())
}

fn exchange(
    sock: &UdpSocket,
    msg: &Message,
    want: MessageType,
    xid: u32,
    deadline: Instant,
) -> Result<Option<Message>> {
    let bytes = msg.to_vec().context("encode a DHCP message")?;
    sock.send_to(&bytes, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))
        .context("send a DHCP message")?;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e).context("receive a DHCP message"),
        };
        let Ok(reply) = Message::from_bytes(&buf[..n]) else {
            continue;
        };
        if reply.xid() == xid && reply.opts().msg_type() == Some(want) {
            return Ok(Some(reply));
        }
        if reply.xid() == xid && reply.opts().msg_type() == Some(MessageType::Nak) {
            bail!("the DHCP server refused the request (NAK)");
        }
    }
    Ok(None)
}

fn request_list() -> DhcpOption {
    DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
    ])
}

/// A client message of `kind` from no address yet, asking for a broadcast reply.
fn message(xid: u32, mac: &[u8], kind: MessageType) -> Message {
    let none = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, none, none, none, none, mac);
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(request_list());
    m
}

/// Get a lease on `iface` and apply it.
pub fn configure(iface: &str, timeout: Duration) -> Result<Lease> {
    let lease = obtain(iface, timeout)?;
    apply(&lease)?;
    Ok(lease)
}

/// UDP port 68 on `iface` alone: SO_REUSEADDR and SO_BINDTODEVICE before the bind, so
/// that every interface can ask at once.
fn dhcp_socket(iface: &str) -> Result<UdpSocket> {
    use nix::sys::socket::{self as so, sockopt};
    let fd = so::socket(
        so::AddressFamily::Inet,
        so::SockType::Datagram,
        so::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("open a DHCP socket")?;
    so::setsockopt(&fd, sockopt::ReuseAddr, &true).context("set SO_REUSEADDR")?;
    so::setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(iface))
        .with_context(|| format!("bind the DHCP socket to {iface}"))?;
    so::bind(
        fd.as_raw_fd(),
        &so::SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)),
    )
    .context("bind UDP port 68")?;
    Ok(UdpSocket::from(fd))
}

/// Get a lease on `iface` (brought up), without applying it.
pub fn obtain(iface: &str, timeout: Duration) -> Result<Lease> {
    link_up(iface)?;
    let mac = mac_of(iface)?;
    let sock = dhcp_socket(iface)?;
    sock.set_broadcast(true).context("allow broadcast")?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .context("set a timeout")?;
    let deadline = Instant::now() + timeout;
    let xid: u32 = std::process::id()
        ^ (Instant::now().elapsed().subsec_nanos())
        ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
    while Instant::now() < deadline {
        let d = message(xid, &mac, MessageType::Discover);
        let Some(offer) = exchange(&sock, &d, MessageType::Offer, xid, deadline)? else {
            continue;
        };
        let server = match offer.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => *s,
            _ => offer.siaddr(),
        };
        let mut r = message(xid, &mac, MessageType::Request);
        r.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
        r.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        r.opts_mut().insert(request_list());
        let Some(ack) = exchange(&sock, &r, MessageType::Ack, xid, deadline)? else {
            continue;
        };
        let o = ack.opts();
        let lease = Lease {
            interface: iface.to_string(),
            address: ack.yiaddr(),
            netmask: match o.get(OptionCode::SubnetMask) {
                Some(DhcpOption::SubnetMask(m)) => *m,
                _ => Ipv4Addr::new(255, 255, 255, 0),
            },
            router: match o.get(OptionCode::Router) {
                Some(DhcpOption::Router(r)) => r.first().copied(),
                _ => None,
            },
            dns: match o.get(OptionCode::DomainNameServer) {
                Some(DhcpOption::DomainNameServer(d)) => d.clone(),
                _ => Vec::new(),
            },
            server,
            how: "dhcp".into(),
        };
        return Ok(lease);
    }
    bail!("no DHCP lease on {iface} within {} s", timeout.as_secs())
}

/// Wait for network interfaces, then get a lease on the first that answers.
pub fn configure_any(timeout: Duration) -> Result<Lease> {
    let start = Instant::now();
    let mut ifaces = interfaces();
    while ifaces.is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(250));
        ifaces = interfaces();
    }
    if ifaces.is_empty() {
        bail!("no network interface (is the card's driver in initramfs/modules.txt?)");
    }
    for i in &ifaces {
        let _ = link_up(i);
    }
    // Prefer links with a carrier; give them a moment to come up.
    let settle = Instant::now();
    while !ifaces.iter().any(|i| link_has_carrier(i)) && settle.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every link with a carrier (all, when none has one yet) asks at once; the first
    // lease wins and only it is applied.
    let asking: Vec<String> = match ifaces.iter().any(|i| link_has_carrier(i)) {
        true => ifaces.into_iter().filter(|i| link_has_carrier(i)).collect(),
        false => ifaces,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    for i in &asking {
        let (tx, i) = (tx.clone(), i.clone());
        std::thread::spawn(move || {
            let _ = tx.send((i.clone(), obtain(&i, timeout)));
        });
    }
    drop(tx);
    let mut errors = Vec::new();
    for (iface, result) in rx {
        match result {
            Ok(lease) => {
                apply(&lease)?;
                return Ok(lease);
            }
            Err(e) => errors.push(format!("{iface}: {e:#}")),
        }
    }
    bail!("DHCP failed on every link: {}", errors.join("; "))
}
