//! `edit` and `delete`: the author changes or tombstones their own live message; the
//! channel's members get `message_edited` / `message_deleted`.

use flowline_protocol::ws::{ErrorCode, Message, ServerEvent};
use flowline_protocol::{ChannelId, MessageId};

use super::context::{Chat, Done, Events};
use crate::clock::now_ms;
use crate::hub::Audience;
use crate::membership::Access;
use crate::refusal::Refusal;

impl Chat {
    /// The caller's own live message, for edit and delete.
    async fn own_message(
        &self,
        access: &mut Access,
        channel: ChannelId,
        id: MessageId,
    ) -> Result<Message, Refusal> {
        self.membership.authorize(access, channel).await?;
        let Some(m) = self.storage.message(channel, id).await? else {
            return Refusal::err(
                ErrorCode::NotFound,
                format!("no message {id} in channel {channel}"),
            );
        };
        if m.author != access.user {
            return Refusal::err(
                ErrorCode::Forbidden,
                "only the author can edit or delete a message",
            );
        }
        if m.deleted_at.is_some() {
            return Refusal::err(
                ErrorCode::InvalidReference,
                format!("message {id} was deleted"),
            );
        }
        Ok(m)
    }

    /// `edit`: author only; members get `message_edited`.
    pub async fn edit(
        &self,
        access: &mut Access,
        channel: ChannelId,
        id: MessageId,
        body: String,
    ) -> Result<Done<()>, Refusal> {
        self.check_body(&body, false)?;
        self.own_message(access, channel, id).await?;
        let at = now_ms() as i64;
        let Some(m) = self.storage.edit_message(channel, id, body, at).await? else {
            return Refusal::err(
                ErrorCode::InvalidReference,
                format!("message {id} was deleted"),
            );
        };
        Ok(Done {
            result: (),
            events: Events::one(
                Audience::Channel(channel),
                ServerEvent::MessageEdited {
                    channel,
                    id,
                    seq: m.seq,
                    body: m.body,
                    edited_at: m.edited_at.unwrap_or(at),
                },
            ),
        })
    }

    /// `delete`: author only; the message becomes a tombstone; members get
    /// `message_deleted`.
    pub async fn delete(
        &self,
        access: &mut Access,
        channel: ChannelId,
        id: MessageId,
    ) -> Result<Done<()>, Refusal> {
        self.own_message(access, channel, id).await?;
        let at = now_ms() as i64;
        let Some(m) = self.storage.delete_message(channel, id, at).await? else {
            return Refusal::err(
                ErrorCode::InvalidReference,
                format!("message {id} was already deleted"),
            );
        };
        Ok(Done {
            result: (),
            events: Events::one(
                Audience::Channel(channel),
                ServerEvent::MessageDeleted {
                    channel,
                    id,
                    seq: m.seq,
                    deleted_at: m.deleted_at.unwrap_or(at),
                },
            ),
        })
    }
}
