//! Schema checks in routes (`when.schema`): the body must satisfy a JSON Schema read
//! from a file of the routes directory. The reference is the "Schema checks" section of
//! `docs/routes.md`.
//!
//! A schema is read and compiled when the table compiles, so a missing file, a file that
//! is not JSON or a schema that does not compile is a `check` error at the route's
//! `schema:` key; the compiled validator is shared by every worker thread.
//!
//! Nothing is fetched from the network: a `$ref` to another document resolves against
//! the schema file's own `file:` address, and only to files inside the routes
//! directory ([`Refs`]). Every file a table's schemas read is recorded with a digest of
//! its contents ([`SchemaFile`]), so a reload notices an edited schema even when no route
//! file changed.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

use crate::core::Message;
use crate::translate::{body, escape};

/// Header that carries why a dead-lettered message failed its route's schema.
pub const ERROR_HEADER: &str = "x-schema-error";

/// Longest [`ERROR_HEADER`] value, in bytes: the first error is kept whole when it fits,
/// then the count of the others.
pub const MAX_ERROR_BYTES: usize = 512;

/// Largest schema file read (a schema is configuration, not data).
const MAX_SCHEMA_BYTES: u64 = 4 * 1024 * 1024;

/// A compiled schema and the file it came from (as written in the route).
#[derive(Clone)]
pub struct Schema {
    file: Arc<str>,
    validator: Arc<jsonschema::Validator>,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schema").field(&self.file).finish()
    }
}

/// A file a schema was read from, and a digest of what it held then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaFile {
    pub path: PathBuf,
    pub digest: u64,
}

impl SchemaFile {
    /// Whether the file now holds something else (or cannot be read any more).
    pub fn changed(&self) -> bool {
        std::fs::read(&self.path).map_or(true, |b| digest(&b) != self.digest)
    }
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Schema {
    /// Reads and compiles `file`, a path relative to the routes directory `dir`. Returns
    /// the schema and every file it read (the schema's and those its `$ref`s named).
    pub fn load(dir: &Path, file: &str) -> Result<(Self, Vec<SchemaFile>), String> {
        let rel = Path::new(file);
        if file.is_empty()
            || !rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(format!(
                "schema `{file}`: give a path inside the routes directory (relative, without `..`)"
            ));
        }
        let path = dir.join(rel);
        let (root, bytes) = read_json(&path).map_err(|e| format!("schema `{file}`: {e}"))?;
        let refs = Refs {
            dir: dir.canonicalize().unwrap_or_else(|_| dir.to_owned()),
            read: Arc::default(),
        };
        let read = Arc::clone(&refs.read);
        read.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(SchemaFile {
                path: path.clone(),
                digest: digest(&bytes),
            });
        let base = file_uri(&path.canonicalize().unwrap_or(path));
        let validator = jsonschema::options()
            .with_base_uri(base)
            .with_retriever(refs)
            // Linear-time matching: a `pattern` cannot be made to backtrack by a body.
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .build(&root)
            .map_err(|e| format!("schema `{file}` does not compile: {e}"))?;
        let files = std::mem::take(&mut *read.lock().unwrap_or_else(PoisonError::into_inner));
        Ok((
            Self {
                file: file.into(),
                validator: Arc::new(validator),
            },
            files,
        ))
    }

    /// The file as the route names it.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Checks `m`'s body: `Err` says why it is invalid (at most [`MAX_ERROR_BYTES`]).
    ///
    /// The body is read as `when.jq` reads it: XML (by content type) through the body
    /// converter (every scalar a string), anything else parsed as JSON.
    pub fn check(&self, m: &Message) -> Result<(), String> {
        let value = body_json(m)?;
        if self.validator.is_valid(&value) {
            return Ok(());
        }
        let mut errors = self.validator.iter_errors(&value);
        let Some(first) = errors.next() else {
            return Ok(());
        };
        let more = errors.count();
        let path = first.instance_path().as_str();
        // Masked: the message says "value", not the (possibly large) value itself.
        let mut text = if path.is_empty() {
            first.masked().to_string()
        } else {
            format!("{path}: {}", first.masked())
        };
        if more > 0 {
            text.push_str(&format!(" (and {more} more)"));
        }
        Err(bounded(text))
    }
}

/// The body as a JSON value, or why it is none.
fn body_json(m: &Message) -> Result<Value, String> {
    if body::is_xml(m.content_type.as_deref()) {
        let text = std::str::from_utf8(&m.body).map_err(|_| "body is not valid UTF-8")?;
        return body::xml_to_json(text).map_err(|e| e.to_string());
    }
    serde_json::from_slice(&m.body).map_err(|e| bounded(format!("body is not JSON: {e}")))
}

/// `text` as a header value: control characters as spaces, cut at [`MAX_ERROR_BYTES`]
/// on a character boundary.
fn bounded(text: String) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES - '…'.len_utf8();
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

