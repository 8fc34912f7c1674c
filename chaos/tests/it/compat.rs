//! Compatibility: the third-party `toxiproxy_rust` client (blocking) drives the API
//! through its whole surface; raw HTTP checks status codes and the error shape.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use toxiproxy_rust::client::Client;
use toxiproxy_rust::proxy::ProxyPack;

use crate::util::{ApiServer, echo_server};

fn echo_once(addr: &str) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"ping")?;
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf)?;
    Ok(buf.to_vec())
}

#[test]
fn toxiproxy_rust_client_drives_the_whole_api() {
    let server = ApiServer::start();
    let upstream = server.block_on(echo_server()).to_string();
    let client = Client::new(server.addr);

    assert!(client.is_running());
    let version = client.version().unwrap();
    assert!(version.contains("\"version\""), "{version}");

    // populate: create two proxies
    let proxies = client
        .populate(vec![
            ProxyPack::new("a".into(), "127.0.0.1:0".into(), upstream.clone()),
            ProxyPack::new("b".into(), "localhost:0".into(), upstream.clone()),
        ])
        .unwrap();
    assert_eq!(proxies.len(), 2);
    let a_listen = proxies[0].proxy_pack.listen.clone();
    assert!(
        !a_listen.ends_with(":0"),
        "listen is the bound port: {a_listen}"
    );
    assert_eq!(echo_once(&a_listen).unwrap(), b"ping");

    // list and get
    let all = client.all().unwrap();
    assert_eq!(all.len(), 2);
    assert!(all["b"].proxy_pack.enabled);
    let a = client.find_proxy("a").unwrap();
    assert_eq!(a.proxy_pack.listen, a_listen);
    assert_eq!(a.proxy_pack.upstream, upstream);
    assert!(client.find_proxy("nope").is_err());

    // toxics: add all of Toxiproxy's kinds through the client's helpers
    a.with_latency("downstream".into(), 10, 2, 1.0)
        .with_bandwidth("upstream".into(), 1000, 1.0)
        .with_slow_close("upstream".into(), 5, 1.0)
        .with_slicer("downstream".into(), 64, 8, 10, 0.5);
    a.with_timeout("upstream".into(), 0, 0.0)
        .with_limit_data("downstream".into(), 1_000_000, 1.0);
    let toxics = a.toxics().unwrap();
    let names: Vec<_> = toxics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(toxics.len(), 6, "{names:?}");
    for want in [
        "latency_downstream",
        "bandwidth_upstream",
        "slow_close_upstream",
        "slicer_downstream",
        "timeout_upstream",
        "limit_data_downstream",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let slicer = toxics.iter().find(|t| t.r#type == "slicer").unwrap();
    assert_eq!(slicer.toxicity, 0.5);
    assert_eq!(slicer.attributes["average_size"], 64);
    // The proxy still works with (toxicity-0 timeout and) the other toxics.
    assert_eq!(echo_once(&a_listen).unwrap(), b"ping");

    // apply(): runs the closure and removes every toxic
    a.apply(|| {}).unwrap();
    assert!(a.toxics().unwrap().is_empty());

    // disable/enable: a disabled proxy refuses connections
    a.disable().unwrap();
    assert!(!client.find_proxy("a").unwrap().proxy_pack.enabled);
    assert!(echo_once(&a_listen).is_err());
    a.enable().unwrap();
    assert_eq!(echo_once(&a_listen).unwrap(), b"ping");
    a.with_down(|| assert!(echo_once(&a_listen).is_err()))
        .unwrap();
    assert_eq!(echo_once(&a_listen).unwrap(), b"ping");

    // reset: enables everything and drops toxics
    a.with_latency("downstream".into(), 1, 0, 1.0);
    a.disable().unwrap();
    client.reset().unwrap();
    let a2 = client.find_and_reset_proxy("a").unwrap();
    assert!(a2.proxy_pack.enabled);
    assert!(a2.proxy_pack.toxics.is_empty());
    assert_eq!(echo_once(&a_listen).unwrap(), b"ping");

    // populate again with the bound address: kept as is (toxics included)
    a2.with_latency("upstream".into(), 1, 0, 1.0);
    let again = client
        .populate(vec![ProxyPack::new(
            "a".into(),
            a_listen.clone(),
            upstream.clone(),
        )])
        .unwrap();
    assert_eq!(
        again[0].proxy_pack.toxics.len(),
        1,
        "populate kept the proxy"
    );

    // delete
    client.find_proxy("b").unwrap().delete().unwrap();
    assert_eq!(client.all().unwrap().len(), 1);
}

#[tokio::test]
async fn raw_api_status_codes_and_error_shape() {
    let c = flowline_chaos::Controller::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(flowline_chaos::serve_api(c.clone(), listener, stop.clone()));
    let upstream = echo_server().await.to_string();
    let http = reqwest::Client::new();
    let post =
        |path: &str, body: serde_json::Value| http.post(format!("{base}{path}")).json(&body).send();

    let r = post(
        "/proxies",
        serde_json::json!({"name":"x","listen":"127.0.0.1:0","upstream":upstream}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    assert_eq!(created["name"], "x");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["toxics"], serde_json::json!([]));

    let r = post(
        "/proxies",
        serde_json::json!({"name":"x","listen":"127.0.0.1:0","upstream":upstream}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error":"proxy already exists","status":409})
    );

    let r = post("/proxies", serde_json::json!({"name":"y"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "missing required field: upstream");

    let r = post(
        "/proxies",
        serde_json::json!({"name":"z","listen":"127.0.0.1:0","upstream":"10.1.2.3:5432"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400, "non-loopback upstream is refused");

    let r = http
        .get(format!("{base}/proxies"))
        .header("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "browsers are refused (CSRF), as in Toxiproxy"
    );

    let r = http
        .get(format!("{base}/proxies/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error":"proxy not found","status":404})
    );

    let r = post(
        "/proxies/x/toxics",
        serde_json::json!({"type":"latency","stream":"sideways"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = post("/proxies/x/toxics", serde_json::json!({"type":"bogus"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid toxic type");

    let r = post(
        "/proxies/x/toxics",
        serde_json::json!({"type":"latency","attributes":{"latency":50}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let t: serde_json::Value = r.json().await.unwrap();
    assert_eq!(t["name"], "latency_downstream");
    let r = post("/proxies/x/toxics", serde_json::json!({"type":"latency"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    let r = http
        .patch(format!("{base}/proxies/x/toxics/latency_downstream"))
        .json(&serde_json::json!({"attributes":{"jitter":5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        t["attributes"],
        serde_json::json!({"latency":50,"jitter":5})
    );

    let r = http
        .get(format!("{base}/proxies/x/toxics/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "toxic not found");

    let r = post(
        "/proxies/x/toxics",
        serde_json::json!({"type":"blackhole","stream":"upstream"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);

    let r = http
        .delete(format!("{base}/proxies/x/toxics/latency_downstream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let r = http
        .post(format!("{base}/populate"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = http.post(format!("{base}/reset")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(c.toxics("x").unwrap().is_empty());

    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("toxiproxy_proxy_received_bytes_total{direction=\"upstream\""),
        "{text}"
    );

    // Changing listen restarts the proxy on the new address.
    let old_listen = c.get("x").unwrap().listen;
    let r = http
        .patch(format!("{base}/proxies/x"))
        .json(&serde_json::json!({"listen":"127.0.0.1:0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let moved: serde_json::Value = r.json().await.unwrap();
    let new_listen: std::net::SocketAddr = moved["listen"].as_str().unwrap().parse().unwrap();
    assert_ne!(new_listen, old_listen);
    assert!(tokio::net::TcpStream::connect(old_listen).await.is_err());
    let mut s = tokio::net::TcpStream::connect(new_listen).await.unwrap();
    crate::util::round_trip(&mut s, b"moved").await;

    let r = http
        .delete(format!("{base}/proxies/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .delete(format!("{base}/proxies/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    stop.cancel();
}

#[tokio::test]
async fn chaos_serve_creates_config_proxies_and_removes_them_on_shutdown() {
    let upstream = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxies.json");
    std::fs::write(
        &config,
        format!(r#"[{{"name":"node1-redis","listen":"127.0.0.1:0","upstream":"{upstream}"}}]"#),
    )
    .unwrap();
    let args = flowline_chaos::cli::ServeArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        allow_non_loopback: false,
        config: Some(config),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(flowline_chaos::cli::serve(args, stop.clone(), Some(tx)));
    let api = rx.await.unwrap();
    let proxies: serde_json::Value = reqwest::get(format!("http://{api}/proxies"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listen: std::net::SocketAddr = proxies["node1-redis"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
    crate::util::round_trip(&mut s, b"up").await;

    stop.cancel();
    let code = server.await.unwrap().unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "proxies are removed when serve ends"
    );
    assert!(tokio::net::TcpStream::connect(api).await.is_err());
}
