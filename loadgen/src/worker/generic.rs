//! The generic user: one simulated client of any WebSocket service, driven by the
//! target's frame templates (see [`crate::generic`]): a hello frame once per connection,
//! a message frame at its persona's rate, and every received frame matched for its
//! message id and send time (own id: an echo; another user's: a delivery).

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::Message;

use crate::generic::{AuthorReceipts, Frames, Vars, room_key, split_id};
use crate::histogram::Metric;
use crate::plan::PlanUser;
use crate::scenario::{Expect, TimeUnit};
use crate::schedule::UserSchedule;
use crate::worker::connect::Ws;
use crate::worker::context::ThreadCtx;
use crate::worker::driver::{End, Sessions, drive};

/// Most own frames remembered for echo latency when frames carry no send time.
const MAX_INFLIGHT: usize = 4096;

/// One simulated user of a generic WebSocket service.
struct GenericUser {
    ctx: Rc<ThreadCtx>,
    index: u32,
    sched: UserSchedule,
    room: u32,
    room_key: String,
    seq: u64,
    /// Own frames written and not yet echoed: (seq, send time), oldest first.
    inflight: VecDeque<(u64, Instant)>,
    /// Frames received, by author (its own echoes under its own index).
    received: AuthorReceipts,
    next_send: Option<Instant>,
    stop_at: Instant,
    /// Start of the last session (Unix µs) and whether it lasted to the end.
    last_session: Option<(u64, bool)>,
}

/// One generic-target user, from its start in the ramp to the end of the run.
pub(super) async fn user_main(ctx: Rc<ThreadCtx>, plan: PlanUser) {
    let s = ctx.scenario.clone();
    let Some(g) = ctx.frames.as_ref() else {
        return;
    };
    let Some(persona) = s.personas.get(plan.persona as usize) else {
        ctx.error("bad_persona");
        return;
    };
    let Some((start, stop_at)) = ctx.user_window(plan.index) else {
        return;
    };
    let room = plan.index / g.target.room_size.max(1);
    let mut u = GenericUser {
        ctx: ctx.clone(),
        index: plan.index,
        sched: UserSchedule::new(&s, plan.index, persona),
        room,
        room_key: room_key(&g.room, plan.index, g.target.room_size),
        seq: 0,
        inflight: VecDeque::new(),
        received: AuthorReceipts::default(),
        next_send: None,
        stop_at,
        last_session: None,
    };
    if !ctx.wait_start(start).await {
        return;
    }
    if u.sched.is_open() {
        u.advance_open(start);
    }
    drive(&ctx, &mut u, persona.reconnect_every).await;
    if g.target.expect == Expect::None {
        return;
    }
    ctx.history
        .borrow_mut()
        .generic_user(u.index, u.last_session, &u.received);
}

impl Sessions for GenericUser {
    fn index(&self) -> u32 {
        self.index
    }
    fn stop_at(&self) -> Instant {
        self.stop_at
    }
    async fn session(&mut self, ws: &mut Ws, churn_at: Option<Instant>) -> End {
        GenericUser::session(self, ws, churn_at).await
    }
}

impl GenericUser {
    fn advance_open(&mut self, after: Instant) {
        if let Some(curve) = self.ctx.curve.as_ref() {
            self.next_send = self.ctx.next_open(curve, &mut self.sched, after);
        }
    }

    /// Closed model: the next frame after a think time (a generic service has no ack to
    /// wait for).
    fn schedule_closed(&mut self, now: Instant) {
        self.next_send = self.ctx.after_gap(now, self.sched.think_time());
    }