fn read_json(path: &Path) -> Result<(Value, Vec<u8>), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() > MAX_SCHEMA_BYTES {
        return Err(format!("over {MAX_SCHEMA_BYTES} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let value = serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
    Ok((value, bytes))
}

/// `file://` and the path, percent-encoded where a URI needs it.
fn file_uri(path: &Path) -> String {
    let path = path.to_string_lossy();
    "file://".to_owned()
        + &escape::percent_encode(&path, |b| {
            b.is_ascii_alphanumeric() || b"/-._~".contains(&b)
        })
}

fn percent_decode(s: &str) -> Option<String> {
    escape::percent_decode(s)
}

/// Resolves a schema's `$ref`s to other documents: `file:` addresses inside the routes
/// directory only; anything else (`http:`, `https:`, a file elsewhere) is refused, so a
/// route table never makes the daemon fetch or read outside its configuration.
struct Refs {
    dir: PathBuf,
    read: Arc<Mutex<Vec<SchemaFile>>>,
}

impl jsonschema::Retrieve for Refs {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let text = uri.as_str();
        let Some(path) = text.strip_prefix("file://").and_then(percent_decode) else {
            return Err(format!(
                "`$ref` to `{text}`: only files of the routes directory are read (nothing is fetched)"
            )
            .into());
        };
        let path = Path::new(&path)
            .canonicalize()
            .map_err(|e| format!("`$ref` to `{text}`: cannot read: {e}"))?;
        if !path.starts_with(&self.dir) {
            return Err(format!(
                "`$ref` to `{}`: outside the routes directory",
                path.display()
            )
            .into());
        }
        let (value, bytes) = read_json(&path).map_err(|e| format!("`$ref` to `{text}`: {e}"))?;
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(SchemaFile {
                path,
                digest: digest(&bytes),
            });
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> Message {
        Message::new(body.to_owned()).with_content_type("application/json")
    }

    #[test]
    fn checks_bodies_and_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("r.json"),
            r#"{"type":"object","required":["t"],"properties":{"t":{"type":"number"},"id":{"$ref":"defs/id.json"}}}"#,
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("defs")).unwrap();
        std::fs::write(
            dir.path().join("defs/id.json"),
            r#"{"type":"string","pattern":"^[a-z]+$"}"#,
        )
        .unwrap();
        let (s, files) = Schema::load(dir.path(), "r.json").unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(s.check(&json(r#"{"t":1.5,"id":"abc"}"#)).is_ok());
        assert_eq!(
            s.check(&json(r#"{"t":"hot"}"#)).unwrap_err(),
            r#"/t: value is not of type "number""#
        );
        let e = s.check(&json(r#"{"id":"A1","t":"x"}"#)).unwrap_err();
        assert!(e.ends_with("(and 1 more)"), "{e}");
        assert!(
            s.check(&json("not json"))
                .unwrap_err()
                .starts_with("body is not JSON")
        );
        // XML goes through the body converter: every scalar is a string.
        let xml = Message::new("<m><t>5</t></m>").with_content_type("application/xml");
        let (s2, _) = {
            std::fs::write(
                dir.path().join("x.json"),
                r#"{"properties":{"m":{"required":["t"]}}}"#,
            )
            .unwrap();
            Schema::load(dir.path(), "x.json").unwrap()
        };
        assert!(s2.check(&xml).is_ok());
        assert!(!files[0].changed());
        std::fs::write(dir.path().join("r.json"), "{}").unwrap();
        assert!(files[0].changed());
    }

    #[test]
    fn refuses_paths_and_refs_outside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let e = Schema::load(dir.path(), "../x.json").unwrap_err();
        assert!(e.contains("inside the routes directory"), "{e}");
        assert!(Schema::load(dir.path(), "/etc/passwd").is_err());
        let e = Schema::load(dir.path(), "missing.json").unwrap_err();
        assert!(e.starts_with("schema `missing.json`: cannot read"), "{e}");
        std::fs::write(
            dir.path().join("remote.json"),
            r#"{"$ref":"https://example.org/s.json"}"#,
        )
        .unwrap();
        let e = Schema::load(dir.path(), "remote.json").unwrap_err();
        assert!(e.contains("nothing is fetched"), "{e}");
        std::fs::write(dir.path().join("bad.json"), r#"{"type": 5}"#).unwrap();
        let e = Schema::load(dir.path(), "bad.json").unwrap_err();
        assert!(e.contains("does not compile"), "{e}");
    }

    #[test]
    fn error_headers_are_bounded() {
        let long = "é".repeat(400);
        let b = bounded(format!("a\nb{long}"));
        assert!(
            b.len() <= MAX_ERROR_BYTES && b.ends_with('…'),
            "{}",
            b.len()
        );
        assert!(b.starts_with("a b"));
    }
}
