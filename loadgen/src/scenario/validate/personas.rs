//! `[[personas]]`: rates, body sizes, churn and HTTP kinds, with the defaults of an
//! omitted key; a scenario without personas gets one named `default`.

use std::time::Duration;

use crate::scenario::persona::{HttpKind, Persona};

/// `retry_share` of a bot persona that does not give one.
const DEFAULT_RETRY_SHARE: f64 = 0.1;
use crate::scenario::raw::RawPersona;

pub(super) fn personas(raw: &[RawPersona], p: &mut Vec<String>) -> Vec<Persona> {
    let mut personas = Vec::new();
    for (i, rp) in raw.iter().enumerate() {
        let what = format!("personas[{}] ({})", i + 1, rp.name);
        let d = Persona::default_named(&rp.name);
        let persona = Persona {
            name: rp.name.clone(),
            weight: rp.weight.unwrap_or(d.weight),
            messages_per_minute: rp.messages_per_minute.unwrap_or(d.messages_per_minute),
            body_bytes: rp.body_bytes.clone().unwrap_or(d.body_bytes),
            history_per_minute: rp.history_per_minute.unwrap_or(0.0),
            reconnect_every: rp.reconnect_every,
            typing: rp.typing.unwrap_or(false),
            reactions_per_minute: rp.reactions_per_minute.unwrap_or(0.0),
            thread_reply_share: rp.thread_reply_share.unwrap_or(0.0),
            presence_per_minute: rp.presence_per_minute.unwrap_or(0.0),
            uploads_per_minute: rp.uploads_per_minute.unwrap_or(0.0),
            http: rp.http,
            requests_per_minute: rp.requests_per_minute.unwrap_or(d.requests_per_minute),
            retry_share: rp.retry_share.unwrap_or(if rp.http == Some(HttpKind::Bot) {
                DEFAULT_RETRY_SHARE
            } else {
                0.0
            }),
        };
        if rp.requests_per_minute.is_some() && rp.http.is_none() {
            p.push(format!(
                "{what}: requests_per_minute needs http = \"login\"|\"history\"|\"upload\"|\"bot\"|\"flood\""
            ));
        }
        if rp.retry_share.is_some() && rp.http != Some(HttpKind::Bot) {
            p.push(format!(
                "{what}: retry_share needs http = \"bot\" (only bots retry posts with an Idempotency-Key)"
            ));
        }
        if !(0.0..=1.0).contains(&persona.retry_share) {
            p.push(format!(
                "{what}: retry_share must be within 0..=1, got {}",
                persona.retry_share
            ));
        }
        if persona.http.is_some_and(HttpKind::posts)
            && !(persona.requests_per_minute.is_finite() && persona.requests_per_minute > 0.0)
        {
            p.push(format!(
                "{what}: http = \"{}\" needs requests_per_minute > 0",
                persona.http.map_or("", HttpKind::as_str)
            ));
        }
        for (k, v) in [
            ("weight", persona.weight),
            ("messages_per_minute", persona.messages_per_minute),
            ("history_per_minute", persona.history_per_minute),
            ("reactions_per_minute", persona.reactions_per_minute),
            ("presence_per_minute", persona.presence_per_minute),
            ("uploads_per_minute", persona.uploads_per_minute),
            ("requests_per_minute", persona.requests_per_minute),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                p.push(format!("{what}: {k} must be >= 0, got {v}"));
            }
        }
        if !(0.0..=1.0).contains(&persona.thread_reply_share) {
            p.push(format!("{what}: thread_reply_share must be within 0..=1"));
        }
        if persona
            .reconnect_every
            .is_some_and(|d| d < Duration::from_millis(100))
        {
            p.push(format!("{what}: reconnect_every must be at least 100ms"));
        }
        persona.body_bytes.check(&format!("{what}.body_bytes"), p);
        personas.push(persona);
    }
    if personas.is_empty() {
        personas.push(Persona::default_named("default"));
    }
    if personas.iter().map(|p| p.weight).sum::<f64>() <= 0.0 {
        p.push("personas: the weights must not all be 0".into());
    }
    personas
}
