//! What a worker thread's users record for the checker: every acknowledged send, what
//! each recipient received of each channel, every send's outcome and every receive event
//! in order (the anomaly checker's input), and the generic target's sends, sessions and
//! receipts. Users write here as they go (sends, receive events) and when they end
//! (receipts); the thread hands it to its shard, which merges the threads' histories into
//! the `done` line — or, when the history is streamed, hands each second's events on in a
//! `history` line ([`History::take_events`]), so a worker holds one second of them.

use crate::generic::AuthorReceipts;
use crate::wire::{AckedMessage, GenericDone, RecipientRecord, RecvRecord, SendRecord};

/// One thread's (or, merged, one worker's) history.
#[derive(Debug, Default)]
pub(super) struct History {
    pub(super) acked: Vec<AckedMessage>,
    pub(super) recipients: Vec<RecipientRecord>,
    /// Every chat send's outcome.
    pub(super) sends: Vec<SendRecord>,
    /// Every chat receive event, each user's in arrival order.
    pub(super) receives: Vec<RecvRecord>,
    /// Generic target only (and only when it checks delivery).
    pub(super) generic: Option<GenericDone>,
}

impl History {
    /// An empty history; a generic target's carries its (possibly empty) generic part.
    pub(super) fn new(generic: bool) -> Self {
        History {
            generic: generic.then(GenericDone::default),
            ..History::default()
        }
    }

    /// A chat send was acknowledged.
    pub(super) fn acked(&mut self, m: AckedMessage) {
        self.acked.push(m);
    }

    /// A chat send's outcome became known.
    pub(super) fn sent(&mut self, r: SendRecord) {
        self.sends.push(r);
    }

    /// A chat user received a subscription, message, edit or delete.
    pub(super) fn received(&mut self, r: RecvRecord) {
        self.receives.push(r);
    }

    /// A chat user's record of one channel, at its end.
    pub(super) fn recipient(&mut self, r: RecipientRecord) {
        self.recipients.push(r);
    }

    /// A generic-target frame was written: (author, seq, send time in Unix µs).
    pub(super) fn generic_sent(&mut self, author: u32, seq: i64, at_us: u64) {
        self.generic_mut().sent.push((author, seq, at_us));
    }

    /// Generic-target user `user`'s last session and what it received, at its end.
    pub(super) fn generic_user(
        &mut self,
        user: u32,
        last_session: Option<(u64, bool)>,
        received: &AuthorReceipts,
    ) {
        let g = self.generic_mut();
        g.sessions
            .extend(last_session.map(|(from, open)| (user, from, open)));
        g.add_user(user, received);
    }

    fn generic_mut(&mut self) -> &mut GenericDone {
        self.generic.get_or_insert_with(GenericDone::default)
    }

    /// Move the events recorded so far out (sends, receive events, acked messages), leaving
    /// the receipts and the generic part.
    pub(super) fn take_events(&mut self) -> History {
        History {
            acked: std::mem::take(&mut self.acked),
            sends: std::mem::take(&mut self.sends),
            receives: std::mem::take(&mut self.receives),
            ..History::default()
        }
    }

    /// Take another thread's history (moved, not copied: a big run holds hundreds of
    /// thousands of receipts).
    pub(super) fn append(&mut self, mut o: History) {
        self.acked.append(&mut o.acked);
        self.recipients.append(&mut o.recipients);
        self.sends.append(&mut o.sends);
        self.receives.append(&mut o.receives);
        if let Some(g) = o.generic {
            match self.generic.as_mut() {
                Some(d) => d.append(g),
                None => self.generic = Some(g),
            }
        }
    }
}
