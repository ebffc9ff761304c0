//! Imports point one way, from the outside world in:
//!
//! ```text
//! wiring (app, admin, config, watermark, cluster)
//!   → edges (listener/, link/)  → auth  → router  → routes  → translate  → core  → store
//! ```
//!
//! A module may use its own layer and any lower one, never a higher one. Among the edges
//! nothing is imported sideways: one protocol's listener or link does not reach into
//! another's (listener/stomp ↔ listener/mqtt, link/amqp ↔ link/xmpp), listeners do not
//! reach into links or back, and the shared parts of listener/ and link/ (`limit`, `ws`,
//! `Links`, …) know no single protocol. What two edges both need moves down (names into
//! `translate`, the message into `core`). A few leaf modules (`ratelog`, `counter`,
//! `alloc`, `fd_limit`, `tls`, `duration`, `random`) import nothing of the crate and may
//! be used by anyone.
//!
//! The check reads the sources: every `crate::…` path (in `use`, in code, in doc links:
//! a link upward sends the reader up too) and every `super::…` path, resolved against
//! the file's module. Exceptions not yet removed are listed in [`ALLOWED`], each with why;
//! an exception that no longer matches anything fails the test so the list stays true.
//! Besides, the core must not import anything named after a protocol.

use std::fs;
use std::path::{Path, PathBuf};

/// Layers, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    /// Leaf helpers: import nothing of the crate, usable from every layer.
    Leaf,
    Store,
    Core,
    Translate,
    Routes,
    Router,
    /// Users and permissions: asked by the edges, asks the router's names.
    Auth,
    Edge,
    /// Builds and wires the others: may import anything.
    Wiring,
}

/// The layer of a top-level module of the crate. A new top-level module must be placed
/// here, or the test fails.
fn layer_of(top: &str) -> Layer {
    match top {
        "ratelog" | "rate_warn" | "rate_info" | "counter" | "alloc" | "fd_limit" | "tls"
        | "duration" | "random" => Layer::Leaf,
        "store" => Layer::Store,
        "core" => Layer::Core,
        "translate" => Layer::Translate,
        "routes" => Layer::Routes,
        "router" => Layer::Router,
        "auth" => Layer::Auth,
        "listener" | "link" => Layer::Edge,
        "app" | "admin" | "config" | "watermark" | "systemd" | "main" | "lib" => Layer::Wiring,
        // Cluster plumbing (NATS membership, the cluster's route table): it drives the
        // live routes from outside, as the admin API does; nothing below may know it.
        "cluster" => Layer::Wiring,
        other => panic!(
            "tests/layering.rs does not know the layer of `crate::{other}`: add it to layer_of"
        ),
    }
}

/// Exceptions still in the tree: (file or folder under src/, imported path prefix, why).
const ALLOWED: &[(&str, &str, &str)] = &[];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file: `src/listener/mqtt/session/mod.rs` →
/// `[listener, mqtt, session]`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut segs: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let last = segs.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        segs.push(stem.to_string());
    }
    segs
}

/// Where a module sits: its layer, and for an edge its family (`listener`, `link`) and
/// protocol (a folder under the family: `stomp`, `mqtt`, `amqp`, `xmpp`; `None` for the
/// family's shared parts).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    layer: Layer,
    family: Option<String>,
    protocol: Option<String>,
}

fn place(module: &[String]) -> Place {
    let layer = layer_of(&module[0]);
    let (mut family, mut protocol) = (None, None);
    if layer == Layer::Edge {
        family = Some(module[0].clone());
        protocol = module
            .get(1)
            .filter(|p| src().join(&module[0]).join(p).is_dir())
            .cloned();
    }
    Place {
        layer,
        family,
        protocol,
    }
}

/// Why `from` may not use `to`, or `None` if it may.
fn violation(from: &Place, to: &Place) -> Option<&'static str> {
    if to.layer == Layer::Leaf {
        return None;
    }
    if from.layer == Layer::Leaf {
        return Some("a leaf module imports nothing of the crate");
    }
    if to.layer > from.layer {
        return Some("an import from a lower layer up to a higher one");
    }
    if from.layer == Layer::Edge && to.layer == Layer::Edge {
        if from.family != to.family {
            return Some("a sideways import between listeners and links");
        }
        match (&from.protocol, &to.protocol) {
            (_, None) => {}
            (Some(a), Some(b)) if a == b => {}
            (Some(_), Some(_)) => return Some("a sideways import between two protocols"),
            (None, Some(_)) => return Some("a shared edge module reaching into one protocol"),
        }
    }
    None
}

