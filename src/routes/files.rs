//! Reading route files: which files of the routes directory hold routes, in which
//! order, their text, and that text parsed into the [`spec`](super::spec) model, with the
//! parser's position on each error. `switchboard check`, start-up and every live reload
//! read through here, so they see the same files and report the same errors.

use std::path::{Path, PathBuf};

use super::RouteError;
use super::spec::RouteFile;

/// The route files of `dir` as (display name, text) pairs, in evaluation order (what
/// `check`, start-up, a reload and `routes push` compile); the
/// first file that cannot be read fails the whole read.
pub fn read(dir: &Path) -> Result<Vec<(String, String)>, Vec<RouteError>> {
    let files = route_files(dir).map_err(|e| vec![e])?;
    files
        .into_iter()
        .map(|p| {
            let shown = p.display().to_string();
            std::fs::read_to_string(&p)
                .map(|t| (shown.clone(), t))
                .map_err(|e| {
                    vec![RouteError {
                        file: shown,
                        line: 0,
                        column: 0,
                        route: None,
                        message: format!("cannot read: {e}"),
                    }]
                })
        })
        .collect()
}

/// The route files in `dir`, sorted by name (the order routes are evaluated in).
fn route_files(dir: &Path) -> Result<Vec<PathBuf>, RouteError> {
    let err = |message: String| RouteError {
        file: dir.display().to_string(),
        line: 0,
        column: 0,
        route: None,
        message,
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| err(format!("cannot read routes directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Parses route files given as (display name, text) pairs: the files that parsed (an
/// empty file holds no routes and is left out), and an error for each that did not.
pub(super) fn parse(sources: &[(String, String)]) -> (Vec<(String, RouteFile)>, Vec<RouteError>) {
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    for (file, text) in sources {
        match serde_saphyr::from_str::<Option<RouteFile>>(text) {
            Ok(Some(f)) => parsed.push((file.clone(), f)),
            Ok(None) => {} // an empty file holds no routes
            Err(e) => {
                let loc = e.location();
                errors.push(RouteError {
                    file: file.clone(),
                    line: loc.map_or(0, |l| l.line()),
                    column: loc.map_or(0, |l| l.column()),
                    route: None,
                    message: parse_message(&e),
                });
            }
        }
    }
    (parsed, errors)
}

/// The parser's message without its source snippet (we print our own position).
fn parse_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    // The plain message ends with " at line L column C"; we already print the position.
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}
