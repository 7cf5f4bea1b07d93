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
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
/// `inet_diag_sockid`: ports, two 16-byte addresses, interface, cookie.
const SOCKID_LEN: usize = 48;

/// `inet_diag_sockid` of the socket whose local end is `src` and remote end is `dst`.
fn sock_id(src: SocketAddr, dst: SocketAddr) -> [u8; SOCKID_LEN] {
    fn addr(ip: IpAddr) -> [u8; 16] {
        let mut out = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => out = v6.octets(),
        }
        out
    }
    let mut id = [0u8; SOCKID_LEN];
    id[0..2].copy_from_slice(&src.port().to_be_bytes());
    id[2..4].copy_from_slice(&dst.port().to_be_bytes());
    id[4..20].copy_from_slice(&addr(src.ip()));
    id[20..36].copy_from_slice(&addr(dst.ip()));
    // Interface 0 (any); cookie INET_DIAG_NOCOOKIE: look the socket up by its addresses.
    id[40..48].fill(0xff);
    id
}

/// The `SOCK_DIAG_BY_FAMILY` request for the one TCP socket from `src` to `dst`.
fn request(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let family = if src.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    } as u8;
    let len = NLMSG_HDRLEN + 8 + SOCKID_LEN;
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    // Not a dump: the kernel finds the one socket with these addresses.
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    msg.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    msg.extend_from_slice(&u32::MAX.to_ne_bytes()); // every TCP state
    msg.extend_from_slice(&sock_id(src, dst));
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
/// source port would otherwise be taken for the game).
fn parse_answer(buf: &[u8], asked: &[u8; SOCKID_LEN]) -> Result<ClientSocket, PeerError> {
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
            if body.get(4..4 + 36) != Some(&asked[..36]) {
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
/// end of a connection a server accepted from `client` on `server`.
pub fn client_socket(client: SocketAddr, server: SocketAddr) -> Result<ClientSocket, PeerError> {
    let diag = |step| move |source| PeerError::Diag { step, source };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(diag("socket"))?;
    let asked = sock_id(client, server);
    sendto(
        fd.as_raw_fd(),
        &request(client, server),
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(diag("send"))?;
    // The kernel answers within the send: the reply is already queued.
    let mut buf = [0u8; 512];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).map_err(diag("receive"))?;
    parse_answer(&buf[..n], &asked)
}

/// Whether process `pid` holds the socket `inode` (any of its descriptors).
pub fn holds_socket(pid: u32, inode: u64) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let target = format!("socket:[{inode}]");
    dir.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target.as_str())
    })
}

/// The owner uid of process `pid`.
fn uid_of(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// A process of group `pgid`, owned by `uid`, that holds socket `inode`.
fn group_member_holding(pgid: u32, uid: u32, inode: u64) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| uid_of(*pid) == Some(uid))
        .filter(|pid| crate::process::process_group(*pid) == Some(pgid))
        .find(|pid| holds_socket(*pid, inode))
}

/// Whether the connection from `client` to `server` belongs to process `pid`: held by it, or
/// by a process of its group with its uid (a game's helper speaking for it).
pub fn verify(client: SocketAddr, server: SocketAddr, pid: u32) -> Verdict {
    let socket = client_socket(client, server).map_err(|e| Refusal::Unverifiable(Arc::new(e)))?;
    if holds_socket(pid, socket.inode) {
        return Ok(());
    }
    let same_uid = uid_of(pid) == Some(socket.uid);
    let group = crate::process::process_group(pid);
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
    /// The kernel could not say who holds the connection.
    #[error("cannot verify the caller: {0} (sdk-verify-callers: false turns verification off)")]
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
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn the_kernel_names_the_process_that_holds_a_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = TcpStream::connect(server).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        let socket = client_socket(peer, server).expect("sock_diag answers");
        assert_eq!(socket.uid, nix::unistd::getuid().as_raw());
        assert!(holds_socket(std::process::id(), socket.inode));
        verify(peer, server, std::process::id()).expect("the test holds its own connection");
        // A process of another group does not hold it; one of this group speaks for it.
        use std::os::unix::process::CommandExt;
        let mut stranger = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let mut helper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let verdicts = (
            verify(peer, server, stranger.id()),
            verify(peer, server, helper.id()),
        );
        for child in [&mut stranger, &mut helper] {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(
            matches!(verdicts.0, Err(Refusal::NotTheCaller(p)) if p == stranger.id()),
            "{:?}",
            verdicts.0
        );
        assert!(verdicts.1.is_ok(), "{:?}", verdicts.1);
        drop(client);
    }

    /// The kernel falls back to a listening socket on the port asked for; that is not the
    /// caller. (Asked for a client "from" a listener's own port, which no connection uses.)
    #[test]
    fn a_listening_socket_is_never_taken_for_the_caller() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let game_port = TcpListener::bind("127.0.0.1:0").unwrap();
        let spoofed = game_port.local_addr().unwrap();
        assert!(matches!(
            client_socket(spoofed, server),
            Err(PeerError::NotFound)
        ));
    }

    #[test]
    fn a_socket_that_is_gone_is_not_found() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let unused = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(matches!(
            client_socket(unused, server),
            Err(PeerError::NotFound)
        ));
    }

    #[test]
    fn answers_that_are_short_or_strange_are_errors_not_panics() {
        for bad in [
            &[][..],
            &[1, 0, 0, 0, 2, 0][..],
            &[40, 0, 0, 0, 99, 0, 0, 0][..],
        ] {
            assert!(parse_answer(bad, &[0; SOCKID_LEN]).is_err(), "{bad:?}");
        }
    }
}
