//! Pulls the message id and send time out of a generic target's received frames, by JSON
//! pointer (`match_id`, `match_time`) or by a regex with named groups `id` and `time`.

use serde_json::Value;

use crate::error::{LoadgenError, Result};
use crate::scenario::{TimeUnit, WsTarget};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Expect;

    #[test]
    fn matcher_reads_pointers_and_regexes() {
        let mut t = WsTarget::example(Expect::Echo);
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
}
