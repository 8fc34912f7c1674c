//! Postgres and Redis for a run: use the servers given, isolated per run, or start
//! throwaway ones from the machine's binaries inside the run folder, or say what is missing.
//!
//! Resolution, per service the phase needs:
//! 1. a URL from the flag or the environment (`FLOWLINE_DATABASE_URL`, `FLOWLINE_REDIS_URL`):
//!    it must answer. Postgres: the run gets its own database `flowline_run_<id>`, dropped at
//!    the end unless `--keep`. Redis: the run gets its own key prefix (the cluster id), whose
//!    keys are deleted at the end unless `--keep`.
//! 2. otherwise, unless local services are disabled (`--no-local-services` or
//!    `FLOWLINE_NO_LOCAL_SERVICES=1`): a throwaway `postgres` / `redis-server` on a free
//!    loopback port, data in `<run>/services/`, stopped and removed at the end. Postgres
//!    refuses to run as root, so as root it runs as the system user `flowline-pg`.
//! 3. otherwise: an error naming what is missing and how to provide it (exit 2).
//!
//! With `--isolation netns` ([`crate::isolation`]) the nodes live in network namespaces
//! with no route out, and reach each service as a host of the run's bridge:
//! - a throwaway server runs inside host `postgres` / `redis`, listening on that host's
//!   address (port 5432 / 6379: the namespace has its ports to itself); the harness
//!   reaches it (readiness, database, keys) through a loopback forward;
//! - a server given by URL is relayed: host `postgres` / `redis` listens on the URL's port
//!   and the harness carries each connection to the URL from its own namespace, so kernel
//!   faults on that host still act between the nodes and it.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use sqlx::Connection;

use crate::isolation::Isolated;
use crate::needs::Needs;
use crate::supervisor::{Spec, Supervisor};

/// Unprivileged system user that runs a throwaway Postgres when the harness runs as root.
pub const PG_USER: &str = "flowline-pg";

/// How services may be found.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A Postgres server to use (`--database-url` or `FLOWLINE_DATABASE_URL`).
    pub database_url: Option<String>,
    /// A Redis server to use (`--redis-url` or `FLOWLINE_REDIS_URL`).
    pub redis_url: Option<String>,
    /// Whether throwaway local servers may be started.
    pub allow_local: bool,
    /// Keep the run's database / keys / data folders after the run.
    pub keep: bool,
}

/// The services of one run, ready to use.
#[derive(Debug, Default)]
pub struct Services {
    /// URL of the run's own database (nodes connect here).
    pub database_url: Option<String>,
    /// URL the harness itself reaches the Postgres server at (under `--isolation netns`
    /// the nodes' URL is only reachable inside the run's namespaces).
    pub admin_url: Option<String>,
    /// URL of the Redis server.
    pub redis_url: Option<String>,
    /// Key prefix of this run in Redis (the cluster id).
    pub redis_prefix: String,
    /// Human-readable lines saying where each service came from.
    pub notes: Vec<String>,
    cleanup: Cleanup,
}

#[derive(Debug, Default)]
struct Cleanup {
    /// (admin URL, database name) to drop.
    drop_database: Option<(String, String)>,
    /// Redis URL and prefix whose keys to delete.
    redis_keys: Option<(String, String)>,
    /// Supervised children to stop (name, first signal).
    children: Vec<(String, Signal)>,
    /// Folders to remove.
    dirs: Vec<PathBuf>,
}

impl Services {
    /// Resolve every service `needs` asks for. `run_id` names the database and prefix.
    /// With `net`, the services are hosts of the run's network (see the module doc).
    pub async fn resolve(
        needs: Needs,
        opts: &Options,
        run_dir: &Path,
        run_id: &str,
        sup: &Supervisor,
        net: Option<&Isolated>,
    ) -> anyhow::Result<Self> {
        let mut s = Services {
            redis_prefix: format!("flowline:{run_id}:"),
            ..Default::default()
        };
        let result = s
            .resolve_inner(needs, opts, run_dir, run_id, sup, net)
            .await;
        match result {
            Ok(()) => Ok(s),
            Err(e) => {
                s.teardown(sup).await;
                Err(e)
            }
        }
    }

