//! `flowline run / compare / replay / report`: flags and entry points.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use flowline_loadgen::scenario::{Overrides, Scenario};

use crate::preflight::ScenarioSource;
use crate::run::RunOptions;

/// Run a scenario: bring a cluster up, drive it, inject its faults, write the run folder.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Scenario file; without it, the embedded quickstart (scenarios/quickstart.toml).
    pub scenario: Option<PathBuf>,
    /// Folder the run folder is created in (`<out>/<timestamp>-<scenario>/`).
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Seed (replaces `run.seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Architecture phase: single, postgres, pubsub or queue (replaces `cluster.phase`).
    #[arg(long)]
    pub phase: Option<String>,
    /// Run the scenario once per phase, in this order (e.g. `single,postgres,pubsub,queue`),
    /// all with one seed (drawn once and printed unless given), one run folder per phase
    /// under `<out>/<timestamp>-<scenario>-phases/<phase>/`, then their comparison (table
    /// and compare.html in that parent folder). Exit 2 if a phase could not be carried
    /// out, 1 if a phase failed a threshold, 0 otherwise.
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "phase",
        value_name = "PHASE,..."
    )]
    pub phases: Vec<String>,
    /// Number of nodes (replaces `cluster.nodes`).
    #[arg(long)]
    pub nodes: Option<u32>,
    /// Number of simulated users (replaces `population.users`).
    #[arg(long)]
    pub users: Option<u32>,
    /// Measured duration, e.g. `30s` (replaces `run.duration`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Postgres to use (the run gets its own database in it).
    #[arg(long, env = "FLOWLINE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Redis to use (the run gets its own key prefix in it).
    #[arg(long, env = "FLOWLINE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Never start throwaway Postgres/Redis servers; fail if a needed URL is not given.
    #[arg(long, env = "FLOWLINE_NO_LOCAL_SERVICES", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_local_services: bool,
    /// Keep the run's database, Redis keys and throwaway data folders, and plan.json.
    #[arg(long)]
    pub keep: bool,
    /// Number of loadgen worker processes (default: as many as the users need).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Put the run's link proxies (client-node<i>, node<i>-postgres, node<i>-redis, or
    /// client-target<i> for a generic WebSocket target) on
    /// this Toxiproxy API (e.g. `http://127.0.0.1:8474`, or the docker-compose
    /// `http://toxiproxy:8474`) instead of the embedded chaos proxy; link faults are
    /// injected there. The proxies it creates are deleted at the end.
    #[arg(long, env = "FLOWLINE_TOXIPROXY_URL")]
    pub toxiproxy_url: Option<String>,
    /// Network isolation: `netns` puts every node, the throwaway Postgres/Redis and every
    /// loadgen worker in a network namespace of its own on a bridge the run creates
    /// (kernel faults between hosts need it; needs root), `none` keeps everything on
    /// loopback (replaces `cluster.isolation`). See docs/harness.md.
    #[arg(long, value_name = "none|netns")]
    pub isolation: Option<String>,
    /// Serve the run's own metrics endpoints (chaos controller, loadgen workers) on every
    /// interface and name them with this host in metrics-targets.json, for a Prometheus
    /// on another machine or container (default: loopback only).
    #[arg(long)]
    pub metrics_host: Option<String>,
    /// How long the loadgen workers have to connect to the run's coordinator and say hello
    /// (e.g. `60s`); after it the run exits 2 naming the missing shards.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s", value_name = "DURATION")]
    pub workers_timeout: Duration,
    /// Processes carrying each client link (client-node<i>, client-target<i>) of the
    /// embedded chaos proxy. Default: as many as the users need — the harness process
    /// itself up to 8,000 users, above that enough `flowline chaos data-plane` processes
    /// that none holds more files than the process limit. They share the link's one
    /// address; faults set through the chaos API reach them all.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub client_link_processes: Option<u16>,
    /// Connect the workers straight to the nodes (or the generic target's URLs): no
    /// client-node<i> / client-target<i> proxies, so no process carries them and a fault
    /// on one is refused before anything starts. Links behind the nodes (node<i>-redis,
    /// node<i>-postgres) and process faults stay. The baseline that shows what the
    /// client-link proxies add (docs/harness.md, "Client links at any scale").
    #[arg(long, conflicts_with = "client_link_processes")]
    pub direct_clients: bool,
    /// Serve the run console: a live page of the run (users, rates, per-second latency
    /// percentiles, errors, faults shaded, CPU/memory, thresholds as they stand), updated
    /// every second, where faults can be injected and healed by hand (they are written to
    /// events.jsonl and appended to the run folder's scenario.toml, so `flowline replay`
    /// repeats them). Listens on ADDR (an IP, a free port, or IP:PORT; default
    /// 127.0.0.1); the start line prints the page's URL with the run's token, which every
    /// request needs. See docs/console.md.
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "127.0.0.1",
        conflicts_with = "phases"
    )]
    pub console: Option<String>,
    /// Let `--console=ADDR` be an address other than loopback (prints a warning: whoever
    /// has the token can inject faults into the run).
    #[arg(long, requires = "console")]
    pub console_allow_remote: bool,
    /// Keep the console up after the run (with its final numbers and verdict) until Ctrl-C.
    #[arg(long, requires = "console")]
    pub console_keep: bool,
    /// Where the workers run: `--launcher kubernetes` makes them the pods of an Indexed
    /// Job (docs/kubernetes.md).
    #[command(flatten)]
    pub kube: crate::kubernetes::cli::KubeArgs,
}

