//! The runnable examples of `examples/` run here, exactly as their README tells a user
//! to run them (with this build's binary).

mod common;

use std::process::Command;

#[test]
fn live_route_edit_loses_nothing() {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/live-edit/run.sh"
    ))
    .env("SWITCHBOARD_BIN", common::BIN)
    .env("SWITCHBOARD_PYTHON", common::python())
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("none lost, none duplicated"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
