//! `send`: a message of any kind (text, markdown, reply, quote, forward, with
//! attachments), every reference checked, stored with the channel's next seq and fanned
//! out by the hub; a reply in a thread also updates the parent's summary for its channel.

use flowline_protocol::ws::{
    Attachment, ErrorCode, Message, MessageKind, MessageRef, Origin, Quote, ServerEvent,
    ThreadSummary,
};
use flowline_protocol::{AttachmentId, ChannelId, MessageId, UserId};

use super::context::{Chat, Done, Events};
use crate::clock::now_ms;
use crate::hub::{Audience, PostError};
use crate::membership::Access;
use crate::refusal::Refusal;
use crate::storage::{NewMessage, ThreadLink};

/// Longest client nonce, bytes.
pub const MAX_NONCE: usize = 128;

/// A `send` as asked (the transport's request id aside).
#[derive(Debug, Clone)]
pub struct SendRequest {
    /// Target channel.
    pub channel: ChannelId,
    /// Text (ignored for `forward`).
    pub body: String,
    /// Client nonce, echoed in the message.
    pub nonce: Option<String>,
    /// How the body is read.
    pub kind: MessageKind,
    /// `reply`: the answered message.
    pub reply_to: Option<MessageId>,
    /// `quote`: the quoted message and excerpt.
    pub quote: Option<Quote>,
    /// `forward`: the forwarded message.
    pub forward_of: Option<MessageRef>,
    /// The caller's uploads to attach, in order.
    pub attachments: Vec<AttachmentId>,
}

impl Chat {
    /// `send`: store the message (durable when this returns) and fan it out; the result
    /// is the stored message (its id and seq go into the caller's `ack`).
    pub async fn send(
        &self,
        access: &mut Access,
        req: SendRequest,
    ) -> Result<Done<Message>, Refusal> {
        let new = self.build_message(access, req).await?;
        let m = match self.hub.post(self.storage.as_ref(), new).await {
            Ok(m) => m,
            Err(PostError::Storage(e)) => return Err(Refusal::from(&e)),
            Err(e @ PostError::Encode(_)) => {
                tracing::error!(error = %e, "posting a message");
                return Err(Refusal::unavailable());
            }
        };
        self.metrics.messages_in.increment(1);
        let events = self.thread_reply(&m).await;
        Ok(Done { result: m, events })
    }

    /// A referenced message of `channel`, live (not deleted).
    async fn live_message(
        &self,
        channel: ChannelId,
        id: MessageId,
        what: &str,
    ) -> Result<Message, Refusal> {
        match self.storage.message(channel, id).await? {
            Some(m) if m.deleted_at.is_none() => Ok(m),
            Some(_) => Refusal::err(
                ErrorCode::InvalidReference,
                format!("{what}: message {id} was deleted"),
            ),
            None => Refusal::err(
                ErrorCode::InvalidReference,
                format!("{what}: no message {id} in channel {channel}"),
            ),
        }
    }

