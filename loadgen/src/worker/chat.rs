//! The chat user: one simulated member of the reference cluster, speaking the Flowline
//! protocol over one WebSocket at a time (the [`drive`] loop reconnects it).
//!
//! ```text
//! sleep until its start (ramp) ─▶ connect ─▶ hello (resuming its channels after a
//! reconnect) ─▶ ready ─▶ traffic: send on schedule (typing, thread replies, reactions,
//! presence, uploads: features.rs), history requests, pings; record acks and deliveries
//! ─▶ at the end of the drain: which subscriptions were still open ─▶ its receipts go to
//! the thread's history for the checker
//! ```

mod features;
pub(super) mod frames;

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use flowline_protocol::ws::{ClientOp, ServerEvent};
use flowline_protocol::{ChannelId, Seq};
use futures_util::StreamExt;
use tokio::time::{sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;

use crate::histogram::Metric;
use crate::plan::PlanUser;
use crate::receipts::Receipts;
use crate::schedule::UserSchedule;
use crate::wire::{Chain, Outcome, RecvKind, RecvRecord, SendRecord};
use crate::worker::connect::{Ws, target_index};
use crate::worker::context::{ACK_TIMEOUT, ThreadCtx};
use crate::worker::driver::{End, Sessions, drive};
use features::{Features, take};
use frames::{Peek, body, nonce, parse_nonce, send_op, wait_ready};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// One channel as seen by one user.
struct Chan {
    id: ChannelId,
    chains: Vec<Chain>,
    receipts: Receipts,
    subscribed: bool,
}

/// A send awaiting its ack.
struct Pending {
    req_id: u64,
    /// Intended (open) or actual (closed) send time.
    at: Instant,
    channel: ChannelId,
    /// The send counter in its nonce.
    n: u32,
}

/// One chat user's state for the whole run. Kept small: a worker holds up to 15,000 of
/// these, and the target is 10 KiB per user, socket and task included.
struct User {
    ctx: Rc<ThreadCtx>,
    plan: PlanUser,
    sched: UserSchedule,
    chans: Vec<Chan>,
    pending: VecDeque<Pending>,
    next_req: u64,
    sent_n: u64,
    /// Sessions that reached `ready` (the checker's connection epoch).
    epoch: u32,
    /// Next send: intended time (open) or after think time (closed).
    next_send: Option<Instant>,
    next_history: Option<Instant>,
    stop_at: Instant,
    /// Chat-feature traffic of the persona (reactions, threads, presence, uploads).
    feat: Features,
}

/// One chat user, from its start in the ramp to the end of the run.
pub(super) async fn user_main(ctx: Rc<ThreadCtx>, plan: PlanUser) {
    let s = ctx.scenario.clone();
    let Some(persona) = s.personas.get(plan.persona as usize) else {
        ctx.error("bad_persona");
        return;
    };
    if persona.http.is_some() {
        // Runs on goose (`httpload`).
        return;
    }
    let Some((start, stop_at)) = ctx.user_window(plan.index) else {
        return;
    };
    let churn = persona.reconnect_every;
    let home = target_index(plan.index, 0, ctx.targets.len());
    let http = crate::upload::http_base(&ctx.targets[home].url);
    let mut u = User {
        feat: Features::new(&s, plan.index, persona, http),
        sched: UserSchedule::new(&s, plan.index, persona),
        chans: plan
            .channels
            .iter()
            .map(|&id| Chan {
                id,
                chains: Vec::new(),
                receipts: Receipts::default(),
                subscribed: false,
            })
            .collect(),
        ctx: ctx.clone(),
        plan,
        pending: VecDeque::new(),
        next_req: 1,
        sent_n: 0,
        epoch: 0,
        next_send: None,
        next_history: None,
        stop_at,
    };
    if !ctx.wait_start(start).await {
        return;
    }
    if u.sched.is_open() {
        u.advance_open(start);
    }
    drive(&ctx, &mut u, churn).await;
    // Record what this user saw for the checker.
    let mut history = ctx.history.borrow_mut();
    for c in u.chans.drain(..) {
        if c.chains.is_empty() {
            continue;
        }
        history.recipient(c.receipts.into_record(u.plan.index, c.id, c.chains));
    }
}

impl Sessions for User {
    fn index(&self) -> u32 {
        self.plan.index
    }
    fn stop_at(&self) -> Instant {
        self.stop_at
    }
    async fn session(&mut self, ws: &mut Ws, churn_at: Option<Instant>) -> End {
        User::session(self, ws, churn_at).await
    }
}

impl User {
    fn advance_open(&mut self, after: Instant) {
        if let Some(curve) = self.ctx.curve.as_ref() {
            self.next_send = self.ctx.next_open(curve, &mut self.sched, after);
        }
    }

    fn schedule_closed(&mut self, now: Instant) {
        self.next_send = self.ctx.after_gap(now, self.sched.think_time());
    }

    fn schedule_history(&mut self, now: Instant) {
        self.next_history = self.ctx.after_gap(now, self.sched.history_gap());
    }

    fn chan(&mut self, id: ChannelId) -> &mut Chan {
        let i = match self.chans.iter().position(|c| c.id == id) {
            Some(i) => i,
            None => {
                self.chans.push(Chan {
                    id,
                    chains: Vec::new(),
                    receipts: Receipts::default(),
                    subscribed: false,
                });
                self.chans.len() - 1
            }
        };
        &mut self.chans[i]
    }

    /// One WebSocket session: hello, ready, then traffic until the end, churn or a break.
    async fn session(&mut self, ws: &mut Ws, churn_at: Option<Instant>) -> End {
        let ctx = self.ctx.clone();
        let resume: BTreeMap<ChannelId, Seq> = self
            .chans
            .iter()
            .filter_map(|c| {
                let chain = c.chains.last()?;
                Some((c.id, c.receipts.max.max(chain.from)))
            })
            .collect();
        let hello = ClientOp::Hello {
            token: self.plan.token.clone(),
            v: flowline_protocol::PROTOCOL_VERSION,
            resume: resume.clone(),
            subscribe_all: true,
            // Only users that change presence look at it; the others skip the snapshot,
            // which in spaces of hundreds is the largest frame of a session and would
            // grow its read buffer for good.
            presence: self.feat.presence_gap_s.is_some(),
        };
        let t0 = Instant::now();
        if Box::pin(send_op(ws, &hello)).await.is_err() {
            ctx.error("ws_send");
            return End::Broken;
        }
        let ready = match Box::pin(timeout(HELLO_TIMEOUT, wait_ready(ws))).await {
            Ok(Ok(r)) => r,
            Ok(Err(kind)) => {
                ctx.error(kind);
                return End::Broken;
            }
            Err(_) => {
                ctx.error("hello_timeout");
                return End::Broken;
            }
        };
        ctx.record(Metric::Hello, t0.elapsed().as_micros() as u64);
        if let Some(hb) = ready.1 {
            ctx.heartbeat.set(hb);
        }
        self.epoch += 1;
        for (id, seq) in ready.0 {
            let resumed_from = resume.get(&id).copied();
            let c = self.chan(id);
            let kind = if resumed_from.is_none() || c.chains.is_empty() {
                c.chains.push(Chain {
                    from: seq,
                    open: false,
                });
                RecvKind::Start
            } else {
                RecvKind::Resume
            };
            c.subscribed = true;
            let from = if kind == RecvKind::Resume {
                resumed_from.unwrap_or(seq)
            } else {
                seq
            };
            self.record_event(id, from, 0, 0, (u32::MAX, 0), kind);
        }
        ctx.set_connected(true);
        ctx.count(|c| c.connects += 1);
        let now = Instant::now();
        if !self.sched.is_open() && self.next_send.is_none() && self.pending.is_empty() {
            self.schedule_closed(now);
        }
        if self.next_history.is_none() {
            self.schedule_history(now);
        }
        self.feat.schedule(now, ctx.clock.send_end);
        let end = self.traffic(ws, churn_at).await;
        ctx.set_connected(false);
        for c in &mut self.chans {
            if matches!(end, End::Finished) && Instant::now() >= ctx.clock.end && c.subscribed {
                // Connected and subscribed through the end of the drain.
                if let Some(last) = c.chains.last_mut() {
                    last.open = true;
                }
            }
            c.subscribed = false;
        }
        // Sends in flight on a lost connection never get their ack.
        if !self.pending.is_empty() {
            let n = self.pending.len();
            for _ in 0..n {
                ctx.error("unacked");
            }
            for p in std::mem::take(&mut self.pending) {
                self.record_send(&p, 0, 0, Outcome::Unknown);
            }
            if !self.sched.is_open() {
                self.schedule_closed(Instant::now());
            }
        }
        end
    }

    async fn traffic(&mut self, ws: &mut Ws, churn_at: Option<Instant>) -> End {
        let ctx = self.ctx.clone();
        let mut last_out = Instant::now();
        // One timer and one cancellation waiter for the whole session, re-armed only when
        // the wake-up time moves: building them per received frame cost a timer-wheel
        // insert and a lock per delivery.
        let cancelled = ctx.cancel.cancelled();
        tokio::pin!(cancelled);
        let timer = sleep_until(self.stop_at.into());
        tokio::pin!(timer);
        loop {
            // The node pings at the WebSocket level (answered by tungstenite); an application
            // ping after a full idle heartbeat is only a safety net.
            let ping_at = last_out + ctx.heartbeat.get();
            let ack_deadline = self.pending.front().map(|p| p.at + ACK_TIMEOUT);
            let mut wake = self.stop_at.min(ping_at);
            for t in [
                self.next_send,
                self.next_history,
                churn_at,
                ack_deadline,
                self.feat.next_react,
                self.feat.next_presence,
                self.feat.next_upload,
            ]
            .into_iter()
            .flatten()
            {
                wake = wake.min(t);
            }
            if timer.deadline() != wake.into() {
                timer.as_mut().reset(wake.into());
            }
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_frame(text.as_str()),
                    Some(Ok(Message::Close(_))) | None => {
                        ctx.error("closed_by_server");
                        return End::Broken;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) => {
                        ctx.error("ws_read");
                        return End::Broken;
                    }
                },
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= self.stop_at {
                        return End::Finished;
                    }
                    if churn_at.is_some_and(|c| now >= c) {
                        return End::Churn;
                    }
                    if ack_deadline.is_some_and(|d| now >= d) {
                        if let Some(p) = self.pending.pop_front() {
                            self.record_send(&p, 0, 0, Outcome::Unknown);
                        }
                        ctx.error("ack_timeout");
                        if !self.sched.is_open() {
                            self.schedule_closed(now);
                        }
                    }
                    if let Some(at) = self.next_send.filter(|&at| now >= at) {
                        if Box::pin(self.send_message(ws, at)).await.is_err() {
                            return End::Broken;
                        }
                        last_out = now;
                    }
                    if self.next_history.is_some_and(|at| now >= at) {
                        self.schedule_history(now);
                        if let Some(ch) = self.pick_channel() {
                            let req_id = self.take_req();
                            let op = ClientOp::History { req_id, channel: ch, before: None, after: None, limit: Some(50) };
                            if Box::pin(send_op(ws, &op)).await.is_err() {
                                ctx.error("ws_send");
                                return End::Broken;
                            }
                            last_out = now;
                        }
                    }
                    // Boxed: rare, and its future (HTTP uploads) would otherwise
                    // enlarge every user's task for the whole run.
                    let plan = &self.plan;
                    match Box::pin(self.feat.due(&ctx, ws, now, plan, &mut self.next_req)).await {
                        Ok(true) => last_out = now,
                        Ok(false) => {}
                        Err(()) => return End::Broken,
                    }
                    if now >= ping_at {
                        let op = ClientOp::Ping { req_id: None, ts: None };
                        if Box::pin(send_op(ws, &op)).await.is_err() {
                            ctx.error("ws_send");
                            return End::Broken;
                        }
                        last_out = now;
                    }
                }
                _ = &mut cancelled => return End::Finished,
            }
        }
    }

    fn take_req(&mut self) -> u64 {
        take(&mut self.next_req)
    }

    fn pick_channel(&mut self) -> Option<ChannelId> {
        if self.plan.channels.is_empty() {
            return None;
        }
        let i = self.sched.pick_channel(self.plan.channels.len());
        Some(self.plan.channels[i])
    }

    /// Send the message due at `intended`; the open model measures from that time.
    async fn send_message(
        &mut self,
        ws: &mut Ws,
        intended: Instant,
    ) -> std::result::Result<(), ()> {
        let ctx = self.ctx.clone();
        let open = self.sched.is_open();
        let now = Instant::now();
        let at = if open { intended } else { now };
        if open {
            self.advance_open(intended);
        } else {
            // Closed model: the next send is scheduled when this one is acked.
            self.next_send = None;
        }
        let Some(channel) = self.pick_channel() else {
            return Ok(());
        };
        let Ok(channel) = self
            .feat
            .before_send(&ctx, ws, channel, &mut self.next_req)
            .await
        else {
            return Err(());
        };
        let attachments = std::mem::take(&mut self.feat.attach);
        if !attachments.is_empty() {
            ctx.count(|c| c.op("send_attachment"));
        }
        let len = self.sched.body_len();
        let req_id = self.take_req();
        self.sent_n += 1;
        let n = u32::try_from(self.sent_n).unwrap_or(u32::MAX);
        let mut op = ClientOp::send_text(
            req_id,
            channel,
            body(len),
            Some(nonce(self.plan.index, self.sent_n, ctx.clock.unix_us(at))),
        );
        if let ClientOp::Send { attachments: a, .. } = &mut op {
            *a = attachments;
        }
        if send_op(ws, &op).await.is_err() {
            ctx.error("ws_send");
            return Err(());
        }
        ctx.count(|c| c.sent += 1);
        self.pending.push_back(Pending {
            req_id,
            at,
            channel,
            n,
        });
        Ok(())
    }

    /// Record a send's outcome for the checker.
    fn record_send(
        &self,
        p: &Pending,
        seq: Seq,
        id: flowline_protocol::MessageId,
        outcome: Outcome,
    ) {
        let ctx = &self.ctx;
        ctx.history.borrow_mut().sent(SendRecord {
            channel: p.channel,
            seq,
            id,
            sender: self.plan.index,
            n: p.n,
            at_ms: ctx.clock.ms(Instant::now()),
            outcome,
        });
    }

    /// Record a receive event for the checker; `from` is the nonce's (sender, n).
    fn record_event(
        &self,
        channel: ChannelId,
        seq: Seq,
        id: flowline_protocol::MessageId,
        reference: flowline_protocol::MessageId,
        from: (u32, u32),
        kind: RecvKind,
    ) {
        let ctx = &self.ctx;
        ctx.history.borrow_mut().received(RecvRecord {
            channel,
            seq,
            id,
            reference,
            receiver: self.plan.index,
            epoch: self.epoch,
            sender: from.0,
            n: from.1,
            at_ms: ctx.clock.ms(Instant::now()),
            kind,
        });
    }

    fn on_frame(&mut self, text: &str) {
        let ctx = self.ctx.clone();
        let Ok(p) = serde_json::from_str::<Peek<'_>>(text) else {
            ctx.error("bad_frame");
            return;
        };
        let now = Instant::now();
        match p.kind {
            "message" => {
                let (Some(channel), Some(seq)) = (p.channel, p.seq) else {
                    ctx.error("bad_frame");
                    return;
                };
                let me = self.plan.index;
                if let Some(id) = p.id {
                    self.feat.seen = Some((channel, id));
                }
                let fresh = self.chan(channel).receipts.add(seq);
                let from = p.nonce.and_then(parse_nonce);
                let who = from.map_or((u32::MAX, 0), |(a, n, _)| {
                    (a, u32::try_from(n).unwrap_or(u32::MAX))
                });
                self.record_event(
                    channel,
                    seq,
                    p.id.unwrap_or(0),
                    p.reply_to.unwrap_or(0),
                    who,
                    RecvKind::Message,
                );
                if let Some((author, _, sent_us)) = from
                    && author != me
                    && fresh
                {
                    let lat = ctx.clock.unix_us(now).saturating_sub(sent_us);
                    ctx.record(Metric::Delivery, lat);
                    ctx.count(|c| c.delivered += 1);
                }
            }
            "ack" => {
                let Some(req_id) = p.req_id else { return };
                let Some(i) = self.pending.iter().position(|x| x.req_id == req_id) else {
                    return;
                };
                let Some(pend) = self.pending.remove(i) else {
                    return;
                };
                ctx.record(
                    Metric::Ack,
                    now.saturating_duration_since(pend.at).as_micros() as u64,
                );
                ctx.count(|c| c.acked += 1);
                if let (Some(seq), Some(id)) = (p.seq, p.id) {
                    self.record_send(&pend, seq, id, Outcome::Ok);
                    let channel = p.channel.unwrap_or(pend.channel);
                    self.feat.seen = Some((channel, id));
                    ctx.history
                        .borrow_mut()
                        .acked((channel, seq, id, self.plan.index));
                }
                if !self.sched.is_open() {
                    self.schedule_closed(now);
                }
            }
            "message_edited" | "message_deleted" => {
                if let (Some(channel), Some(seq), Some(id)) = (p.channel, p.seq, p.id) {
                    let kind = if p.kind == "message_edited" {
                        RecvKind::Edit
                    } else {
                        RecvKind::Delete
                    };
                    self.record_event(channel, seq, id, 0, (u32::MAX, 0), kind);
                }
            }
            "history" => ctx.count(|c| c.history += 1),
            "ok" => {
                if let Some(kind) = p.req_id.and_then(|r| self.feat.answered(r)) {
                    ctx.count(|c| c.op(&format!("{kind}_ok")));
                }
            }
            "thread_created" => {
                if let Some(kind) = p.req_id.and_then(|r| self.feat.answered(r)) {
                    ctx.count(|c| c.op(&format!("{kind}_ok")));
                    if let Ok(ServerEvent::ThreadCreated { thread, .. }) =
                        serde_json::from_str(text)
                    {
                        self.feat.thread = Some(thread.channel);
                    }
                }
            }
            "subscribed" => {
                if let Ok(ServerEvent::Subscribed { channels, .. }) = serde_json::from_str(text) {
                    for (id, seq) in channels {
                        let c = self.chan(id);
                        c.chains.push(Chain {
                            from: seq,
                            open: false,
                        });
                        c.subscribed = true;
                        self.record_event(id, seq, 0, 0, (u32::MAX, 0), RecvKind::Start);
                    }
                }
            }
            "error" => {
                let code = p
                    .code
                    .and_then(|c| serde_json::to_value(c).ok())
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| "unknown".into());
                if code == "rate_limited" {
                    ctx.count(|c| c.rate_limited += 1);
                }
                if let Some(kind) = p.req_id.and_then(|r| self.feat.answered(r)) {
                    ctx.error(&format!("{kind}:{code}"));
                    return;
                }
                ctx.error(&format!("server:{code}"));
                // A refused send is answered by an error instead of an ack.
                if let Some(req_id) = p.req_id
                    && let Some(i) = self.pending.iter().position(|x| x.req_id == req_id)
                {
                    if let Some(pend) = self.pending.remove(i) {
                        self.record_send(&pend, 0, 0, Outcome::Error);
                    }
                    if !self.sched.is_open() {
                        self.schedule_closed(now);
                    }
                }
            }
            _ => {}
        }
    }
}
