//! A table received as text rather than read from a routes directory (the cluster's:
//! `switchboard routes push` stores one): its route files, and the schema files its
//! routes' `when.schema` read, keyed by their path relative to the routes directory.
//!
//! Schema loading reads files and confines `$ref`s to one directory
//! ([`Schema::load`](super::schema::Schema::load)); rather than teach it a second source,
//! the received schema files are written into a directory this router owns
//! ([`SchemaDirs`]), one folder per table, and the table compiles against that folder
//! exactly as against a routes directory: same errors, same `$ref` rules.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{CompileContext, RouteError, RouteTable, compile_sources};

/// Route files and schema files, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// (file name, text), in evaluation order.
    pub files: Vec<(String, String)>,
    /// Path relative to the routes directory (`schemas/reading.json`) → text.
    pub schemas: BTreeMap<String, String>,
}

/// Folder-name prefix of a table in force (or being installed), and of a check's.
const TABLE: &str = "rev-";
const CHECK: &str = "check-";

/// Where a router writes the schema files of received tables: `cluster-schemas/` in the
/// data directory when it has one (emptied at start: what a killed run left), else a
/// fresh folder of the system's temporary directory, removed when this is dropped.
/// Nothing is created until a table carries schema files.
#[derive(Debug)]
pub struct SchemaDirs {
    root: PathBuf,
    temporary: bool,
    /// Numbers the folders of concurrent checks.
    checks: AtomicU64,
}

impl SchemaDirs {
    /// The schema folders of a router whose data directory is `data_dir`.
    pub fn new(data_dir: Option<&Path>) -> Self {
        match data_dir {
            Some(d) => {
                let root = d.join("cluster-schemas");
                let _ = std::fs::remove_dir_all(&root);
                Self::at(root, false)
            }
            None => Self::temporary(),
        }
    }

    /// Folders under the system's temporary directory, removed when dropped.
    pub fn temporary() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("switchboard-schemas-{}-{nanos:08x}", std::process::id());
        Self::at(std::env::temp_dir().join(name), true)
    }

    fn at(root: PathBuf, temporary: bool) -> Self {
        Self {
            root,
            temporary,
            checks: AtomicU64::new(0),
        }
    }

    /// Writes `schemas` into the folder of the table at `version` (replacing what a
    /// previous attempt left there) and returns it.
    pub(super) fn write_table(
        &self,
        version: u64,
        schemas: &BTreeMap<String, String>,
    ) -> Result<PathBuf, Vec<RouteError>> {
        let dir = self.root.join(format!("{TABLE}{version}"));
        let _ = std::fs::remove_dir_all(&dir);
        write_all(&dir, schemas)?;
        Ok(dir)
    }

    /// Removes the folders of every table but the one at `version` (the table in force).
    pub(super) fn keep_only(&self, version: u64) {
        let keep = format!("{TABLE}{version}");
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TABLE) && name != keep {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Removes the folder of the table at `version` (it did not compile).
    pub(super) fn discard(&self, version: u64) {
        let _ = std::fs::remove_dir_all(self.root.join(format!("{TABLE}{version}")));
    }

    /// Compiles `table` with `ctx` (its schema files in a folder of their own, removed
    /// afterwards), without installing it: a check.
    pub fn compile(
        &self,
        table: &Received,
        ctx: &CompileContext,
    ) -> Result<RouteTable, Vec<RouteError>> {
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("{CHECK}{}-{n}", std::process::id()));
        let compiled = write_all(&dir, &table.schemas).and_then(|()| {
            let ctx = CompileContext {
                schema_dir: Some(dir.clone()),
                ..ctx.clone()
            };
            compile_sources(&table.files, &ctx)
        });
        let _ = std::fs::remove_dir_all(&dir);
        compiled
    }
}

