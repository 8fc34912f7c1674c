//! `start_thread`: a thread channel on a live message (or the existing one); the
//! requester gets `thread_created`, and the channel's members too when it is new.

use flowline_protocol::ws::{ErrorCode, ServerEvent, ThreadSummary};
use flowline_protocol::{ChannelId, MessageId, Seq};

use super::context::{Chat, Done, Events};
use crate::error::StorageError;
use crate::hub::Audience;
use crate::membership::Access;
use crate::refusal::Refusal;

/// A thread as `start_thread` found or created it (the events say whether it is new).
#[derive(Debug, Clone)]
pub struct ThreadStarted {
    /// Channel of the parent message.
    pub channel: ChannelId,
    /// The parent message.
    pub id: MessageId,
    /// Its seq.
    pub seq: Seq,
    /// The thread's summary.
    pub thread: ThreadSummary,
}

impl ThreadStarted {
    /// The `thread_created` event (with the requester's `req_id`, or none for others).
    pub fn event(&self, req_id: Option<u64>) -> ServerEvent {
        ServerEvent::ThreadCreated {
            req_id,
            channel: self.channel,
            id: self.id,
            seq: self.seq,
            thread: self.thread.clone(),
        }
    }
}

impl Chat {
    /// `start_thread` on message `id` of `channel`.
    pub async fn start_thread(
        &self,
        access: &mut Access,
        channel: ChannelId,
        id: MessageId,
        name: Option<String>,
    ) -> Result<Done<ThreadStarted>, Refusal> {
        if let Some(n) = &name {
            let max = self.limits.max_name_chars;
            let len = n.chars().count();
            if len == 0 || len > max || n.chars().any(char::is_control) {
                return Refusal::err(
                    ErrorCode::TooLong,
                    format!("thread name must have 1 to {max} printable characters"),
                );
            }
        }
        self.membership.authorize(access, channel).await?;
        let (thread, seq, created) = match self
            .storage
            .create_thread(channel, id, name.as_deref())
            .await
        {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Refusal::err(
                    ErrorCode::InvalidReference,
                    format!("no live message {id} in channel {channel}"),
                );
            }
            Err(StorageError::Invalid(m)) => return Refusal::err(ErrorCode::InvalidReference, m),
            Err(e) => return Err(Refusal::from(&e)),
        };
        let started = ThreadStarted {
            channel,
            id,
            seq,
            thread,
        };
        let events = if created {
            Events::one(Audience::Channel(channel), started.event(None))
        } else {
            Events::none()
        };
        Ok(Done {
            result: started,
            events,
        })
    }
}
