//! Settings of the chat features beyond plain messages (uploads, presence, typing,
//! attachments): [`Features`], and their command-line flags, [`FeatureArgs`].

use std::path::PathBuf;
use std::time::Duration;

/// Feature settings of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// The node's data directory; uploads are stored under `<data_dir>/uploads`.
    pub data_dir: PathBuf,
    /// Largest upload, bytes (larger: 413 `too_large`).
    pub upload_max_bytes: u64,
    /// Allowed upload content types: exact (`image/png`) or a whole family (`image/*`).
    pub upload_types: Vec<String>,
    /// A user whose last session closed turns offline after this long (a reconnect in
    /// between causes no presence event).
    pub presence_grace: Duration,
    /// An online user with no activity for this long turns idle.
    pub idle_after: Duration,
    /// Spaces with more members than this are "large": presence changes are not pushed
    /// to their members and `ready.presence` leaves them out; clients ask with
    /// `get_presence` (Discord's `large_threshold`). Bounds a connect's presence work.
    pub presence_max_space: usize,
    /// At most one `typing` is forwarded per user per channel per this interval.
    pub typing_interval: Duration,
    /// How long clients show a typing indicator (`expires_ms` of the event).
    pub typing_expires: Duration,
    /// Longest custom status text, characters.
    pub max_status_chars: usize,
    /// Most attachments on one message.
    pub max_attachments: usize,
}

impl Default for Features {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("flowline-data"),
            upload_max_bytes: 8 * 1024 * 1024,
            upload_types: DEFAULT_UPLOAD_TYPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            presence_grace: Duration::from_secs(10),
            idle_after: Duration::from_secs(300),
            presence_max_space: DEFAULT_PRESENCE_MAX_SPACE,
            typing_interval: Duration::from_secs(3),
            typing_expires: Duration::from_secs(8),
            max_status_chars: 128,
            max_attachments: 10,
        }
    }
}

/// Default [`Features::presence_max_space`]: Discord's largest `large_threshold`. At 250
/// members one connect pushes at most ~250 presence events per space; at 3,000 (the
/// hot-channel scenario) a connect storm pushed 3,000 × 3,000 and starved the node.
pub const DEFAULT_PRESENCE_MAX_SPACE: usize = 250;

/// Content types accepted by default.
pub const DEFAULT_UPLOAD_TYPES: &[&str] = &[
    "image/*",
    "video/*",
    "audio/*",
    "text/plain",
    "application/pdf",
    "application/zip",
];

impl Features {
    /// Is an upload of this content type allowed? (Parameters like `; charset=` are ignored.)
    pub fn type_allowed(&self, content_type: &str) -> bool {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let Some((family, subtype)) = essence.split_once('/') else {
            return false;
        };
        // Only a concrete type is stored and served back: `image/*`, `image/` or
        // anything outside RFC 6838's name characters is refused, whatever is allowed.
        let name = |n: &str| {
            (1..=127).contains(&n.len())
                && n.starts_with(|c: char| c.is_ascii_alphanumeric())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
        };
        if !name(family) || !name(subtype) {
            return false;
        }
        self.upload_types.iter().any(|allowed| {
            let allowed = allowed.to_ascii_lowercase();
            match allowed.strip_suffix("/*") {
                Some(f) => f == family,
                None => allowed == essence,
            }
        })
    }

    /// Check the values for consistency.
    pub fn validate(&self) -> Result<(), String> {
        if self.upload_max_bytes == 0 {
            return Err("upload size limit must be positive".into());
        }
        if self.upload_types.iter().any(|t| !t.contains('/')) {
            return Err("upload types look like `image/png` or `image/*`".into());
        }
        if self.presence_grace.is_zero()
            || self.idle_after.is_zero()
            || self.typing_interval.is_zero()
            || self.typing_expires.is_zero()
        {
            return Err("presence and typing timeouts must be positive".into());
        }
        if self.max_attachments == 0 || self.max_status_chars == 0 {
            return Err("attachment and status limits must be positive".into());
        }
        Ok(())
    }
}

/// Command-line flags of [`Features`] (flattened into `flowline server`).
#[derive(Debug, Clone, clap::Args)]
pub struct FeatureArgs {
    /// Node data directory; uploads go to `<dir>/uploads/<sha256>` (default
    /// `flowline-data/<node id>`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Largest upload, bytes (larger: 413).
    #[arg(long, default_value_t = Features::default().upload_max_bytes)]
    pub upload_max_bytes: u64,
    /// Allowed upload content types, comma-separated (`image/*` allows a family;
    /// others: 415).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_UPLOAD_TYPES.iter().map(|s| (*s).to_owned()))]
    pub upload_types: Vec<String>,
    /// Time after a user's last session closes before they turn offline, ms.
    #[arg(long, default_value_t = 10_000)]
    pub presence_grace_ms: u64,
    /// Inactivity after which an online user turns idle, ms.
    #[arg(long, default_value_t = 300_000)]
    pub idle_after_ms: u64,
    /// Spaces with more members than this get lazy presence: no `presence` events pushed
    /// to their members and none in `ready.presence`; clients ask with `get_presence`.
    #[arg(long, default_value_t = DEFAULT_PRESENCE_MAX_SPACE)]
    pub presence_max_space: usize,
}

impl FeatureArgs {
    /// The settings these flags describe for node `node_id`.
    pub fn to_features(&self, node_id: &str) -> Features {
        Features {
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("flowline-data").join(node_id)),
            upload_max_bytes: self.upload_max_bytes,
            upload_types: self.upload_types.clone(),
            presence_grace: Duration::from_millis(self.presence_grace_ms),
            idle_after: Duration::from_millis(self.idle_after_ms),
            presence_max_space: self.presence_max_space,
            ..Features::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_match_exactly_or_by_family() {
        let f = Features::default();
        assert!(f.type_allowed("image/png"));
        assert!(f.type_allowed("Image/PNG; q=1"));
        assert!(f.type_allowed("text/plain; charset=utf-8"));
        assert!(!f.type_allowed("text/html"));
        assert!(!f.type_allowed("application/x-msdownload"));
        assert!(!f.type_allowed("nonsense"));
        // Wildcards and malformed types are never stored, even in an allowed family.
        for bad in [
            "image/*",
            "image/",
            "*/*",
            "image/png x",
            "image/*; q=1",
            "/png",
        ] {
            assert!(!f.type_allowed(bad), "{bad}");
        }
    }
}
