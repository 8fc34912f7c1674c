//! `flowline chaos`: serve the Toxiproxy API, heal a running server, list its proxies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use flowline_protocol::announce::Announce;
use tokio_util::sync::CancellationToken;

use crate::client::ToxiproxyClient;
use crate::controller::{Controller, ProxyConfig};
use crate::events::EventLog;
use crate::fault::FaultSpec;
use crate::process::PidProcess;
use crate::schedule::{Links, Schedule, Targets};

/// Fault injection: a Toxiproxy-compatible proxy and fault schedules.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of `flowline chaos`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the Toxiproxy HTTP API (and the proxies it creates) until Ctrl-C / SIGTERM.
    Serve(ServeArgs),
    /// Heal everything on a running Toxiproxy-compatible server (POST /reset).
    Heal(UrlArgs),
    /// Print the proxies of a running server as JSON.
    List(UrlArgs),
    /// Fire a file's `[[faults]]` on time against a running Toxiproxy (e.g. the
    /// docker-compose cluster's) and given pids; heal everything at the end or on Ctrl-C.
    Run(RunArgs),
    /// Internal: one process of a link spread over several (started by a controller).
    #[command(hide = true)]
    DataPlane(crate::plane::PlaneArgs),
}

/// Flags of `flowline chaos run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A scenario file (or any TOML file) whose `[[faults]]` to fire; other keys are ignored.
    pub file: PathBuf,
    /// Base URL of the Toxiproxy API that owns the links.
    #[arg(long, default_value = "http://127.0.0.1:8474", env = "TOXIPROXY_URL")]
    pub toxiproxy_url: String,
    /// A node for process faults, as `ID=PID` (repeatable); kills are not restarted.
    #[arg(long = "node", value_name = "ID=PID")]
    pub nodes: Vec<String>,
    /// Append events here (one JSON object per line).
    #[arg(long, default_value = "events.jsonl")]
    pub events: PathBuf,
    /// Allow a non-loopback Toxiproxy URL and non-loopback links.
    #[arg(long)]
    pub allow_non_loopback: bool,
}

/// The part of a scenario file `flowline chaos run` reads.
#[derive(Debug, serde::Deserialize)]
struct FaultsFile {
    #[serde(default)]
    faults: Vec<FaultSpec>,
}

/// Flags of `flowline chaos serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address of the HTTP API (port 0 picks a free port; see the announcement line).
    #[arg(long, default_value = "127.0.0.1:8474")]
    pub listen: SocketAddr,
    /// Let proxies listen on / forward to non-loopback addresses.
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Create these proxies at start: a JSON array as for `POST /populate`
    /// (Toxiproxy's `-config`).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Flags naming a running server.
#[derive(Debug, clap::Args)]
pub struct UrlArgs {
    /// Base URL of the Toxiproxy API.
    #[arg(long, default_value = "http://127.0.0.1:8474", env = "TOXIPROXY_URL")]
    pub url: String,
    /// Allow a non-loopback URL.
    #[arg(long)]
    pub allow_non_loopback: bool,
}

/// Entry point of `flowline chaos`.
pub async fn main(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Serve(a) => {
            let shutdown = CancellationToken::new();
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                on_signal.cancel();
            });
            serve(a, shutdown, None).await
        }
        Command::Heal(a) => {
            let client = ToxiproxyClient::new(&a.url, a.allow_non_loopback)?;
            client
                .reset()
                .await
                .with_context(|| format!("healing {}", a.url))?;
            tracing::info!(url = %a.url, "chaos: every proxy enabled, every toxic removed");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(a) => run(a).await,
        Command::DataPlane(a) => crate::plane::run(a).await,
        Command::List(a) => {
            let client = ToxiproxyClient::new(&a.url, a.allow_non_loopback)?;
            let proxies = client
                .proxies()
                .await
                .with_context(|| format!("listing proxies of {}", a.url))?;
            for p in proxies {
                println!(
                    "{}",
                    serde_json::json!({"name": p.name, "listen": p.listen,
                        "upstream": p.upstream, "enabled": p.enabled})
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let file: FaultsFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", a.file.display()))?;
    let mut faults = file.faults;
    if a.allow_non_loopback {
        for f in &mut faults {
            f.allow_non_loopback = true;
        }
    }
    let client = ToxiproxyClient::new(&a.toxiproxy_url, a.allow_non_loopback)?;
    client
        .version()
        .await
        .with_context(|| format!("no Toxiproxy API at {}", a.toxiproxy_url))?;
    let mut targets = Targets::new(Links::Remote(client));
    for n in &a.nodes {
        let (id, pid) = n
            .split_once('=')
            .with_context(|| format!("--node {n:?}: expected ID=PID"))?;
        let pid: u32 = pid
            .parse()
            .with_context(|| format!("--node {n:?}: bad pid"))?;
        targets = targets.with_node(Arc::new(PidProcess {
            node_id: id.to_string(),
            pid,
        }));
    }
    let start = std::time::Instant::now();
    let events = EventLog::create(&a.events, start)?;
    let count = faults.len();
    let mut handle = Schedule::new(faults, targets, events)
        .with_context(|| format!("bad [[faults]] in {}", a.file.display()))?
        .run(tokio::time::Instant::from_std(start));
    tracing::info!(faults = count, url = %a.toxiproxy_url, "chaos: schedule running");
    let interrupted = tokio::select! {
        () = handle.wait() => false,
        () = wait_for_signal() => true,
    };
    let errors = handle.errors();
    handle.shutdown().await.context("healing the faults")?;
    for e in &errors {
        tracing::error!("chaos: {e}");
    }
    Ok(if interrupted || !errors.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `flowline chaos serve` until `shutdown` is cancelled: bind, announce on stdout (and on
/// `bound`, for in-process callers), create the `--config` proxies, serve the API, then
/// remove every proxy.
pub async fn serve(
    a: ServeArgs,
    shutdown: CancellationToken,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<ExitCode> {
    if !a.allow_non_loopback && !a.listen.ip().is_loopback() {
        anyhow::bail!(
            "--listen {} is not a loopback address; pass --allow-non-loopback to serve on it",
            a.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("binding the chaos API on {}", a.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let announce = Announce::ChaosListening {
        api: format!("http://{addr}"),
        pid: std::process::id(),
    };
    println!("{}", serde_json::to_string(&announce)?);
    tracing::info!(api = %addr, "chaos: serving the Toxiproxy API");

    let controller = Controller::with_policy(a.allow_non_loopback);
    if let Some(path) = &a.config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let proxies: Vec<ProxyConfig> = serde_json::from_str(&text)
            .with_context(|| format!("parsing {} (a JSON array of proxies)", path.display()))?;
        let created = controller
            .populate(proxies)
            .await
            .with_context(|| format!("creating the proxies of {}", path.display()))?;
        tracing::info!(
            proxies = created.len(),
            "chaos: proxies created from the config"
        );
    }
    if let Some(tx) = bound {
        let _ = tx.send(addr);
    }
    let served = crate::api::serve_api(controller.clone(), listener, shutdown).await;
    // Whatever ended the server, leave no proxy or fault behind.
    controller.shutdown().await;
    served.context("serving the chaos API")?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
