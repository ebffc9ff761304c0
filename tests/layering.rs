//! The core must not know any protocol: nothing under src/core may import the edges.

use std::fs;
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn core_imports_no_edge_module() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core"),
        &mut files,
    );
    assert!(files.len() >= 5, "found the core sources");
    let forbidden = [
        "crate::listener",
        "crate::link",
        "crate::translate",
        "crate::routes",
        "crate::router",
        "crate::app",
        "crate::config",
    ];
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        for bad in forbidden {
            assert!(
                !text.contains(bad),
                "{} uses {bad}: the core must stay protocol-agnostic",
                f.display()
            );
        }
        for proto in ["stomp", "mqtt", "amqp", "xmpp", "lapin", "tokio_xmpp"] {
            assert!(
                !text.lines().any(|l| l.trim_start().starts_with("use ") && l.to_lowercase().contains(proto)),
                "{} imports something named {proto}",
                f.display()
            );
        }
    }
}
