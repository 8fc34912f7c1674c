//! Kernel faults between hosts in network namespaces the test makes, each measured on
//! real traffic, then checked to leave nothing behind (`ip netns list`, `nft list tables`).
//! They need root; where namespaces cannot be made they print why and skip.

use std::sync::Arc;
use std::time::Duration;

use flowline_chaos::fault::FaultSpec;
use flowline_chaos::kernel::forward::Forward;
use flowline_chaos::{EventLog, Links, Network, Schedule, ScheduleHandle, Targets};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

use crate::hosts::{
    CREATE, assert_nothing_left, connect, listen, network, remove_and_assert_gone, udp_delivered,
};

fn faults(json: &str) -> Vec<FaultSpec> {
    serde_json::from_str(json).unwrap()
}

fn targets(net: &Arc<Network>) -> Targets {
    Targets::new(Links::None).with_network(net.clone())
}

/// Run `json`'s faults against `net` and wait until they are all injected.
async fn inject(net: &Arc<Network>, json: &str) -> ScheduleHandle {
    let list = faults(json);
    let n = list.len();
    let events = EventLog::in_memory(std::time::Instant::now());
    let h = Schedule::new(list, targets(net), events)
        .unwrap()
        .run(Instant::now());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ev = h.events().events();
        if ev.iter().filter(|e| e.action == "inject").count() == n {
            return h;
        }
        assert!(h.errors().is_empty(), "{:?}", h.errors());
        assert!(Instant::now() < deadline, "not injected: {ev:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `f` on a blocking thread (UDP counting blocks).
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test]
async fn loss_drops_its_share_one_way_and_heals() {
    let Some(net) = network("kt-loss", &["a", "b"]) else {
        return;
    };
    let h = inject(
        &net,
        r#"[{"at":"0s","kind":"loss","target":"a","peer":"b","direction":"to","percent":20}]"#,
    )
    .await;
    let n = 4000;
    let n2 = net.clone();
    let got = blocking(move || udp_delivered(&n2, "a", "b", n)).await;
    let lost = 100.0 * f64::from(n - got as u32) / f64::from(n);
    eprintln!("loss 20%: {lost:.1}% of {n} datagrams lost");
    assert!(
        (15.0..=25.0).contains(&lost),
        "a → b lost {lost:.1}%, expected 20 ± 5"
    );
    // The other way is untouched.
    let n2 = net.clone();
    let back = blocking(move || udp_delivered(&n2, "b", "a", 2000)).await;
    assert!(back >= 1990, "b → a delivered {back} of 2000");

    let ev = h.events().events();
    let inj = ev.iter().find(|e| e.action == "inject").unwrap();
    assert_eq!(
        (inj.kind.as_str(), inj.target.clone()),
        ("loss", vec!["a".to_string()])
    );
    assert_eq!(inj.params["peers"], serde_json::json!(["b"]));
    assert_eq!(inj.params["percent"], serde_json::json!(20.0));

    h.shutdown().await.unwrap();
    let n2 = net.clone();
    let after = blocking(move || udp_delivered(&n2, "a", "b", 2000)).await;
    assert!(after >= 1990, "healed a → b delivered {after} of 2000");
    remove_and_assert_gone(net);
}

#[tokio::test]
async fn one_way_partition_delivers_nothing_that_way_while_the_other_way_flows() {
    let Some(net) = network("kt-partition", &["a", "b", "c"]) else {
        return;
    };
    let l = listen(&net, "b");
    let b_addr = l.local_addr().unwrap();
    let accept = tokio::spawn(async move { l.accept().await.unwrap().0 });
    let mut ab = connect(&net, "a", b_addr, Duration::from_secs(5))
        .await
        .unwrap();
    let mut ba = accept.await.unwrap();

    let h = inject(
        &net,
        r#"[{"at":"0s","kind":"partition","target":"a","peer":"b","direction":"to"}]"#,
    )
    .await;
    let n2 = net.clone();
    assert_eq!(blocking(move || udp_delivered(&n2, "a", "b", 500)).await, 0);
    let n2 = net.clone();
    assert_eq!(
        blocking(move || udp_delivered(&n2, "b", "a", 500)).await,
        500
    );
    // Only the pair named: a still reaches c.
    let n2 = net.clone();
    assert_eq!(
        blocking(move || udp_delivered(&n2, "a", "c", 500)).await,
        500
    );

    // Half-open TCP: b's bytes reach a, a's never reach b.
    ba.write_all(b"from-b").await.unwrap();
    let mut buf = [0u8; 6];
    timeout(Duration::from_secs(5), ab.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"from-b");
    ab.write_all(b"from-a").await.unwrap();
    assert!(
        timeout(Duration::from_millis(1500), ba.read(&mut buf))
            .await
            .is_err(),
        "a's bytes crossed a partition"
    );
    assert!(
        connect(&net, "a", b_addr, Duration::from_secs(1))
            .await
            .is_err(),
        "a connected to b through a partition"
    );

    h.shutdown().await.unwrap();
    // What a wrote arrives once TCP retransmits after the heal.
    timeout(Duration::from_secs(20), ba.read_exact(&mut buf))
        .await
        .expect("a's bytes never arrived after the heal")
        .unwrap();
    assert_eq!(&buf, b"from-a");
    remove_and_assert_gone(net);
}

#[tokio::test]
async fn block_new_keeps_an_open_websocket_while_new_connects_fail() {
    let Some(net) = network("kt-blocknew", &["client", "server"]) else {
        return;
    };
    let l = listen(&net, "server");
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let open_ws = |net: Arc<Network>| async move {
        let s = connect(&net, "client", addr, Duration::from_secs(1)).await?;
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), s)
            .await
            .map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(ws)
    };
    let mut ws = open_ws(net.clone()).await.unwrap();

    let h = inject(
        &net,
        r#"[{"at":"0s","kind":"block_new","target":"server"}]"#,
    )
    .await;
    for i in 0..20 {
        let text = format!("ping {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let echo = timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the open WebSocket stalled under block_new")
            .unwrap()
            .unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        open_ws(net.clone()).await.is_err(),
        "a new connection got through block_new"
    );

    h.shutdown().await.unwrap();
    let mut again = open_ws(net.clone())
        .await
        .expect("new connections still fail after the heal");
    again.send(Message::text("after")).await.unwrap();
    assert!(timeout(Duration::from_secs(5), again.next()).await.is_ok());
    drop((ws, again));
    remove_and_assert_gone(net);
}

