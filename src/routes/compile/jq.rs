//! A route's jq programs (`when.jq`, `transform.jq`): compiled with the table, so a
//! syntax error is reported by `check` at the program's key, with the position inside
//! the program.

use serde_saphyr::Spanned;

use super::Compiler;
use crate::routes::jq::{DEFAULT_MAX_OUTPUTS, MAX_MAX_OUTPUTS, Program};
use crate::routes::route::JqTransform;
use crate::routes::spec::TransformSpec;

impl Compiler<'_> {
    /// Compiles one program; each syntax error becomes an error at `text`'s position.
    pub(super) fn jq_program(
        &mut self,
        file: &str,
        route: &str,
        text: &Spanned<String>,
    ) -> Option<Program> {
        match Program::compile(&text.value) {
            Ok(p) => Some(p),
            Err(errors) => {
                for e in errors {
                    self.err(file, text.referenced, route, e.to_string());
                }
                None
            }
        }
    }

    /// `transform.jq` with `jq_output` and `jq_max_outputs`.
    pub(super) fn jq_transform(
        &mut self,
        file: &str,
        route: &str,
        t: &Spanned<TransformSpec>,
    ) -> Option<JqTransform> {
        let spec = &t.value;
        let Some(text) = &spec.jq else {
            if spec.jq_output.is_some() || spec.jq_max_outputs.is_some() {
                self.err(
                    file,
                    t.referenced,
                    route,
                    "`jq_output` and `jq_max_outputs` need `jq`",
                );
            }
            return None;
        };
        let max_outputs = match &spec.jq_max_outputs {
            None => DEFAULT_MAX_OUTPUTS,
            Some(n) if (1..=MAX_MAX_OUTPUTS).contains(&n.value) => n.value,
            Some(n) => {
                let msg = format!(
                    "`jq_max_outputs` must be between 1 and {MAX_MAX_OUTPUTS}, not {}",
                    n.value
                );
                self.err(file, n.referenced, route, msg);
                return None;
            }
        };
        let program = self.jq_program(file, route, text)?;
        Some(JqTransform {
            program,
            output: spec.jq_output.unwrap_or_default(),
            max_outputs,
        })
    }
}
