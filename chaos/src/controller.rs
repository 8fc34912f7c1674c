//! The in-process proxy set: what `flowline chaos serve` exposes over HTTP and what the
//! harness drives directly. All operations a Toxiproxy client can do, plus `heal_all`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::metrics::{FaultKey, FaultMetrics};
use crate::proxy::{Proxy, ProxyInfo};
use crate::spread::{DataPlane, Spread, Totals};
use crate::toxic::ToxicSpec;

/// The fault kind of a disabled proxy (a partition) in the fault metrics.
const DOWN: &str = "down";

/// The listen address used when a proxy is created without one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:0";

/// A proxy to create: the body of `POST /proxies` and one entry of `POST /populate`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProxyConfig {
    /// Unique name.
    #[serde(default)]
    pub name: String,
    /// `host:port` to listen on; port 0 picks a free port. Empty: `127.0.0.1:0`.
    #[serde(default)]
    pub listen: String,
    /// `host:port` to forward to.
    #[serde(default)]
    pub upstream: String,
    /// Start enabled (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// A partial update of a proxy: the body of `POST/PATCH /proxies/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ProxyUpdate {
    /// New listen address (restarts the proxy).
    pub listen: Option<String>,
    /// New upstream (restarts the proxy).
    pub upstream: Option<String>,
    /// Enable or disable (disable = partition: live connections cut, new ones refused).
    pub enabled: Option<bool>,
}

#[derive(Debug)]
struct Inner {
    proxies: Mutex<BTreeMap<String, Arc<Proxy>>>,
    allow_non_loopback: bool,
    metrics: FaultMetrics,
    /// How to start data-plane processes for spread links ([`Controller::create_spread`]).
    data_plane: Mutex<Option<DataPlane>>,
}

/// A set of fault proxies, cheap to clone (all clones share the set).
///
/// Dropping the last clone stops every proxy. Proxies listen and forward on loopback
/// only unless [`Controller::allow_non_loopback`] was set.
#[derive(Debug, Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

impl Default for Controller {
    fn default() -> Self {
        Self::new()
    }
}

async fn resolve(addr: &str) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|source| Error::Resolve {
            addr: addr.to_string(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Resolve {
            addr: addr.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        });
    }
    Ok(addrs)
}

impl Controller {
    /// An empty set that refuses non-loopback addresses.
    pub fn new() -> Self {
        Self::with_policy(false)
    }

    /// An empty set; `allow_non_loopback` lets proxies listen on or forward to any address.
    pub fn with_policy(allow_non_loopback: bool) -> Self {
        Controller {
            inner: Arc::new(Inner {
                proxies: Mutex::new(BTreeMap::new()),
                allow_non_loopback,
                metrics: FaultMetrics::new(),
                data_plane: Mutex::new(None),
            }),
        }
    }

    /// How to start the data-plane processes of spread links (see [`Self::create_spread`]).
    pub fn set_data_plane(&self, plane: DataPlane) {
        *self.inner.data_plane.lock() = Some(plane);
    }

    /// Create proxy `name` whose connections are carried by `processes` child processes
    /// (`flowline chaos data-plane`) sharing one listening address, so one link can carry
    /// more connections than one process may hold files. It is driven like any other
    /// proxy: toxics, enable/disable and heal reach every process, and an operation
    /// returns once every process holds it. Needs [`Self::set_data_plane`] first.
    pub async fn create_spread(
        &self,
        name: &str,
        listen: SocketAddr,
        upstream: &str,
        processes: usize,
    ) -> Result<ProxyInfo> {
        let cfg = ProxyConfig {
            name: name.to_string(),
            listen: listen.to_string(),
            upstream: upstream.to_string(),
            enabled: true,
        };
        let plane = self
            .inner
            .data_plane
            .lock()
            .clone()
            .ok_or_else(|| Error::DataPlane {
                proxy: name.to_string(),
                reason: "no data-plane program set (Controller::set_data_plane)".into(),
            })?;
        if self.inner.proxies.lock().contains_key(name) {
            return Err(Error::ProxyAlreadyExists);
        }
        let proxy = self.build(&cfg).await?;
        let Ok(mut proxy) = Arc::try_unwrap(proxy) else {
            return Err(Error::ProxyAlreadyExists);
        };
        let totals = Totals {
            up: proxy.up_counters.clone(),
            down: proxy.down_counters.clone(),
            connections: proxy.connections.clone(),
        };
        let listen = self.check_listen(&cfg.listen).await?;
        let spread = Spread::start(
            &plane,
            name,
            listen,
            upstream,
            processes,
            self.inner.allow_non_loopback,
            totals,
        )
        .await?;
        proxy = proxy.with_spread(spread);
        let proxy = Arc::new(proxy);
        {
            let mut map = self.inner.proxies.lock();
            if map.contains_key(name) {
                return Err(Error::ProxyAlreadyExists);
            }
            map.insert(name.to_string(), proxy.clone());
        }
        Ok(proxy.info())
    }

