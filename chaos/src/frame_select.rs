//! Which WebSocket messages a frame toxic acts on: the `nth` matching one, `every` n-th
//! matching one, or all matching ones, where a message matches when each JSON pointer of
//! `match` holds its value. Shared by every `frame_*` toxic, and by scenario validation
//! (serde_json alone, so `fault` may use it without importing the rest of `toxic`).

use std::collections::BTreeMap;

use serde_json::Value;

/// The selection attributes of a frame toxic, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameSelect {
    /// Act on the `nth` matching message only (1-based; 0: not set).
    pub nth: u64,
    /// Act on every `every`-th matching message (0: not set). Neither set: every match.
    pub every: u64,
    /// JSON pointer (RFC 6901) → value; all must hold. A value that is an array matches
    /// any of its elements. Empty: every data message matches.
    pub matches: BTreeMap<String, Value>,
}

impl FrameSelect {
    /// Check the attributes; the error names the attribute.
    pub fn validate(&self) -> Result<(), String> {
        if self.nth > 0 && self.every > 0 {
            return Err(format!(
                "set at most one of `nth` ({}) and `every` ({})",
                self.nth, self.every
            ));
        }
        for p in self.matches.keys() {
            if !p.is_empty() && !p.starts_with('/') {
                return Err(format!(
                    "`match` key {p:?} is not a JSON pointer (RFC 6901: \"\" or starting with '/', e.g. \"/type\")"
                ));
            }
        }
        Ok(())
    }

    /// Whether a message whose payload is `payload` matches `matches`. Payloads that
    /// are not JSON (or compressed, `None`) match only an empty `matches`.
    pub(crate) fn matches(&self, payload: Option<&[u8]>) -> bool {
        if self.matches.is_empty() {
            return true;
        }
        let Some(doc) = payload.and_then(|p| serde_json::from_slice::<Value>(p).ok()) else {
            return false;
        };
        self.matches.iter().all(|(ptr, want)| {
            doc.pointer(ptr).is_some_and(|got| match want {
                Value::Array(any) => any.contains(got),
                _ => got == want,
            })
        })
    }
}

/// The per-connection counter of a selection.
#[derive(Debug)]
pub(crate) struct Selector {
    select: FrameSelect,
    /// Matching messages seen so far on this connection.
    seen: u64,
}

impl Selector {
    pub(crate) fn new(select: FrameSelect) -> Self {
        Selector { select, seen: 0 }
    }

    /// Whether the toxic acts on this message; counts it when it matches.
    pub(crate) fn pick(&mut self, payload: Option<&[u8]>) -> bool {
        if !self.select.matches(payload) {
            return false;
        }
        self.seen += 1;
        let s = &self.select;
        if s.nth > 0 {
            self.seen == s.nth
        } else if s.every > 0 {
            self.seen.is_multiple_of(s.every)
        } else {
            true
        }
    }

    /// Whether matching reads the payload (`match` is not empty).
    pub(crate) fn reads_payload(&self) -> bool {
        !self.select.matches.is_empty()
    }

    /// Whether the message matches `match` (not counted, `nth`/`every` ignored).
    pub(crate) fn matches(&self, payload: Option<&[u8]>) -> bool {
        self.select.matches(payload)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sel(nth: u64, every: u64, m: Value) -> FrameSelect {
        FrameSelect {
            nth,
            every,
            matches: serde_json::from_value(m).unwrap(),
        }
    }

    #[test]
    fn nth_every_and_match_pick_the_right_messages() {
        let msg = br#"{"type":"message","seq":3}"#;
        let ack = br#"{"type":"ack","seq":3}"#;
        let mut s = Selector::new(sel(2, 0, json!({"/type": "message"})));
        let picked: Vec<bool> = [&msg[..], ack, msg, msg]
            .iter()
            .map(|p| s.pick(Some(p)))
            .collect();
        assert_eq!(picked, [false, false, true, false]);

        let mut s = Selector::new(sel(0, 2, json!({})));
        let picked: Vec<bool> = (0..5).map(|_| s.pick(None)).collect();
        assert_eq!(picked, [false, true, false, true, false]);

        let any = sel(0, 0, json!({"/seq": [3, 4], "/type": "message"}));
        assert!(any.matches(Some(msg)));
        assert!(!any.matches(Some(ack)));
        assert!(!any.matches(Some(b"not json")));
        assert!(
            !any.matches(None),
            "a compressed payload matches no pointer"
        );
    }

    #[test]
    fn bad_selections_name_the_attribute() {
        let e = sel(1, 2, json!({})).validate().unwrap_err();
        assert!(e.contains("`nth`") && e.contains("`every`"), "{e}");
        let e = sel(0, 0, json!({"type": "message"}))
            .validate()
            .unwrap_err();
        assert!(e.contains("`match` key \"type\""), "{e}");
        sel(0, 0, json!({"": {"a": 1}, "/a~1b/0": 1}))
            .validate()
            .unwrap();
    }
}
