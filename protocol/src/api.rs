//! JSON bodies of the node's HTTP API (`/api/v1/...`).
//!
//! Paths (all JSON; authenticated ones take `Authorization: Bearer <token>`):
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | POST | `/api/v1/auth/signup` | [`Credentials`] → 201 [`User`] |
//! | POST | `/api/v1/auth/login` | [`Credentials`] → 200 [`Session`] |
//! | POST | `/api/v1/auth/logout` | – → 204 |
//! | GET | `/api/v1/users/me` | – → [`User`] |
//! | POST | `/api/v1/spaces` | [`CreateSpace`] → 201 [`Space`] (creator joins) |
//! | GET | `/api/v1/spaces` | – → `[Space]` the caller belongs to |
//! | POST | `/api/v1/spaces/{id}/join` | – → 200 [`Space`] |
//! | POST | `/api/v1/spaces/{id}/leave` | – → 204 |
//! | GET | `/api/v1/spaces/{id}/members` | – → `[User]` |
//! | POST | `/api/v1/spaces/{id}/channels` | [`CreateChannel`] → 201 [`Channel`] |
//! | GET | `/api/v1/spaces/{id}/channels` | – → `[Channel]` the caller can read |
//! | POST | `/api/v1/dms` | [`OpenDm`] → 200/201 [`Channel`] (idempotent) |
//! | GET | `/api/v1/channels/{id}/messages?before=&after=&limit=` | – → `[Message]` oldest first |
//! | POST | `/api/v1/uploads` | multipart, one field `file` → 201 `Attachment` (413 `too_large`, 415 `unsupported_type`) |
//! | GET | `/api/v1/uploads/{id}` | – → the bytes with their content type (uploader or a reader of a message carrying it) |
//! | GET | `/api/v1/openapi.json` | – → the OpenAPI 3 description of this API |
//! | POST | `/api/v1/admin/provision` | [`Provision`] → 200 [`Provisioned`] (header `x-flowline-admin`) |
//! | GET | `/healthz`, `/readyz` | – → 200 / 503 |
//!
//! Errors are [`ApiErrorBody`] with a 4xx/5xx status.

use serde::{Deserialize, Serialize};

use crate::ws::ErrorCode;
use crate::{ChannelId, SpaceId, UserId};

/// Header carrying the admin secret for `/api/v1/admin/*`.
pub const ADMIN_HEADER: &str = "x-flowline-admin";

/// Body of every HTTP error answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub username: String,
}

/// Answer to a successful log in.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub token: String,
    pub user: User,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateSpace {
    pub name: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Space {
    pub id: SpaceId,
    pub name: String,
    pub owner: UserId,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateChannel {
    pub name: String,
    /// A private channel is readable only by its listed members (plus its creator);
    /// a public one by every member of the space.
    #[serde(default)]
    pub members: Option<Vec<UserId>>,
}

/// What kind of channel this is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Readable by every member of its space.
    Public,
    /// Readable by its explicit members only.
    Private,
    /// A direct-message channel between exactly two users; belongs to no space.
    Dm,
    /// A thread started on a message: readable by whoever can read the parent channel,
    /// with its own seqs. Not listed among a space's channels.
    Thread,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub id: ChannelId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<SpaceId>,
    pub name: String,
    pub kind: ChannelKind,
    /// Latest seq in the channel (0 when empty).
    pub last_seq: i64,
    /// A thread's parent message (absent for other kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<crate::ws::MessageRef>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenDm {
    pub user_id: UserId,
}

/// Most users one [`Provision`] request may create (more is refused with 400
/// `bad_request` before anything is allocated).
pub const MAX_PROVISION_USERS: u32 = 100_000;

/// Bulk provisioning for load tests: users with ready-made tokens (no password hashing),
/// spaces, channels and DMs, in one request. Enabled only when the node was started with
/// an admin secret. Indices refer to positions in `users`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provision {
    /// Prefix added to every username, so several runs can share one database.
    #[serde(default)]
    pub username_prefix: String,
    /// Number of users to create, named `<prefix><index>` (at most
    /// [`MAX_PROVISION_USERS`]; every name must be a valid sign-up username).
    #[cfg_attr(feature = "openapi", schema(maximum = 100_000))]
    pub users: u32,
    #[serde(default)]
    pub spaces: Vec<ProvisionSpace>,
    /// Pairs of user indices that get a DM channel.
    #[serde(default)]
    pub dms: Vec<(u32, u32)>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProvisionSpace {
    pub name: String,
    /// User indices that are members of the space (the first is its owner).
    pub members: Vec<u32>,
    pub channels: Vec<ProvisionChannel>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProvisionChannel {
    pub name: String,
    /// User indices of a private channel's members; `None` for a public channel.
    #[serde(default)]
    pub members: Option<Vec<u32>>,
}

/// Answer to [`Provision`]: ids and tokens, in request order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provisioned {
    pub users: Vec<ProvisionedUser>,
    pub spaces: Vec<ProvisionedSpace>,
    pub dms: Vec<ChannelId>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvisionedUser {
    pub id: UserId,
    pub token: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvisionedSpace {
    pub id: SpaceId,
    pub channels: Vec<ChannelId>,
}
