//! A generic target compiled once per worker thread: its templates parsed and its matcher
//! built, so users only render and extract.

use crate::error::Result;
use crate::generic::matcher::Matcher;
use crate::generic::template::Template;
use crate::scenario::WsTarget;

/// The templates and matcher of a generic WebSocket target.
#[derive(Debug)]
pub struct Frames {
    /// The target as the scenario gives it.
    pub target: WsTarget,
    /// Sent once after connecting.
    pub hello: Option<Template>,
    /// Sent at the persona's rate.
    pub message: Template,
    /// A user's room key.
    pub room: Template,
    /// Reads ids and send times out of received frames.
    pub matcher: Matcher,
}

impl Frames {
    /// Compile a target (errors: a template or regex that does not parse).
    pub fn new(t: &WsTarget) -> Result<Frames> {
        Ok(Frames {
            hello: t.hello.as_deref().map(Template::parse).transpose()?,
            message: Template::parse(&t.message)?,
            room: Template::parse(&t.room)?,
            matcher: Matcher::new(t)?,
            target: t.clone(),
        })
    }
}
