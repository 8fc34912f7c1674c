//! The run's chaos links: TCP proxies on the embedded chaos controller or on a Toxiproxy
//! (`--toxiproxy-url`), created by name ([`crate::topology`] gives the names) and
//! deleted at teardown; and the URL rewriting that sends a client through one.

use std::sync::Arc;

use anyhow::{Context, bail};
use flowline_chaos::controller::Controller;
use flowline_chaos::{Links, ToxiproxyClient};
use flowline_loadgen::scenario::Scenario;

use crate::topology::glob_match;

/// Where the run's link proxies live (clones share the list of proxies created).
#[derive(Clone)]
pub enum LinkSet {
    /// The embedded chaos proxy (this process).
    Local(Controller),
    /// A real Toxiproxy (or another `flowline chaos serve`) reached over its API.
    Remote {
        /// Its API.
        client: ToxiproxyClient,
        /// Proxies this run created, deleted at teardown.
        created: Arc<std::sync::Mutex<Vec<String>>>,
    },
}

impl LinkSet {
    /// The embedded `controller`, or the Toxiproxy at `toxiproxy_url` (which must answer).
    pub async fn open(
        controller: &Controller,
        toxiproxy_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        let Some(url) = toxiproxy_url else {
            return Ok(LinkSet::Local(controller.clone()));
        };
        // Given explicitly: a Toxiproxy in a container is not on loopback.
        let client = ToxiproxyClient::new(url, true)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("--toxiproxy-url")?;
        let version = client
            .version()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("Toxiproxy at {url} does not answer"))?;
        eprintln!(
            "flowline: link proxies on Toxiproxy {url} ({})",
            version.trim()
        );
        Ok(LinkSet::Remote {
            client,
            created: Arc::default(),
        })
    }

    /// Whether the links are on a Toxiproxy reached over its API.
    pub fn is_remote(&self) -> bool {
        matches!(self, LinkSet::Remote { .. })
    }

    /// Create proxy `name` to `upstream` (`host:port`); returns where clients reach it.
    pub async fn create(&self, name: &str, upstream: &str) -> anyhow::Result<String> {
        match self {
            LinkSet::Local(c) => {
                let info = c
                    .create_proxy(name, "127.0.0.1:0".parse()?, upstream)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| format!("cannot create proxy {name}"))?;
                Ok(info.listen.to_string())
            }
            LinkSet::Remote { client, created } => {
                let host = client.host();
                let loopback = host == "localhost"
                    || host
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                let listen = if loopback { "127.0.0.1:0" } else { "0.0.0.0:0" };
                let p = client
                    .create_proxy(name, listen, upstream)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| {
                        format!("cannot create proxy {name} on Toxiproxy {}", client.url())
                    })?;
                created
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(name.to_string());
                reachable(&p.listen, &host)
            }
        }
    }

    /// Create client link `name` to `upstream`: on the embedded proxy with a nonzero
    /// `processes`, its connections are carried by that many `flowline chaos data-plane`
    /// processes sharing its address (one process may hold only so many files); with 0,
    /// or on a Toxiproxy, as [`Self::create`]. Returns where clients reach it.
    pub async fn create_client(
        &self,
        name: &str,
        upstream: &str,
        processes: usize,
    ) -> anyhow::Result<String> {
        match self {
            LinkSet::Local(c) if processes > 0 => {
                let info = c
                    .create_spread(name, "127.0.0.1:0".parse()?, upstream, processes)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| {
                        format!("cannot create proxy {name} over {processes} process(es)")
                    })?;
                Ok(info.listen.to_string())
            }
            _ => self.create(name, upstream).await,
        }
    }

    /// Names of the run's links.
    pub fn names(&self) -> Vec<String> {
        match self {
            LinkSet::Local(c) => c.names(),
            LinkSet::Remote { created, .. } => {
                created.lock().unwrap_or_else(|p| p.into_inner()).clone()
            }
        }
    }

    /// The links as the fault schedule acts on them.
    pub fn links(&self) -> Links {
        match self {
            LinkSet::Local(c) => Links::Local(c.clone()),
            LinkSet::Remote { client, .. } => Links::Remote(client.clone()),
        }
    }

    /// An external cluster behind a remote Toxiproxy may have links the run does not
    /// create (the compose cluster's node<i>-postgres): every fault must match a proxy
    /// the Toxiproxy has now. Nothing to do on the embedded proxy.
    pub async fn check_faults_on_remote(&self, scenario: &Scenario) -> anyhow::Result<()> {
        let LinkSet::Remote { client, .. } = self else {
            return Ok(());
        };
        let names: Vec<String> = client
            .proxies()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot list the proxies of {}", client.url()))?
            .into_iter()
            .map(|p| p.name)
            .collect();
        for (i, f) in scenario.faults.iter().enumerate() {
            if !names.iter().any(|n| glob_match(&f.target, n)) {
                bail!(
                    "bad scenario: fault #{} ({}) targets {:?}, which matches no proxy of the Toxiproxy at {} ({})",
                    i + 1,
                    f.display_label(),
                    f.target,
                    client.url(),
                    names.join(", ")
                );
            }
        }
        Ok(())
    }

    /// Delete the proxies this run created on a remote Toxiproxy.
    pub async fn teardown(&self) {
        if let LinkSet::Remote { client, created } = self {
            let names = std::mem::take(&mut *created.lock().unwrap_or_else(|p| p.into_inner()));
            for name in names {
                if let Err(e) = client.delete_proxy(&name).await {
                    tracing::warn!("cannot delete proxy {name} on {}: {e}", client.url());
                }
            }
        }
    }
}

