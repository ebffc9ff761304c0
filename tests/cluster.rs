//! Cluster mode, part 1 (issue 21): three routers over the 3-node NATS JetStream rig
//! (scripts/peers/nats-ctl.sh) see each other in `GET /cluster`, and share the route
//! table `switchboard routes push` publishes: an invalid push changes nothing, a valid
//! one reaches every router, swaps under load with nothing lost or duplicated, and a
//! router started later runs it from its first connection.
//!
//! A router that loses NATS (through a forwarder the test cuts: the shared nodes keep
//! running) says so, keeps serving its local traffic, and recovers.
//!
//! Each test runs under a bucket prefix no other run uses (`cluster.prefix`); its
//! buckets and streams are deleted when it ends, passed or not.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Buckets, URLS, WAIT, router, router_on, settings};
use common::forwarder::Forwarder;
use common::{BIN, Daemon, http_json, peer_lock, python_scenario, unique_prefix, wait_until};

fn routes_version(d: &Daemon) -> u64 {
    http_json(d.addr("admin"), "GET", "/routes").1["status"]["version"]
        .as_u64()
        .unwrap()
}

/// `switchboard routes push DIR`: (exit code, stdout).
fn push(dir: &Path, config: &str) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["routes", "push"])
        .arg(dir)
        .args(["--cluster", URLS, "--config", config])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn route_dir(root: &Path, name: &str, targets: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("10-in.yaml"),
        format!("routes:\n  - name: intake\n    from: {{ queue: in }}\n    to: [ {targets} ]\n"),
    )
    .unwrap();
    dir
}

