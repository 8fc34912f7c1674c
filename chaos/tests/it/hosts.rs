//! Helpers for kernel fault tests: a run's network made by the test, traffic between its
//! hosts (sockets opened inside their namespaces), and the check that nothing is left.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flowline_chaos::Network;
use flowline_chaos::kernel::network::check_privileges;

/// Network creations (each sweeps dead runs' leftovers) take turns, so a test that
/// plants a leftover sees its own network's sweep report it.
pub static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A network of these hosts for test `run`, or `None` (with the reason printed) where
/// this process may not make namespaces.
pub fn network(run: &str, hosts: &[&str]) -> Option<Arc<Network>> {
    if let Err(e) = check_privileges() {
        eprintln!("SKIPPED {run}: {e}");
        return None;
    }
    let _turn = CREATE.lock().unwrap_or_else(|e| e.into_inner());
    Some(Arc::new(Network::create(run, hosts).unwrap()))
}

/// Drop the network and assert that `ip netns list` and `nft list tables` show nothing
/// of run `run`.
pub fn remove_and_assert_gone(net: Arc<Network>) {
    let run = net.run_id().to_string();
    net.remove().unwrap();
    drop(net);
    assert_nothing_left(&run);
}

/// `ip netns list` and `nft list tables` show nothing of run `run`.
pub fn assert_nothing_left(run: &str) {
    let netns = sh("ip", &["netns", "list"]);
    assert!(
        !netns.lines().any(|l| l.contains(&format!("-{run}"))),
        "namespaces of {run} left: {netns}"
    );
    let tables = sh("nft", &["list", "tables"]);
    assert!(
        !tables.contains(&run.replace('-', "_")),
        "nft tables of {run} left: {tables}"
    );
}

fn sh(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Send `n` numbered datagrams from host `from` to host `to`; how many distinct ones
/// arrived. The receiver waits 1.5 s after the last send: a sender whose ARP entry for
/// the receiver failed (a cable was just unplugged) queues its datagrams until the next
/// ARP retry, up to a second later.
pub fn udp_delivered(net: &Network, from: &str, to: &str, n: u32) -> usize {
    let (from, to) = (net.host(from).unwrap(), net.host(to).unwrap());
    let rx = to
        .enter(|| UdpSocket::bind((to.addr(), 0)))
        .unwrap()
        .unwrap();
    let dest = rx.local_addr().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let tx = from
        .enter(|| UdpSocket::bind((from.addr(), 0)))
        .unwrap()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let counter = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = HashSet::new();
            let mut buf = [0u8; 64];
            loop {
                match rx.recv(&mut buf) {
                    Ok(4) => {
                        seen.insert(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                    }
                    Ok(_) => {}
                    Err(_) if done.load(Ordering::SeqCst) => return seen.len(),
                    Err(_) => {}
                }
            }
        })
    };
    for i in 0..n {
        let _ = tx.send_to(&i.to_be_bytes(), dest);
        if i % 50 == 49 {
            // Paced, so the receiver's socket buffer never overflows.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    done.store(true, Ordering::SeqCst);
    counter.join().unwrap()
}

/// A listening TCP socket on host `on` (any free port), for tokio.
pub fn listen(net: &Network, on: &str) -> tokio::net::TcpListener {
    let h = net.host(on).unwrap();
    let l = h
        .enter(|| TcpListener::bind((h.addr(), 0)))
        .unwrap()
        .unwrap();
    l.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(l).unwrap()
}

/// Connect from host `from` to `to`, giving up after `limit`.
pub async fn connect(
    net: &Arc<Network>,
    from: &str,
    to: SocketAddr,
    limit: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let (net, from) = (net.clone(), from.to_string());
    let s = tokio::task::spawn_blocking(move || {
        let h = net.host(&from).unwrap();
        h.enter(|| TcpStream::connect_timeout(&to, limit)).unwrap()
    })
    .await
    .unwrap()?;
    s.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(s)
}