    async fn resolve_inner(
        &mut self,
        needs: Needs,
        opts: &Options,
        run_dir: &Path,
        run_id: &str,
        sup: &Supervisor,
        net: Option<&Isolated>,
    ) -> anyhow::Result<()> {
        if needs.postgres {
            // (the harness's URL, the nodes' URL) of the server.
            let (admin_url, node_url) = match &opts.database_url {
                Some(url) => {
                    pg_wait(url, Duration::from_secs(5))
                        .await
                        .with_context(|| {
                            format!(
                                "Postgres at {} does not answer (given by --database-url or \
                             FLOWLINE_DATABASE_URL)",
                                redact(url)
                            )
                        })?;
                    self.notes.push(format!("postgres: {}", redact(url)));
                    let node_url = match net {
                        Some(net) => relayed(net, "postgres", url).await?,
                        None => url.clone(),
                    };
                    (url.clone(), node_url)
                }
                None if opts.allow_local => {
                    let bin = pg_bin_dir().context(
                        "this phase needs Postgres: set --database-url or FLOWLINE_DATABASE_URL \
                         to a server that answers, or install Postgres (apt-get install \
                         postgresql) so a throwaway one can be started",
                    )?;
                    let (url, node_url) = self
                        .start_postgres(&bin, run_dir, opts.keep, sup, net)
                        .await?;
                    self.notes.push(format!(
                        "postgres: throwaway {} from {}",
                        node_url,
                        bin.display()
                    ));
                    (url, node_url)
                }
                None => bail!(
                    "this phase needs Postgres: set --database-url or FLOWLINE_DATABASE_URL to a \
                     server that answers (local throwaway servers are disabled by \
                     --no-local-services / FLOWLINE_NO_LOCAL_SERVICES)"
                ),
            };
            let db = format!("flowline_run_{}", sanitize(run_id));
            create_database(&admin_url, &db).await?;
            if !opts.keep {
                self.cleanup.drop_database = Some((admin_url.clone(), db.clone()));
            }
            self.database_url = Some(with_database(&node_url, &db)?);
            self.admin_url = Some(admin_url);
        }
        if needs.redis {
            let node_url = match &opts.redis_url {
                Some(url) => {
                    redis_wait(url, Duration::from_secs(5))
                        .await
                        .with_context(|| {
                            format!(
                                "Redis at {} does not answer (given by --redis-url or \
                             FLOWLINE_REDIS_URL)",
                                redact(url)
                            )
                        })?;
                    self.notes.push(format!("redis: {}", redact(url)));
                    if !opts.keep {
                        self.cleanup.redis_keys = Some((url.clone(), self.redis_prefix.clone()));
                    }
                    match net {
                        Some(net) => relayed(net, "redis", url).await?,
                        None => url.clone(),
                    }
                }
                None if opts.allow_local => {
                    let bin = which("redis-server").context(
                        "this phase needs Redis: set --redis-url or FLOWLINE_REDIS_URL to a server \
                         that answers, or install redis-server (apt-get install redis-server) so \
                         a throwaway one can be started",
                    )?;
                    let url = self.start_redis(&bin, run_dir, opts.keep, sup, net).await?;
                    self.notes
                        .push(format!("redis: throwaway {url} from {}", bin.display()));
                    url
                }
                None => bail!(
                    "this phase needs Redis: set --redis-url or FLOWLINE_REDIS_URL to a server \
                     that answers (local throwaway servers are disabled by \
                     --no-local-services / FLOWLINE_NO_LOCAL_SERVICES)"
                ),
            };
            self.redis_url = Some(node_url);
        }
        Ok(())
    }

