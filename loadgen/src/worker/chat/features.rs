//! A chat user's feature traffic: typing before a message, reactions to the latest message
//! seen, thread replies, presence changes and attachment uploads, each at its persona's
//! rate on the user's own random stream (so personas without features keep exactly the
//! schedule they had before).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use flowline_protocol::ChannelId;
use flowline_protocol::ws::ClientOp;
use tokio::time::timeout;

use crate::plan::{PlanUser, UserRng, kept_user_rng};
use crate::scenario::{Persona, Scenario};
use crate::upload::upload;
use crate::worker::chat::frames::send_op;
use crate::worker::connect::Ws;
use crate::worker::context::{ACK_TIMEOUT, ThreadCtx};

/// Feature traffic state of one user (its own random stream, so personas without
/// features keep exactly the schedule they had before).
pub(super) struct Features {
    rng: UserRng,
    typing: bool,
    react_gap_s: Option<f64>,
    pub(super) presence_gap_s: Option<f64>,
    upload_gap_s: Option<f64>,
    thread_share: f64,
    pub(super) next_react: Option<Instant>,
    pub(super) next_presence: Option<Instant>,
    pub(super) next_upload: Option<Instant>,
    /// Feature operations awaiting their answer: (req_id, kind).
    waiting: VecDeque<(u64, &'static str)>,
    /// The latest message seen (to react to or start a thread on).
    pub(super) seen: Option<(ChannelId, flowline_protocol::MessageId)>,
    /// The user's thread channel, once `thread_created` answered.
    pub(super) thread: Option<ChannelId>,
    presence_n: u32,
    uploads: u32,
    /// `http://host:port` of the node (uploads).
    http: String,
    /// Uploaded attachments for the next message.
    pub(super) attach: Vec<flowline_protocol::AttachmentId>,
}

/// Purpose tag of the feature random stream.
const FEATURES: u64 = 2;
/// Most feature operations remembered while awaiting an answer.
const MAX_WAITING: usize = 256;

impl Features {
    pub(super) fn new(s: &Scenario, user: u32, p: &Persona, http: String) -> Self {
        let gap = |per_min: f64| (per_min > 0.0).then(|| 60.0 / per_min);
        Features {
            rng: kept_user_rng(s.seed, user, FEATURES),
            typing: p.typing,
            react_gap_s: gap(p.reactions_per_minute),
            presence_gap_s: gap(p.presence_per_minute),
            upload_gap_s: gap(p.uploads_per_minute),
            thread_share: p.thread_reply_share,
            next_react: None,
            next_presence: None,
            next_upload: None,
            waiting: VecDeque::new(),
            seen: None,
            thread: None,
            presence_n: 0,
            uploads: 0,
            http,
            attach: Vec::new(),
        }
    }

    fn next(&mut self, now: Instant, gap_s: Option<f64>, end: Instant) -> Option<Instant> {
        use rand_distr::Distribution;
        let g = gap_s?;
        let e: f64 = rand_distr::Exp1.sample(&mut self.rng);
        Some(now + Duration::from_secs_f64(e * g)).filter(|&at| at < end)
    }

    /// Schedule whatever is not scheduled yet.
    pub(super) fn schedule(&mut self, now: Instant, end: Instant) {
        if self.next_react.is_none() {
            self.next_react = self.next(now, self.react_gap_s, end);
        }
        if self.next_presence.is_none() {
            self.next_presence = self.next(now, self.presence_gap_s, end);
        }
        if self.next_upload.is_none() {
            self.next_upload = self.next(now, self.upload_gap_s, end);
        }
    }

    fn wait(&mut self, req_id: u64, kind: &'static str) {
        if self.waiting.len() >= MAX_WAITING {
            self.waiting.pop_front();
        }
        self.waiting.push_back((req_id, kind));
    }

    pub(super) fn answered(&mut self, req_id: u64) -> Option<&'static str> {
        let i = self.waiting.iter().position(|w| w.0 == req_id)?;
        self.waiting.remove(i).map(|w| w.1)
    }

    fn thread_reply(&mut self) -> bool {
        use rand::Rng;
        self.thread_share > 0.0 && self.rng.random_bool(self.thread_share.min(1.0))
    }