impl RunArgs {
    /// The options of a run described by these flags.
    pub fn to_options(&self) -> anyhow::Result<RunOptions> {
        let phase = match &self.phase {
            Some(p) => Some(
                p.parse::<flowline_loadgen::scenario::Phase>()
                    .map_err(anyhow::Error::msg)
                    .context("--phase")?,
            ),
            None => None,
        };
        let isolation = match &self.isolation {
            Some(i) => Some(
                i.parse::<flowline_loadgen::scenario::Isolation>()
                    .map_err(anyhow::Error::msg)
                    .context("--isolation")?,
            ),
            None => None,
        };
        Ok(RunOptions {
            scenario: match &self.scenario {
                Some(p) => ScenarioSource::File(p.clone()),
                None => ScenarioSource::Embedded,
            },
            out: self.out.clone(),
            overrides: flowline_loadgen::scenario::Overrides {
                seed: self.seed,
                phase,
                nodes: self.nodes,
                users: self.users,
                duration: self.duration,
                isolation,
            },
            services: crate::services::Options {
                database_url: self.database_url.clone().filter(|s| !s.is_empty()),
                redis_url: self.redis_url.clone().filter(|s| !s.is_empty()),
                allow_local: !self.no_local_services,
                keep: self.keep,
            },
            workers: self.workers,
            toxiproxy_url: self.toxiproxy_url.clone().filter(|s| !s.is_empty()),
            metrics_host: self.metrics_host.clone().filter(|s| !s.is_empty()),
            workers_timeout: self.workers_timeout,
            client_link_processes: self.client_link_processes.map(usize::from),
            direct_clients: self.direct_clients,
            console: match &self.console {
                Some(addr) => {
                    // Refused before anything starts.
                    crate::console::parse_addr(addr, self.console_allow_remote)?;
                    Some(crate::console::ConsoleOptions {
                        addr: addr.clone(),
                        allow_remote: self.console_allow_remote,
                        keep: self.console_keep,
                    })
                }
                None => None,
            },
        })
    }
}

/// Entry point of `flowline run`: exit 0 thresholds held, 1 one failed, 2 not carried out.
pub async fn run_main(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.kube.launcher == crate::kubernetes::cli::Launcher::Kubernetes {
        if !args.phases.is_empty() {
            anyhow::bail!(
                "--phases runs locally only: give one --phase with --launcher kubernetes"
            );
        }
        if args.console.is_some() {
            anyhow::bail!("--console is not served with --launcher kubernetes yet: run locally");
        }
        let outcome = crate::kubernetes::launch::run(args.to_options()?, &args.kube).await?;
        return Ok(outcome.exit_code());
    }
    args.kube.check_local()?;
    if !args.phases.is_empty() {
        let phases = crate::phases::parse_phases(&args.phases)?;
        return crate::phases::run_phases(args.to_options()?, &phases).await;
    }
    let opts = args.to_options()?;
    let outcome = crate::run::run(opts).await?;
    Ok(outcome.exit_code())
}

