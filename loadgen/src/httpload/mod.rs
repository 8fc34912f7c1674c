//! HTTP personas on goose: a `GooseAttack` built from the scenario's personas with an
//! `http` kind (login storm, history paging, uploads, bots, flooders), run beside the
//! WebSocket users of the same worker. One file per kind (`login.rs`, `history.rs`,
//! `upload.rs`, `bot.rs`, `flood.rs`), each a `step` the goose transaction dispatches to
//! by [`HttpKind`]; what they share and how they time a request is `shared.rs`; what the
//! posting kinds record for the checker and the tick lines is `posts.rs`; the flooder's
//! clock is `pace.rs`; what the attack reports is `wire::HttpReport`.
//!
//! ```text
//! personas with http = "login" | "history" | "upload" | "bot" | "flood"
//!   └─▶ one goose scenario per persona, weight = its users in this shard
//!         on_start: take the next plan user of that persona (token, channels);
//!                   login: sign the user up (a password hash, once)
//!         transaction, every 60 s / requests_per_minute:
//!           login    POST /api/v1/auth/login              (argon2 verify on the node)
//!           history  GET  /api/v1/channels/{id}/messages?before=…  (pages back, restarts)
//!           upload   POST /api/v1/uploads (multipart field `file`)
//!           bot      POST …/messages (Idempotency-Key, some retried), PATCH, PUT reaction
//!           flood    every POST …/messages due by its clock at once (up to 32 in
//!                    flight, so the rate holds however slow the node), one channel,
//!                    over the rate limits
//!                    └─▶ PostLog: sends/acked (checker), counters per second (ticks)
//! ```
//! Every request is also timed here into an HdrHistogram per kind, so `summary.json` gives
//! p50…max in the same form as the WebSocket metrics; goose's own counts and status codes
//! are folded in as well (the flooder's requests, made beside goose, are counted in the
//! same form by `shared.rs`), and goose writes its HTML report into the run folder
//! (`goose-report-w<I>.html`). A non-2xx answer counts as an error of kind
//! `http:<kind>:<status>` (e.g. `http:upload:404` while a node has no uploads API),
//! except a 429, which is counted as `rate_limited`.

mod bot;
mod flood;
mod history;
mod login;
mod pace;
mod posts;
mod shared;
mod upload;

pub use posts::PostLog;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goose::GooseAttack;
use goose::config::{GooseConfiguration, GooseDefault, GooseDefaultType};
use goose::goose::{GooseUser, Scenario as GooseScenario, Transaction};
use goose::prelude::TransactionResult;

use crate::error::{LoadgenError, Result};
use crate::histogram::{self, new_histogram};
use crate::plan::PlanUser;
use crate::scenario::{HttpKind, Persona, Scenario};
use crate::wire::HttpReport;
use shared::{Session, Shared};

/// Request names of the posting kinds (their own kinds in the report).
const POSTING: [&str; 5] = [
    "bot_post",
    "bot_retry",
    "bot_edit",
    "bot_react",
    "flood_post",
];

/// A goose user starts: take the next plan user of its kind (a login user signs up).
async fn on_start(shared: Arc<Shared>, user: &mut GooseUser) -> TransactionResult {
    let plan = shared
        .users
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop_front();
    let Some(plan) = plan else {
        return Ok(());
    };
    let username = format!("{}{}", shared.prefix, plan.index);
    let password = format!("pw-{}-{}", plan.index, shared.prefix);
    if shared.kind == HttpKind::Login {
        login::sign_up(&shared, user, &username, &password).await?;
    }
    user.set_session_data(Session {
        token: plan.token.clone(),
        user: plan,
        username,
        password,
        before: None,
        channel: 0,
        uploads: 0,
        sent_n: 0,
        steps: 0,
        latest: None,
        retried: 0,
        pace: None,
    });
    Ok(())
}

/// One transaction of the user's kind.
async fn step(shared: Arc<Shared>, user: &mut GooseUser) -> TransactionResult {
    match shared.kind {
        HttpKind::Login => login::step(&shared, user).await,
        HttpKind::History => history::step(&shared, user).await,
        HttpKind::Upload => upload::step(&shared, user).await,
        HttpKind::Bot => bot::step(&shared, user).await,
        HttpKind::Flood => flood::step(&shared, user).await,
    }
}

/// The users of one HTTP persona in one worker.
pub struct HttpGroup {
    /// What they do.
    pub kind: HttpKind,
    /// Their persona (rate, body size, retry share).
    pub persona: Persona,
    /// Their plan users.
    pub users: Vec<PlanUser>,
}

/// The HTTP users of one worker and how to run them.
pub struct HttpLoad {
    /// Node HTTP base URL.
    pub host: String,
    /// Users by persona.
    pub groups: Vec<HttpGroup>,
    /// Where the posting personas record their posts and counters.
    pub log: Arc<PostLog>,
    /// How long the goose users run (warm-up + duration: they stop with the sends).
    pub run_time: Duration,
    /// Users started per second.
    pub start_rate: u32,
    /// Goose's HTML report, if any.
    pub report: Option<PathBuf>,
}

impl HttpLoad {
    /// The HTTP users of `users` (already this shard's), or `None` if the scenario has no
    /// HTTP persona; posts and counters go to `log`.
    pub fn from_scenario(
        s: &Scenario,
        users: &[PlanUser],
        host: String,
        report: Option<PathBuf>,
        log: Arc<PostLog>,
    ) -> Option<HttpLoad> {
        let mut by_persona: BTreeMap<u32, HttpGroup> = BTreeMap::new();
        for u in users {
            if let Some(p) = s.personas.get(u.persona as usize)
                && let Some(kind) = p.http
            {
                by_persona
                    .entry(u.persona)
                    .or_insert_with(|| HttpGroup {
                        kind,
                        persona: p.clone(),
                        users: Vec::new(),
                    })
                    .users
                    .push(u.clone());
            }
        }
        if by_persona.is_empty() {
            return None;
        }
        Some(HttpLoad {
            host,
            groups: by_persona.into_values().collect(),
            log,
            run_time: s.warmup + s.duration,
            start_rate: s.load.connect_rate,
            report,
        })
    }