/// Bytes per second host `from` can push to `to` over TCP, measured at the receiver from
/// its first byte to the last of `total`.
async fn throughput(net: &Arc<Network>, from: &str, to: &str, total: usize) -> f64 {
    let l = listen(net, to);
    let addr = l.local_addr().unwrap();
    let recv = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        let mut first = None;
        while got < total {
            let k = s.read(&mut buf).await.unwrap();
            assert!(k > 0, "closed after {got} bytes");
            first.get_or_insert_with(Instant::now);
            got += k;
        }
        (got, first.unwrap().elapsed())
    });
    let mut s = connect(net, from, addr, Duration::from_secs(5))
        .await
        .unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        let k = chunk.len().min(total - sent);
        s.write_all(&chunk[..k]).await.unwrap();
        sent += k;
    }
    let (got, took) = timeout(Duration::from_secs(60), recv)
        .await
        .unwrap()
        .unwrap();
    got as f64 / took.as_secs_f64()
}

#[tokio::test]
async fn bandwidth_caps_a_hosts_cable_within_ten_percent() {
    let Some(net) = network("kt-bandwidth", &["a", "b"]) else {
        return;
    };
    let _cpu = crate::util::CPU.write().await;
    // 1,000 KB/s into b only.
    let h = inject(
        &net,
        r#"[{"at":"0s","kind":"bandwidth","target":"b","direction":"from","rate":1000}]"#,
    )
    .await;
    let capped = throughput(&net, "a", "b", 3_000_000).await;
    let err = (capped - 1_000_000.0).abs() / 1_000_000.0 * 100.0;
    eprintln!("bandwidth 1000 KB/s: measured {capped:.0} B/s ({err:.1}% off)");
    assert!(
        err <= 10.0,
        "a → b at {capped:.0} B/s, {err:.1}% off 1,000,000"
    );
    let other_way = throughput(&net, "b", "a", 3_000_000).await;
    assert!(
        other_way > 3.0 * capped,
        "b → a at {other_way:.0} B/s, capped too?"
    );
    h.shutdown().await.unwrap();
    let healed = throughput(&net, "a", "b", 3_000_000).await;
    assert!(
        healed > 3.0 * capped,
        "a → b at {healed:.0} B/s after the heal"
    );
    remove_and_assert_gone(net);
}

