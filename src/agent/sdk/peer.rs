//! Who really calls: the process that holds the client end of an SDK connection.
//!
//! The `pid` metadata is a claim. The kernel knows the truth: `sock_diag` (netlink) names the
//! client socket of a TCP connection by its four addresses and says its inode and owner uid,
//! and `/proc/PID/fd` says which process holds that inode. A call is the claimed process's
//! only if it (or, for a game's helper, a member of its process group with the same uid)
//! holds the connection. The answer is found once per connection and per claimed pid.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

/// The client socket of one connection, as the kernel knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSocket {
    /// The socket's inode (`socket:[INODE]` in `/proc/PID/fd`).
    pub inode: u64,
    /// The uid that created it.
    pub uid: u32,
}

/// Why the owner of a connection could not be found.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The netlink `sock_diag` request could not be made.
    #[error("cannot ask the kernel who holds the connection (sock_diag {step}): {source}")]
    Diag {
        /// The failed step.
        step: &'static str,
        /// What the kernel said.
        source: nix::Error,
    },
    /// The kernel answered with something other than the socket.
    #[error("the kernel's sock_diag answer is not understood ({0})")]
    Answer(&'static str),
    /// No such socket: the client is gone, or it is not on this host.
    #[error("the kernel knows no client socket for this connection")]
    NotFound,
    /// The kernel finds not even a connection of the agent's own: its `sock_diag` has no TCP
    /// handler (it answers every lookup as it answers one for a socket that is not there).
    #[error(
        "the kernel's sock_diag finds not even the agent's own connection (no TCP handler: module tcp_diag)"
    )]
    NoTcpDiag,
    /// The self-check could not make its connection.
    #[error("cannot make a loopback connection to check sock_diag: {0}")]
    SelfCheck(#[source] std::io::Error),
    /// `/proc` could not be read, so nothing can say which process holds the socket.
    #[error("cannot read {path}: {source}")]
    Proc {
        /// What could not be read.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl PeerError {
    /// Whether the agent itself could not look (the host lacks `sock_diag` or `/proc`), as
    /// opposed to a definite answer about the caller.
    pub fn is_agents_fault(&self) -> bool {
        !matches!(self, Self::NotFound)
    }
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
/// `inet_diag_sockid`: ports, two 16-byte addresses, interface, cookie.
const SOCKID_LEN: usize = 48;

/// The one form an address is compared in: a v4-mapped IPv6 address is the IPv4 address.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The socket family a lookup asks the kernel in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `AF_INET`: IPv4 addresses.
    V4,
    /// `AF_INET6`: IPv6 addresses, IPv4 ones v4-mapped.
    V6,
}

impl Family {
    fn raw(self) -> u8 {
        (match self {
            Self::V4 => libc::AF_INET,
            Self::V6 => libc::AF_INET6,
        }) as u8
    }

    /// The 16 address bytes of `ip` in this family's `inet_diag_sockid` form.
    fn addr_bytes(self, ip: IpAddr) -> [u8; 16] {
        let mut out = [0u8; 16];
        match (self, ip.to_canonical()) {
            (Self::V4, IpAddr::V4(v4)) => out[..4].copy_from_slice(&v4.octets()),
            (Self::V6, IpAddr::V4(v4)) => out = v4.to_ipv6_mapped().octets(),
            (_, IpAddr::V6(v6)) => out = v6.octets(),
        }
        out
    }

    /// The families a connection between `a` and `b` (canonical) may be held in: an IPv4
    /// connection by an `AF_INET` socket or a dual-stack `AF_INET6` one; an IPv6 one only
    /// by `AF_INET6`.
    fn candidates(a: SocketAddr, b: SocketAddr) -> &'static [Family] {
        if a.is_ipv4() && b.is_ipv4() {
            &[Self::V4, Self::V6]
        } else {
            &[Self::V6]
        }
    }
}

/// `inet_diag_sockid` of the socket whose local end is `src` and remote end is `dst`, in
/// `family`'s address form.
fn sock_id(family: Family, src: SocketAddr, dst: SocketAddr) -> [u8; SOCKID_LEN] {
    let mut id = [0u8; SOCKID_LEN];
    id[0..2].copy_from_slice(&src.port().to_be_bytes());
    id[2..4].copy_from_slice(&dst.port().to_be_bytes());
    id[4..20].copy_from_slice(&family.addr_bytes(src.ip()));
    id[20..36].copy_from_slice(&family.addr_bytes(dst.ip()));
    // Interface 0 (any); cookie INET_DIAG_NOCOOKIE: look the socket up by its addresses.
    id[40..48].fill(0xff);
    id
}

/// The ends a `inet_diag_sockid` of `family` names, canonical.
fn ends_of(family: u8, id: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let port = |at: usize| Some(u16::from_be_bytes(id.get(at..at + 2)?.try_into().ok()?));
    let ip = |at: usize| -> Option<IpAddr> {
        let bytes: [u8; 16] = id.get(at..at + 16)?.try_into().ok()?;
        if family == Family::V4.raw() {
            let v4: [u8; 4] = bytes[..4].try_into().ok()?;
            Some(IpAddr::from(v4))
        } else if family == Family::V6.raw() {
            Some(IpAddr::from(bytes).to_canonical())
        } else {
            None
        }
    };
    Some((
        SocketAddr::new(ip(4)?, port(0)?),
        SocketAddr::new(ip(20)?, port(2)?),
    ))
}

