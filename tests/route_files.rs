//! Route files over the admin API (`PUT`/`DELETE /routes/files/NAME`) with real HTTP:
//! checked like `switchboard check` before anything is written, written atomically into
//! the routes directory, in force after one reload; admin callers only. On clustered
//! routers the same requests edit the cluster's table.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{Daemon, daemon_with_config, http_json};

/// One request; returns (status, JSON body).
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/yaml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

const TOKEN: &str = "tok-routes-8d1e0c";

fn admin_daemon() -> Daemon {
    daemon_with_config(&format!(
        "auth:\n  admin_tokens: [\"{}\"]\n",
        switchboard::admin::token_digest(TOKEN)
    ))
}

fn routes(d: &Daemon) -> serde_json::Value {
    let mut s = TcpStream::connect(d.addr("admin")).unwrap();
    let a = d.addr("admin");
    write!(
        s,
        "GET /routes HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    serde_json::from_str(raw.split_once("\r\n\r\n").unwrap().1).unwrap()
}

const GOOD: &str = "routes:\n  - name: api-route\n    from: { queue: in }\n    transform: { jq: '{v: .body}' }\n    to: [ { queue: out } ]\n";
const BROKEN: &str = "routes:\n  - name: broken\n    from: { queue: in2 }\n    when: { jq: '.body.t >' }\n    to: [ { queue: \"out.{2}\" } ]\n";

#[test]
fn put_checks_writes_and_reloads_and_delete_removes() {
    let d = admin_daemon();
    let a = d.addr("admin");
    let file = d.routes_dir().join("20-api.yaml");
    assert_eq!(routes(&d)["status"]["version"], 1);

    // A broken file: 400 with check's errors, nothing written, the table unchanged.
    let (status, v) = call(a, "PUT", "/routes/files/20-api.yaml", Some(TOKEN), BROKEN);
    assert_eq!(status, 400, "{v}");
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let shown = file.display().to_string();
    assert!(
        errors.iter().any(|e| e.starts_with(&format!(
            "{shown}:4:17: route `broken`: jq program, line 1 column 10"
        ))),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with(&format!(
            "{shown}:5:11: route `broken`: template `out.{{2}}`"
        ))),
        "{errors:?}"
    );
    assert!(!file.exists());
    assert_eq!(v["version"], 1);
    assert_eq!(routes(&d)["status"]["version"], 1);

    // A good one: written, in force after one reload, version in the answer.
    let (status, v) = call(a, "PUT", "/routes/files/20-api.yaml", Some(TOKEN), GOOD);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["version"], 2, "{v}");
    assert_eq!(v["routes"], 1, "{v}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), GOOD);
    let r = routes(&d);
    assert_eq!(r["status"]["version"], 2, "{r}");
    assert_eq!(r["routes"][0]["name"], "api-route", "{r}");
    // No temporary file is left beside it, and the watcher's own look finds nothing new.
    let names: Vec<String> = std::fs::read_dir(d.routes_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["20-api.yaml"]);

    // Without credentials: refused by the guard; a bad name: 400.
    assert_eq!(
        call(a, "DELETE", "/routes/files/20-api.yaml", None, "").0,
        401
    );
    let (status, v) = call(a, "PUT", "/routes/files/..%2Fx.yaml", Some(TOKEN), GOOD);
    assert_eq!(status, 400, "{v}");

    // DELETE: removed and reloaded; again: 404.
    let (status, v) = call(a, "DELETE", "/routes/files/20-api.yaml", Some(TOKEN), "");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["version"], 3, "{v}");
    assert_eq!(v["routes"], 0, "{v}");
    assert!(!file.exists());
    assert_eq!(
        call(a, "DELETE", "/routes/files/20-api.yaml", Some(TOKEN), "").0,
        404
    );
}

/// A route naming a schema file that is not there: 400 with the error at the route's
/// `schema:`, as `check` reports it; nothing written. With the file in place: accepted.
#[test]
fn put_locates_a_missing_schema() {
    let d = admin_daemon();
    let a = d.addr("admin");
    let text = "routes:\n  - name: s\n    from: { queue: in }\n    when: { schema: schemas/r.json }\n    to: [ { queue: out } ]\n";
    let (status, v) = call(a, "PUT", "/routes/files/30-s.yaml", Some(TOKEN), text);
    assert_eq!(status, 400, "{v}");
    let file = d.routes_dir().join("30-s.yaml");
    let expected = format!(
        "{}:4:21: route `s`: schema `schemas/r.json`: cannot read",
        file.display()
    );
    assert!(
        v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with(&expected)),
        "{v}"
    );
    assert!(!file.exists());
    std::fs::create_dir(d.routes_dir().join("schemas")).unwrap();
    std::fs::write(d.routes_dir().join("schemas/r.json"), "{}").unwrap();
    let (status, v) = call(a, "PUT", "/routes/files/30-s.yaml", Some(TOKEN), text);
    assert_eq!(status, 200, "{v}");
}