    /// Create a throwaway service's folder, removed at teardown unless `keep`.
    fn service_dir(&mut self, dir: &Path, keep: bool) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if !keep {
            self.cleanup.dirs.push(dir.to_path_buf());
        }
        Ok(())
    }

    async fn start_postgres(
        &mut self,
        bin: &Path,
        run_dir: &Path,
        keep: bool,
        sup: &Supervisor,
        net: Option<&Isolated>,
    ) -> anyhow::Result<(String, String)> {
        let root = running_as_root();
        // Absolute: initdb runs in another working directory, and Postgres resolves -D itself.
        let run_dir = &std::path::absolute(run_dir)
            .with_context(|| format!("cannot resolve {}", run_dir.display()))?;
        let mut dir = run_dir.join("services").join("postgres");
        if root && !traversable_by_others(run_dir) {
            // The unprivileged user could not reach the run folder (e.g. under /root).
            dir = std::env::temp_dir().join(format!(
                "flowline-pg-{}",
                run_dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("run")
            ));
        }
        self.service_dir(&dir, keep)?;
        let mut prefix: Vec<String> = Vec::new();
        if root {
            ensure_pg_user()?;
            let status = std::process::Command::new("chown")
                .args(["-R", PG_USER])
                .arg(&dir)
                .status()
                .context("cannot run chown")?;
            if !status.success() {
                bail!("chown {PG_USER} {} failed", dir.display());
            }
            prefix = vec![
                "setpriv".into(),
                // A change of user clears the parent-death signal; setpriv sets it after.
                "--pdeathsig=KILL".into(),
                format!("--reuid={PG_USER}"),
                format!("--regid={PG_USER}"),
                "--clear-groups".into(),
                "--".into(),
            ];
        }
        let data = dir.join("data");
        let initdb = bin.join("initdb");
        let mut cmd = command(&prefix, &initdb);
        cmd.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .env("HOME", &dir)
            .current_dir(&dir);
        let out = cmd
            .output()
            .await
            .with_context(|| format!("cannot run {}", initdb.display()))?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        if net.is_some() {
            // initdb trusts loopback only; the nodes come from the run's bridge (its
            // addresses exist only inside the run's namespaces).
            let hba = data.join("pg_hba.conf");
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&hba)
                .with_context(|| format!("cannot open {}", hba.display()))?;
            std::io::Write::write_all(&mut f, b"host all all samenet trust\n")
                .with_context(|| format!("cannot write {}", hba.display()))?;
        }
        // In its own namespace the server has the host's address and every port to itself.
        let (listen_ip, port) = match net {
            Some(net) => (net.host("postgres")?.addr().to_string(), 5432),
            None => ("127.0.0.1".to_string(), free_port()?),
        };
        let postgres = bin.join("postgres");
        let mut args: Vec<String> = prefix.iter().skip(1).cloned().collect();
        if !prefix.is_empty() {
            args.push(postgres.to_string_lossy().into_owned());
        }
        args.extend([
            "-D".to_string(),
            data.to_string_lossy().into_owned(),
            "-p".into(),
            port.to_string(),
            "-c".into(),
            format!("listen_addresses={listen_ip}"),
            "-c".into(),
            "unix_socket_directories=".into(),
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            "full_page_writes=off".into(),
            "-c".into(),
            "max_connections=300".into(),
        ]);
        let program = if prefix.is_empty() {
            postgres
        } else {
            PathBuf::from(&prefix[0])
        };
        let mut spec = Spec::child_exec("postgres", program)?.args(args);
        spec = spec.env("HOME", dir.to_string_lossy());
        if let Some(net) = net {
            spec = spec.in_netns(net.netns("postgres")?);
        }
        sup.spawn(spec)?;
        // SIGINT is Postgres' "fast shutdown".
        self.cleanup
            .children
            .push(("postgres".into(), Signal::SIGINT));
        let node_url = format!("postgres://postgres@{listen_ip}:{port}/postgres");
        let url = match net {
            Some(net) => {
                let fwd = net.forward(format!("{listen_ip}:{port}").parse()?).await?;
                format!("postgres://postgres@{fwd}/postgres")
            }
            None => node_url.clone(),
        };
        pg_wait(&url, Duration::from_secs(30))
            .await
            .with_context(|| {
                format!(
                    "the throwaway Postgres did not start; see {}",
                    sup.log_path("postgres").display()
                )
            })?;
        Ok((url, node_url))
    }

    async fn start_redis(
        &mut self,
        bin: &Path,
        run_dir: &Path,
        keep: bool,
        sup: &Supervisor,
        net: Option<&Isolated>,
    ) -> anyhow::Result<String> {
        let run_dir = &std::path::absolute(run_dir)
            .with_context(|| format!("cannot resolve {}", run_dir.display()))?;
        let dir = run_dir.join("services").join("redis");
        self.service_dir(&dir, keep)?;
        let (listen_ip, port) = match net {
            Some(net) => (net.host("redis")?.addr().to_string(), 6379),
            None => ("127.0.0.1".to_string(), free_port()?),
        };
        let mut spec = Spec::child_exec("redis", bin)?.args([
            "--port".to_string(),
            port.to_string(),
            "--bind".into(),
            listen_ip.clone(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            // Clients of an isolated run come from the bridge, which protected mode
            // (no password, not loopback) would turn away; only the run's hosts reach it.
            "--protected-mode".into(),
            if net.is_some() { "no" } else { "yes" }.into(),
            "--dir".into(),
            dir.to_string_lossy().into_owned(),
        ]);
        if let Some(net) = net {
            spec = spec.in_netns(net.netns("redis")?);
        }
        sup.spawn(spec)?;
        self.cleanup
            .children
            .push(("redis".into(), Signal::SIGTERM));
        let node_url = format!("redis://{listen_ip}:{port}");
        let url = match net {
            Some(net) => {
                let fwd = net.forward(format!("{listen_ip}:{port}").parse()?).await?;
                format!("redis://{fwd}")
            }
            None => node_url.clone(),
        };
        redis_wait(&url, Duration::from_secs(10))
            .await
            .with_context(|| {
                format!(
                    "the throwaway redis-server did not start; see {}",
                    sup.log_path("redis").display()
                )
            })?;
        Ok(node_url)
    }

    /// Drop the run's database and keys, stop throwaway servers, remove their folders.
    /// Failures are logged, never fatal: teardown must run to the end.
    pub async fn teardown(&mut self, sup: &Supervisor) {
        let c = std::mem::take(&mut self.cleanup);
        if let Some((url, db)) = c.drop_database
            && let Err(e) = drop_database(&url, &db).await
        {
            tracing::warn!("could not drop database {db}: {e:#}");
        }
        if let Some((url, prefix)) = c.redis_keys
            && let Err(e) = redis_delete_prefix(&url, &prefix).await
        {
            tracing::warn!("could not delete Redis keys {prefix}*: {e:#}");
        }
        for (name, sig) in c.children.iter().rev() {
            sup.stop(name, *sig, Duration::from_secs(10)).await;
        }
        for d in c.dirs {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                tracing::warn!("could not remove {}: {e}", d.display());
            }
            // `services/` goes too once empty (remove_dir refuses a non-empty folder).
            if let Some(parent) = d.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

/// `url` as the nodes of an isolated run reach it: through a relay on host `name` (see
/// the module doc), on the URL's own port.
async fn relayed(net: &Isolated, name: &str, url: &str) -> anyhow::Result<String> {
    let outside = crate::links::host_port(url)?;
    let port = url::Url::parse(url)?
        .port_or_known_default()
        .with_context(|| format!("{} has no port", redact(url)))?;
    let addr = net.relay(name, port, &outside).await?;
    crate::links::via(url, &addr.to_string())
}

fn command(prefix: &[String], program: &Path) -> tokio::process::Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = tokio::process::Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    }
}

