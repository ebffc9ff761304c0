//! A route's schema check (`when.schema`) and what becomes of invalid messages
//! (`invalid.dead_letter`): the schema is read and compiled with the table, so a missing
//! or broken schema is a `check` error at the route's `schema:` key.

use serde_saphyr::Spanned;

use super::Compiler;
use crate::routes::Target;
use crate::routes::schema::Schema;
use crate::routes::spec::RouteSpec;

impl Compiler<'_> {
    /// Loads `when.schema` from the routes directory (for a table received as text, the
    /// folder its schema files were written to: [`crate::routes::received`]).
    pub(super) fn schema(
        &mut self,
        file: &str,
        route: &str,
        path: &Spanned<String>,
    ) -> Option<Schema> {
        let Some(dir) = self.ctx.schema_dir.clone() else {
            self.err(
                file,
                path.referenced,
                route,
                "`when.schema` reads a file of the routes directory; this table was compiled without one",
            );
            return None;
        };
        match Schema::load(&dir, &path.value) {
            Ok((schema, files)) => {
                self.schema_files.extend(files);
                Some(schema)
            }
            Err(e) => {
                self.err(file, path.referenced, route, e);
                None
            }
        }
    }

    /// `invalid.dead_letter`: a target like those of `to`; only with `when.schema`.
    pub(super) fn dead_letter(
        &mut self,
        file: &str,
        route: &str,
        r: &RouteSpec,
        captures: usize,
    ) -> Option<Target> {
        let invalid = r.invalid.as_ref()?;
        if r.when.as_ref().is_none_or(|w| w.schema.is_none()) {
            self.err(
                file,
                invalid.referenced,
                route,
                "`invalid` needs `when.schema` (it says where messages the schema refuses go)",
            );
            return None;
        }
        self.target(file, route, &invalid.value.dead_letter, captures)
    }
}
