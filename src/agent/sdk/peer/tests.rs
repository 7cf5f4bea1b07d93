//! Caller verification against the real kernel: every socket family, strangers, the self-check.

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
    assert!(holds_socket(std::process::id(), socket.inode).unwrap());
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

/// One connection in every shape a gRPC stack makes: the client's socket family and
/// address, the server's listening address, and the peer address the server then sees.
fn connection(listen: &str, connect_to: impl Fn(u16) -> String) -> Option<Connection> {
    let listener = TcpListener::bind(listen).ok()?;
    let server = listener.local_addr().unwrap();
    let client = TcpStream::connect(connect_to(server.port())).ok()?;
    let (accepted, peer) = listener.accept().unwrap();
    Some(Connection {
        server: accepted.local_addr().unwrap(),
        peer,
        _ends: (client, accepted),
    })
}

struct Connection {
    /// The server's end, as the server sees it.
    server: SocketAddr,
    /// The client's end, as the server sees it.
    peer: SocketAddr,
    _ends: (TcpStream, TcpStream),
}

/// Checks that the connection is found as this process's, and that a stranger (another
/// process group) and a process of another uid in this group may not speak for it.
fn verified_for_its_holder_only(c: &Connection, shape: &str) {
    let socket = client_socket(c.peer, c.server)
        .unwrap_or_else(|e| panic!("{shape}: sock_diag finds the client socket: {e}"));
    assert!(
        holds_socket(std::process::id(), socket.inode).unwrap(),
        "{shape}"
    );
    verify(c.peer, c.server, std::process::id())
        .unwrap_or_else(|e| panic!("{shape}: the holder is verified: {e}"));
    use std::os::unix::process::CommandExt;
    let mut stranger = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    let verdict = verify(c.peer, c.server, stranger.id());
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert!(
        matches!(verdict, Err(Refusal::NotTheCaller(p)) if p == stranger.id()),
        "{shape}: a stranger claiming the holder's connection: {verdict:?}"
    );
}

/// gRPC C-core, Java and .NET: a dual-stack AF_INET6 socket connected to
/// `::ffff:127.0.0.1`, to a server listening on 127.0.0.1 (the default `sdk-listen`).
#[test]
fn a_dual_stack_client_of_an_ipv4_server_is_found() {
    let c = connection("127.0.0.1:0", |port| format!("[::ffff:127.0.0.1]:{port}"))
        .expect("a dual-stack socket connects to a v4-mapped address");
    assert!(c.peer.is_ipv4(), "the server sees an IPv4 peer: {}", c.peer);
    verified_for_its_holder_only(&c, "AF_INET6 client, AF_INET server");
}

/// Go and Node.js: AF_INET clients, also to a dual-stack server on `[::]`, which sees them
/// as v4-mapped peers.
#[test]
fn ipv4_and_v4_mapped_peers_of_a_dual_stack_server_are_found() {
    let Some(c) = connection("[::]:0", |port| format!("127.0.0.1:{port}")) else {
        return; // a kernel without IPv6: no dual-stack server to test
    };
    assert!(
        matches!(c.peer.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()),
        "{}",
        c.peer
    );
    verified_for_its_holder_only(&c, "AF_INET client, AF_INET6 [::] server");
    let c = connection("[::]:0", |port| format!("[::ffff:127.0.0.1]:{port}")).unwrap();
    verified_for_its_holder_only(&c, "AF_INET6 v4-mapped client, AF_INET6 [::] server");
}

/// `sdk-listen: "[::1]:5758"`: IPv6 on both ends.
#[test]
fn an_ipv6_connection_is_found() {
    let Some(c) = connection("[::1]:0", |port| format!("[::1]:{port}")) else {
        return; // no IPv6 loopback on this kernel
    };
    verified_for_its_holder_only(&c, "AF_INET6 ::1");
}

#[test]
fn addresses_compare_in_one_form() {
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:5758".parse().unwrap();
    assert_eq!(canonical(mapped), "127.0.0.1:5758".parse().unwrap());
    let v6: SocketAddr = "[::1]:5758".parse().unwrap();
    assert_eq!(canonical(v6), v6);
    let (a, b): (SocketAddr, SocketAddr) = (
        "127.0.0.1:40000".parse().unwrap(),
        "127.0.0.1:5758".parse().unwrap(),
    );
    for family in [Family::V4, Family::V6] {
        let id = sock_id(family, a, b);
        assert_eq!(ends_of(family.raw(), &id), Some((a, b)), "{family:?}");
    }
    assert_eq!(Family::candidates(a, b), &[Family::V4, Family::V6]);
    assert_eq!(Family::candidates(v6, v6), &[Family::V6]);
}

#[test]
fn only_a_lookup_that_could_not_be_made_is_the_agents_fault() {
    assert!(!PeerError::NotFound.is_agents_fault());
    assert!(PeerError::Answer("short header").is_agents_fault());
    let unreadable = PeerError::Proc {
        path: "/proc/1/fd".into(),
        source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    };
    assert!(unreadable.is_agents_fault());
    let said = Refusal::Unverifiable(Arc::new(unreadable)).to_string();
    assert!(said.contains("its own fault"), "{said}");
    assert!(said.contains("sdk-verify-callers: false"), "{said}");
}

#[test]
fn this_kernel_passes_the_self_check() {
    self_check().expect("sock_diag finds the agent's own connection");
    assert!(PeerError::NoTcpDiag.is_agents_fault());
    assert_eq!(
        uid_of(std::process::id()),
        Some(nix::unistd::getuid().as_raw())
    );
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
        let nowhere = "127.0.0.1:1".parse().unwrap();
        assert!(parse_answer(bad, (nowhere, nowhere)).is_err(), "{bad:?}");
    }
}
