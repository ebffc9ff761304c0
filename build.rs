//! Sets `cfg(peers)` when the environment variable `SWITCHBOARD_PEERS` is `1`.
//!
//! Tests that need a peer — RabbitMQ, Prosody, ejabberd, the Mosquitto clients, the
//! Python clients of `.venv`, Node with Chromium — carry
//! `#[cfg_attr(not(peers), ignore = "…")]`: a plain `cargo test` on a machine without
//! them runs every self-contained test and lists each peer test as ignored with the
//! peer it needs, while `scripts/test` (which installs and starts the peers) sets
//! `SWITCHBOARD_PEERS=1` and runs them all. A cfg rather than a run-time check so that
//! the harness itself reports the test as ignored, with its reason.
//!
//! Changing the variable recompiles this crate (not its dependencies); scripts/test
//! exports it before any cargo command so a run never compiles twice.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(peers)");
    println!("cargo::rerun-if-env-changed=SWITCHBOARD_PEERS");
    if std::env::var_os("SWITCHBOARD_PEERS").is_some_and(|v| v == "1") {
        println!("cargo::rustc-cfg=peers");
    }
}