/// Every module path a line names: `crate::a::b` (also `$crate::`) and `super::…`
/// resolved against `here`. Grouped imports (`crate::{a::x, b}`) give each member.
fn paths_in(line: &str, here: &[String]) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    for (kw, is_super) in [("crate::", false), ("super::", true)] {
        let mut from = 0;
        while let Some(i) = line[from..].find(kw) {
            let start = from + i;
            from = start + kw.len();
            let before = line[..start].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let (mut base, mut rest) = (Vec::new(), &line[start..]);
            if is_super {
                base = here.to_vec();
                while let Some(r) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = r;
                    from = line.len() - r.len();
                }
                // `super::super` inside an inline module is an approximation that can
                // only land on an ancestor of the file: never a false sideways hit.
            } else {
                rest = &rest[kw.len()..];
            }
            let shown = line[start..]
                .split([' ', ';', ',', '(', ')', ']', '`'])
                .next();
            let shown = shown.unwrap_or_default().to_string();
            let members: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or_default();
                inner.split(',').map(|m| m.trim().to_string()).collect()
            } else {
                vec![rest.to_string()]
            };
            for m in members {
                let mut path = base.clone();
                path.extend(
                    m.split("::")
                        .map(|s| {
                            s.chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_')
                                .collect::<String>()
                        })
                        .take_while(|s| !s.is_empty() && s != "self"),
                );
                if !path.is_empty() {
                    out.push((path, shown.clone()));
                }
            }
        }
    }
    out
}

/// Every forbidden import in src/, as `file:line: path — reason`, allowed ones removed.
/// `used` counts the matches of each [`ALLOWED`] entry.
fn violations(used: &mut [usize]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    assert!(files.len() >= 40, "found the sources");
    let mut found = Vec::new();
    for f in files {
        let here = module_of(&f);
        if here.is_empty() {
            continue; // lib.rs: the crate root declares every module.
        }
        let from = place(&here);
        let rel = f.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
        let rel = rel.to_string_lossy();
        for (n, line) in fs::read_to_string(&f).unwrap().lines().enumerate() {
            for (path, shown) in paths_in(line, &here) {
                let Some(why) = violation(&from, &place(&path)) else {
                    continue;
                };
                let full = format!("crate::{}", path.join("::"));
                let allowed = ALLOWED.iter().position(|(file, prefix, _)| {
                    rel.starts_with(file) && full.starts_with(prefix)
                });
                match allowed {
                    Some(i) => used[i] += 1,
                    None => found.push(format!("{rel}:{}: `{shown}`: {why}", n + 1)),
                }
            }
        }
    }
    found
}

#[test]
fn imports_point_down_and_never_sideways() {
    let mut used = vec![0; ALLOWED.len()];
    let found = violations(&mut used);
    assert!(
        found.is_empty(),
        "imports against the layering (edges → auth → router → routes → translate → core → \
         store, no edge into another):\n{}",
        found.join("\n")
    );
    for ((file, prefix, _), n) in ALLOWED.iter().zip(used) {
        assert!(
            n > 0,
            "the exception {file} → {prefix} matches nothing any more: remove it from ALLOWED"
        );
    }
}

#[test]
fn the_rule_sees_what_it_forbids() {
    let m = |p: &str| p.split('/').map(String::from).collect::<Vec<_>>();
    let at = |p: &str| place(&m(p));
    let up = violation(&at("core/queue"), &at("router"));
    assert!(up.is_some_and(|w| w.contains("higher")));
    let side = violation(&at("listener/mqtt/session"), &at("listener/stomp/session"));
    assert!(side.is_some_and(|w| w.contains("two protocols")));
    let side = violation(&at("link/xmpp"), &at("listener/limit"));
    assert!(side.is_some_and(|w| w.contains("listeners and links")));
    let shared = violation(&at("listener/ws"), &at("listener/stomp/frame"));
    assert!(shared.is_some());
    assert_eq!(
        violation(&at("listener/stomp"), &at("listener/limit")),
        None
    );
    assert_eq!(violation(&at("link/amqp/inbound"), &at("routes")), None);
    assert_eq!(violation(&at("core"), &at("ratelog")), None);
    let here = m("listener/mqtt/session/subscribe");
    let paths = paths_in(
        "    super::super::persist::save(crate::{core::Message, router::Router});",
        &here,
    );
    let paths: Vec<_> = paths.into_iter().map(|(p, _)| p.join("::")).collect();
    assert_eq!(
        paths,
        [
            "core::Message",
            "router::Router",
            "listener::mqtt::persist::save"
        ]
    );
}

#[test]
fn core_imports_nothing_named_after_a_protocol() {
    let mut files = Vec::new();
    rust_files(&src().join("core"), &mut files);
    assert!(files.len() >= 5, "found the core sources");
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        for proto in ["stomp", "mqtt", "amqp", "xmpp", "lapin", "tokio_xmpp"] {
            assert!(
                !text
                    .lines()
                    .any(|l| l.trim_start().starts_with("use ") && l.to_lowercase().contains(proto)),
                "{} imports something named {proto}",
                f.display()
            );
        }
    }
}