    /// Build the message a `send` asks for, checking every reference.
    async fn build_message(
        &self,
        access: &mut Access,
        req: SendRequest,
    ) -> Result<NewMessage, Refusal> {
        if req.nonce.as_ref().is_some_and(|n| n.len() > MAX_NONCE) {
            return Refusal::err(
                ErrorCode::TooLong,
                format!("nonce longer than {MAX_NONCE} bytes"),
            );
        }
        let max_att = self.features.max_attachments;
        if req.attachments.len() > max_att {
            return Refusal::err(
                ErrorCode::TooLong,
                format!("at most {max_att} attachments per message"),
            );
        }
        let mismatch = |field: &str| -> Result<(), Refusal> {
            Refusal::err(
                ErrorCode::InvalidReference,
                format!("`{field}` does not go with kind {:?}", req.kind),
            )
        };
        if req.reply_to.is_some() && req.kind != MessageKind::Reply {
            mismatch("reply_to")?;
        }
        if req.quote.is_some() && req.kind != MessageKind::Quote {
            mismatch("quote")?;
        }
        if req.forward_of.is_some() && req.kind != MessageKind::Forward {
            mismatch("forward_of")?;
        }
        if req.kind != MessageKind::Forward {
            self.check_body(&req.body, !req.attachments.is_empty())?;
        }
        self.membership.authorize(access, req.channel).await?;
        let user = access.user;
        let mut msg = NewMessage::text(req.channel, user, req.body, req.nonce, now_ms() as i64);
        msg.kind = req.kind;
        match req.kind {
            MessageKind::Text | MessageKind::Markdown => {}
            MessageKind::Reply => {
                let Some(id) = req.reply_to else {
                    return Refusal::err(
                        ErrorCode::InvalidReference,
                        "kind reply needs `reply_to`",
                    );
                };
                self.live_message(req.channel, id, "reply_to").await?;
                msg.reply_to = Some(id);
            }
            MessageKind::Quote => {
                let Some(q) = req.quote else {
                    return Refusal::err(ErrorCode::InvalidReference, "kind quote needs `quote`");
                };
                if q.excerpt.is_empty() {
                    return Refusal::err(
                        ErrorCode::InvalidReference,
                        "the quoted excerpt is empty",
                    );
                }
                let quoted = self.live_message(req.channel, q.id, "quote").await?;
                if !quoted.body.contains(&q.excerpt) {
                    return Refusal::err(
                        ErrorCode::InvalidReference,
                        format!("the excerpt does not occur in message {}", q.id),
                    );
                }
                msg.quote = Some(q);
            }
            MessageKind::Forward => {
                let Some(r) = req.forward_of else {
                    return Refusal::err(
                        ErrorCode::InvalidReference,
                        "kind forward needs `forward_of`",
                    );
                };
                if let Err(refused) = self.membership.authorize(access, r.channel).await {
                    let code = if refused.code == ErrorCode::Unavailable {
                        refused.code
                    } else {
                        ErrorCode::InvalidReference
                    };
                    return Refusal::err(code, format!("forward_of: {}", refused.message));
                }
                let orig = self.live_message(r.channel, r.id, "forward_of").await?;
                // The forwarded copy carries the original's body and files, and the
                // first origin if the original was itself a forward.
                msg.forwarded_from = Some(orig.forwarded_from.clone().unwrap_or(Origin {
                    channel: orig.channel,
                    id: orig.id,
                    author: orig.author,
                    created_at: orig.created_at,
                }));
                msg.body = orig.body;
                msg.attachments = orig.attachments;
            }
        }
        if !req.attachments.is_empty() {
            msg.attachments
                .extend(self.own_attachments(user, &req.attachments).await?);
            if msg.attachments.len() > max_att {
                return Refusal::err(
                    ErrorCode::TooLong,
                    format!("at most {max_att} attachments per message"),
                );
            }
        }
        Ok(msg)
    }

    /// The caller's own uploads with these ids, in order.
    async fn own_attachments(
        &self,
        user: UserId,
        ids: &[AttachmentId],
    ) -> Result<Vec<Attachment>, Refusal> {
        let mut unique = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != ids.len() {
            return Refusal::err(ErrorCode::InvalidReference, "an attachment is listed twice");
        }
        let found = self.storage.attachments(ids).await?;
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            match found.iter().find(|(a, _)| a.id == id) {
                Some((a, uploader)) if *uploader == user => out.push(a.clone()),
                _ => {
                    return Refusal::err(
                        ErrorCode::InvalidReference,
                        format!("attachment {id} is not an upload of yours"),
                    );
                }
            }
        }
        Ok(out)
    }

    /// If `m` was posted in a thread, the parent channel's members learn the thread's new
    /// summary.
    async fn thread_reply(&self, m: &Message) -> Events {
        let link = match self.thread_links.get(&m.channel).map(|l| l.clone()) {
            Some(l) => l,
            None => match self.storage.thread_link(m.channel).await {
                Ok(l) => {
                    self.thread_links.insert(m.channel, l.clone());
                    l
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look up a thread's parent");
                    return Events::none();
                }
            },
        };
        let Some(ThreadLink {
            parent_channel,
            parent_id,
            parent_seq,
            name,
        }) = link
        else {
            return Events::none();
        };
        // The thread's seq is its reply count; concurrent replies may announce out of
        // order, so clients keep the largest.
        Events::one(
            Audience::Channel(parent_channel),
            ServerEvent::ThreadUpdated {
                channel: parent_channel,
                id: parent_id,
                seq: parent_seq,
                thread: ThreadSummary {
                    channel: m.channel,
                    name,
                    replies: u32::try_from(m.seq).unwrap_or(u32::MAX),
                    last_reply_at: Some(m.created_at),
                },
            },
        )
    }
}