    /// Send the feature operations that are due; `Ok(true)` if something was written.
    pub(super) async fn due(
        &mut self,
        ctx: &ThreadCtx,
        ws: &mut Ws,
        now: Instant,
        plan: &PlanUser,
        next_req: &mut u64,
    ) -> std::result::Result<bool, ()> {
        let end = ctx.clock.send_end;
        let mut wrote = false;
        if self.next_react.is_some_and(|at| now >= at) {
            self.next_react = self.next(now, self.react_gap_s, end);
            if let Some((channel, id)) = self.seen {
                let req_id = take(next_req);
                const EMOJI: [&str; 4] = ["👍", "🎉", "❤️", "😂"];
                let emoji = EMOJI[(req_id % 4) as usize].to_string();
                let op = ClientOp::React {
                    req_id,
                    channel,
                    id,
                    emoji,
                };
                if send_op(ws, &op).await.is_err() {
                    ctx.error("ws_send");
                    return Err(());
                }
                self.wait(req_id, "react");
                ctx.count(|c| c.op("react"));
                wrote = true;
            }
        }
        if self.next_presence.is_some_and(|at| now >= at) {
            use flowline_protocol::ws::PresenceStatus;
            self.next_presence = self.next(now, self.presence_gap_s, end);
            const CYCLE: [PresenceStatus; 4] = [
                PresenceStatus::Idle,
                PresenceStatus::Online,
                PresenceStatus::Dnd,
                PresenceStatus::Online,
            ];
            let status = CYCLE[(self.presence_n % 4) as usize];
            self.presence_n += 1;
            let req_id = take(next_req);
            let op = ClientOp::SetPresence {
                req_id: Some(req_id),
                status,
                custom: None,
            };
            if send_op(ws, &op).await.is_err() {
                ctx.error("ws_send");
                return Err(());
            }
            self.wait(req_id, "set_presence");
            ctx.count(|c| c.op("set_presence"));
            wrote = true;
        }
        if self.next_upload.is_some_and(|at| now >= at) {
            self.next_upload = self.next(now, self.upload_gap_s, end);
            self.uploads += 1;
            let name = format!("lg-{}-{}.txt", plan.index, self.uploads);
            ctx.count(|c| c.op("upload"));
            let client = ctx.http_client();
            match timeout(ACK_TIMEOUT, upload(&client, &self.http, &plan.token, &name)).await {
                Ok(Ok(id)) => {
                    ctx.count(|c| c.op("upload_ok"));
                    self.attach.push(id);
                }
                Ok(Err(kind)) => ctx.error(&kind),
                Err(_) => ctx.error("upload:timeout"),
            }
        }
        Ok(wrote)
    }

    /// Before a message to `channel`: `typing` if the persona types, and a thread reply's
    /// detour (start the thread once, then send into it). Returns the channel to send to.
    pub(super) async fn before_send(
        &mut self,
        ctx: &ThreadCtx,
        ws: &mut Ws,
        mut channel: ChannelId,
        next_req: &mut u64,
    ) -> std::result::Result<ChannelId, ()> {
        if self.typing {
            if send_op(ws, &ClientOp::Typing { channel }).await.is_err() {
                ctx.error("ws_send");
                return Err(());
            }
            ctx.count(|c| c.op("typing"));
        }
        if self.thread_reply() {
            match (self.thread, self.seen) {
                (Some(t), _) => {
                    channel = t;
                    ctx.count(|c| c.op("thread_reply"));
                }
                (None, Some((ch, id))) if !self.waiting.iter().any(|w| w.1 == "start_thread") => {
                    let req_id = take(next_req);
                    let op = ClientOp::StartThread {
                        req_id,
                        channel: ch,
                        id,
                        name: None,
                    };
                    if send_op(ws, &op).await.is_err() {
                        ctx.error("ws_send");
                        return Err(());
                    }
                    self.wait(req_id, "start_thread");
                    ctx.count(|c| c.op("start_thread"));
                }
                _ => {}
            }
        }
        Ok(channel)
    }
}

/// The next request id of a user.
pub(super) fn take(next_req: &mut u64) -> u64 {
    let r = *next_req;
    *next_req += 1;
    r
}