/// Compare finished runs side by side.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Run folders (`runs/<timestamp>-<scenario>`).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where to write the HTML page (default: compare.html beside the first run).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Entry point of `flowline compare`.
pub async fn compare_main(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let path = crate::compare::compare(&args.runs, args.out.as_deref())?;
    eprintln!("flowline: comparison written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Run a finished run again from its scenario.toml and seed, and say what differs.
///
/// The replay runs as the original did: same scenario, seed and phase, and with the users
/// straight to the nodes if the original ran with `--direct-clients`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The run folder to replay.
    pub run: PathBuf,
    /// Folder the new run folder is created in (default: beside the original).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Postgres to use.
    #[arg(long, env = "FLOWLINE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Redis to use.
    #[arg(long, env = "FLOWLINE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Never start throwaway Postgres/Redis servers.
    #[arg(long, env = "FLOWLINE_NO_LOCAL_SERVICES", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_local_services: bool,
}

/// Entry point of `flowline replay`: the new run's exit status.
pub async fn replay_main(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let services = crate::services::Options {
        database_url: args.database_url.filter(|s| !s.is_empty()),
        redis_url: args.redis_url.filter(|s| !s.is_empty()),
        allow_local: !args.no_local_services,
        keep: false,
    };
    crate::replay::replay(&args.run, args.out, services).await
}

/// (Re)write report.html of a run folder from its files.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The run folder.
    pub run: PathBuf,
}

/// Entry point of `flowline report`.
pub async fn report_main(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let path = crate::report::write(&args.run)?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Work with scenario files.
#[derive(Debug, clap::Args)]
pub struct ScenarioArgs {
    #[command(subcommand)]
    command: ScenarioCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ScenarioCommand {
    /// Validate scenario files: prints `OK` and a summary, or every problem with its
    /// line and column. Runs every check `flowline run` makes before it starts anything,
    /// the topology ones included (every fault must hit a node or link the run will have).
    /// Exit status 0 when all are valid, 2 otherwise.
    Check {
        /// Scenario files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Check as for `flowline run --toxiproxy-url`: the links go on that Toxiproxy
        /// (client links carry any number of users; faults on an external cluster are
        /// checked against the Toxiproxy's proxies when the run starts). Nothing is
        /// contacted.
        #[arg(long, env = "FLOWLINE_TOXIPROXY_URL")]
        toxiproxy_url: Option<String>,
    },
    /// Print a scenario as it would run (defaults and seed filled in) as TOML.
    Print {
        /// Scenario file.
        file: PathBuf,
        /// Override the seed.
        #[arg(long)]
        seed: Option<u64>,
    },
}

/// Entry point of `flowline scenario`.
pub async fn scenario_main(args: ScenarioArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ScenarioCommand::Check {
            files,
            toxiproxy_url,
        } => {
            let remote_proxy = toxiproxy_url.is_some_and(|u| !u.is_empty());
            let mut ok = true;
            for f in files {
                match check_file(&f, remote_proxy) {
                    Ok(summary) => println!("OK {}: {summary}", f.display()),
                    Err(e) => {
                        ok = false;
                        println!("{e}");
                    }
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        ScenarioCommand::Print { file, seed } => {
            let s = Scenario::from_path(&file)?.apply(&Overrides {
                seed,
                ..Overrides::default()
            })?;
            print!("{}", s.to_toml());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One file of `flowline scenario check`: its summary, or every problem as one message
/// (the file's parse and validation errors carry their own name, line and column).
fn check_file(f: &std::path::Path, remote_proxy: bool) -> Result<String, String> {
    let s = Scenario::from_path(f).map_err(|e| e.to_string())?;
    let summary = s.summary();
    let need = crate::preflight::prepare(s, &Overrides::default())
        .and_then(|s| {
            crate::preflight::check(&s, remote_proxy)?;
            crate::preflight::need(&s, None, None, remote_proxy)
        })
        .map_err(|e| format!("{}: {e:#}", f.display()))?;
    Ok(format!("{summary}; needs {}", need.describe()))
}
