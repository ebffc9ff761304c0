//! A route directory as one KV value: its route files by name and the schema files its
//! routes read by path, as JSON. The blob carries the files' text, not a compiled table,
//! so every router compiles it with its own settings (links, known queues) exactly as a
//! local reload would ([`Received`]).

use std::collections::BTreeMap;
use std::path::{Component, Path};

use crate::routes::RouteError;
use crate::routes::received::Received;
use crate::routes::schema::SchemaFile;

/// The value of the `table` key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableBlob {
    /// File name → text. Sorted by name: the order routes are evaluated in.
    pub files: BTreeMap<String, String>,
    /// Schema files (`when.schema` and the files their `$ref`s name): path relative to
    /// the routes directory, `/`-separated → text. Left out when empty, so a table
    /// without schemas is the blob routers before schema files read; a blob without the
    /// field reads as none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub schemas: BTreeMap<String, String>,
}

impl TableBlob {
    /// The blob of route files read as (path, text) pairs: keyed by file name, since
    /// the pushing machine's directory means nothing to the routers.
    pub fn from_sources(sources: &[(String, String)]) -> Self {
        let files = sources
            .iter()
            .map(|(path, text)| {
                let name = Path::new(path)
                    .file_name()
                    .map_or_else(|| path.clone(), |n| n.to_string_lossy().into_owned());
                (name, text.clone())
            })
            .collect();
        Self {
            files,
            schemas: BTreeMap::new(),
        }
    }

    /// Adds the schema files a table compiled from `dir` read (its
    /// [`RouteTable::schema_files`](crate::routes::RouteTable::schema_files)), keyed by
    /// their path relative to `dir`, read again now: a file outside `dir` (reached
    /// through a link) is refused, as is one that is not UTF-8 (JSON is).
    pub fn with_schema_files(mut self, dir: &Path, read: &[SchemaFile]) -> Result<Self, String> {
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        for f in read {
            let rel = f
                .path
                .strip_prefix(dir)
                .or_else(|_| f.path.strip_prefix(&canonical))
                .map_err(|_| {
                    format!(
                        "schema file {} is outside {}: the cluster's table carries the routes directory's files only",
                        f.path.display(),
                        dir.display()
                    )
                })?;
            let mut key = Vec::new();
            for c in rel.components() {
                match c {
                    Component::Normal(part) => key.push(part.to_string_lossy().into_owned()),
                    Component::CurDir => {}
                    _ => {
                        return Err(format!(
                            "schema file {}: not a path inside {}",
                            f.path.display(),
                            dir.display()
                        ));
                    }
                }
            }
            let text = std::fs::read_to_string(&f.path)
                .map_err(|e| format!("schema file {}: cannot read: {e}", f.path.display()))?;
            self.schemas.insert(key.join("/"), text);
        }
        Ok(self)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A stored blob, parsed; a value that is not a blob is one error, as an unreadable
    /// route file is.
    pub fn parse(bytes: &[u8], revision: u64) -> Result<Self, Vec<RouteError>> {
        serde_json::from_slice::<TableBlob>(bytes).map_err(|e| {
            vec![RouteError {
                file: format!("cluster route table (revision {revision})"),
                line: 0,
                column: 0,
                route: None,
                message: format!("not a route table: {e}"),
            }]
        })
    }

    /// The table a stored blob holds (route files in evaluation order, schema files).
    pub fn decode(bytes: &[u8], revision: u64) -> Result<Received, Vec<RouteError>> {
        Self::parse(bytes, revision).map(Self::into_received)
    }

    pub fn into_received(self) -> Received {
        Received {
            files: self.files.into_iter().collect(),
            schemas: self.schemas,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_round_trip_keeps_names_and_order() {
        let sources = vec![
            ("/tmp/r/10-a.yaml".to_owned(), "routes: []\n".to_owned()),
            ("/tmp/r/20-b.yml".to_owned(), "".to_owned()),
        ];
        let blob = TableBlob::from_sources(&sources);
        let encoded = blob.encode();
        assert!(
            !String::from_utf8_lossy(&encoded).contains("schemas"),
            "no schema files, no field: the blob routers without schema support read"
        );
        let back = TableBlob::decode(&encoded, 3).unwrap();
        assert_eq!(
            back.files,
            [
                ("10-a.yaml".to_owned(), "routes: []\n".to_owned()),
                ("20-b.yml".to_owned(), String::new())
            ]
        );
        assert!(back.schemas.is_empty());
        let err = TableBlob::decode(b"nope", 7).unwrap_err();
        assert!(err[0].file.contains("revision 7"), "{err:?}");
    }

    #[test]
    fn a_blob_stored_before_schema_files_still_decodes() {
        // As `switchboard routes push` wrote it before tables carried schema files.
        let old = br#"{"files":{"10-a.yaml":"routes: []\n"}}"#;
        let back = TableBlob::decode(old, 4).unwrap();
        assert_eq!(back.files.len(), 1);
        assert!(back.schemas.is_empty());
    }

    #[test]
    fn schema_files_travel_by_their_path_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("schemas/defs")).unwrap();
        std::fs::write(dir.path().join("schemas/r.json"), "{}").unwrap();
        std::fs::write(dir.path().join("schemas/defs/id.json"), "{\"type\":1}").unwrap();
        let canonical = dir.path().canonicalize().unwrap();
        let read = [
            // As `Schema::load` records them: the route's path under the directory as
            // given, a `$ref`'d file canonical.
            SchemaFile {
                path: dir.path().join("schemas/r.json"),
                digest: 0,
            },
            SchemaFile {
                path: canonical.join("schemas/defs/id.json"),
                digest: 0,
            },
        ];
        let blob = TableBlob::from_sources(&[])
            .with_schema_files(dir.path(), &read)
            .unwrap();
        let back = TableBlob::decode(&blob.encode(), 1).unwrap();
        assert_eq!(
            back.schemas.into_iter().collect::<Vec<_>>(),
            [
                ("schemas/defs/id.json".to_owned(), "{\"type\":1}".to_owned()),
                ("schemas/r.json".to_owned(), "{}".to_owned())
            ]
        );
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("x.json"), "{}").unwrap();
        let e = TableBlob::from_sources(&[])
            .with_schema_files(
                dir.path(),
                &[SchemaFile {
                    path: elsewhere.path().join("x.json"),
                    digest: 0,
                }],
            )
            .unwrap_err();
        assert!(e.contains("is outside"), "{e}");
    }
}
