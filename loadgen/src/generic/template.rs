//! Frame templates of the generic WebSocket target: literal text with `{placeholder}`s
//! (`{{`/`}}` for braces), rendered per send; the message id `{msg_id}` they carry; and a
//! user's room key.

use crate::error::{LoadgenError, Result};

/// Bits of the per-user sequence number in `{msg_id}`.
pub const SEQ_BITS: u32 = 24;

/// The unique message id of `user`'s `seq`-th frame: `user · 2^24 + seq`, below 2^53 for
/// fewer than 2^29 users (safe as a JSON number in JavaScript services too).
pub fn msg_id(user: u32, seq: u64) -> u64 {
    (u64::from(user) << SEQ_BITS) | (seq & ((1 << SEQ_BITS) - 1))
}

/// (user, seq) of a message id made by [`msg_id`].
pub fn split_id(id: u64) -> (u32, u64) {
    ((id >> SEQ_BITS) as u32, id & ((1 << SEQ_BITS) - 1))
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    User,
    Seq,
    MsgId,
    UnixMs,
    UnixUs,
    MonoNs,
    Room,
    RoomKey,
}

/// A parsed frame template: literal text and `{placeholder}`s (`{{`/`}}` for braces).
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Values of the placeholders for one rendering.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// User index.
    pub user: u32,
    /// Per-user sequence number (1, 2, …).
    pub seq: u64,
    /// Send time, Unix µs (intended time in the open model).
    pub unix_us: u64,
    /// Send time, ns since the run's common start (monotonic clock).
    pub mono_ns: u64,
    /// Room number (`user / room_size`).
    pub room: u32,
    /// The rendered room key.
    pub room_key: &'a str,
}

impl Template {
    /// Parse a template; unknown placeholders are an error.
    pub fn parse(text: &str) -> Result<Template> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                lit.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(LoadgenError::Invalid(format!(
                    "template {text:?}: lone `}}`"
                )));
            }
            let end = tail.find('}').ok_or_else(|| {
                LoadgenError::Invalid(format!("template {text:?}: unclosed `{{`"))
            })?;
            let part = match &tail[1..end] {
                "user" => Part::User,
                "seq" => Part::Seq,
                "msg_id" => Part::MsgId,
                "unix_ms" => Part::UnixMs,
                "unix_us" => Part::UnixUs,
                "mono_ns" => Part::MonoNs,
                "room" => Part::Room,
                "room_key" => Part::RoomKey,
                other => {
                    return Err(LoadgenError::Invalid(format!(
                        "template {text:?}: unknown placeholder {{{other}}}"
                    )));
                }
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(part);
            rest = &tail[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    /// Render into `out` (cleared first).
    pub fn render(&self, out: &mut String, v: &Vars<'_>) {
        use std::fmt::Write as _;
        out.clear();
        for p in &self.parts {
            let _ = match p {
                Part::Lit(s) => {
                    out.push_str(s);
                    Ok(())
                }
                Part::User => write!(out, "{}", v.user),
                Part::Seq => write!(out, "{}", v.seq),
                Part::MsgId => write!(out, "{}", msg_id(v.user, v.seq)),
                Part::UnixMs => write!(out, "{}", v.unix_us / 1000),
                Part::UnixUs => write!(out, "{}", v.unix_us),
                Part::MonoNs => write!(out, "{}", v.mono_ns),
                Part::Room => write!(out, "{}", v.room),
                Part::RoomKey => {
                    out.push_str(v.room_key);
                    Ok(())
                }
            };
        }
    }

    /// About the length of a rendering: the literal text plus 20 bytes per placeholder
    /// (a u64's digits; room keys are usually short), for the buffer it is rendered into.
    pub fn len_hint(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.len(),
                _ => 20,
            })
            .sum()
    }

    /// Render to a new string.
    pub fn to_string(&self, v: &Vars<'_>) -> String {
        let mut s = String::with_capacity(self.len_hint());
        self.render(&mut s, v);
        s
    }
}

/// The room key of every user (rendered room template).
pub fn room_key(t: &Template, user: u32, room_size: u32) -> String {
    let room = user / room_size.max(1);
    t.to_string(&Vars {
        user,
        seq: 0,
        unix_us: 0,
        mono_ns: 0,
        room,
        room_key: "",
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn templates_render_every_placeholder() {
        let t = Template::parse(
            r#"{{"u":{user},"s":{seq},"id":{msg_id},"ms":{unix_ms},"us":{unix_us},"ns":{mono_ns},"r":{room},"k":"{room_key}"}}"#,
        )
        .unwrap();
        let s = t.to_string(&Vars {
            user: 7,
            seq: 3,
            unix_us: 1_700_000_000_123_456,
            mono_ns: 42,
            room: 2,
            room_key: "lobby-2",
        });
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["u"], 7);
        assert_eq!(v["s"], 3);
        assert_eq!(v["id"].as_u64().map(split_id), Some((7, 3)));
        assert_eq!(v["ms"], 1_700_000_000_123u64);
        assert_eq!(v["us"], 1_700_000_000_123_456u64);
        assert_eq!(v["ns"], 42);
        assert_eq!(v["k"], "lobby-2");
        assert!(s.len() <= t.len_hint(), "{} > {}", s.len(), t.len_hint());
        assert!(Template::parse("{nope}").is_err());
        assert!(Template::parse("{user").is_err());
        assert!(Template::parse("a } b").is_err());
    }
}
