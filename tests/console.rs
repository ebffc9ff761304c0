//! The management console (issue 23) in headless Chromium and Firefox (Debian's `chromium`
//! and `firefox-esr`; one scenario, tests/browser/console_check.mjs) with real clients
//! around it (tests/py/console_clients.py): log in, a queue filling while a paho publisher
//! runs, a peek, a dead letter rejected by stomp.py, replayed from the console with the
//! keyboard and received again by stomp.py, a broken route file's error with its line, an
//! explanation. Also the page's headers and what it leaves open.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::{Daemon, http, password_hash};

const USER: &str = "ops";
const PASSWORD: &str = "console-pass-73";
const FILL_ROUTE: &str =
    "routes:\n  - name: fill-in\n    from: { topic: console.fill }\n    to: [ { queue: fill } ]\n";

fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("routes/fill.yaml"), FILL_ROUTE).unwrap();
    let config = dir.path().join("switchboard.yaml");
    std::fs::write(
        &config,
        format!(
            "auth:\n  users:\n    {USER}:\n      password_hash: \"{}\"\n      admin: true\n\
             queues:\n  named:\n    work:\n      dead_letter: queue:work.dlq\n",
            password_hash(PASSWORD)
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    Daemon::start_in(dir, &["--config", &config])
}

/// `tests/py/console_clients.py SCENARIO` against `listener`, not waited for.
fn client(d: &Daemon, listener: &str, scenario: &str, extra: &[&str]) -> Child {
    Command::new(common::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/console_clients.py"
        ))
        .args(["--port", &d.addr(listener).port().to_string(), scenario])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python (run scripts/setup python)")
}

/// Waits for a client and asserts it printed `ok`.
fn passed(child: Child, what: &str, d: &Daemon) {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{what} failed\nstdout:\n{stdout}\nstderr:\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}

/// Ends a child this test started (by its handle), even when an assertion fails first.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[cfg_attr(
    not(peers),
    ignore = "needs Node, Chromium and the Python clients: run scripts/test"
)]
fn console_in_chromium_fills_peeks_replays_and_shows_route_errors() {
    fills_peeks_replays_and_shows_route_errors(Browser::Chromium);
}

#[test]
#[cfg_attr(
    not(peers),
    ignore = "needs Node, Firefox ESR and the Python clients: run scripts/test"
)]
fn console_in_firefox_fills_peeks_replays_and_shows_route_errors() {
    fills_peeks_replays_and_shows_route_errors(Browser::Firefox);
}

fn fills_peeks_replays_and_shows_route_errors(browser: Browser) {
    let d = start();
    let body = format!("dead-{}", std::process::id());
    passed(
        client(&d, "stomp", "dead_letter", &["--body", &body]),
        "stomp.py rejecting a message",
        &d,
    );
    // stomp.py waits on `work` for the replay; it says when it is subscribed.
    let mut receiver = client(
        &d,
        "stomp",
        "receive",
        &["--body", &body, "--timeout", "90"],
    );
    let mut line = String::new();
    BufReader::new(receiver.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "subscribed", "{}", d.log());
    let _publisher = Reap(client(&d, "mqtt", "publish", &["--every", "0.1"]));

    let v = console_check(
        &d,
        browser,
        &[
            &format!("http://{}", d.addr("admin")),
            USER,
            PASSWORD,
            &d.routes_dir().display().to_string(),
            &body,
        ],
    );
    eprintln!("console check in {}: {v}", browser.name());
    passed(receiver, "stomp.py receiving the replayed dead letter", &d);
    assert!(
        d.log().contains("admin API: messages replayed"),
        "the replay went through the admin API"
    );
}

/// The browsers tests/browser/browsers.mjs starts (`--browser NAME`).
#[derive(Clone, Copy)]
enum Browser {
    /// Debian's `chromium` (CHROMIUM), through playwright-core.
    Chromium,
    /// Debian's `firefox-esr` (FIREFOX), over WebDriver BiDi, through an older
    /// playwright-core (docs/operations.md, "Browsers", says why).
    Firefox,
}

impl Browser {
    fn name(self) -> &'static str {
        match self {
            Browser::Chromium => "chromium",
            Browser::Firefox => "firefox",
        }
    }
}

