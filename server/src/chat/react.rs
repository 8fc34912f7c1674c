//! `react` / `unreact`: once per user per emoji per message; the channel's members get
//! `reaction` when the set changed.

use flowline_protocol::ws::{ErrorCode, ServerEvent};
use flowline_protocol::{ChannelId, MessageId};

use super::context::{Chat, Done, Events};
use crate::hub::Audience;
use crate::membership::Access;
use crate::refusal::Refusal;

/// Longest reaction emoji: a unicode sequence (flags, skin tones and ZWJ families stay
/// well below) or a `:name:`, in characters.
pub const MAX_EMOJI_CHARS: usize = 34;

impl Chat {
    /// `react` (`add`) or `unreact`.
    pub async fn react(
        &self,
        access: &mut Access,
        channel: ChannelId,
        id: MessageId,
        emoji: String,
        add: bool,
    ) -> Result<Done<()>, Refusal> {
        valid_emoji(&emoji)?;
        self.membership.authorize(access, channel).await?;
        let user = access.user;
        let Some(change) = self.storage.react(channel, id, user, &emoji, add).await? else {
            return Refusal::err(
                ErrorCode::NotFound,
                format!("no live message {id} in channel {channel}"),
            );
        };
        if !change.changed {
            return Ok(Done::quiet(()));
        }
        Ok(Done {
            result: (),
            events: Events::one(
                Audience::Channel(channel),
                ServerEvent::Reaction {
                    channel,
                    id,
                    seq: change.seq,
                    user_id: user,
                    emoji,
                    added: add,
                    count: change.count,
                },
            ),
        })
    }
}

/// Is `emoji` a unicode emoji sequence or a `:name:`?
pub fn valid_emoji(emoji: &str) -> Result<(), Refusal> {
    let n = emoji.chars().count();
    if n == 0 || n > MAX_EMOJI_CHARS {
        return Refusal::err(
            ErrorCode::TooLong,
            format!("emoji must have 1 to {MAX_EMOJI_CHARS} characters"),
        );
    }
    if let Some(name) = emoji.strip_prefix(':').and_then(|e| e.strip_suffix(':')) {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'));
        return if ok {
            Ok(())
        } else {
            Refusal::err(
                ErrorCode::BadRequest,
                ":name: emoji use letters, digits, _ - + only",
            )
        };
    }
    // A unicode emoji: no ASCII (except the keycap digits #*0-9 followed by U+20E3), no
    // whitespace or control characters.
    let keycap = emoji.contains('\u{20E3}');
    let ok = emoji.chars().all(|c| {
        !c.is_control()
            && !c.is_whitespace()
            && (!c.is_ascii() || (keycap && (c.is_ascii_digit() || c == '#' || c == '*')))
    });
    if ok {
        Ok(())
    } else {
        Refusal::err(
            ErrorCode::BadRequest,
            "emoji must be a unicode emoji or :name:",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_forms() {
        assert!(valid_emoji("👍").is_ok());
        assert!(valid_emoji("👨‍👩‍👧").is_ok());
        assert!(valid_emoji(":party_parrot:").is_ok());
        assert!(valid_emoji("1️⃣").is_ok());
        assert!(valid_emoji("lol").is_err());
        assert!(valid_emoji("::").is_err());
        assert!(valid_emoji(": x:").is_err());
        assert!(valid_emoji("").is_err());
        assert_eq!(
            valid_emoji(&":a".repeat(40)).unwrap_err().code,
            ErrorCode::TooLong
        );
    }
}
