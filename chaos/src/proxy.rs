//! One proxy: a listener that accepts clients and links each to the upstream, its toxics
//! (one watch channel per direction, so live connections follow changes), and its state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::link::{self, DirCounters, LinkConfig};
use crate::spread::{PlaneInfo, Spread, reuseport_socket};
use crate::toxic::{Direction, ToxicSpec};

/// A proxy as the API shows it (`GET /proxies/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxyInfo {
    /// Unique name, e.g. `node1-redis`.
    pub name: String,
    /// The address it listens on (the real port once bound, even if `:0` was asked).
    pub listen: SocketAddr,
    /// Where accepted connections are forwarded (`host:port`).
    pub upstream: String,
    /// Disabled proxies refuse connections (a partition).
    pub enabled: bool,
    /// Its toxics, upstream ones first, each direction in the order added.
    pub toxics: Vec<ToxicSpec>,
    /// A link spread over several processes (a Flowline extension; Toxiproxy clients
    /// ignore it): the data-plane processes that carry its connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<PlaneInfo>>,
}

/// Mutable state of a proxy.
#[derive(Debug)]
struct State {
    listen: SocketAddr,
    upstream: String,
    /// Cancels the accept loop and every connection of the current run; `None` = disabled.
    running: Option<CancellationToken>,
    up: Vec<ToxicSpec>,
    down: Vec<ToxicSpec>,
}

/// A proxy (crate-private; the controller owns them).
#[derive(Debug)]
pub(crate) struct Proxy {
    pub name: String,
    /// What `listen` said when created (compared by populate).
    pub requested_listen: String,
    state: Mutex<State>,
    up_tx: watch::Sender<Arc<Vec<ToxicSpec>>>,
    down_tx: watch::Sender<Arc<Vec<ToxicSpec>>>,
    pub up_counters: Arc<DirCounters>,
    pub down_counters: Arc<DirCounters>,
    pub connections: Arc<AtomicI64>,
    /// Listen with `SO_REUSEPORT` (a data-plane process sharing its link's address).
    reuse_port: bool,
    /// The processes that carry this link's connections, if it is spread: then this
    /// process never accepts on `listen` itself.
    spread: Option<Spread>,
}

impl Proxy {
    pub(crate) fn new(
        name: String,
        requested_listen: String,
        listen: SocketAddr,
        upstream: String,
    ) -> Self {
        Proxy {
            name,
            requested_listen,
            state: Mutex::new(State {
                listen,
                upstream,
                running: None,
                up: Vec::new(),
                down: Vec::new(),
            }),
            up_tx: watch::Sender::new(Arc::new(Vec::new())),
            down_tx: watch::Sender::new(Arc::new(Vec::new())),
            up_counters: Arc::default(),
            down_counters: Arc::default(),
            connections: Arc::default(),
            reuse_port: false,
            spread: None,
        }
    }

    /// Share the listening address with other processes (`SO_REUSEPORT`).
    pub(crate) fn with_reuse_port(mut self) -> Self {
        self.reuse_port = true;
        self
    }

    /// Carry the connections in `spread`'s processes (which listen on `listen`).
    pub(crate) fn with_spread(mut self, spread: Spread) -> Self {
        self.state.get_mut().listen = spread.listen();
        self.state.get_mut().running = Some(CancellationToken::new());
        self.spread = Some(spread);
        self
    }

    /// The spread processes, if any.
    pub(crate) fn spread(&self) -> Option<&Spread> {
        self.spread.as_ref()
    }

    /// Wait until the data-plane processes hold the last change (at once when not spread).
    pub(crate) async fn settled(&self) -> Result<()> {
        match &self.spread {
            Some(s) => s.settled().await,
            None => Ok(()),
        }
    }