    /// Run the goose attack to its end.
    pub async fn run(self) -> Result<(HttpReport, BTreeMap<String, u64>)> {
        let bad = |e: goose::GooseError| LoadgenError::Invalid(format!("goose: {e}"));
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let prefix = format!("lgh{}x", millis % 10_000_000_000);
        let total: usize = self.groups.iter().map(|g| g.users.len()).sum();
        let mut attack =
            GooseAttack::initialize_with_config(GooseConfiguration::default()).map_err(bad)?;
        let mut shared_all = Vec::new();
        for (i, g) in self.groups.into_iter().enumerate() {
            let (kind, users) = (g.kind, g.users);
            let per_min = g.persona.requests_per_minute;
            let shared = Arc::new(Shared {
                kind,
                persona: g.persona,
                log: self.log.clone(),
                users: Mutex::new(users.iter().cloned().collect()),
                prefix: prefix.clone(),
                hist: Mutex::new(BTreeMap::new()),
                errors: Mutex::new(BTreeMap::new()),
                direct: Mutex::new(BTreeMap::new()),
            });
            shared_all.push(shared.clone());
            let gap = if per_min > 0.0 {
                Duration::from_secs_f64(60.0 / per_min)
            } else {
                Duration::from_secs(3600)
            };
            let s1 = shared.clone();
            let start = Transaction::new(Arc::new(move |u| Box::pin(on_start(s1.clone(), u))))
                .set_name("start")
                .set_on_start();
            let s2 = shared.clone();
            let work = Transaction::new(Arc::new(move |u| Box::pin(step(s2.clone(), u))))
                .set_name(kind.as_str());
            let sc = GooseScenario::new(&format!("{}-{i}", kind.as_str()))
                .register_transaction(start)
                .register_transaction(work)
                .set_weight(users.len().max(1))
                .map_err(bad)?
                .set_wait_time(gap.mul_f64(0.5), gap.mul_f64(1.5))
                .map_err(bad)?;
            attack = attack.register_scenario(sc);
        }
        let run_s = self.run_time.as_secs().max(1);
        attack = *attack
            .set_default(GooseDefault::Host, self.host.as_str())
            .map_err(bad)?
            .set_default(GooseDefault::Users, total)
            .map_err(bad)?
            .set_default(
                GooseDefault::IncreaseRate,
                format!("{}", self.start_rate.max(1)).as_str(),
            )
            .map_err(bad)?
            .set_default(GooseDefault::RunTime, run_s as usize)
            .map_err(bad)?
            .set_default(GooseDefault::NoResetMetrics, true)
            .map_err(bad)?
            .set_default(GooseDefault::NoPrintMetrics, true)
            .map_err(bad)?
            .set_default(GooseDefault::Quiet, 1)
            .map_err(bad)?
            // No controllers: they would listen on fixed ports (5116, 5117), which a
            // second worker or attack on this machine finds taken.
            .set_default(GooseDefault::NoTelnet, true)
            .map_err(bad)?
            .set_default(GooseDefault::NoWebSocket, true)
            .map_err(bad)?;
        let mut report_paths = Vec::new();
        if let Some(r) = &self.report {
            let p = r.to_string_lossy().into_owned();
            attack = *attack
                .set_default(GooseDefault::ReportFile, p.as_str())
                .map_err(bad)?;
            report_paths.push(p);
        }
        let gm = attack.execute().await.map_err(bad)?;
        let mut rep = HttpReport {
            reports: report_paths,
            goose_users: gm.total_users as u64,
            goose_seconds: gm.duration as u64,
            ..HttpReport::default()
        };
        for agg in gm.requests.values() {
            // Goose keys requests by name or path; map both forms to our kinds.
            let p = agg.path.as_str();
            let key = if POSTING.contains(&p) {
                p.to_string()
            } else if p.contains("signup") {
                "signup".to_string()
            } else if p.contains("login") {
                "login".to_string()
            } else if p.contains("history") || p.contains("/messages") {
                "history".to_string()
            } else if p.contains("upload") {
                "upload".to_string()
            } else {
                p.to_string()
            };
            let e = rep.kinds.entry(key).or_default();
            e.requests += (agg.success_count + agg.fail_count) as u64;
            e.success += agg.success_count as u64;
            e.fail += agg.fail_count as u64;
            for (c, n) in &agg.status_code_counts {
                *e.status_codes.entry(c.to_string()).or_default() += *n as u64;
            }
        }
        let mut errors = BTreeMap::new();
        for sh in &shared_all {
            for (name, h) in sh.hist.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let e = rep.kinds.entry((*name).to_string()).or_default();
                let mut merged = if e.hist.is_empty() {
                    new_histogram()
                } else {
                    histogram::decode(&e.hist)?
                };
                merged
                    .add(h)
                    .map_err(|e| LoadgenError::Histogram(format!("merge: {e:?}")))?;
                e.hist = histogram::encode(&merged)?;
            }
            for (name, d) in sh.direct.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let e = rep.kinds.entry((*name).to_string()).or_default();
                e.requests += d.requests;
                e.success += d.success;
                e.fail += d.fail;
                for (c, n) in &d.status_codes {
                    *e.status_codes.entry(c.clone()).or_default() += n;
                }
            }
            for (k, n) in sh.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                *errors.entry(k.clone()).or_default() += n;
            }
        }
        Ok((rep, errors))
    }
}