#[tokio::test]
async fn unplug_breaks_the_cable_and_plugging_back_restores_it() {
    let Some(net) = network("kt-unplug", &["a", "b"]) else {
        return;
    };
    let l = listen(&net, "b");
    let addr = l.local_addr().unwrap();
    let accept = tokio::spawn(async move { l.accept().await.unwrap().0 });
    let mut ab = connect(&net, "a", addr, Duration::from_secs(5))
        .await
        .unwrap();
    let mut ba = accept.await.unwrap();

    let h = inject(&net, r#"[{"at":"0s","kind":"unplug","target":"b"}]"#).await;
    let carrier = std::process::Command::new("ip")
        .args(["-n", net.host("b").unwrap().netns(), "link", "show", "eth0"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&carrier.stdout).contains("NO-CARRIER"),
        "{carrier:?}"
    );
    ab.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    assert!(
        timeout(Duration::from_millis(1500), ba.read(&mut one))
            .await
            .is_err(),
        "a byte crossed an unplugged cable"
    );
    assert!(
        connect(&net, "a", addr, Duration::from_secs(1))
            .await
            .is_err()
    );
    let n2 = net.clone();
    assert_eq!(blocking(move || udp_delivered(&n2, "a", "b", 200)).await, 0);

    h.shutdown().await.unwrap();
    timeout(Duration::from_secs(20), ba.read_exact(&mut one))
        .await
        .expect("the byte never arrived after plugging back")
        .unwrap();
    let n2 = net.clone();
    assert_eq!(
        blocking(move || udp_delivered(&n2, "a", "b", 200)).await,
        200
    );
    remove_and_assert_gone(net);
}

#[tokio::test]
async fn dropping_the_schedule_heals_kernel_faults() {
    let Some(net) = network("kt-drop", &["a", "b"]) else {
        return;
    };
    let h = inject(
        &net,
        r#"[{"at":"0s","kind":"partition","target":"a"},
            {"at":"0s","kind":"unplug","target":"b"},
            {"at":"0s","kind":"bandwidth","target":"a","rate":100}]"#,
    )
    .await;
    let n2 = net.clone();
    assert_eq!(blocking(move || udp_delivered(&n2, "a", "b", 100)).await, 0);
    drop(h);
    let n2 = net.clone();
    assert_eq!(
        blocking(move || udp_delivered(&n2, "a", "b", 100)).await,
        100
    );
    let qdisc = std::process::Command::new("tc")
        .args([
            "-n",
            net.host("a").unwrap().netns(),
            "qdisc",
            "show",
            "dev",
            "eth0",
        ])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&qdisc.stdout).contains("tbf"),
        "{qdisc:?}"
    );
    remove_and_assert_gone(net);
}

#[tokio::test]
async fn overlapping_unplugs_hold_the_cable_down_until_the_last_heals() {
    let Some(net) = network("kt-overlap", &["a", "b"]) else {
        return;
    };
    let events = EventLog::in_memory(std::time::Instant::now());
    let mut h = Schedule::new(
        faults(
            r#"[{"at":"0s","duration":"300ms","kind":"unplug","target":"b"},
                {"at":"0s","duration":"4s","kind":"unplug","target":"*"}]"#,
        ),
        targets(&net),
        events,
    )
    .unwrap()
    .run(Instant::now());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let n2 = net.clone();
    assert_eq!(blocking(move || udp_delivered(&n2, "a", "b", 50)).await, 0);
    h.wait().await;
    let n2 = net.clone();
    assert_eq!(blocking(move || udp_delivered(&n2, "a", "b", 50)).await, 50);
    remove_and_assert_gone(net);
}

