//! Effects of toxics measured on real TCP through the proxy.

use std::time::Duration;

use flowline_chaos::{Controller, Direction, ToxicKind, ToxicSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::util::{
    CPU, assert_within, echo_server, greeter_server, median, proxy, read_to_end, round_trip,
    source_server,
};

fn toxic(kind: ToxicKind, stream: Direction) -> ToxicSpec {
    ToxicSpec::new(kind, stream)
}

#[tokio::test]
async fn latency_adds_its_delay_on_a_live_connection_and_heals() {
    let _cpu = CPU.read().await;
    let c = Controller::new();
    let addr = proxy(&c, "l", echo_server().await).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let base = round_trip(&mut s, b"x").await;
    assert!(base < Duration::from_millis(20), "baseline {base:?}");

    // Added while the connection is open.
    c.add_toxic(
        "l",
        toxic(
            ToxicKind::Latency {
                latency: 100,
                jitter: 0,
            },
            Direction::Downstream,
        ),
    )
    .unwrap();
    let mut rtts = Vec::new();
    for _ in 0..5 {
        rtts.push(round_trip(&mut s, b"hello").await);
    }
    // Never faster than configured; the median (robust to one scheduling stall of a
    // loaded machine) within 10%.
    assert!(
        rtts.iter().all(|r| *r >= Duration::from_millis(100)),
        "{rtts:?}"
    );
    assert_within(
        "latency",
        median(&mut rtts),
        Duration::from_millis(100),
        10.0,
    );
    // Latency on both directions adds up.
    c.add_toxic(
        "l",
        toxic(
            ToxicKind::Latency {
                latency: 50,
                jitter: 0,
            },
            Direction::Upstream,
        ),
    )
    .unwrap();
    let rtt = round_trip(&mut s, b"hello").await;
    assert_within("both directions", rtt, Duration::from_millis(150), 10.0);

    c.remove_toxic("l", "latency_downstream").unwrap();
    c.remove_toxic("l", "latency_upstream").unwrap();
    let rtt = round_trip(&mut s, b"x").await;
    assert!(rtt < Duration::from_millis(20), "healed rtt {rtt:?}");
}

#[tokio::test]
async fn jitter_spreads_latency_within_its_bounds() {
    let _cpu = CPU.read().await;
    let c = Controller::new();
    let addr = proxy(&c, "j", echo_server().await).await;
    c.add_toxic(
        "j",
        toxic(
            ToxicKind::Latency {
                latency: 60,
                jitter: 40,
            },
            Direction::Downstream,
        ),
    )
    .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut rtts = Vec::new();
    for _ in 0..15 {
        rtts.push(round_trip(&mut s, b"j").await);
    }
    let min = *rtts.iter().min().unwrap();
    let max = *rtts.iter().max().unwrap();
    assert!(min >= Duration::from_millis(20), "min {min:?}");
    // 60 + 40 ms plus 10%; one sample may carry a scheduling stall of a loaded machine.
    let above = rtts
        .iter()
        .filter(|r| **r > Duration::from_millis(110))
        .count();
    assert!(above <= 1, "{above} round trips above 110 ms: {rtts:?}");
    assert!(
        max - min >= Duration::from_millis(20),
        "jitter should spread round trips: {rtts:?}"
    );
}

#[tokio::test]
async fn bandwidth_caps_throughput() {
    let _cpu = CPU.read().await;
    let c = Controller::new();
    // Long enough (1 s) that one scheduling hiccup of a loaded machine stays within 10%.
    let n = 1_000_000;
    let addr = proxy(&c, "b", source_server(n).await).await;
    c.add_toxic(
        "b",
        toxic(ToxicKind::Bandwidth { rate: 1000 }, Direction::Downstream),
    )
    .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await.unwrap();
    let t = Instant::now();
    let (data, err) = read_to_end(&mut s).await;
    let took = t.elapsed();
    assert!(err.is_none(), "{err:?}");
    assert_eq!(data.len() + 1, n);
    // The first 10 ms piece (10 kB) is out when the clock starts: 990 kB at 1000 KB/s.
    assert_within("bandwidth", took, Duration::from_millis(990), 10.0);
}

#[tokio::test]
async fn disabled_proxy_cuts_live_connections_and_refuses_new_ones() {
    let c = Controller::new();
    let addr = proxy(&c, "d", echo_server().await).await;
    let mut live = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut live, b"ok").await;

    c.set_enabled("d", false).await.unwrap();
    let mut buf = [0u8; 8];
    let r = timeout(Duration::from_secs(2), live.read(&mut buf))
        .await
        .expect("live connection must be cut promptly");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    let e = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);

    c.set_enabled("d", true).await.unwrap();
    let mut again = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut again, b"back").await;

    // Right after a disable no byte may pass, even on a connection racing the close.
    for _ in 0..20 {
        c.set_enabled("d", false).await.unwrap();
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s.write_all(b"sneak").await;
            let mut buf = [0u8; 5];
            let r = timeout(Duration::from_secs(2), s.read(&mut buf))
                .await
                .unwrap();
            assert!(
                matches!(r, Ok(0) | Err(_)),
                "data passed a disabled proxy: {r:?}"
            );
        }
        c.set_enabled("d", true).await.unwrap();
    }
}