/// The folder of the newest installed Postgres that has `initdb`.
pub fn pg_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
        .collect();
    // Newest major version first (numeric order: 9 < 10 < 15).
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(d) = dirs.pop() {
        return Some(d);
    }
    let initdb = which("initdb")?;
    let initdb = std::fs::canonicalize(&initdb).unwrap_or(initdb);
    let dir = initdb.parent()?.to_path_buf();
    dir.join("postgres").is_file().then_some(dir)
}

/// A program on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective uid).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn traversable_by_others(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(abs) = std::path::absolute(dir) else {
        return false;
    };
    abs.ancestors().skip(1).all(|a| {
        std::fs::metadata(a)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

fn ensure_pg_user() -> anyhow::Result<()> {
    let exists = std::process::Command::new("id")
        .args(["-u", PG_USER])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if exists {
        return Ok(());
    }
    let status = std::process::Command::new("useradd")
        .args(["--system", "--no-create-home", PG_USER])
        .status()
        .context("cannot run useradd")?;
    if !status.success() {
        bail!(
            "cannot create the system user {PG_USER} that runs the throwaway Postgres (Postgres \
             refuses to run as root); create it, or give --database-url"
        );
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Poll until Postgres at `url` accepts a connection and answers `SELECT 1`.
pub async fn pg_wait(url: &str, timeout: Duration) -> anyhow::Result<()> {
    retry_until(timeout, Duration::from_millis(200), || async {
        let mut c = tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(url))
            .await
            .context("connect timed out")??;
        sqlx::query("SELECT 1").execute(&mut c).await?;
        c.close().await?;
        anyhow::Ok(())
    })
    .await
}

/// Retry `attempt` every `interval` until it succeeds; after `timeout`, its last error.
async fn retry_until<F, Fut>(
    timeout: Duration,
    interval: Duration,
    mut attempt: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(interval).await,
        }
    }
}

async fn create_database(admin_url: &str, db: &str) -> anyhow::Result<()> {
    let mut c = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("cannot connect to {}", redact(admin_url)))?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\""))
        .execute(&mut c)
        .await
        .with_context(|| format!("cannot drop a stale database {db}"))?;
    sqlx::query(&format!("CREATE DATABASE \"{db}\""))
        .execute(&mut c)
        .await
        .with_context(|| {
            format!(
                "cannot create database {db} on {} (the role needs CREATEDB)",
                redact(admin_url)
            )
        })?;
    c.close().await.ok();
    Ok(())
}

