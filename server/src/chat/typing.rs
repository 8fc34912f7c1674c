//! `typing`: ephemeral, never stored, members only, throttled per user and channel
//! (`throttle.rs`); the channel's members get `typing`.

use flowline_protocol::ChannelId;
use flowline_protocol::ws::ServerEvent;

use super::context::{Chat, Done, Events};
use crate::hub::Audience;
use crate::membership::Access;
use crate::refusal::Refusal;

impl Chat {
    /// `typing` in `channel`: refused to non-members; dropped silently (no event) when
    /// the caller's last one in this channel was forwarded less than the interval ago.
    pub async fn typing(
        &self,
        access: &mut Access,
        channel: ChannelId,
    ) -> Result<Done<()>, Refusal> {
        self.membership.authorize(access, channel).await?;
        let f = &self.features;
        if !self.typing.allow(access.user, channel, f.typing_interval) {
            return Ok(Done::quiet(()));
        }
        Ok(Done {
            result: (),
            events: Events::one(
                Audience::Channel(channel),
                ServerEvent::Typing {
                    channel,
                    user_id: access.user,
                    expires_ms: u64::try_from(f.typing_expires.as_millis()).unwrap_or(u64::MAX),
                },
            ),
        })
    }
}
