//! What the goose users of one HTTP persona share (their plan users, histograms, errors,
//! the post log), what each one keeps (its [`Session`]), and how they make a request:
//! [`timed`] through goose, or [`timed_direct`] beside it when a user has several in
//! flight (the flooder); both time, count and judge an answer the same way.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use goose::goose::{GooseMethod, GooseRequest, GooseUser};
use hdrhistogram::Histogram;

use crate::histogram::{self, new_histogram};
use crate::httpload::pace::Pace;
use crate::httpload::posts::PostLog;
use crate::plan::PlanUser;
use crate::scenario::{HttpKind, Persona};
use crate::wire::HttpStat;

/// State shared by the goose users of one persona.
pub(super) struct Shared {
    pub(super) kind: HttpKind,
    pub(super) persona: Persona,
    /// Where posts and per-second counters go (the worker reads them).
    pub(super) log: Arc<PostLog>,
    pub(super) users: Mutex<VecDeque<PlanUser>>,
    /// Username prefix for signed-up users (unique per run).
    pub(super) prefix: String,
    pub(super) hist: Mutex<BTreeMap<&'static str, Histogram<u64>>>,
    pub(super) errors: Mutex<BTreeMap<String, u64>>,
    /// Requests made beside goose ([`timed_direct`]), which goose's metrics never see:
    /// counted here in goose's form and folded into the report.
    pub(super) direct: Mutex<BTreeMap<&'static str, HttpStat>>,
}

impl Shared {
    /// Record one request's latency, µs.
    pub(super) fn record(&self, name: &'static str, us: u64) {
        let mut h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        histogram::record(h.entry(name).or_insert_with(new_histogram), us);
    }

    /// Count one error of `kind`.
    pub(super) fn error(&self, kind: String) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    /// Count one request made beside goose: its status (0: no answer).
    fn count_direct(&self, name: &'static str, status: u16) {
        let mut d = self.direct.lock().unwrap_or_else(|e| e.into_inner());
        let e = d.entry(name).or_default();
        e.requests += 1;
        if (200..300).contains(&status) {
            e.success += 1;
        } else {
            e.fail += 1;
        }
        if status != 0 {
            *e.status_codes.entry(status.to_string()).or_default() += 1;
        }
    }
}

/// A goose user's own state.
#[derive(Clone)]
pub(super) struct Session {
    pub(super) user: PlanUser,
    pub(super) token: String,
    pub(super) username: String,
    pub(super) password: String,
    /// History paging: the seq to page back from (`None`: the newest page).
    pub(super) before: Option<i64>,
    pub(super) channel: usize,
    pub(super) uploads: u64,
    /// Posting personas: posts made (the `n` of their nonces).
    pub(super) sent_n: u64,
    /// Bot: actions taken (post, post, edit, react, …).
    pub(super) steps: u64,
    /// Bot: its latest stored post (channel, id).
    pub(super) latest: Option<(flowline_protocol::ChannelId, flowline_protocol::MessageId)>,
    /// Bot: posts retried with their key so far.
    pub(super) retried: u64,
    /// Flood: its clock (from its first step).
    pub(super) pace: Option<Pace>,
}

/// What a request step returns (goose's transaction error).
pub(super) type Res<T> = std::result::Result<T, Box<goose::goose::TransactionError>>;

/// Make one request named `name` (built by `build`), time it into the kind's histogram
/// and count a non-2xx answer or a transport error (a 429 is counted as `rate_limited`,
/// not as an error); returns the status (0: no answer) and the response.
pub(super) async fn timed(
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
    Ok(judge(shared, name, resp.response.ok()))
}

/// Make one request named `name` with the goose user's own client (`rb` from
/// `user.client`), outside goose: several at once for one user, which goose's `request`
/// (it needs the user exclusively) cannot. Timed, counted and judged as [`timed`] does;
/// counted into [`Shared::direct`] as goose would have.
pub(super) async fn timed_direct(
    shared: &Shared,
    name: &'static str,
    rb: goose_reqwest::RequestBuilder,
) -> (u16, Option<goose_reqwest::Response>) {
    let t0 = Instant::now();
    // Like goose's timing: until the answer's headers.
    let resp = rb.send().await;
    shared.record(name, t0.elapsed().as_micros() as u64);
    let (status, resp) = judge(shared, name, resp.ok());
    shared.count_direct(name, status);
    (status, resp)
}

/// Count an answer (`None`: none came): a 429 as `rate_limited`, another non-2xx or no
/// answer as an error `http:<name>:<status|io>`; returns its status (0: none).
fn judge(
    shared: &Shared,
    name: &'static str,
    resp: Option<goose_reqwest::Response>,
) -> (u16, Option<goose_reqwest::Response>) {
    match resp {
        Some(r) => {
            let status = r.status().as_u16();
            if status == 429 {
                shared.log.count(|c| c.rate_limited += 1);
            } else if !r.status().is_success() {
                shared.error(format!("http:{name}:{status}"));
            }
            (status, Some(r))
        }
        None => {
            shared.error(format!("http:{name}:io"));
            (0, None)
        }
    }
}
