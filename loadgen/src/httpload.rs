//! HTTP personas on goose: a `GooseAttack` built from the scenario's personas with an
//! `http` kind (login storm, history paging, uploads), run beside the WebSocket users of
//! the same worker.
//!
//! ```text
//! personas with http = "login" | "history" | "upload"
//!   └─▶ one goose scenario per kind, weight = users of that kind in this shard
//!         on_start: take the next plan user of that kind (token, channels);
//!                   login: sign the user up (a password hash, once)
//!         transaction, every 60 s / requests_per_minute:
//!           login    POST /api/v1/auth/login              (argon2 verify on the node)
//!           history  GET  /api/v1/channels/{id}/messages?before=…  (pages back, restarts)
//!           upload   POST /api/v1/uploads (multipart field `file`)
//! ```
//! Every request is also timed here into an HdrHistogram per kind, so `summary.json` gives
//! p50…max in the same form as the WebSocket metrics; goose's own counts and status codes
//! are folded in as well, and goose writes its HTML report into the run folder
//! (`goose-report-w<I>.html`). A non-2xx answer counts as an error of kind
//! `http:<kind>:<status>` (e.g. `http:upload:404` while a node has no uploads API).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use goose::GooseAttack;
use goose::config::{GooseConfiguration, GooseDefault, GooseDefaultType};
use goose::goose::{GooseMethod, GooseRequest, GooseUser, Scenario as GooseScenario, Transaction};
use goose::prelude::TransactionResult;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::aggregate::Percentiles;
use crate::error::{LoadgenError, Result};
use crate::metrics::{self, new_histogram};
use crate::plan::PlanUser;
use crate::scenario::{HttpKind, Scenario};

/// One kind of HTTP request, merged over workers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpStat {
    /// Requests made.
    pub requests: u64,
    /// 2xx answers.
    pub success: u64,
    /// Other answers and transport errors.
    pub fail: u64,
    /// Answers by status code (goose's count; string keys, as JSON has them).
    pub status_codes: BTreeMap<String, u64>,
    /// Request latency, µs (base64 HdrHistogram V2 compressed, as in tick lines).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hist: String,
    /// Percentiles of `hist` (filled in by the aggregator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Percentiles>,
}

/// What a worker's goose attack did (part of its `done` line).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpReport {
    /// By kind (`login`, `signup`, `history`, `upload`).
    pub kinds: BTreeMap<String, HttpStat>,
    /// Goose HTML reports written (run-folder paths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<String>,
    /// Goose's own totals: users started, seconds run.
    pub goose_users: u64,
    /// Seconds goose ran.
    pub goose_seconds: u64,
}

impl HttpReport {
    /// Merge another worker's report.
    pub fn merge(&mut self, o: &HttpReport) -> Result<()> {
        for (k, s) in &o.kinds {
            let e = self.kinds.entry(k.clone()).or_default();
            e.requests += s.requests;
            e.success += s.success;
            e.fail += s.fail;
            for (c, n) in &s.status_codes {
                *e.status_codes.entry(c.clone()).or_default() += n;
            }
            if !s.hist.is_empty() {
                let mut h = if e.hist.is_empty() {
                    new_histogram()
                } else {
                    metrics::decode(&e.hist)?
                };
                h.add(metrics::decode(&s.hist)?)
                    .map_err(|e| LoadgenError::Histogram(format!("merge: {e:?}")))?;
                e.hist = metrics::encode(&h)?;
            }
        }
        self.reports.extend(o.reports.iter().cloned());
        self.goose_users += o.goose_users;
        self.goose_seconds = self.goose_seconds.max(o.goose_seconds);
        Ok(())
    }

    /// Fill in the percentiles of every kind.
    pub fn finish(&mut self) {
        for s in self.kinds.values_mut() {
            if let Ok(h) = metrics::decode(&s.hist) {
                s.latency_us = Some(Percentiles::of(&h));
            }
        }
    }
}

/// State shared by the goose users of one kind.
struct Shared {
    kind: HttpKind,
    users: Mutex<VecDeque<PlanUser>>,
    /// Username prefix for signed-up users (unique per run).
    prefix: String,
    hist: Mutex<BTreeMap<&'static str, Histogram<u64>>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn record(&self, name: &'static str, us: u64) {
        let mut h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        metrics::record(h.entry(name).or_insert_with(new_histogram), us);
    }

    fn error(&self, kind: String) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }
}

/// A goose user's own state.
#[derive(Clone)]
struct Session {
    user: PlanUser,
    token: String,
    username: String,
    password: String,
    /// History paging: the seq to page back from (`None`: the newest page).
    before: Option<i64>,
    channel: usize,
    uploads: u64,
}

type Res<T> = std::result::Result<T, Box<goose::goose::TransactionError>>;

async fn timed(
    shared: &Shared,
    user: &mut GooseUser,
    name: &'static str,
    method: GooseMethod,
    path: &str,
    build: impl FnOnce(goose_reqwest::RequestBuilder) -> goose_reqwest::RequestBuilder,
) -> Res<(u16, Option<goose_reqwest::Response>)> {
    let rb = build(user.get_request_builder(&method, path)?);
    let req = GooseRequest::builder()
        .method(method)
        .path(path)
        .name(name)
        .set_request_builder(rb)
        .build();
    let t0 = Instant::now();
    let resp = user.request(req).await?;
    shared.record(name, t0.elapsed().as_micros() as u64);
    match resp.response {
        Ok(r) => {
            let status = r.status().as_u16();
            if !r.status().is_success() {
                shared.error(format!("http:{name}:{status}"));
            }
            Ok((status, Some(r)))
        }
        Err(_) => {
            shared.error(format!("http:{name}:io"));
            Ok((0, None))
        }
    }
}

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
        let body = serde_json::json!({ "username": username, "password": password });
        timed(
            &shared,
            user,
            "signup",
            GooseMethod::Post,
            "/api/v1/auth/signup",
            |rb| rb.json(&body),
        )
        .await?;
    }
    user.set_session_data(Session {
        token: plan.token.clone(),
        user: plan,
        username,
        password,
        before: None,
        channel: 0,
        uploads: 0,
    });
    Ok(())
}