impl Drop for SchemaDirs {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Writes each schema file at its path under `dir`. A path must stay inside it (relative,
/// no `..`), as `when.schema` paths must. No files, nothing written: `dir` need not exist
/// (a route naming a schema then finds none).
fn write_all(dir: &Path, schemas: &BTreeMap<String, String>) -> Result<(), Vec<RouteError>> {
    let mut errors = Vec::new();
    for (path, text) in schemas {
        let rel = Path::new(path);
        let inside = !path.is_empty()
            && rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        let written = if inside {
            let file = dir.join(rel);
            file.parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&file, text))
                .map_err(|e| format!("cannot write {}: {e}", file.display()))
        } else {
            Err("not a path inside the routes directory (relative, without `..`)".into())
        };
        if let Err(message) = written {
            errors.push(RouteError {
                file: format!("schema file `{path}`"),
                line: 0,
                column: 0,
                route: None,
                message,
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Message;

    const ROUTE: &str = "routes:\n  - name: r\n    from: { queue: a }\n    when: { schema: s/r.json }\n    to: [ { queue: b } ]\n";

    fn table(schema: &str) -> Received {
        Received {
            files: vec![("10-r.yaml".into(), ROUTE.into())],
            schemas: BTreeMap::from([
                ("s/r.json".into(), schema.into()),
                ("s/defs/id.json".into(), r#"{"type":"string"}"#.into()),
            ]),
        }
    }

    #[test]
    fn received_schemas_compile_like_a_directory_and_checks_leave_nothing() {
        let dirs = SchemaDirs::temporary();
        let root = dirs.root.clone();
        let t = dirs
            .compile(
                &table(r#"{"properties":{"id":{"$ref":"defs/id.json"}}}"#),
                &CompileContext::default(),
            )
            .unwrap();
        assert_eq!(t.schema_files.len(), 2, "{:?}", t.schema_files);
        assert_eq!(
            std::fs::read_dir(&root).unwrap().count(),
            0,
            "check removed"
        );

        // A `$ref` to a file the table does not carry: the directory's error.
        let mut missing = table(r#"{"$ref":"defs/other.json"}"#);
        missing.schemas.remove("s/defs/id.json");
        let e = dirs
            .compile(&missing, &CompileContext::default())
            .unwrap_err();
        assert!(e[0].to_string().contains("does not compile"), "{e:?}");

        // Paths from elsewhere are refused by name, never written outside.
        let mut outside = table("{}");
        outside.schemas.insert("../x.json".into(), "{}".into());
        outside.schemas.insert("/etc/x.json".into(), "{}".into());
        let e = dirs
            .compile(&outside, &CompileContext::default())
            .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].to_string()
                .starts_with("schema file `../x.json`:0:0: not a path inside"),
            "{e:?}"
        );
        drop(dirs);
        assert!(!root.exists(), "a temporary root goes with its owner");
    }

    #[test]
    fn a_table_s_folder_stays_until_another_is_in_force() {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("cluster-schemas/rev-3")).unwrap();
        let dirs = SchemaDirs::new(Some(data.path()));
        assert!(!data.path().join("cluster-schemas").exists(), "stale run");
        let ctx = |dir: PathBuf| CompileContext {
            schema_dir: Some(dir),
            ..CompileContext::default()
        };
        let t = table(r#"{"properties":{"id":{"$ref":"defs/id.json"}},"required":["id"]}"#);
        let d5 = dirs.write_table(5, &t.schemas).unwrap();
        let v5 = compile_sources(&t.files, &ctx(d5.clone())).unwrap();
        let d6 = dirs.write_table(6, &t.schemas).unwrap();
        dirs.keep_only(6);
        assert!(!d5.exists() && d6.join("s/defs/id.json").is_file());
        // The compiled validator read its files when it was built: the table in force
        // before keeps checking after its folder is gone.
        let m = Message::new(r#"{"id":5}"#).with_content_type("application/json");
        let schema = v5.routes[0].when.as_ref().unwrap().schema.as_ref().unwrap();
        assert!(schema.check(&m).is_err());
        dirs.discard(6);
        assert!(!d6.exists());
    }
}
