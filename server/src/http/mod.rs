//! The HTTP API under `/api/v1` (paths listed in `flowline_protocol::api`): handlers,
//! the bearer-token extractor and the JSON error type.
//!
//! Every handler carries a `#[utoipa::path]` description and is mounted through
//! `utoipa_axum`'s router, so the OpenAPI document served at `/api/v1/openapi.json` is
//! built from the very routes that serve requests and cannot drift from them.
//!
//! Files: `api.rs` (the document's frame, the route groups, the document), `contract.rs`
//! (what the document declares for every operation of a kind and per configuration: shared
//! error statuses, name bounds, download types), `error.rs`
//! ([`error::ApiError`]), `extract.rs` (bodies, path ids, the caller), one file per group
//! of routes: `accounts.rs`, `spaces.rs`, `channels.rs`, `uploads.rs`, `admin.rs`; the
//! chat actions (what bots use, mounted in `api.rs`): `actions.rs` (rate limits, idempotency),
//! `messages.rs`, `reactions.rs`, `threads.rs`, `presence.rs`.

mod accounts;
mod actions;
mod admin;
mod api;
mod channels;
mod contract;
mod error;
mod extract;
mod messages;
mod presence;
mod reactions;
mod spaces;
mod threads;
mod uploads;

pub(crate) use api::routes;