    pub(crate) fn info(&self) -> ProxyInfo {
        let st = self.state.lock();
        ProxyInfo {
            name: self.name.clone(),
            listen: st.listen,
            upstream: st.upstream.clone(),
            enabled: st.running.is_some(),
            toxics: st.up.iter().chain(st.down.iter()).cloned().collect(),
            processes: self.spread.as_ref().map(Spread::info),
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.state.lock().running.is_some()
    }

    /// Bind and start accepting. A port just released by `stop` may take a moment to be
    /// free (its accept task drops the listener asynchronously), hence the short retry.
    pub(crate) async fn start(&self) -> Result<()> {
        if let Some(spread) = &self.spread {
            {
                let mut st = self.state.lock();
                if st.running.is_some() {
                    return Ok(());
                }
                st.running = Some(CancellationToken::new());
                self.publish(&st);
            }
            return spread.settled().await;
        }
        let listen = {
            let st = self.state.lock();
            if st.running.is_some() {
                return Ok(());
            }
            st.listen
        };
        let mut tries = 0;
        let listener = loop {
            let bound = if self.reuse_port {
                reuseport_socket(listen).and_then(|s| s.listen(1024).map_err(Error::from))
            } else {
                TcpListener::bind(listen)
                    .await
                    .map_err(|source| Error::Listen {
                        addr: listen.to_string(),
                        source,
                    })
            };
            match bound {
                Ok(l) => break l,
                Err(Error::Listen { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse && tries < 100 =>
                {
                    if self.is_enabled() {
                        return Ok(()); // a concurrent start won the port
                    }
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let bound = listener.local_addr()?;
        let token = CancellationToken::new();
        let upstream = {
            let mut st = self.state.lock();
            if st.running.is_some() {
                return Ok(()); // someone else started it meanwhile; ours is dropped
            }
            st.listen = bound;
            st.running = Some(token.clone());
            st.upstream.clone()
        };
        let cfg = LinkConfig {
            up_toxics: self.up_tx.subscribe(),
            down_toxics: self.down_tx.subscribe(),
            up_counters: self.up_counters.clone(),
            down_counters: self.down_counters.clone(),
        };
        tokio::spawn(accept_loop(
            listener,
            upstream,
            cfg,
            token,
            self.connections.clone(),
            self.name.clone(),
        ));
        tracing::info!(proxy = %self.name, listen = %bound, "chaos: proxy started");
        Ok(())
    }

    /// Stop listening and cut every live connection.
    pub(crate) fn stop(&self) {
        let mut st = self.state.lock();
        if let Some(token) = st.running.take() {
            token.cancel();
            if self.spread.is_some() {
                self.publish(&st);
            }
            tracing::info!(proxy = %self.name, "chaos: proxy stopped");
        }
    }

    /// Change the listen address and/or upstream; restarts the proxy if it was running.
    pub(crate) async fn set_addresses(&self, listen: SocketAddr, upstream: String) -> Result<()> {
        if self.spread.is_some() {
            let st = self.state.lock();
            if st.listen == listen && st.upstream == upstream {
                return Ok(());
            }
            return Err(Error::BadRequestBody(format!(
                "proxy {} is spread over several processes: its listen address and upstream \
                 cannot change (delete and create it again)",
                self.name
            )));
        }
        let was_running = {
            let mut st = self.state.lock();
            if st.listen == listen && st.upstream == upstream {
                return Ok(());
            }
            let was = st.running.take();
            if let Some(t) = &was {
                t.cancel();
            }
            st.listen = listen;
            st.upstream = upstream;
            was.is_some()
        };
        if was_running {
            self.start().await?;
        }
        Ok(())
    }

    pub(crate) fn toxics(&self) -> Vec<ToxicSpec> {
        let st = self.state.lock();
        st.up.iter().chain(st.down.iter()).cloned().collect()
    }

    pub(crate) fn toxic(&self, name: &str) -> Result<ToxicSpec> {
        let st = self.state.lock();
        st.up
            .iter()
            .chain(st.down.iter())
            .find(|t| t.name == name)
            .cloned()
            .ok_or(Error::ToxicNotFound)
    }

    pub(crate) fn add_toxic(&self, toxic: ToxicSpec) -> Result<ToxicSpec> {
        let mut st = self.state.lock();
        if st
            .up
            .iter()
            .chain(st.down.iter())
            .any(|t| t.name == toxic.name)
        {
            return Err(Error::ToxicAlreadyExists);
        }
        match toxic.stream {
            Direction::Upstream => st.up.push(toxic.clone()),
            Direction::Downstream => st.down.push(toxic.clone()),
        }
        self.publish(&st);
        Ok(toxic)
    }

    /// Replace a toxic by name with `f(old)`.
    pub(crate) fn update_toxic(
        &self,
        name: &str,
        f: impl FnOnce(&ToxicSpec) -> Result<ToxicSpec>,
    ) -> Result<ToxicSpec> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let slot = st
            .up
            .iter_mut()
            .chain(st.down.iter_mut())
            .find(|t| t.name == name)
            .ok_or(Error::ToxicNotFound)?;
        let next = f(slot)?;
        *slot = next.clone();
        self.publish(st);
        Ok(next)
    }

    pub(crate) fn remove_toxic(&self, name: &str) -> Result<()> {
        let mut st = self.state.lock();
        let before = st.up.len() + st.down.len();
        st.up.retain(|t| t.name != name);
        st.down.retain(|t| t.name != name);
        if st.up.len() + st.down.len() == before {
            return Err(Error::ToxicNotFound);
        }
        self.publish(&st);
        Ok(())
    }

    /// Replace every toxic at once (one change for live connections).
    pub(crate) fn set_toxics(&self, up: Vec<ToxicSpec>, down: Vec<ToxicSpec>) {
        let mut st = self.state.lock();
        st.up = up;
        st.down = down;
        self.publish(&st);
    }

    pub(crate) fn clear_toxics(&self) {
        let mut st = self.state.lock();
        st.up.clear();
        st.down.clear();
        self.publish(&st);
    }

    fn publish(&self, st: &State) {
        self.up_tx.send_replace(Arc::new(st.up.clone()));
        self.down_tx.send_replace(Arc::new(st.down.clone()));
        if let Some(spread) = &self.spread {
            let toxics = st
                .up
                .iter()
                .chain(st.down.iter())
                .filter_map(|t| serde_json::to_value(t).ok())
                .collect();
            spread.push(st.running.is_some(), toxics);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    cfg: LinkConfig,
    token: CancellationToken,
    connections: Arc<AtomicI64>,
    name: String,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = token.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((client, _peer)) => {
                let (upstream, cfg, conn_token) =
                    (upstream.clone(), cfg.clone(), token.child_token());
                let connections = connections.clone();
                connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    link::run_connection(client, upstream, cfg, conn_token).await;
                    connections.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(proxy = %name, error = %e, "chaos: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