    fn vars(&self, seq: u64, at: Instant) -> Vars<'_> {
        Vars {
            user: self.index,
            seq,
            unix_us: self.ctx.clock.unix_us(at),
            mono_ns: at
                .saturating_duration_since(self.ctx.clock.start)
                .as_nanos() as u64,
            room: self.room,
            room_key: &self.room_key,
        }
    }

    async fn session(&mut self, ws: &mut Ws, churn_at: Option<Instant>) -> End {
        let ctx = self.ctx.clone();
        let Some(g) = ctx.frames.as_ref() else {
            return End::Finished;
        };
        if let Some(h) = &g.hello {
            let text = h.to_string(&self.vars(0, Instant::now()));
            if Box::pin(ws.send(Message::text(text))).await.is_err() {
                ctx.error("ws_send");
                return End::Broken;
            }
        }
        let now = Instant::now();
        self.last_session = Some((ctx.clock.unix_us(now), false));
        ctx.set_connected(true);
        ctx.count(|c| c.connects += 1);
        if !self.sched.is_open() && self.next_send.is_none() {
            self.schedule_closed(now);
        }
        // As in the chat traffic loop: one timer and one cancellation waiter per session.
        let cancelled = ctx.cancel.cancelled();
        tokio::pin!(cancelled);
        let timer = sleep_until(self.stop_at.into());
        tokio::pin!(timer);
        let end = loop {
            let mut wake = self.stop_at;
            for t in [self.next_send, churn_at].into_iter().flatten() {
                wake = wake.min(t);
            }
            if timer.deadline() != wake.into() {
                timer.as_mut().reset(wake.into());
            }
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_frame(g, text.as_str()),
                    Some(Ok(Message::Binary(b))) => {
                        if let Ok(text) = std::str::from_utf8(&b) {
                            self.on_frame(g, text);
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => {
                        ctx.error("closed_by_server");
                        break End::Broken;
                    }
                    // Pings are answered by tungstenite.
                    Some(Ok(_)) => {}
                    Some(Err(_)) => {
                        ctx.error("ws_read");
                        break End::Broken;
                    }
                },
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= self.stop_at {
                        break End::Finished;
                    }
                    if churn_at.is_some_and(|c| now >= c) {
                        break End::Churn;
                    }
                    if let Some(at) = self.next_send.filter(|&at| now >= at)
                        && Box::pin(self.send_frame(g, ws, at)).await.is_err()
                    {
                        break End::Broken;
                    }
                }
                _ = &mut cancelled => break End::Finished,
            }
        };
        ctx.set_connected(false);
        if matches!(end, End::Finished)
            && Instant::now() >= ctx.clock.end
            && let Some(s) = self.last_session.as_mut()
        {
            s.1 = true;
        }
        end
    }

    async fn send_frame(
        &mut self,
        g: &Frames,
        ws: &mut Ws,
        intended: Instant,
    ) -> std::result::Result<(), ()> {
        let ctx = self.ctx.clone();
        let now = Instant::now();
        let open = self.sched.is_open();
        let at = if open { intended } else { now };
        if open {
            self.advance_open(intended);
        } else {
            self.schedule_closed(now);
        }
        self.seq += 1;
        let seq = self.seq;
        // A new string moved into the frame (no per-user buffer kept between sends).
        let text = g.message.to_string(&self.vars(seq, at));
        let r = ws.send(Message::text(text)).await;
        if r.is_err() {
            ctx.error("ws_send");
            return Err(());
        }
        ctx.count(|c| c.sent += 1);
        if g.target.expect != Expect::None {
            ctx.history
                .borrow_mut()
                .generic_sent(self.index, seq as i64, ctx.clock.unix_us(at));
        }
        if self.inflight.len() >= MAX_INFLIGHT {
            self.inflight.pop_front();
        }
        self.inflight.push_back((seq, at));
        Ok(())
    }

    fn on_frame(&mut self, g: &Frames, text: &str) {
        let ctx = self.ctx.clone();
        let now = Instant::now();
        let m = g.matcher.extract(text);
        let lat = m.time.map(|t| match g.matcher.unit {
            TimeUnit::UnixMs => ctx
                .clock
                .unix_us(now)
                .saturating_sub(t.saturating_mul(1000)),
            TimeUnit::UnixUs => ctx.clock.unix_us(now).saturating_sub(t),
            TimeUnit::MonoNs => {
                let ns = now.saturating_duration_since(ctx.clock.start).as_nanos() as u64;
                ns.saturating_sub(t) / 1000
            }
        });
        match m.id.map(split_id) {
            Some((author, seq)) if author == self.index => {
                // Seqs have SEQ_BITS (24) bits: `split_id` masks them.
                if !self.received.add(author, seq as u32) {
                    return;
                }
                ctx.count(|c| c.acked += 1);
                let mut sent_at = None;
                while let Some(&(s, at)) = self.inflight.front() {
                    if s > seq {
                        break;
                    }
                    self.inflight.pop_front();
                    if s == seq {
                        sent_at = Some(at);
                    }
                }
                let lat = lat.or_else(|| {
                    sent_at.map(|at| now.saturating_duration_since(at).as_micros() as u64)
                });
                if let Some(l) = lat {
                    ctx.record(Metric::Ack, l);
                }
            }
            Some((author, seq)) => {
                if !self.received.add(author, seq as u32) {
                    return;
                }
                ctx.count(|c| c.delivered += 1);
                if let Some(l) = lat {
                    ctx.record(Metric::Delivery, l);
                }
            }
            None if m.time.is_some() || !g.matcher.matches_anything() => {
                ctx.count(|c| c.delivered += 1);
                if let Some(l) = lat {
                    ctx.record(Metric::Delivery, l);
                }
            }
            None => {}
        }
    }
}