/// Runs tests/browser/console_check.mjs in `browser`, headless; its report.
fn console_check(d: &Daemon, browser: Browser, args: &[&str]) -> serde_json::Value {
    let dir = std::env::var("SWITCHBOARD_NODE_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser").into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/browser/console_check.mjs"
    );
    let out = Command::new("node")
        .current_dir(&dir)
        .arg(script)
        .args(["--browser", browser.name()])
        .args(args)
        .output()
        .expect("node (run scripts/setup browser)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "console check in {} failed\nstdout: {stdout}\nstderr: {}\nlog:\n{}",
        browser.name(),
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    v
}

/// With no admin configured, a loopback browser gets the figures without a login, and
/// the actions are refused with the API's reason. A link that cannot connect shows its
/// state and last error.
#[test]
#[cfg_attr(not(peers), ignore = "needs Node and Chromium: run scripts/test")]
fn console_in_chromium_without_an_admin_shows_figures_and_a_link_down() {
    without_an_admin_shows_figures_and_a_link_down(Browser::Chromium);
}

#[test]
#[cfg_attr(not(peers), ignore = "needs Node and Firefox ESR: run scripts/test")]
fn console_in_firefox_without_an_admin_shows_figures_and_a_link_down() {
    without_an_admin_shows_figures_and_a_link_down(Browser::Firefox);
}

fn without_an_admin_shows_figures_and_a_link_down(browser: Browser) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("amqp.pw"), "guest\n").unwrap();
    let config = dir.path().join("switchboard.yaml");
    std::fs::write(
        &config,
        format!(
            "links:\n  rabbit:\n    amqp:\n      uri: \"amqp://127.0.0.1:{closed}/%2f\"\n      username: guest\n      password_file: amqp.pw\n      reconnect_initial: 100ms\n      reconnect_max: 500ms\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let d = Daemon::start_in(dir, &["--config", &config]);
    let v = console_check(
        &d,
        browser,
        &["--no-admin", &format!("http://{}", d.addr("admin"))],
    );
    assert_eq!(v["link"]["state"], "retrying", "{v}");
}

/// The page, its script and style come from the binary with a strict policy and no data;
/// the API behind them still needs the login.
#[test]
fn the_page_is_open_and_holds_no_data_the_api_needs_the_login() {
    let d = start();
    let a = d.addr("admin");
    for (path, kind) in [
        ("/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let (status, text) = raw(a, path);
        assert_eq!(status, 200, "{path}: {text}");
        let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(head.contains(&format!("content-type: {kind}")), "{head}");
        assert!(
            head.contains("content-security-policy: default-src 'none'; script-src 'self';"),
            "{head}"
        );
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(head.contains("frame-ancestors 'none'"), "{head}");
    }
    let (_, page) = http(a, "GET", "/");
    assert!(page.contains("<script src=\"/console/app.js\""));
    assert!(
        !page.contains("<script>") && !page.contains(" style="),
        "nothing inline: the policy forbids it"
    );
    for path in ["/queues", "/routes", "/dead-letters"] {
        assert_eq!(http(a, "GET", path).0, 401, "{path}");
    }
    assert_eq!(http(a, "POST", "/explain").0, 401);
}

/// `POST /explain` runs `switchboard explain`'s walk on the table in force, for an admin,
/// and refuses a cross-site caller like every other POST.
#[test]
fn explain_walks_the_table_in_force() {
    let d = start();
    let a = d.addr("admin");
    let auth = format!(
        "Authorization: Basic {}\r\n",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{USER}:{PASSWORD}")
        )
    );
    let ask = |extra: &str, body: &str| {
        let (status, text) = request(a, "POST", "/explain", &format!("{auth}{extra}"), body);
        (status, text.split_once("\r\n\r\n").unwrap().1.to_owned())
    };
    let (status, body) = ask("", r#"{"query": "mqtt console/fill", "body": "x"}"#);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("route `fill-in`"), "{text}");
    assert!(
        text.contains("delivered to 1 destination") && text.contains("queue:fill"),
        "{text}"
    );
    let (status, body) = ask("", r#"{"query": ["smtp", "x"]}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("expected one of"), "{body}");
    let (status, body) = ask(
        "Origin: http://evil.example\r\n",
        r#"{"query": "mqtt console/fill"}"#,
    );
    assert_eq!(status, 403, "{body}");
}

/// `GET` with the raw head kept (status, whole response).
fn raw(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, "", "")
}

/// A request with extra header lines (each ending in CRLF) and a body: (status, whole
/// response).
fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}
