//! TLS on every protocol listener at once: STOMP and MQTT over TCP and over WebSocket,
//! each checked by an independent client that verifies the certificate.

mod common;

use common::{Daemon, python_scenario, self_signed};

#[test]
#[cfg_attr(not(peers), ignore = "needs the Python clients: run scripts/test")]
fn every_protocol_listener_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    self_signed(dir.path());
    let ca = dir.path().join("cert.pem").display().to_string();
    let config = dir.path().join("sb.yaml");
    let mut yaml = String::from("tls:\n");
    for l in ["stomp", "stomp-ws", "mqtt", "mqtt-ws"] {
        yaml.push_str(&format!("  {l}:\n    cert: cert.pem\n    key: key.pem\n"));
    }
    std::fs::write(&config, yaml).unwrap();
    let cfg = config.display().to_string();
    let d = Daemon::start_in(dir, &["--config", &cfg]);
    python_scenario(&d, "stomp_scenarios.py", "stomp", "tls", &["--ca", &ca]);
    python_scenario(&d, "stomp_scenarios.py", "stomp-ws", "wss", &["--ca", &ca]);
    python_scenario(&d, "mqtt_scenarios.py", "mqtt", "tls", &["--ca", &ca]);
    python_scenario(&d, "mqtt_scenarios.py", "mqtt-ws", "wss", &["--ca", &ca]);
    assert!(d.log().contains("listening listener=stomp-ws") && d.log().contains("tls=true"));
}