#[tokio::test]
async fn reset_peer_resets_the_connection() {
    let _cpu = CPU.read().await;
    let c = Controller::new();
    let addr = proxy(&c, "r", echo_server().await).await;
    c.add_toxic(
        "r",
        toxic(ToxicKind::ResetPeer { timeout: 0 }, Direction::Upstream),
    )
    .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"boom").await.unwrap();
    let mut buf = [0u8; 8];
    let r = timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap();
    let e = r.expect_err("a reset, not data or a clean close");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");

    // With a timeout, the reset comes that much later.
    c.update_toxic("r", "reset_peer_upstream", |t| {
        t.updated_from_json(br#"{"attributes":{"timeout":200}}"#)
    })
    .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    s.write_all(b"boom").await.unwrap();
    let r = timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
    assert_within(
        "reset_peer timeout",
        t.elapsed(),
        Duration::from_millis(200),
        10.0,
    );
}

#[tokio::test]
async fn limit_data_closes_after_the_byte_count() {
    let c = Controller::new();
    let addr = proxy(&c, "ld", source_server(10_000).await).await;
    c.add_toxic(
        "ld",
        toxic(ToxicKind::LimitData { bytes: 1234 }, Direction::Downstream),
    )
    .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (data, _err) = timeout(Duration::from_secs(2), read_to_end(&mut s))
        .await
        .unwrap();
    assert_eq!(data.len(), 1234);
    let expect: Vec<u8> = (0..1234).map(|i| (i % 251) as u8).collect();
    assert_eq!(data, expect);
}

#[tokio::test]
async fn timeout_drops_data_then_closes() {
    let _cpu = CPU.read().await;
    let c = Controller::new();
    let addr = proxy(&c, "t", echo_server().await).await;
    c.add_toxic(
        "t",
        toxic(ToxicKind::Timeout { timeout: 300 }, Direction::Downstream),
    )
    .unwrap();
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"anyone?").await.unwrap();
    let (data, _err) = timeout(Duration::from_secs(2), read_to_end(&mut s))
        .await
        .unwrap();
    assert!(data.is_empty(), "timeout lets nothing through: {data:?}");
    assert_within("timeout", t.elapsed(), Duration::from_millis(300), 10.0);

    // timeout 0 holds the connection open until the toxic goes.
    c.update_toxic("t", "timeout_downstream", |t| {
        t.updated_from_json(br#"{"attributes":{"timeout":0}}"#)
    })
    .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"held").await.unwrap();
    let mut buf = [0u8; 8];
    assert!(
        timeout(Duration::from_millis(300), s.read(&mut buf))
            .await
            .is_err(),
        "held: no data and no close"
    );
    c.remove_toxic("t", "timeout_downstream").unwrap();
    round_trip(&mut s, b"free").await;
}

#[tokio::test]
async fn blackhole_drops_one_direction_only_and_heals_live() {
    let c = Controller::new();
    let (up, mut received) = greeter_server().await;
    let addr = proxy(&c, "bh", up).await;
    c.add_toxic("bh", toxic(ToxicKind::Blackhole, Direction::Upstream))
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut hello = [0u8; 5];
    timeout(Duration::from_secs(2), s.read_exact(&mut hello))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&hello, b"hello", "downstream still flows");
    s.write_all(b"ping").await.unwrap();
    assert!(
        timeout(Duration::from_millis(200), received.recv())
            .await
            .is_err(),
        "upstream bytes must be dropped"
    );
    c.remove_toxic("bh", "blackhole_upstream").unwrap();
    s.write_all(b"pong").await.unwrap();
    let got = timeout(Duration::from_secs(2), received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"pong", "the dropped ping stays dropped; pong arrives");
}

#[tokio::test]
async fn slicer_and_slow_close() {
    let _cpu = CPU.read().await;
    let c = Controller::new();
    let addr = proxy(&c, "s", source_server(1000).await).await;
    c.add_toxic(
        "s",
        toxic(
            ToxicKind::Slicer {
                average_size: 100,
                size_variation: 10,
                delay: 5000,
            },
            Direction::Downstream,
        ),
    )
    .unwrap();
    c.add_toxic(
        "s",
        toxic(ToxicKind::SlowClose { delay: 200 }, Direction::Downstream),
    )
    .unwrap();
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut reads = 0;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let mut last_data_at = t;
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        reads += 1;
        last_data_at = Instant::now();
        data.extend_from_slice(&buf[..n]);
    }
    let closed_at = Instant::now();
    let expect: Vec<u8> = (0..1000).map(|i| (i % 251) as u8).collect();
    assert_eq!(data, expect);
    assert!(reads >= 5, "slices arrive separately: {reads} reads");
    assert!(
        closed_at - last_data_at >= Duration::from_millis(150),
        "close delayed by slow_close: {:?}",
        closed_at - last_data_at
    );
}