async fn step(shared: Arc<Shared>, user: &mut GooseUser) -> TransactionResult {
    let Some(s) = user.get_session_data::<Session>() else {
        return Ok(());
    };
    match shared.kind {
        HttpKind::Login => {
            let body = serde_json::json!({ "username": s.username, "password": s.password });
            let (status, resp) = timed(
                &shared,
                user,
                "login",
                GooseMethod::Post,
                "/api/v1/auth/login",
                |rb| rb.json(&body),
            )
            .await?;
            if status == 200
                && let Some(r) = resp
                && let Ok(sess) = r.json::<flowline_protocol::api::Session>().await
                && let Some(s) = user.get_session_data_mut::<Session>()
            {
                s.token = sess.token;
            }
        }
        HttpKind::History => {
            let Some(&channel) = s
                .user
                .channels
                .get(s.channel % s.user.channels.len().max(1))
            else {
                return Ok(());
            };
            let path = match s.before {
                Some(b) => format!("/api/v1/channels/{channel}/messages?limit=50&before={b}"),
                None => format!("/api/v1/channels/{channel}/messages?limit=50"),
            };
            let token = s.token.clone();
            let (status, resp) = timed(&shared, user, "history", GooseMethod::Get, &path, |rb| {
                rb.bearer_auth(token)
            })
            .await?;
            let page = match (status, resp) {
                (200, Some(r)) => r
                    .json::<Vec<flowline_protocol::ws::Message>>()
                    .await
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            if let Some(s) = user.get_session_data_mut::<Session>() {
                // Page back until the start of the channel, then the next channel's newest.
                match page.iter().map(|m| m.seq).min() {
                    Some(min) if min > 1 => s.before = Some(min),
                    _ => {
                        s.before = None;
                        s.channel += 1;
                    }
                }
            }
        }
        HttpKind::Upload => {
            let token = s.token.clone();
            let name = format!("lgh-{}-{}.txt", s.user.index, s.uploads);
            timed(
                &shared,
                user,
                "upload",
                GooseMethod::Post,
                "/api/v1/uploads",
                |rb| {
                    rb.bearer_auth(token)
                        .header("content-type", crate::upload::content_type())
                        .body(crate::upload::multipart_body(
                            &name,
                            crate::upload::UPLOAD_BYTES,
                        ))
                },
            )
            .await?;
            if let Some(s) = user.get_session_data_mut::<Session>() {
                s.uploads += 1;
            }
        }
    }
    Ok(())
}

/// The HTTP users of one worker and how to run them.
pub struct HttpLoad {
    /// Node HTTP base URL.
    pub host: String,
    /// Users by kind (with their persona's rate, requests per minute).
    pub users: Vec<(HttpKind, f64, Vec<PlanUser>)>,
    /// How long the goose users run (warm-up + duration: they stop with the sends).
    pub run_time: Duration,
    /// Users started per second.
    pub start_rate: u32,
    /// Goose's HTML report, if any.
    pub report: Option<PathBuf>,
}

impl HttpLoad {
    /// The HTTP users of `users` (already this shard's), or `None` if the scenario has no
    /// HTTP persona.
    pub fn from_scenario(
        s: &Scenario,
        users: &[PlanUser],
        host: String,
        report: Option<PathBuf>,
    ) -> Option<HttpLoad> {
        let mut by_kind: BTreeMap<(HttpKind, u64), Vec<PlanUser>> = BTreeMap::new();
        for u in users {
            if let Some(p) = s.personas.get(u.persona as usize)
                && let Some(k) = p.http
            {
                by_kind
                    .entry((k, p.requests_per_minute.to_bits()))
                    .or_default()
                    .push(u.clone());
            }
        }
        if by_kind.is_empty() {
            return None;
        }
        Some(HttpLoad {
            host,
            users: by_kind
                .into_iter()
                .map(|((k, rate), us)| (k, f64::from_bits(rate), us))
                .collect(),
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
        let total: usize = self.users.iter().map(|u| u.2.len()).sum();
        let mut attack =
            GooseAttack::initialize_with_config(GooseConfiguration::default()).map_err(bad)?;
        let mut shared_all = Vec::new();
        for (i, (kind, per_min, users)) in self.users.into_iter().enumerate() {
            let shared = Arc::new(Shared {
                kind,
                users: Mutex::new(users.iter().cloned().collect()),
                prefix: prefix.clone(),
                hist: Mutex::new(BTreeMap::new()),
                errors: Mutex::new(BTreeMap::new()),
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
            let key = if p.contains("signup") {
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
                    metrics::decode(&e.hist)?
                };
                merged
                    .add(h)
                    .map_err(|e| LoadgenError::Histogram(format!("merge: {e:?}")))?;
                e.hist = metrics::encode(&merged)?;
            }
            for (k, n) in sh.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                *errors.entry(k.clone()).or_default() += n;
            }
        }
        Ok((rep, errors))
    }
}