#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn three_routers_share_membership_and_the_route_table() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = format!("{}_", unique_prefix("c"));
    let _buckets = Buckets(prefix.clone());
    let routers: Vec<Daemon> = ["a", "b", "c"].iter().map(|n| router(n, &prefix)).collect();

    // Membership: every router sees all three.
    for d in &routers {
        wait_until(WAIT, "three routers in GET /cluster", || {
            let (status, v) = http_json(d.addr("admin"), "GET", "/cluster");
            assert_eq!(status, 200, "{v}");
            let names: Vec<_> = v["nodes"]
                .as_array()?
                .iter()
                .filter_map(|n| n["node"].as_str())
                .collect();
            (names == ["a", "b", "c"]).then_some(())
        });
        let (_, v) = http_json(d.addr("admin"), "GET", "/cluster");
        assert_eq!(v["connected"], true, "{v}");
        assert!(v["jetstream"]["streams"].as_u64().unwrap() >= 2, "{v}");
        let (status, ready) = http_json(d.addr("admin"), "GET", "/health/ready");
        assert_eq!(status, 200, "{ready}");
    }
    assert_eq!(routes_version(&routers[0]), 0, "no table pushed yet");

    // How many MQTT sessions each router serves: a client connected to A shows on B.
    let mut mqtt = TcpStream::connect(routers[0].addr("mqtt")).unwrap();
    // CONNECT, MQTT 3.1.1, clean session, keep-alive 60 s, client id "m1".
    mqtt.write_all(&[
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'm', b'1',
    ])
    .unwrap();
    let mut connack = [0u8; 4];
    mqtt.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    let b_admin = routers[1].addr("admin");
    let sessions_of_a = |want: u64| {
        let (_, v) = http_json(b_admin, "GET", "/cluster");
        v["nodes"]
            .as_array()?
            .iter()
            .any(|n| n["node"] == "a" && n["mqtt_sessions"] == want)
            .then_some(())
    };
    wait_until(WAIT, "A serving 1 MQTT session, seen from B", || {
        sessions_of_a(1)
    });
    drop(mqtt);
    wait_until(WAIT, "A serving no MQTT session, seen from B", || {
        sessions_of_a(0)
    });

    let work = tempfile::tempdir().unwrap();
    let config = settings(work.path(), &prefix);

    // An invalid directory: the `check` errors, exit 1, nothing published.
    let bad = route_dir(work.path(), "bad", "{ queue: \"bad name\" }");
    let (code, text) = push(&bad, &config);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("invalid queue name") && text.contains("1 error"),
        "{text}"
    );
    let check = Command::new(BIN).arg("check").arg(&bad).output().unwrap();
    assert!(
        text.starts_with(String::from_utf8_lossy(&check.stdout).trim_end()),
        "same errors as check:\n{text}"
    );

    // A valid table reaches all three, under the version the push printed.
    let one = route_dir(work.path(), "one", "{ queue: out1 }");
    let (code, text) = push(&one, &config);
    assert_eq!(code, 0, "{text}");
    let v1: u64 = text.trim().rsplit(' ').next().unwrap().parse().unwrap();
    for d in &routers {
        wait_until(WAIT, "the pushed table on every router", || {
            (routes_version(d) == v1).then_some(())
        });
    }
    assert!(routes_version(&routers[0]) > 0);

    // Under load on router A: the next table adds out2; the swap loses and duplicates
    // nothing (the script checks sequence numbers on out1 and out2).
    let two = route_dir(work.path(), "two", "{ queue: out1 }, { queue: out2 }");
    let admin = routers[0].addr("admin").port().to_string();
    let v2 = (v1 + 1).to_string();
    let two_s = two.display().to_string();
    python_scenario(
        &routers[0],
        "cluster_load.py",
        "stomp",
        "swap",
        &[
            "--admin",
            &admin,
            "--count",
            "400",
            "--version",
            &v2,
            "--timeout",
            "20",
            "--",
            BIN,
            "routes",
            "push",
            &two_s,
            "--cluster",
            URLS,
            "--config",
            &config,
        ],
    );
    for d in &routers {
        wait_until(WAIT, "the second table on every router", || {
            (routes_version(d) == v1 + 1).then_some(())
        });
        let (_, v) = http_json(d.addr("admin"), "GET", "/cluster");
        wait_until(WAIT, "every router reporting the second table", || {
            let (_, v) = http_json(d.addr("admin"), "GET", "/cluster");
            v["nodes"]
                .as_array()?
                .iter()
                .all(|n| n["routes_version"] == v1 + 1)
                .then_some(())
        });
        assert_eq!(v["node"]["routes_version"], v1 + 1, "{v}");
    }

    // A router started after the push runs it from the start.
    let late = router("d", &prefix);
    assert_eq!(routes_version(&late), v1 + 1, "{}", late.log());
    for d in &routers {
        wait_until(WAIT, "four routers in GET /cluster", || {
            let (_, v) = http_json(d.addr("admin"), "GET", "/cluster");
            (v["nodes"].as_array()?.len() == 4).then_some(())
        });
    }
}

/// A STOMP subscriber on `/topic/local` then a SEND to it: the message comes back. (A
/// topic: its local subscribers are served by the router alone; a durable queue lives
/// in JetStream and waits for NATS.)
fn stomp_round_trip(d: &Daemon, body: &str) {
    let mut s = TcpStream::connect(d.addr("stomp")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(
        b"CONNECT\naccept-version:1.2\nhost:x\n\n\0SUBSCRIBE\nid:0\ndestination:/topic/local\nreceipt:s\n\n\0",
    )
    .unwrap();
    s.write_all(format!("SEND\ndestination:/topic/local\n\n{body}\0").as_bytes())
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&got);
        if text.contains("MESSAGE\n") && text.contains(body) {
            return;
        }
        assert!(Instant::now() < deadline, "no MESSAGE back: {text}");
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => panic!("STOMP connection closed: {text}\n{}", d.log()),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
}

fn cluster_check(d: &Daemon) -> (u16, serde_json::Value) {
    let (status, v) = http_json(d.addr("admin"), "GET", "/health/ready");
    let check = v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["check"] == "cluster"))
        .cloned()
        .unwrap_or_else(|| panic!("no cluster check: {v}"));
    (status, check)
}