#[tokio::test]
async fn faults_that_do_not_fit_the_network_are_refused_before_they_run() {
    // `_harness`: the harness's own port into the network, which no fault may reach.
    let Some(net) = network("kt-check", &["node1", "redis", "_harness"]) else {
        return;
    };
    let refused = |json: &str, net: Option<&Arc<Network>>| {
        let t = match net {
            Some(n) => targets(n),
            None => Targets::new(Links::None),
        };
        let events = EventLog::in_memory(std::time::Instant::now());
        Schedule::new(faults(json), t, events)
            .unwrap_err()
            .to_string()
    };
    let e = refused(
        r#"[{"at":"0s","kind":"loss","target":"node1","percent":5}]"#,
        None,
    );
    assert!(e.contains("--isolation netns"), "{e}");
    let e = refused(
        r#"[{"at":"0s","kind":"partition","target":"node9"}]"#,
        Some(&net),
    );
    assert!(e.contains("matches no host (hosts: node1, redis)"), "{e}");
    let e = refused(
        r#"[{"at":"0s","kind":"partition","target":"_harness"}]"#,
        Some(&net),
    );
    assert!(e.contains("matches no host (hosts: node1, redis)"), "{e}");
    let e = refused(
        r#"[{"at":"0s","kind":"partition","target":"node1","peer":"_*"}]"#,
        Some(&net),
    );
    assert!(e.contains("peer \"_*\" matches no host"), "{e}");
    let e = refused(
        r#"[{"at":"0s","kind":"partition","target":"node1","peer":"postgres"}]"#,
        Some(&net),
    );
    assert!(e.contains("peer \"postgres\" matches no host"), "{e}");
    let e = refused(
        r#"[{"at":"0s","kind":"unplug","target":"node1","peer":"redis"}]"#,
        Some(&net),
    );
    assert!(e.contains("`peer` does not apply"), "{e}");
    let e = refused(
        r#"[{"at":"0s","kind":"bandwidth","target":"redis","rate":10,"stream":"upstream"}]"#,
        Some(&net),
    );
    assert!(e.contains("not `stream`"), "{e}");
    let e = refused(
        r#"[{"at":"0s","kind":"bandwidth","target":"client-node1","rate":10,"direction":"to"}]"#,
        Some(&net),
    );
    assert!(
        e.contains("`direction` applies to faults between hosts"),
        "{e}"
    );
    let e = refused(
        r#"[{"at":"0s","kind":"loss","target":"node1","percent":150}]"#,
        Some(&net),
    );
    assert!(e.contains("percent must be within"), "{e}");
    remove_and_assert_gone(net);
}

#[test]
fn netem_kinds_are_refused_at_check_where_the_kernel_has_no_netem() {
    let support = flowline_chaos::netem::support();
    for json in [
        r#"{"at":"0s","kind":"delay","target":"node1","delay":"100ms","jitter":"10ms"}"#,
        r#"{"at":"0s","kind":"reorder","target":"node1","delay":"10ms","percent":25}"#,
        r#"{"at":"0s","kind":"duplicate","target":"node1","percent":5}"#,
        r#"{"at":"0s","kind":"corrupt","target":"node1","percent":5}"#,
    ] {
        let f: FaultSpec = serde_json::from_str(json).unwrap();
        match (&support, f.validate(1)) {
            (Ok(()), r) => r.unwrap(),
            (Err(why), Err(e)) => {
                assert!(e.to_string().contains(why.as_str()), "{e}");
                assert!(why.contains("netem"), "{why}");
            }
            (Err(why), Ok(())) => panic!("{json} accepted without netem ({why})"),
        }
    }
    if let Err(why) = support {
        eprintln!("netem is not here: {why}");
    }
}

#[test]
fn a_new_network_removes_the_leftovers_of_a_dead_run_and_says_so() {
    if let Err(e) = flowline_chaos::kernel::network::check_privileges() {
        eprintln!("SKIPPED: {e}");
        return;
    }
    // A pid that is certainly dead: a child that has exited and been reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let leftovers = [
        format!("flowline-{dead}-kt-dead"),
        format!("flowline-{dead}-kt-dead-node1"),
    ];
    let _turn = CREATE.lock().unwrap_or_else(|e| e.into_inner());
    for ns in &leftovers {
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", ns])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let net = Network::create("kt-sweeper", &["a"]).unwrap();
    let mut removed = net.leftovers_removed().to_vec();
    removed.sort();
    assert_eq!(removed, leftovers.to_vec());
    assert_nothing_left("kt-dead");
    // A live owner's namespaces are not leftovers: ours survived the sweep.
    assert!(net.host("a").unwrap().netns_path().exists());
    drop(net);
    assert_nothing_left("kt-sweeper");
}

#[tokio::test]
async fn a_forward_lets_the_harness_reach_a_host_that_has_no_route_out() {
    let Some(net) = network("kt-forward", &["a", "b"]) else {
        return;
    };
    let l = listen(&net, "b");
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    // A host has no route out: the kernel refuses before a packet leaves (TEST-NET-1,
    // so nothing would answer anyway).
    let a = net.host("a").unwrap();
    let out = a
        .enter(|| {
            std::net::TcpStream::connect_timeout(
                &"192.0.2.1:80".parse().unwrap(),
                Duration::from_secs(1),
            )
        })
        .unwrap()
        .unwrap_err();
    assert_eq!(out.kind(), std::io::ErrorKind::NetworkUnreachable, "{out}");

    let fwd = Forward::start(net.host("a").unwrap().clone(), addr)
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(fwd.local_addr())
        .await
        .unwrap();
    s.write_all(b"through").await.unwrap();
    let mut buf = [0u8; 7];
    timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"through");
    drop((s, fwd));
    remove_and_assert_gone(net);
}