#[test]
fn without_an_admin_configured_route_files_cannot_be_written() {
    let d = Daemon::start(&[], &[]);
    let a = d.addr("admin");
    let (status, v) = call(a, "PUT", "/routes/files/x.yaml", None, GOOD);
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("admin user or token"),
        "{v}"
    );
    assert!(!d.routes_dir().join("x.yaml").exists());
    let (_, r) = http_json(a, "GET", "/routes");
    assert_eq!(r["status"]["version"], 1);
}

/// Clustered routers: the same API edits the cluster's table (checked the same way,
/// stored by compare-and-set), which every router then runs; the routes directory of
/// the router asked is not written.
#[test]
#[cfg_attr(not(peers), ignore = "needs a NATS cluster: run scripts/test")]
fn on_clustered_routers_the_api_edits_the_clusters_table() {
    let _lock = common::peer_lock("nats", false, "127.0.0.1:4222", "scripts/setup nats");
    let prefix = format!("{}_", common::unique_prefix("rf"));
    let _buckets = common::cluster::Buckets(prefix.clone());
    let auth = format!(
        "auth:\n  admin_tokens: [\"{}\"]\n",
        switchboard::admin::token_digest(TOKEN)
    );
    let a = common::cluster::router_on(common::cluster::URLS, "rfa", &prefix, &auth);
    let b = common::cluster::router_on(common::cluster::URLS, "rfb", &prefix, &auth);
    let (aa, ba) = (a.addr("admin"), b.addr("admin"));
    assert_eq!(routes(&a)["status"]["version"], 0, "no table pushed yet");

    // A broken file: 400 with check's errors located in the file, nothing stored.
    let (status, v) = call(aa, "PUT", "/routes/files/20-api.yaml", Some(TOKEN), BROKEN);
    assert_eq!(status, 400, "{v}");
    let errors = v["errors"].to_string();
    assert!(
        errors.contains("20-api.yaml:4:17: route `broken`: jq program, line 1 column 10"),
        "{v}"
    );
    assert_eq!(routes(&a)["status"]["version"], 0);
    assert_eq!(routes(&b)["status"]["version"], 0);

    // A good one: stored, in force on A when answered, and on B after its watch.
    let (status, v) = call(aa, "PUT", "/routes/files/20-api.yaml", Some(TOKEN), GOOD);
    assert_eq!(status, 200, "{v}");
    let v1 = v["version"].as_u64().unwrap();
    assert!(v1 > 0, "{v}");
    assert_eq!(v["routes"], 1, "{v}");
    assert_eq!(routes(&a)["status"]["version"], v1);
    assert!(!a.routes_dir().join("20-api.yaml").exists());
    common::wait_until(common::cluster::WAIT, "the edit in force on B", || {
        let r = routes(&b);
        (r["status"]["version"] == v1).then_some(r)
    });
    assert_eq!(routes(&b)["routes"][0]["name"], "api-route");

    // A second file through B: both files in the table.
    let other = GOOD.replace("api-route", "second").replace("in }", "in9 }");
    let (status, v) = call(ba, "PUT", "/routes/files/30-more.yaml", Some(TOKEN), &other);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["routes"], 2, "{v}");

    // DELETE through A: gone everywhere; again: 404.
    let (status, v) = call(aa, "DELETE", "/routes/files/20-api.yaml", Some(TOKEN), "");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["routes"], 1, "{v}");
    let v3 = v["version"].as_u64().unwrap();
    common::wait_until(common::cluster::WAIT, "the delete in force on B", || {
        let r = routes(&b);
        (r["status"]["version"] == v3 && r["routes"][0]["name"] == "second").then_some(())
    });
    let (status, v) = call(ba, "DELETE", "/routes/files/20-api.yaml", Some(TOKEN), "");
    assert_eq!(status, 404, "{v}");
}