/// The `SOCK_DIAG_BY_FAMILY` request for the one TCP socket of `family` from `src` to `dst`.
fn request(family: Family, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let len = NLMSG_HDRLEN + 8 + SOCKID_LEN;
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    // Not a dump: the kernel finds the one socket with these addresses.
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    msg.extend_from_slice(&[family.raw(), libc::IPPROTO_TCP as u8, 0, 0]);
    msg.extend_from_slice(&u32::MAX.to_ne_bytes()); // every TCP state
    msg.extend_from_slice(&sock_id(family, src, dst));
    msg
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// `TCP_ESTABLISHED` in `inet_diag_msg.idiag_state`.
const TCP_ESTABLISHED: u8 = 1;

/// Reads the answer: an `inet_diag_msg` (uid and inode after family, state, timer, retrans,
/// the socket id, expires, rqueue and wqueue) or a netlink error. The socket must be the
/// connected one asked for: the kernel's lookup falls back to a listening socket on the same
/// port when no connected one matches (a client on another host using a game's port as its
/// source port would otherwise be taken for the game). `asked` is the pair of canonical
/// ends (local, remote); the answer's ends are compared in that form, whatever its family.
fn parse_answer(buf: &[u8], asked: (SocketAddr, SocketAddr)) -> Result<ClientSocket, PeerError> {
    let len = u32_at(buf, 0).ok_or(PeerError::Answer("short header"))? as usize;
    let kind = buf
        .get(4..6)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .ok_or(PeerError::Answer("short header"))?;
    let body = buf
        .get(NLMSG_HDRLEN..len.min(buf.len()))
        .ok_or(PeerError::Answer("short message"))?;
    match kind {
        NLMSG_ERROR => {
            let errno = i32::from_ne_bytes(
                body.get(..4)
                    .ok_or(PeerError::Answer("short error"))?
                    .try_into()
                    .expect("four bytes"),
            );
            match -errno {
                libc::ENOENT => Err(PeerError::NotFound),
                e => Err(PeerError::Diag {
                    step: "answer",
                    source: nix::Error::from_raw(e),
                }),
            }
        }
        SOCK_DIAG_BY_FAMILY => {
            if body.get(1) != Some(&TCP_ESTABLISHED) {
                return Err(PeerError::NotFound);
            }
            // Ports and addresses as asked (the cookie is the kernel's own).
            let family = *body
                .first()
                .ok_or(PeerError::Answer("short inet_diag_msg"))?;
            let id = body
                .get(4..4 + SOCKID_LEN)
                .ok_or(PeerError::Answer("short inet_diag_msg"))?;
            if ends_of(family, id) != Some(asked) {
                return Err(PeerError::NotFound);
            }
            let at = 4 + SOCKID_LEN + 12;
            let uid = u32_at(body, at).ok_or(PeerError::Answer("short inet_diag_msg"))?;
            let inode = u32_at(body, at + 4).ok_or(PeerError::Answer("short inet_diag_msg"))?;
            if inode == 0 {
                return Err(PeerError::NotFound);
            }
            Ok(ClientSocket {
                inode: u64::from(inode),
                uid,
            })
        }
        _ => Err(PeerError::Answer("unexpected message type")),
    }
}

/// The socket on this host whose local end is `client` and remote end is `server`: the client
/// end of a connection a server accepted from `client` on `server`. Either may be v4-mapped;
/// an IPv4 connection is looked for among `AF_INET` sockets, then among dual-stack
/// `AF_INET6` ones.
pub fn client_socket(client: SocketAddr, server: SocketAddr) -> Result<ClientSocket, PeerError> {
    let (client, server) = (canonical(client), canonical(server));
    let diag = |step| move |source| PeerError::Diag { step, source };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(diag("socket"))?;
    let mut last = PeerError::NotFound;
    for &family in Family::candidates(client, server) {
        sendto(
            fd.as_raw_fd(),
            &request(family, client, server),
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(diag("send"))?;
        // The kernel answers within the send: the reply is already queued.
        let mut buf = [0u8; 512];
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).map_err(diag("receive"))?;
        match parse_answer(&buf[..n], (client, server)) {
            Err(PeerError::NotFound) => {}
            // A kernel without IPv6 has no AF_INET6 table to look in: that family holds none.
            Err(PeerError::Diag { source, .. })
                if family == Family::V6
                    && matches!(source, nix::Error::EAFNOSUPPORT | nix::Error::EINVAL) => {}
            Err(e) => last = e,
            found => return found,
        }
    }
    Err(last)
}

/// Whether this host's kernel can say who holds a connection: one of the agent's own is looked
/// up. Without it a kernel lacking the TCP diag handler would make every game look like a
/// stranger, since it answers ENOENT for every lookup.
pub fn self_check() -> Result<(), PeerError> {
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").map_err(PeerError::SelfCheck)?;
    let server = listener.local_addr().map_err(PeerError::SelfCheck)?;
    let _client = TcpStream::connect(server).map_err(PeerError::SelfCheck)?;
    let (_accepted, peer) = listener.accept().map_err(PeerError::SelfCheck)?;
    match client_socket(peer, server) {
        Ok(socket) if holds_socket(std::process::id(), socket.inode)? => Ok(()),
        Ok(_) | Err(PeerError::NotFound) => Err(PeerError::NoTcpDiag),
        Err(e) => Err(e),
    }
}

/// Whether process `pid` holds the socket `inode` (any of its descriptors). A process that
/// is gone holds nothing; a `/proc` this agent cannot read is its own fault.
pub fn holds_socket(pid: u32, inode: u64) -> Result<bool, PeerError> {
    let path = format!("/proc/{pid}/fd");
    let dir = match std::fs::read_dir(&path) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && proc_mounted() => return Ok(false),
        Err(source) => return Err(PeerError::Proc { path, source }),
    };
    let target = format!("socket:[{inode}]");
    Ok(dir.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target.as_str())
    }))
}