/// The router reaches NATS only through a forwarder. Cut off, it logs the loss, shows it
/// in `GET /cluster` and `/health/ready` (503), still relays STOMP; a push made meanwhile
/// is in force once the forwarder lets it reconnect. `POST /routes/reload` says why it
/// is refused.
#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn a_router_cut_off_from_nats_serves_locally_and_recovers() {
    let _lock = peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = format!("{}_", unique_prefix("x"));
    let _buckets = Buckets(prefix.clone());
    let forwarder = Forwarder::nats("127.0.0.1:4222");
    let d = router_on(
        &format!("nats://127.0.0.1:{}", forwarder.port()),
        "solo",
        &prefix,
        "",
    );
    let (status, v) = http_json(d.addr("admin"), "GET", "/cluster");
    assert_eq!(
        (status, &v["connected"]),
        (200, &serde_json::json!(true)),
        "{v}"
    );
    assert_eq!(cluster_check(&d).0, 200);

    // Cluster mode: a reload is refused, saying where the table comes from.
    let (status, v) = http_json(d.addr("admin"), "POST", "/routes/reload");
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["ok"], false, "{v}");
    let why = v["errors"][0].as_str().unwrap_or_default();
    assert!(
        why.contains("from the cluster") && why.contains("switchboard routes push"),
        "{v}"
    );
    let (_, routes) = http_json(d.addr("admin"), "GET", "/routes");
    assert_eq!(
        routes["status"]["ok"], true,
        "the table's status is untouched: {routes}"
    );
    // SIGHUP (`systemctl reload`) neither reloads nor ends a clustered router: it says
    // why in the log, and the router still answers.
    d.signal("HUP");
    wait_until(WAIT, "the SIGHUP refusal in the log", || {
        d.log()
            .contains("routes not reloaded: this router takes its routes from the cluster")
            .then_some(())
    });
    assert_eq!(cluster_check(&d).0, 200, "still serving after SIGHUP");

    forwarder.refuse(true);
    forwarder.cut();
    wait_until(WAIT, "the loss in the log", || {
        d.log()
            .contains("cluster: NATS connection lost")
            .then_some(())
    });
    let (status, check) = wait_until(WAIT, "not ready", || {
        let (status, check) = cluster_check(&d);
        (status == 503).then_some((status, check))
    });
    assert_eq!(check["ok"], false, "{check}");
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("NATS connection lost"),
        "{status} {check}"
    );
    let (status, v) = http_json(d.addr("admin"), "GET", "/cluster");
    assert_eq!(
        (status, &v["connected"]),
        (200, &serde_json::json!(false)),
        "{v}"
    );
    assert!(v["nodes"]["error"].is_string(), "{v}");
    stomp_round_trip(&d, "while NATS is away");

    // A push made meanwhile (straight to the cluster) is picked up on reconnection.
    let work = tempfile::tempdir().unwrap();
    let config = settings(work.path(), &prefix);
    let (code, text) = push(&route_dir(work.path(), "one", "{ queue: out1 }"), &config);
    assert_eq!(code, 0, "{text}");
    let pushed: u64 = text.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(routes_version(&d), 0, "cut off: still the table it had");

    forwarder.refuse(false);
    wait_until(Duration::from_secs(30), "ready again", || {
        (cluster_check(&d).0 == 200).then_some(())
    });
    let (_, v) = http_json(d.addr("admin"), "GET", "/cluster");
    assert_eq!(v["connected"], true, "{v}");
    wait_until(WAIT, "the push made meanwhile", || {
        (routes_version(&d) == pushed).then_some(())
    });
    wait_until(WAIT, "its key back in SB_NODES", || {
        let (_, v) = http_json(d.addr("admin"), "GET", "/cluster");
        (v["nodes"].as_array()?.iter().any(|n| n["node"] == "solo")).then_some(())
    });
    stomp_round_trip(&d, "NATS is back");
}