async fn drop_database(admin_url: &str, db: &str) -> anyhow::Result<()> {
    let mut c = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .execute(&mut c)
        .await?;
    c.close().await.ok();
    Ok(())
}

/// `url` with its database (path) replaced by `db`.
pub fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let mut u = url::Url::from_str(url).with_context(|| format!("bad database URL {url:?}"))?;
    u.set_path(&format!("/{db}"));
    Ok(u.to_string())
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::from_str(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Poll until Redis at `url` answers PING.
pub async fn redis_wait(url: &str, timeout: Duration) -> anyhow::Result<()> {
    retry_until(timeout, Duration::from_millis(100), || async {
        let client = redis::Client::open(url)?;
        let mut c = tokio::time::timeout(
            Duration::from_secs(3),
            client.get_multiplexed_async_connection(),
        )
        .await
        .context("connect timed out")??;
        let pong: String = redis::cmd("PING").query_async(&mut c).await?;
        anyhow::ensure!(pong == "PONG", "unexpected PING reply {pong:?}");
        anyhow::Ok(())
    })
    .await
}

async fn redis_delete_prefix(url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    // Bounded: at most 10k SCAN pages.
    for _ in 0..10_000 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await?;
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut c).await?;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_and_password_redacted() {
        assert_eq!(
            with_database("postgres://u:pw@127.0.0.1:5432/test?sslmode=disable", "x").unwrap(),
            "postgres://u:pw@127.0.0.1:5432/x?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://u:pw@127.0.0.1/db"),
            "postgres://u:***@127.0.0.1/db"
        );
        assert_eq!(sanitize("20261128-0301-Quick"), "20261128_0301_quick");
    }

    #[tokio::test]
    async fn closed_port_without_local_fallback_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(&dir.path().join("logs")).unwrap();
        let port = free_port().unwrap();
        let opts = Options {
            database_url: Some(format!("postgres://postgres@127.0.0.1:{port}/x")),
            ..Default::default()
        };
        let e = Services::resolve(
            Needs::for_phase("postgres").unwrap(),
            &opts,
            dir.path(),
            "t",
            &sup,
            None,
        )
        .await
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("does not answer") && msg.contains("FLOWLINE_DATABASE_URL"),
            "{msg}"
        );
        let e = Services::resolve(
            Needs::for_phase("pubsub").unwrap(),
            &Options::default(),
            dir.path(),
            "t",
            &sup,
            None,
        )
        .await
        .unwrap_err();
        assert!(format!("{e:#}").contains("--no-local-services"), "{e:#}");
    }

    /// Starts real throwaway servers from the installed binaries (needs postgres and
    /// redis-server installed, as scripts/test does).
    #[tokio::test]
    async fn throwaway_servers_start_isolate_and_go_away() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(&dir.path().join("logs")).unwrap();
        let opts = Options {
            allow_local: true,
            ..Default::default()
        };
        let mut s = Services::resolve(
            Needs::for_phase("queue").unwrap(),
            &opts,
            dir.path(),
            "unit",
            &sup,
            None,
        )
        .await
        .unwrap();
        let db = s.database_url.clone().unwrap();
        assert!(db.ends_with("/flowline_run_unit"), "{db}");
        pg_wait(&db, Duration::from_secs(5)).await.unwrap();
        redis_wait(s.redis_url.as_deref().unwrap(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(sup.live_pids().len(), 2);
        s.teardown(&sup).await;
        assert!(sup.live_pids().is_empty());
        assert!(!dir.path().join("services/postgres").exists());
    }
}
