//! The generic WebSocket target (`[target] kind = "websocket"`): frame templates,
//! matching of received frames, and the correctness check for `expect = "echo"|"room"`.
//!
//! ```text
//! user i ──connect(url[i % n], headers, subprotocol)──▶ service
//!        ──hello template (once)──▶
//!        ──message template at the persona's rate──▶        {msg_id} = i·2^24 + seq
//!        ◀── frames: id/time pulled out by JSON pointer or regex
//!              own id   → echo   (counted as `acked`, latency `ack`)
//!              other id → fan-out (counted as `delivered`, latency `delivery`)
//! ```
//! Latency comes from the send time carried in the frame (`match_time`) when there is
//! one, otherwise (own echoes only) from the time the frame was written.
//!
//! Correctness: every worker reports what its users sent (author, seq, time), when each
//! user's last session began and whether it lasted to the end, and which (author, seq)
//! each user received. The aggregator then decides, for `echo`, that every frame sent in a
//! session that lasted must come back to its sender, and for `room`, that every member of
//! the sender's room whose last session began `join_grace` before the send and lasted to
//! the end must receive it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checker::{
    ChannelReport, CorrectnessReport, MAX_OFFENDERS, Offence, Offender, Receipts,
};
use crate::error::{LoadgenError, Result};
use crate::scenario::{Expect, TimeUnit, WsTarget};

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

    /// Render to a new string.
    pub fn to_string(&self, v: &Vars<'_>) -> String {
        let mut s = String::new();
        self.render(&mut s, v);
        s
    }
}

/// What a received frame says about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Matched {
    /// Message id, if found and numeric.
    pub id: Option<u64>,
    /// Send time in the configured unit, if found.
    pub time: Option<u64>,
}

/// Pulls the message id and send time out of received frames.
#[derive(Debug, Clone)]
pub struct Matcher {
    id: Option<String>,
    time: Option<String>,
    regex: Option<regex::Regex>,
    /// Unit of the matched time.
    pub unit: TimeUnit,
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Matcher {
    /// The matcher of a target.
    pub fn new(t: &WsTarget) -> Result<Matcher> {
        let regex = match &t.match_regex {
            Some(r) => Some(
                regex::Regex::new(r)
                    .map_err(|e| LoadgenError::Invalid(format!("target.match_regex: {e}")))?,
            ),
            None => None,
        };
        Ok(Matcher {
            id: t.match_id.clone(),
            time: t.match_time.clone(),
            regex,
            unit: t.time_unit,
        })
    }

    /// Whether ids or times are extracted at all (without, every frame counts as a
    /// delivery).
    pub fn matches_anything(&self) -> bool {
        self.regex.is_some() || self.id.is_some() || self.time.is_some()
    }

    /// Extract id and time from one text frame.
    pub fn extract(&self, text: &str) -> Matched {
        if let Some(re) = &self.regex {
            let Some(c) = re.captures(text) else {
                return Matched::default();
            };
            let num = |name: &str| c.name(name).and_then(|m| m.as_str().parse().ok());
            return Matched {
                id: num("id"),
                time: num("time"),
            };
        }
        if self.id.is_none() && self.time.is_none() {
            return Matched::default();
        }
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return Matched::default();
        };
        let get = |p: &Option<String>| p.as_ref().and_then(|p| v.pointer(p)).and_then(as_u64);
        Matched {
            id: get(&self.id),
            time: get(&self.time),
        }
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

/// What one user received from one author (or its own echoes: `author == user`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenericReceipt {
    /// Recipient user index.
    pub user: u32,
    /// Author user index.
    pub author: u32,
    /// Received per-author seqs as sorted, disjoint, inclusive ranges.
    pub received: Vec<(i64, i64)>,
    /// Frames received more than once.
    pub duplicates: u64,
    /// Frames received after a larger seq of the same author.
    pub reordered: u64,
}

impl GenericReceipt {
    /// From a recipient's receipts of one author.
    pub fn from_receipts(user: u32, author: u32, r: Receipts) -> Self {
        GenericReceipt {
            user,
            author,
            received: r.ranges,
            duplicates: r.duplicates,
            reordered: r.reordered,
        }
    }
}

/// A worker's generic-target history (part of its `done` line).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenericDone {
    /// Frames written: (author, seq, send time in Unix µs).
    pub sent: Vec<(u32, i64, u64)>,
    /// Each user's last session: (user, start in Unix µs, lasted to the end).
    pub sessions: Vec<(u32, u64, bool)>,
    /// What users received, by author.
    pub received: Vec<GenericReceipt>,
}