/// Whether `/proc` is there to say who holds what (this process always has an entry).
fn proc_mounted() -> bool {
    std::path::Path::new("/proc/self/fd").is_dir()
}

/// Whether processes `a` and `b` both exist and have one owner uid.
pub fn same_owner(a: u32, b: u32) -> bool {
    matches!((uid_of(a), uid_of(b)), (Some(x), Some(y)) if x == y)
}

/// The real uid of process `pid` (from `/proc/PID/status`: the owner of `/proc/PID` is root
/// for a process that is not dumpable).
fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A process of group `pgid`, owned by `uid`, that holds socket `inode`.
fn group_member_holding(pgid: u32, uid: u32, inode: u64) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| uid_of(*pid) == Some(uid))
        .filter(|pid| crate::agent::process::process_group(*pid) == Some(pgid))
        .find(|pid| holds_socket(*pid, inode).unwrap_or(false))
}

/// Whether the connection from `client` to `server` belongs to process `pid`: held by it, or
/// by a process of its group with its uid (a game's helper speaking for it).
pub fn verify(client: SocketAddr, server: SocketAddr, pid: u32) -> Verdict {
    let refusal = |e: PeerError| {
        if e.is_agents_fault() {
            Refusal::Unverifiable(Arc::new(e))
        } else {
            Refusal::NoLocalClient
        }
    };
    let socket = client_socket(client, server).map_err(refusal)?;
    if holds_socket(pid, socket.inode).map_err(refusal)? {
        return Ok(());
    }
    let same_uid = uid_of(pid) == Some(socket.uid);
    let group = crate::agent::process::process_group(pid);
    match group {
        Some(pgid)
            if same_uid && group_member_holding(pgid, socket.uid, socket.inode).is_some() =>
        {
            Ok(())
        }
        _ => Err(Refusal::NotTheCaller(pid)),
    }
}

/// Why a connection may not speak for the pid it names.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// Another process holds the connection.
    #[error(
        "metadata \"pid\" is {0}, but this connection is not held by that process or its process group: a game must send its own process id"
    )]
    NotTheCaller(u32),
    /// No socket on this host holds the client end: the caller is on another host, or gone.
    #[error(
        "no process on this host holds the client end of this connection: the SDK serves only the host's own games"
    )]
    NoLocalClient,
    /// The agent could not look (its host lacks `sock_diag` or `/proc`): its own fault, not
    /// the caller's. Calls are still refused (fail closed).
    #[error(
        "the agent cannot verify SDK callers on this host, its own fault and not the game's: {0}; it needs the kernel's sock_diag for TCP (module tcp_diag: `modprobe tcp_diag`) and a readable /proc, or sdk-verify-callers: false in agent.yaml"
    )]
    Unverifiable(#[source] Arc<PeerError>),
}

/// The verdicts found for one connection, per claimed pid (a connection names one pid in
/// practice; a few are remembered, the rest are checked each time).
#[derive(Debug, Clone, Default)]
pub struct Verdicts(Arc<Mutex<Vec<(u32, Verdict)>>>);

/// Whether a connection may speak for one pid.
pub type Verdict = Result<(), Refusal>;

/// Claimed pids remembered per connection.
const REMEMBERED: usize = 4;

impl Verdicts {
    /// The verdict on `pid` found before, if any.
    pub fn get(&self, pid: u32) -> Option<Verdict> {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.iter().find(|(p, _)| *p == pid).map(|(_, r)| r.clone())
    }

    /// Remembers the verdict on `pid`.
    pub fn put(&self, pid: u32, verdict: Verdict) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < REMEMBERED && !v.iter().any(|(p, _)| *p == pid) {
            v.push((pid, verdict));
        }
    }
}

#[cfg(test)]
mod tests;
