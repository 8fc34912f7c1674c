//! Memory per idle authenticated WebSocket connection.
//!
//! `cargo run --release -p flowline-server --example idle_memory [N] [READ_BUFFER]` starts a node in
//! this process, provisions N users (default 2000), then spawns itself as a client
//! process that opens N WebSocket connections and sends `hello` on each. The node's
//! resident memory (VmRSS of this process, which holds no client state) is read before
//! and after; the difference divided by N is the cost of one idle authenticated session.
//! Run it with a few read-buffer sizes (default 4096) to see what the buffer costs; one
//! measurement per process, so the allocator starts clean.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use flowline_protocol::api::{
    ADMIN_HEADER, Provision, ProvisionChannel, ProvisionSpace, Provisioned,
};
use flowline_protocol::ws::ClientOp;
use flowline_server::{Config, Phase};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--client") {
        return client(&args[2]);
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let read_buffer: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4096);
    let kib = measure(n, read_buffer)?;
    println!("read buffer {read_buffer} B: {kib:.1} KiB per idle authenticated connection (N={n})");
    Ok(())
}

fn measure(n: usize, read_buffer: usize) -> anyhow::Result<f64> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let shutdown = CancellationToken::new();
    let (url, tokens) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut config = Config::new("mem", Phase::Single);
        config.admin_secret = Some("mem".into());
        config.ws_read_buffer = read_buffer;
        tokio::spawn(flowline_server::run(config, listener, shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let plan = Provision {
            username_prefix: "m".into(),
            users: n as u32,
            spaces: vec![ProvisionSpace {
                name: "s".into(),
                members: (0..n as u32).collect(),
                channels: vec![ProvisionChannel {
                    name: "c".into(),
                    members: None,
                }],
            }],
            dms: vec![],
        };
        let got: Provisioned = reqwest::Client::new()
            .post(format!("http://{addr}/api/v1/admin/provision"))
            .header(ADMIN_HEADER, "mem")
            .json(&plan)
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok((
            format!("ws://{addr}/ws"),
            got.users.into_iter().map(|u| u.token).collect::<Vec<_>>(),
        ))
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--client", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    {
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        for t in &tokens {
            writeln!(stdin, "{t}")?;
        }
        writeln!(stdin)?; // blank line: start
        let mut line = String::new();
        let mut out = std::io::BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
        );
        out.read_line(&mut line)?;
        anyhow::ensure!(line.trim() == "connected", "client said {line:?}");
        std::thread::sleep(Duration::from_secs(1));
        let after = rss_kib();
        drop(stdin); // EOF: the client exits
        let _ = child.wait();
        shutdown.cancel();
        rt.shutdown_timeout(Duration::from_secs(2));
        Ok((after.saturating_sub(before)) as f64 / n as f64)
    }
}

fn client(url: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stdin = std::io::stdin();
    let mut tokens = Vec::new();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.is_empty() {
            break;
        }
        tokens.push(line);
    }
    rt.block_on(async {
        let mut sockets = Vec::with_capacity(tokens.len());
        for token in tokens {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
            let hello = ClientOp::Hello {
                token,
                v: 1,
                resume: Default::default(),
                subscribe_all: true,
                presence: true,
            };
            ws.send(WsMessage::text(serde_json::to_string(&hello)?))
                .await?;
            ws.next().await.ok_or_else(|| anyhow::anyhow!("closed"))??;
            sockets.push(ws);
        }
        println!("connected");
        std::io::stdout().flush()?;
        // Hold the sockets until the parent closes stdin.
        tokio::task::spawn_blocking(|| {
            let mut buf = String::new();
            let _ = std::io::stdin().read_line(&mut buf);
        })
        .await?;
        drop(sockets);
        anyhow::Ok(())
    })
}
