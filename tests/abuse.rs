//! Hostile and buggy clients (issue 19): every internal name has an owner, every byte a
//! client can make the router hold is bounded, and an honest client keeps being served
//! while a hostile one runs. One submodule per area; real clients (stomp.py, paho-mqtt,
//! raw sockets, headless Chromium) against the real daemon.

#[path = "common/mod.rs"]
mod common;

#[path = "abuse/admin.rs"]
mod admin;
#[path = "abuse/connections.rs"]
mod connections;
#[path = "abuse/files.rs"]
mod files;
#[path = "abuse/memory.rs"]
mod memory;
#[path = "abuse/ownership.rs"]
mod ownership;