    /// Create proxy `name` listening with `SO_REUSEPORT` on `listen`, beside other
    /// processes listening there (what a data-plane process does).
    pub async fn create_shared(
        &self,
        name: &str,
        listen: SocketAddr,
        upstream: &str,
    ) -> Result<ProxyInfo> {
        let cfg = ProxyConfig {
            name: name.to_string(),
            listen: listen.to_string(),
            upstream: upstream.to_string(),
            enabled: true,
        };
        let built = self.build(&cfg).await?;
        let Ok(proxy) = Arc::try_unwrap(built) else {
            return Err(Error::ProxyAlreadyExists);
        };
        let proxy = Arc::new(proxy.with_reuse_port());
        {
            let mut map = self.inner.proxies.lock();
            if map.contains_key(name) {
                return Err(Error::ProxyAlreadyExists);
            }
            map.insert(name.to_string(), proxy.clone());
        }
        if let Err(e) = proxy.start().await {
            self.inner.proxies.lock().remove(name);
            return Err(e);
        }
        Ok(proxy.info())
    }

    /// Replace every toxic of a proxy at once (what a data-plane process applies).
    pub fn set_toxics(&self, proxy: &str, toxics: Vec<ToxicSpec>) -> Result<()> {
        let (up, down) = toxics
            .into_iter()
            .partition(|t| t.stream == crate::toxic::Direction::Upstream);
        self.proxy(proxy)?.set_toxics(up, down);
        Ok(())
    }

    /// Live connections and bytes (upstream received, sent; downstream received, sent)
    /// of a proxy.
    pub fn counters(&self, proxy: &str) -> Result<(i64, [u64; 4])> {
        let p = self.proxy(proxy)?;
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Ok((
            p.connections.load(Ordering::Relaxed),
            [
                l(&p.up_counters.received),
                l(&p.up_counters.sent),
                l(&p.down_counters.received),
                l(&p.down_counters.sent),
            ],
        ))
    }

    /// Wait until every data-plane process of `proxy` holds its last change (at once for
    /// a proxy that is not spread).
    pub async fn settled(&self, proxy: &str) -> Result<()> {
        self.proxy(proxy)?.settled().await
    }

