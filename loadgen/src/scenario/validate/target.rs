//! `[target]`: a generic WebSocket service instead of the Flowline cluster: URLs, frame
//! templates (known placeholders only), how ids and times are matched, and whether the
//! rest of the scenario fits one (no external cluster, no HTTP personas).

use std::time::Duration;

use crate::scenario::model::Cluster;
use crate::scenario::persona::Persona;
use crate::scenario::raw::RawTarget;
use crate::scenario::target::{Expect, PLACEHOLDERS, TargetKind, WsTarget, template_names};

pub(super) fn target(
    raw: Option<&RawTarget>,
    cluster: &Cluster,
    personas: &[Persona],
    p: &mut Vec<String>,
) -> Option<WsTarget> {
    let target = raw.and_then(|t| validate_target(t, p));
    if target.is_some() {
        if cluster.external.is_some() {
            p.push("target: a websocket target replaces [cluster] http/ws; give one".into());
        }
        if cluster.isolation == crate::scenario::isolation::Isolation::Netns {
            p.push(
                "target: cluster.isolation = \"netns\" puts the nodes the run starts in network \
                 namespaces, and a websocket target is a service the run does not start"
                    .into(),
            );
        }
        if personas.iter().any(|x| x.http.is_some()) {
            p.push(
                "personas: http personas need the Flowline cluster, not a websocket target".into(),
            );
        }
    }
    target
}

fn validate_target(t: &RawTarget, p: &mut Vec<String>) -> Option<WsTarget> {
    if t.kind == TargetKind::Flowline {
        if t.urls.len() + t.headers.len() > 0 || t.message.is_some() || t.hello.is_some() {
            p.push("target: kind = \"flowline\" takes no other keys (use [cluster])".into());
        }
        return None;
    }
    if t.urls.is_empty() {
        p.push("target.urls: give at least one ws:// URL".into());
    }
    for u in &t.urls {
        if !u.starts_with("ws://") {
            p.push(format!("target.urls: {u:?} is not a ws:// URL"));
        }
    }
    let check = |what: &str, tpl: &str, p: &mut Vec<String>| match template_names(tpl) {
        Ok(names) => {
            for n in names {
                if !PLACEHOLDERS.contains(&n) {
                    p.push(format!(
                        "target.{what}: unknown placeholder {{{n}}} (known: {})",
                        PLACEHOLDERS.join(", ")
                    ));
                }
            }
        }
        Err(e) => p.push(format!("target.{what}: {e}")),
    };
    let message = match &t.message {
        Some(m) => {
            check("message", m, p);
            m.clone()
        }
        None => {
            p.push("target.message: a frame template is required".into());
            String::new()
        }
    };
    if let Some(h) = &t.hello {
        check("hello", h, p);
    }
    let room = t.room.clone().unwrap_or_else(|| "{room}".into());
    check("room", &room, p);
    let room_size = t.room_size.unwrap_or(50);
    if room_size == 0 {
        p.push("target.room_size must be at least 1".into());
    }
    for (what, ptr) in [("match_id", &t.match_id), ("match_time", &t.match_time)] {
        if let Some(ptr) = ptr
            && !(ptr.is_empty() || ptr.starts_with('/'))
        {
            p.push(format!(
                "target.{what}: {ptr:?} is not a JSON pointer (starts with `/`)"
            ));
        }
    }
    if let Some(r) = &t.match_regex {
        match regex::Regex::new(r) {
            Ok(re) => {
                let names: Vec<_> = re.capture_names().flatten().collect();
                if !names.contains(&"id") && !names.contains(&"time") {
                    p.push("target.match_regex: needs a named group `id` and/or `time`".into());
                }
            }
            Err(e) => p.push(format!("target.match_regex: {e}")),
        }
        if t.match_id.is_some() || t.match_time.is_some() {
            p.push("target: give match_regex or match_id/match_time, not both".into());
        }
    }
    let expect = t.expect.unwrap_or_default();
    let has_id = t.match_id.is_some()
        || t.match_regex
            .as_ref()
            .is_some_and(|r| r.contains("?P<id>") || r.contains("?<id>"));
    if expect != Expect::None && !has_id {
        p.push("target.expect: checking echo/room delivery needs match_id (or a regex group `id`) with {msg_id} in the message".into());
    }
    if expect != Expect::None && !message.contains("{msg_id}") {
        p.push("target.expect: the message template must carry {msg_id}".into());
    }
    Some(WsTarget {
        urls: t.urls.clone(),
        headers: t
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        subprotocol: t.subprotocol.clone(),
        hello: t.hello.clone(),
        message,
        expect,
        room,
        room_size: room_size.max(1),
        join_grace: t.join_grace.unwrap_or(Duration::from_millis(500)),
        match_id: t.match_id.clone(),
        match_time: t.match_time.clone(),
        time_unit: t.time_unit.unwrap_or_default(),
        match_regex: t.match_regex.clone(),
    })
}
