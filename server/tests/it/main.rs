//! Integration tests of the chat node: real sockets on 127.0.0.1:0, real WebSocket
//! client (tokio-tungstenite), real Postgres for the `postgres` phase.

mod admin;
mod basic;
mod bursts;
mod cluster;
mod concurrent_appends;
mod delivery;
mod features;
mod heartbeat;
mod hot_channel;
mod http_actions;
mod http_actions_limits;
mod http_contract;
mod late_append;
mod leave_cluster;
mod leaving;
mod openapi_fuzz;
mod outage;
mod ready_presence;
mod refusals;
mod send_budget;
mod slow_http;
mod storage;
mod uploads;
mod util;
mod ws_violations;