    /// Wait until every spread proxy's processes hold their last change.
    pub async fn settled_all(&self) -> Result<()> {
        let proxies: Vec<_> = self.inner.proxies.lock().values().cloned().collect();
        let mut first_err = None;
        for p in proxies {
            if let Err(e) = p.settled().await {
                tracing::error!(proxy = %p.name, error = %e, "chaos: change not applied everywhere");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Every data-plane process started for spread proxies: `(proxy, index from 1, pid)`.
    pub fn data_plane_pids(&self) -> Vec<(String, usize, u32)> {
        let proxies: Vec<_> = self.inner.proxies.lock().values().cloned().collect();
        let mut out = Vec::new();
        for p in proxies {
            if let Some(s) = p.spread() {
                out.extend(
                    s.pids()
                        .into_iter()
                        .enumerate()
                        .map(|(i, pid)| (p.name.clone(), i + 1, pid)),
                );
            }
        }
        out
    }

    /// Data-plane processes that exited on their own while their link existed:
    /// `(proxy, pid)`.
    pub fn dead_data_planes(&self) -> Vec<(String, u32)> {
        let proxies: Vec<_> = self.inner.proxies.lock().values().cloned().collect();
        let mut out = Vec::new();
        for p in proxies {
            if let Some(s) = p.spread() {
                out.extend(s.dead().into_iter().map(|pid| (p.name.clone(), pid)));
            }
        }
        out
    }

    /// Whether non-loopback addresses are allowed.
    pub fn allow_non_loopback(&self) -> bool {
        self.inner.allow_non_loopback
    }

    /// The fault metrics served on `/metrics`. Toxics and disabled proxies of this set
    /// are counted by the controller itself; report faults it cannot see (process faults,
    /// a remote Toxiproxy's links) with [`FaultMetrics::injected`] / [`FaultMetrics::healed`].
    pub fn fault_metrics(&self) -> FaultMetrics {
        self.inner.metrics.clone()
    }

    async fn check_listen(&self, listen: &str) -> Result<SocketAddr> {
        let listen = if listen.is_empty() {
            DEFAULT_LISTEN
        } else {
            listen
        };
        let addr = resolve(listen).await?[0];
        if !self.inner.allow_non_loopback && !addr.ip().is_loopback() {
            return Err(Error::NotLoopback(listen.to_string()));
        }
        Ok(addr)
    }

    async fn check_upstream(&self, upstream: &str) -> Result<()> {
        if upstream.is_empty() {
            return Err(Error::MissingField("upstream".into()));
        }
        if !self.inner.allow_non_loopback {
            // Resolved now (not only at connect time) so the policy cannot be dodged.
            for a in resolve(upstream).await? {
                if !a.ip().is_loopback() {
                    return Err(Error::NotLoopback(upstream.to_string()));
                }
            }
        }
        Ok(())
    }

    fn proxy(&self, name: &str) -> Result<Arc<Proxy>> {
        self.inner
            .proxies
            .lock()
            .get(name)
            .cloned()
            .ok_or(Error::ProxyNotFound)
    }

    /// Create and start a proxy `name` listening on `listen` (port 0: a free port) and
    /// forwarding to `upstream`. Returns where it actually listens.
    pub async fn create_proxy(
        &self,
        name: &str,
        listen: SocketAddr,
        upstream: &str,
    ) -> Result<ProxyInfo> {
        self.create(ProxyConfig {
            name: name.to_string(),
            listen: listen.to_string(),
            upstream: upstream.to_string(),
            enabled: true,
        })
        .await
    }

    /// Create a proxy from its API description (409 if the name exists).
    pub async fn create(&self, cfg: ProxyConfig) -> Result<ProxyInfo> {
        let proxy = self.build(&cfg).await?;
        {
            let mut map = self.inner.proxies.lock();
            if map.contains_key(&cfg.name) {
                return Err(Error::ProxyAlreadyExists);
            }
            map.insert(cfg.name.clone(), proxy.clone());
        }
        if cfg.enabled
            && let Err(e) = proxy.start().await
        {
            self.inner.proxies.lock().remove(&cfg.name);
            return Err(e);
        }
        Ok(proxy.info())
    }

    async fn build(&self, cfg: &ProxyConfig) -> Result<Arc<Proxy>> {
        if cfg.name.is_empty() {
            return Err(Error::MissingField("name".into()));
        }
        self.check_upstream(&cfg.upstream).await?;
        let listen = self.check_listen(&cfg.listen).await?;
        Ok(Arc::new(Proxy::new(
            cfg.name.clone(),
            cfg.listen.clone(),
            listen,
            cfg.upstream.clone(),
        )))
    }

    /// Create or replace several proxies at once (`POST /populate`). An existing proxy
    /// with the same listen and upstream is kept as is (toxics and all), so populate is
    /// safe to call at every start. Everything is validated before anything changes.
    pub async fn populate(&self, cfgs: Vec<ProxyConfig>) -> Result<Vec<ProxyInfo>> {
        let mut built = Vec::with_capacity(cfgs.len());
        for (i, cfg) in cfgs.iter().enumerate() {
            if cfg.name.is_empty() {
                return Err(Error::MissingField(format!("name at proxy {}", i + 1)));
            }
            if cfg.upstream.is_empty() {
                return Err(Error::MissingField(format!("upstream at proxy {}", i + 1)));
            }
            if cfgs[..i].iter().any(|c| c.name == cfg.name) {
                return Err(Error::BadRequestBody(format!(
                    "duplicate proxy name {:?}",
                    cfg.name
                )));
            }
            built.push(self.build(cfg).await?);
        }
        let mut out = Vec::with_capacity(cfgs.len());
        for (cfg, proxy) in cfgs.iter().zip(built) {
            let existing = self.inner.proxies.lock().get(&cfg.name).cloned();
            if let Some(old) = existing {
                let info = old.info();
                let same_listen =
                    old.requested_listen == cfg.listen || info.listen.to_string() == cfg.listen;
                if same_listen && info.upstream == cfg.upstream {
                    out.push(info);
                    continue;
                }
                old.stop();
            }
            self.inner
                .proxies
                .lock()
                .insert(cfg.name.clone(), proxy.clone());
            if cfg.enabled {
                proxy.start().await?;
            }
            out.push(proxy.info());
        }
        Ok(out)
    }

    /// All proxies, by name.
    pub fn list(&self) -> Vec<ProxyInfo> {
        let proxies: Vec<_> = self.inner.proxies.lock().values().cloned().collect();
        proxies.iter().map(|p| p.info()).collect()
    }

    /// Names of all proxies.
    pub fn names(&self) -> Vec<String> {
        self.inner.proxies.lock().keys().cloned().collect()
    }

    /// One proxy.
    pub fn get(&self, name: &str) -> Result<ProxyInfo> {
        Ok(self.proxy(name)?.info())
    }

    /// Update a proxy: a new listen or upstream restarts it; `enabled: false` cuts its
    /// connections and refuses new ones, `true` starts it again.
    pub async fn update(&self, name: &str, upd: ProxyUpdate) -> Result<ProxyInfo> {
        let proxy = self.proxy(name)?;
        let info = proxy.info();
        let listen = match &upd.listen {
            // As Toxiproxy: compared with the bound address, so `:0` moves to a new port.
            Some(l) if *l != info.listen.to_string() => self.check_listen(l).await?,
            _ => info.listen,
        };
        let upstream = match upd.upstream {
            Some(u) if u != info.upstream => {
                self.check_upstream(&u).await?;
                u
            }
            _ => info.upstream,
        };
        proxy.set_addresses(listen, upstream).await?;
        match upd.enabled {
            Some(true) => proxy.start().await?,
            Some(false) => {
                if proxy.is_enabled() {
                    self.inner.metrics.count(DOWN, name);
                }
                proxy.stop();
                proxy.settled().await?;
            }
            None => {}
        }
        Ok(proxy.info())
    }

    /// Enable or disable a proxy (a partition while disabled).
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<ProxyInfo> {
        self.update(
            name,
            ProxyUpdate {
                enabled: Some(enabled),
                ..ProxyUpdate::default()
            },
        )
        .await
    }

    /// Stop and remove a proxy.
    pub fn delete(&self, name: &str) -> Result<()> {
        let proxy = self
            .inner
            .proxies
            .lock()
            .remove(name)
            .ok_or(Error::ProxyNotFound)?;
        proxy.stop();
        Ok(())
    }

    /// The toxics of a proxy.
    pub fn toxics(&self, proxy: &str) -> Result<Vec<ToxicSpec>> {
        Ok(self.proxy(proxy)?.toxics())
    }

    /// One toxic of a proxy.
    pub fn toxic(&self, proxy: &str, name: &str) -> Result<ToxicSpec> {
        self.proxy(proxy)?.toxic(name)
    }

    /// Add a toxic; live connections pick it up at once.
    pub fn add_toxic(&self, proxy: &str, toxic: ToxicSpec) -> Result<ToxicSpec> {
        let added = self.proxy(proxy)?.add_toxic(toxic)?;
        self.inner.metrics.count(added.kind.type_name(), proxy);
        Ok(added)
    }

    /// Change a toxic with `f(current)`; live connections pick the change up at once.
    pub fn update_toxic(
        &self,
        proxy: &str,
        name: &str,
        f: impl FnOnce(&ToxicSpec) -> Result<ToxicSpec>,
    ) -> Result<ToxicSpec> {
        self.proxy(proxy)?.update_toxic(name, f)
    }

    /// Remove a toxic; data held by it is delivered at once.
    pub fn remove_toxic(&self, proxy: &str, name: &str) -> Result<()> {
        self.proxy(proxy)?.remove_toxic(name)
    }

    /// Toxiproxy's `POST /reset`: enable every proxy and remove every toxic, on every
    /// data-plane process of a spread proxy too (returns once they all hold it).
    pub async fn reset(&self) -> Result<()> {
        let proxies: Vec<_> = self.inner.proxies.lock().values().cloned().collect();
        let mut first_err = None;
        for p in &proxies {
            p.clear_toxics();
            if let Err(e) = p.start().await {
                tracing::error!(proxy = %p.name, error = %e, "chaos: cannot re-enable proxy");
                first_err.get_or_insert(e);
            }
        }
        for p in &proxies {
            if let Err(e) = p.settled().await {
                tracing::error!(proxy = %p.name, error = %e, "chaos: cannot heal every process");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Heal everything: remove every toxic and re-enable every proxy, trying all of them
    /// even if some fail (the failures are returned together as the first error).
    pub async fn heal_all(&self) -> Result<()> {
        self.reset().await
    }

    /// Remove every toxic at once, synchronously (used by drop guards).
    pub fn clear_all_toxics(&self) {
        for p in self.inner.proxies.lock().values() {
            p.clear_toxics();
        }
    }

    /// Stop and remove every proxy (live connections are cut).
    pub fn remove_all(&self) {
        let proxies = std::mem::take(&mut *self.inner.proxies.lock());
        for p in proxies.values() {
            p.stop();
        }
    }

    /// Explicit end of use: heal and remove every proxy, and end every data-plane
    /// process (waiting until each has exited).
    pub async fn shutdown(&self) {
        self.clear_all_toxics();
        let proxies = std::mem::take(&mut *self.inner.proxies.lock());
        for p in proxies.values() {
            p.stop();
            if let Some(s) = p.spread() {
                s.shutdown().await;
            }
        }
    }

    /// Prometheus text: bytes received/sent per proxy and direction, under Toxiproxy's
    /// metric names and under `flowline_chaos_*`, plus live connections and toxics.
    pub fn metrics_text(&self) -> String {
        let proxies: Vec<_> = self.inner.proxies.lock().values().cloned().collect();
        let mut s = String::new();
        let counters = [
            (
                "toxiproxy_proxy_received_bytes_total",
                "Bytes received by the proxy from the source of the direction",
                true,
            ),
            (
                "toxiproxy_proxy_sent_bytes_total",
                "Bytes sent by the proxy to the destination of the direction",
                false,
            ),
            (
                "flowline_chaos_proxy_received_bytes_total",
                "Bytes received by the proxy from the source of the direction",
                true,
            ),
            (
                "flowline_chaos_proxy_sent_bytes_total",
                "Bytes sent by the proxy to the destination of the direction",
                false,
            ),
        ];
        for (metric, help, received) in counters {
            let _ = writeln!(s, "# HELP {metric} {help}\n# TYPE {metric} counter");
            for p in &proxies {
                let info = p.info();
                for (dir, c) in [
                    ("upstream", &p.up_counters),
                    ("downstream", &p.down_counters),
                ] {
                    let v = if received {
                        c.received.load(Ordering::Relaxed)
                    } else {
                        c.sent.load(Ordering::Relaxed)
                    };
                    let _ = writeln!(
                        s,
                        "{metric}{{direction=\"{dir}\",listener=\"{}\",proxy=\"{}\",upstream=\"{}\"}} {v}",
                        info.listen,
                        escape(&info.name),
                        escape(&info.upstream)
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "# HELP flowline_chaos_proxy_connections Live connections through the proxy\n# TYPE flowline_chaos_proxy_connections gauge"
        );
        for p in &proxies {
            let _ = writeln!(
                s,
                "flowline_chaos_proxy_connections{{proxy=\"{}\"}} {}",
                escape(&p.name),
                p.connections.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP flowline_chaos_proxy_enabled 1 if the proxy accepts connections\n# TYPE flowline_chaos_proxy_enabled gauge"
        );
        for p in &proxies {
            let _ = writeln!(
                s,
                "flowline_chaos_proxy_enabled{{proxy=\"{}\"}} {}",
                escape(&p.name),
                u8::from(p.is_enabled())
            );
        }
        let _ = writeln!(
            s,
            "# HELP flowline_chaos_proxy_toxics Toxics on the proxy\n# TYPE flowline_chaos_proxy_toxics gauge"
        );
        for p in &proxies {
            let _ = writeln!(
                s,
                "flowline_chaos_proxy_toxics{{proxy=\"{}\"}} {}",
                escape(&p.name),
                p.toxics().len()
            );
        }
        let mut active: BTreeMap<FaultKey, u64> = BTreeMap::new();
        for p in &proxies {
            for t in p.toxics() {
                *active
                    .entry((t.kind.type_name().to_string(), p.name.clone()))
                    .or_insert(0) += 1;
            }
            if !p.is_enabled() {
                *active
                    .entry((DOWN.to_string(), p.name.clone()))
                    .or_insert(0) += 1;
            }
        }
        s.push_str(&self.inner.metrics.render(&active));
        s
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
