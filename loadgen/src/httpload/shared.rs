//! What the goose users of one HTTP persona share (their plan users, histograms, errors,
//! the post log), what each one keeps (its [`Session`]), and the one way they make a
//! request: [`timed`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use goose::goose::{GooseMethod, GooseRequest, GooseUser};
use hdrhistogram::Histogram;

use crate::histogram::{self, new_histogram};
use crate::httpload::posts::PostLog;
use crate::plan::PlanUser;
use crate::scenario::{HttpKind, Persona};

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
    match resp.response {
        Ok(r) => {
            let status = r.status().as_u16();
            if status == 429 {
                shared.log.count(|c| c.rate_limited += 1);
            } else if !r.status().is_success() {
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