impl GenericDone {
    /// Take another part's history (no copy: with rooms of 50 a 10k-user run holds
    /// half a million receipts).
    pub fn append(&mut self, mut o: GenericDone) {
        self.sent.append(&mut o.sent);
        self.sessions.append(&mut o.sessions);
        self.received.append(&mut o.received);
    }

    /// Add another worker's history.
    pub fn extend(&mut self, o: &GenericDone) {
        self.sent.extend_from_slice(&o.sent);
        self.sessions.extend_from_slice(&o.sessions);
        self.received.extend_from_slice(&o.received);
    }
}

fn contains(ranges: &[(i64, i64)], s: i64) -> bool {
    let i = ranges.partition_point(|&(_, hi)| hi < s);
    ranges.get(i).is_some_and(|&(lo, _)| lo <= s)
}

/// Decide echo/room correctness over the merged histories of all workers. Offenders
/// name the room (its index among the sorted room keys) as `channel`, the author's seq as
/// `seq` and the message id as `id`.
pub fn check(t: &WsTarget, h: &GenericDone, users: u32) -> Result<CorrectnessReport> {
    let mut rep = CorrectnessReport::default();
    if t.expect == Expect::None {
        return Ok(rep);
    }
    let room_t = Template::parse(&t.room)?;
    let keys: Vec<String> = (0..users)
        .map(|u| room_key(&room_t, u, t.room_size))
        .collect();
    let mut ids: BTreeMap<&str, i64> = BTreeMap::new();
    for k in &keys {
        ids.insert(k.as_str(), 0);
    }
    for (i, v) in ids.values_mut().enumerate() {
        *v = i as i64;
    }
    let room_of = |u: u32| -> i64 { keys.get(u as usize).map_or(-1, |k| ids[k.as_str()]) };
    let mut members: HashMap<i64, Vec<u32>> = HashMap::new();
    for u in 0..users {
        members.entry(room_of(u)).or_default().push(u);
    }
    let sessions: HashMap<u32, (u64, bool)> = h
        .sessions
        .iter()
        .map(|&(u, from, open)| (u, (from, open)))
        .collect();
    let received: HashMap<(u32, u32), &GenericReceipt> =
        h.received.iter().map(|r| ((r.user, r.author), r)).collect();
    let grace = t.join_grace.as_micros() as u64;
    let mut channels: BTreeMap<i64, ChannelReport> = BTreeMap::new();
    let mut lost_list = Vec::new();
    let mut other_list = Vec::new();
    rep.acked = h.sent.len() as u64;
    for &(author, seq, at) in &h.sent {
        let room = room_of(author);
        let due: Vec<u32> = match t.expect {
            Expect::Echo => vec![author],
            Expect::Room => members
                .get(&room)
                .map(|m| m.iter().copied().filter(|&u| u != author).collect())
                .unwrap_or_default(),
            Expect::None => Vec::new(),
        };
        let ch = channels.entry(room).or_default();
        for m in due {
            let need = match sessions.get(&m) {
                Some(&(from, true)) if m == author => from <= at,
                Some(&(from, true)) => from + grace <= at,
                _ => false,
            };
            if !need {
                continue;
            }
            ch.expected += 1;
            if received
                .get(&(m, author))
                .is_some_and(|r| contains(&r.received, seq))
            {
                rep.delivered += 1;
            } else {
                ch.lost += 1;
                if lost_list.len() < MAX_OFFENDERS {
                    lost_list.push(Offender {
                        offence: Offence::Lost,
                        channel: room,
                        seq,
                        id: Some(msg_id(author, seq as u64) as i64),
                        recipient: m,
                    });
                }
            }
        }
    }
    for r in &h.received {
        let relevant = match t.expect {
            Expect::Echo => r.user == r.author,
            _ => r.user != r.author,
        };
        if !relevant {
            continue;
        }
        let ch = channels.entry(room_of(r.author)).or_default();
        ch.duplicated += r.duplicates;
        ch.reordered += r.reordered;
        if (r.duplicates > 0 || r.reordered > 0) && other_list.len() < MAX_OFFENDERS {
            other_list.push(Offender {
                offence: if r.duplicates > 0 {
                    Offence::Duplicated
                } else {
                    Offence::Reordered
                },
                channel: room_of(r.author),
                seq: r.received.last().map_or(0, |x| x.1),
                id: None,
                recipient: r.user,
            });
        }
    }
    for ch in channels.values() {
        rep.expected += ch.expected;
        rep.lost += ch.lost;
        rep.duplicated += ch.duplicated;
        rep.reordered += ch.reordered;
    }
    channels.retain(|_, c| c.lost + c.duplicated + c.reordered > 0);
    rep.channels = channels;
    lost_list.extend(other_list);
    lost_list.truncate(MAX_OFFENDERS);
    rep.offenders = lost_list;
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn target(expect: Expect) -> WsTarget {
        WsTarget {
            urls: vec!["ws://127.0.0.1:1/".into()],
            headers: vec![],
            subprotocol: None,
            hello: None,
            message: "{msg_id}".into(),
            expect,
            room: "r{room}".into(),
            room_size: 3,
            join_grace: Duration::from_millis(100),
            match_id: Some("/id".into()),
            match_time: None,
            time_unit: TimeUnit::UnixUs,
            match_regex: None,
        }
    }

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
        assert!(Template::parse("{nope}").is_err());
        assert!(Template::parse("{user").is_err());
        assert!(Template::parse("a } b").is_err());
    }

    #[test]
    fn matcher_reads_pointers_and_regexes() {
        let mut t = target(Expect::Echo);
        t.match_time = Some("/t".into());
        let m = Matcher::new(&t).unwrap();
        assert_eq!(
            m.extract(r#"{"id":"12","t":5}"#),
            Matched {
                id: Some(12),
                time: Some(5)
            }
        );
        assert_eq!(m.extract("not json"), Matched::default());
        t.match_id = None;
        t.match_time = None;
        t.match_regex = Some(r"id=(?P<id>\d+) t=(?P<time>\d+)".into());
        let m = Matcher::new(&t).unwrap();
        assert_eq!(
            m.extract("say id=9 t=77 hi"),
            Matched {
                id: Some(9),
                time: Some(77)
            }
        );
    }

    #[test]
    fn room_check_counts_exactly_the_missing_deliveries() {
        let t = target(Expect::Room);
        // Users 0,1,2 in room r0; 3,4,5 in r1. All connected from t=0 to the end.
        let mut h = GenericDone {
            sessions: (0..6).map(|u| (u, 0, true)).collect(),
            ..GenericDone::default()
        };
        for author in 0..6u32 {
            for seq in 1..=4i64 {
                h.sent.push((author, seq, 1_000_000));
            }
        }
        for user in 0..6u32 {
            for author in 0..6u32 {
                if user / 3 != author / 3 || user == author {
                    continue;
                }
                let mut r = Receipts::default();
                for seq in 1..=4 {
                    // User 4 misses author 3's seq 2.
                    if !(user == 4 && author == 3 && seq == 2) {
                        r.add(seq);
                    }
                }
                h.received
                    .push(GenericReceipt::from_receipts(user, author, r));
            }
        }
        let rep = check(&t, &h, 6).unwrap();
        assert_eq!(rep.expected, 6 * 2 * 4);
        assert_eq!(rep.lost, 1);
        assert_eq!(rep.delivered, rep.expected - 1);
        let o = &rep.offenders[0];
        assert_eq!(
            (o.recipient, o.seq, o.id),
            (4, 2, Some(msg_id(3, 2) as i64))
        );
        // A member that joined after the send (within the grace) is not due it.
        h.sessions[4] = (4, 950_000, true);
        assert_eq!(check(&t, &h, 6).unwrap().lost, 0);
    }

    #[test]
    fn echo_check_needs_own_frames_back() {
        let t = target(Expect::Echo);
        let mut h = GenericDone {
            sessions: vec![(0, 0, true), (1, 0, false)],
            sent: vec![(0, 1, 10), (0, 2, 20), (1, 1, 10)],
            ..GenericDone::default()
        };
        let mut r = Receipts::default();
        r.add(1);
        r.add(1);
        h.received.push(GenericReceipt::from_receipts(0, 0, r));
        let rep = check(&t, &h, 2).unwrap();
        // User 1's session did not last: nothing due. User 0 misses seq 2.
        assert_eq!((rep.expected, rep.lost, rep.duplicated), (2, 1, 1));
    }
}