/// `host:port` where a proxy reported as listening on `listen` can be reached: a
/// wildcard address (`0.0.0.0`, `[::]`) is replaced by the Toxiproxy's own host.
fn reachable(listen: &str, api_host: &str) -> anyhow::Result<String> {
    let (host, port) = listen
        .rsplit_once(':')
        .with_context(|| format!("Toxiproxy reported listen address {listen:?} without a port"))?;
    let host = host.trim_matches(['[', ']']);
    let wildcard = host.is_empty()
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
    let host = if wildcard { api_host } else { host };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(format!("{host}:{port}"))
}

/// `host:port` of a URL.
pub fn host_port(url: &str) -> anyhow::Result<String> {
    let u = url::Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
    let host = u.host_str().context("URL has no host")?;
    let port = u.port_or_known_default().context("URL has no port")?;
    Ok(format!("{host}:{port}"))
}

/// `url` with its host and port replaced by `addr` (a proxy's `host:port`).
pub fn via(url: &str, addr: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("proxy address {addr:?} has no port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("proxy address {addr:?} has a bad port"))?;
    u.set_host(Some(host)).context("cannot set host")?;
    u.set_port(Some(port))
        .map_err(|()| anyhow::anyhow!("cannot set port"))?;
    Ok(u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rewritten_through_proxies() {
        assert_eq!(
            via(
                "postgres://postgres@127.0.0.1:5432/flowline_run_x",
                "127.0.0.1:40001"
            )
            .unwrap(),
            "postgres://postgres@127.0.0.1:40001/flowline_run_x"
        );
        assert_eq!(
            via("ws://127.0.0.1:1/ws", "127.0.0.1:2").unwrap(),
            "ws://127.0.0.1:2/ws"
        );
        assert_eq!(
            host_port("redis://127.0.0.1:6379").unwrap(),
            "127.0.0.1:6379"
        );
        assert_eq!(
            via("ws://127.0.0.1:9100/a?x=1", "127.0.0.1:40000").unwrap(),
            "ws://127.0.0.1:40000/a?x=1"
        );
    }

    #[test]
    fn remote_proxy_addresses_are_reachable() {
        assert_eq!(
            reachable("[::]:26001", "toxiproxy").unwrap(),
            "toxiproxy:26001"
        );
        assert_eq!(
            reachable("0.0.0.0:26001", "10.0.0.5").unwrap(),
            "10.0.0.5:26001"
        );
        assert_eq!(
            reachable("127.0.0.1:26001", "localhost").unwrap(),
            "127.0.0.1:26001"
        );
        assert!(reachable("nonsense", "h").is_err());
        assert_eq!(
            via("ws://node1:8080/ws", "toxiproxy:26001").unwrap(),
            "ws://toxiproxy:26001/ws"
        );
    }
}
