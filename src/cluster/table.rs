//! A route directory as one KV value: its files by name, as JSON. The blob carries the
//! files' text, not a compiled table, so every router compiles it with its own settings
//! (links, known queues) exactly as a local reload would.

use std::collections::BTreeMap;
use std::path::Path;

use crate::routes::RouteError;

/// The value of the `table` key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableBlob {
    /// File name → text. Sorted by name: the order routes are evaluated in.
    pub files: BTreeMap<String, String>,
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
        Self { files }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The (file name, text) pairs of a stored blob, in evaluation order; a value that is
    /// not a blob is one error, as an unreadable route file is.
    pub fn decode(bytes: &[u8], revision: u64) -> Result<Vec<(String, String)>, Vec<RouteError>> {
        serde_json::from_slice::<TableBlob>(bytes)
            .map(|b| b.files.into_iter().collect())
            .map_err(|e| {
                vec![RouteError {
                    file: format!("cluster route table (revision {revision})"),
                    line: 0,
                    column: 0,
                    route: None,
                    message: format!("not a route table: {e}"),
                }]
            })
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
        let back = TableBlob::decode(&blob.encode(), 3).unwrap();
        assert_eq!(
            back,
            [
                ("10-a.yaml".to_owned(), "routes: []\n".to_owned()),
                ("20-b.yml".to_owned(), String::new())
            ]
        );
        let err = TableBlob::decode(b"nope", 7).unwrap_err();
        assert!(err[0].file.contains("revision 7"), "{err:?}");
    }
}