#[tokio::test]
async fn metrics_count_bytes_per_direction() {
    let c = Controller::new();
    let addr = proxy(&c, "m", echo_server().await).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut s, &[7u8; 1000]).await;
    let text = c.metrics_text();
    for dir in ["upstream", "downstream"] {
        for m in ["received", "sent"] {
            let needle = format!("toxiproxy_proxy_{m}_bytes_total{{direction=\"{dir}\"");
            let line = text
                .lines()
                .find(|l| l.starts_with(&needle))
                .unwrap_or_else(|| panic!("{needle} missing:\n{text}"));
            assert!(line.ends_with(" 1000"), "{line}");
        }
    }
}

#[tokio::test]
async fn bulk_stream_stays_intact_when_a_toxic_arrives_midway() {
    let _cpu = CPU.write().await;
    // Bulk streams without toxics take the splice path; a toxic added midway must take
    // over without losing, duplicating or reordering a byte.
    let c = Controller::new();
    let n = 6 * 1024 * 1024;
    let addr = proxy(&c, "bulk", source_server(n).await).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut got = vec![0u8; 2 * 1024 * 1024];
    s.read_exact(&mut got).await.unwrap();
    c.add_toxic(
        "bulk",
        toxic(
            ToxicKind::Slicer {
                average_size: 30_000,
                size_variation: 1000,
                delay: 0,
            },
            Direction::Downstream,
        ),
    )
    .unwrap();
    let (rest, err) = timeout(Duration::from_secs(10), read_to_end(&mut s))
        .await
        .unwrap();
    assert!(err.is_none(), "{err:?}");
    got.extend_from_slice(&rest);
    assert_eq!(got.len(), n);
    let bad = got
        .iter()
        .enumerate()
        .position(|(i, &b)| b != (i % 251) as u8);
    assert_eq!(bad, None, "first corrupted byte");
    let text = c.metrics_text();
    let line = text
        .lines()
        .find(|l| l.starts_with("toxiproxy_proxy_sent_bytes_total{direction=\"downstream\""))
        .unwrap();
    assert!(line.ends_with(&format!(" {n}")), "{line}");
}

#[tokio::test]
async fn toxic_changes_reach_every_live_connection() {
    let _cpu = CPU.read().await;
    let c = Controller::new();
    let addr = proxy(&c, "many", echo_server().await).await;
    let mut conns = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        round_trip(&mut s, b"hi").await;
        conns.push(s);
    }
    c.add_toxic(
        "many",
        toxic(
            ToxicKind::Latency {
                latency: 80,
                jitter: 0,
            },
            Direction::Downstream,
        ),
    )
    .unwrap();
    // All connections at once: the delays overlap instead of adding up.
    let t = Instant::now();
    let rtts =
        futures_util::future::join_all(conns.iter_mut().map(|s| round_trip(s, b"slow"))).await;
    for rtt in &rtts {
        assert!(*rtt >= Duration::from_millis(80), "{rtt:?}");
    }
    // Serialised they would take 8 s; overlapping, one delay plus some overhead.
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "delays overlap: {:?}",
        t.elapsed()
    );
    c.set_enabled("many", false).await.unwrap();
    for s in &mut conns {
        let mut buf = [0u8; 1];
        let r = timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "every connection cut: {r:?}");
    }
}

#[tokio::test]
async fn toxicity_picks_a_share_of_connections() {
    let _cpu = CPU.read().await;
    let c = Controller::new();
    let addr = proxy(&c, "half", echo_server().await).await;
    let mut spec = toxic(
        ToxicKind::Latency {
            latency: 60,
            jitter: 0,
        },
        Direction::Downstream,
    );
    spec.toxicity = 0.5;
    c.add_toxic("half", spec).unwrap();
    let mut conns = Vec::new();
    for _ in 0..40 {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        conns.push(s);
    }
    let rtts = futures_util::future::join_all(conns.iter_mut().map(|s| round_trip(s, b"?"))).await;
    let slow = rtts
        .iter()
        .filter(|r| **r >= Duration::from_millis(55))
        .count();
    // Binomial(40, 0.5): outside 8..=32 has a probability below 1e-4.
    assert!((8..=32).contains(&slow), "{slow} of 40 slowed: {rtts:?}");
    // The roll is per connection: a slowed connection stays slowed.
    let again = round_trip(&mut conns[0], b"?").await >= Duration::from_millis(55);
    assert_eq!(again, rtts[0] >= Duration::from_millis(55));
}
