//! Route files → a validated, immutable [`RouteTable`].
//!
//! Parse every file (`files`), then validate every route, collecting *all* errors (each
//! with file, line, column and route name) instead of stopping at the first, so
//! `switchboard check` and a failed reload show an operator everything to fix at once.
//! Only a table without errors is ever returned. A route's parts are compiled beside
//! this: its `from:` in `source`, its `to:` and `transform:` in `target`, its AMQP
//! `declare:` in `declare`; jq programs in `jq`; routing loops across the table in
//! `loops`.

mod declare;
mod jq;
mod loops;
mod rate;
mod schema;
mod source;
mod target;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

use super::fanout;
use super::files;
use super::spec::RouteSpec;
use super::{CompiledRoute, RouteTable, Source, Transform, When};
use crate::core::Pattern;
use source::describe_source;

/// Protocols a message can enter by (`when.origin`).
pub const ORIGINS: &[&str] = &["stomp", "mqtt", "amqp", "xmpp", "internal"];

/// One problem in the route files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub route: Option<String>,
    pub message: String,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(r) = &self.route {
            write!(f, "route `{r}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Kinds of external links a route may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Amqp,
    Xmpp,
}

impl LinkKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Amqp => "amqp",
            Self::Xmpp => "xmpp",
        }
    }
}

/// What the route compiler must know about the rest of the configuration.
#[derive(Debug, Clone)]
pub struct CompileContext {
    /// Configured links by name.
    pub links: BTreeMap<String, LinkKind>,
    /// When set (queue auto-creation off), the only queues a route may name.
    pub known_queues: Option<BTreeSet<String>>,
    /// Most legs one publish may turn into, worst case (`routes.max_fanout` of the
    /// daemon settings; 0: no limit). See [`super::fanout`].
    pub max_fanout: u64,
    /// The routes directory, which `when.schema` paths are relative to (for a table
    /// received as text, the folder its schema files were written to; `None`: routes
    /// cannot name schemas).
    pub schema_dir: Option<PathBuf>,
}

/// `routes.max_fanout` when the settings do not say.
pub const DEFAULT_MAX_FANOUT: u64 = 1000;

impl Default for CompileContext {
    fn default() -> Self {
        Self {
            links: BTreeMap::new(),
            known_queues: None,
            max_fanout: DEFAULT_MAX_FANOUT,
            schema_dir: None,
        }
    }
}

/// Reads and compiles every `*.yaml` / `*.yml` file in `dir` (schemas relative to it).
pub fn load_dir(dir: &Path, ctx: &CompileContext) -> Result<RouteTable, Vec<RouteError>> {
    let ctx = CompileContext {
        schema_dir: Some(dir.to_owned()),
        ..ctx.clone()
    };
    compile_sources(&files::read(dir)?, &ctx)
}

/// Compiles route files given as (display name, text) pairs.
pub fn compile_sources(
    sources: &[(String, String)],
    ctx: &CompileContext,
) -> Result<RouteTable, Vec<RouteError>> {
    let (parsed, errors) = files::parse(sources);
    let mut c = Compiler {
        ctx,
        errors,
        names: HashMap::new(),
        routes: Vec::new(),
        schema_files: Vec::new(),
    };
    for (file, f) in &parsed {
        for r in &f.routes {
            c.route(file, r);
        }
    }
    c.find_loops();
    if c.errors.is_empty() {
        c.check_fanout();
    }
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    let file_names = sources.iter().map(|(f, _)| f.clone()).collect();
    Ok(RouteTable::new(c.routes, file_names, c.schema_files))
}

struct Compiler<'a> {
    ctx: &'a CompileContext,
    errors: Vec<RouteError>,
    names: HashMap<String, (String, u64)>,
    routes: Vec<CompiledRoute>,
    /// Files the routes' schemas read.
    schema_files: Vec<super::schema::SchemaFile>,
}

impl Compiler<'_> {
    fn err(&mut self, file: &str, at: Location, route: &str, message: impl Into<String>) {
        self.errors.push(RouteError {
            file: file.to_owned(),
            line: at.line(),
            column: at.column(),
            route: Some(route.to_owned()),
            message: message.into(),
        });
    }

    fn route(&mut self, file: &str, spanned: &Spanned<RouteSpec>) {
        let r = &spanned.value;
        let name = r.name.value.clone();
        let errors_before = self.errors.len();
        if name.trim().is_empty() {
            self.err(
                file,
                r.name.referenced,
                &name,
                "route name must not be empty",
            );
        }
        if let Some((first_file, first_line)) = self.names.get(&name) {
            let msg = format!("duplicate route name (first defined at {first_file}:{first_line})");
            self.err(file, r.name.referenced, &name, msg);
        } else {
            self.names
                .insert(name.clone(), (file.to_owned(), r.name.referenced.line()));
        }

        let source = self.source(file, &name, &r.from);
        let wildcards = match &source {
            Some(Source::Topic(p)) => Some(p.clone()),
            Some(Source::Amqp { binding, .. }) => binding.clone(),
            _ => None,
        };
        let capture_count = match &source {
            Some(Source::Xmpp {
                jid_pattern: Some(p),
                ..
            }) => p.wildcard_count(),
            _ => wildcards.as_ref().map_or(0, Pattern::wildcard_count),
        };

        if r.to.value.is_empty() {
            self.err(
                file,
                r.to.referenced,
                &name,
                "`to` needs at least one target",
            );
        }
        let mut targets = Vec::new();
        for t in &r.to.value {
            if let Some(target) = self.target(file, &name, t, capture_count) {
                targets.push(target);
            }
        }
        let transform = match &r.transform {
            Some(t) => self.transform(file, &name, t, capture_count),
            None => Transform::default(),
        };
        if let Some(o) = r.when.as_ref().and_then(|w| w.origin.as_deref())
            && !ORIGINS.contains(&o)
        {
            let msg = format!(
                "unknown origin `{o}` in `when` (one of {})",
                ORIGINS.join(", ")
            );
            self.err(file, r.name.referenced, &name, msg);
        }
        let when_jq = r
            .when
            .as_ref()
            .and_then(|w| w.jq.as_ref())
            .and_then(|p| self.jq_program(file, &name, p));
        let schema = r
            .when
            .as_ref()
            .and_then(|w| w.schema.as_ref())
            .and_then(|s| self.schema(file, &name, s));
        let dead_letter = self.dead_letter(file, &name, r, capture_count);
        let rate = r
            .rate_limit
            .as_ref()
            .and_then(|l| self.rate_limit(file, &name, l));
        let when = r.when.as_ref().map(|w| When {
            headers: w
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            content_type: w.content_type.clone(),
            origin: w.origin.clone(),
            schema,
            jq: when_jq,
        });
        if r.passthrough && matches!(source, Some(Source::Amqp { .. } | Source::Xmpp { .. })) {
            self.err(
                file,
                r.from.referenced,
                &name,
                "`passthrough` keeps a message on its own internal destination; an amqp or xmpp source has none",
            );
        }
        let declare = r
            .declare
            .as_ref()
            .and_then(|d| self.declare(file, &name, d, &source, &targets));
        if self.errors.len() > errors_before {
            return;
        }
        let Some(source) = source else {
            return;
        };
        self.routes.push(CompiledRoute {
            name,
            file: file.to_owned(),
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
            source,
            source_text: describe_source(&r.from.value),
            when,
            targets,
            transform,
            passthrough: r.passthrough,
            loss: r.loss.map(Into::into),
            declare,
            dead_letter,
            rate,
            counters: Default::default(),
        });
    }

    fn check_link(
        &mut self,
        file: &str,
        at: Location,
        route: &str,
        link: &str,
        kind: LinkKind,
    ) -> bool {
        match self.ctx.links.get(link) {
            Some(k) if *k == kind => true,
            Some(k) => {
                let msg = format!(
                    "link `{link}` is an {} link, not {}",
                    k.as_str(),
                    kind.as_str()
                );
                self.err(file, at, route, msg);
                false
            }
            None => {
                let known: Vec<&str> = self.ctx.links.keys().map(String::as_str).collect();
                let msg = if known.is_empty() {
                    format!("unknown link `{link}` (no links are configured)")
                } else {
                    format!("unknown link `{link}` (configured: {})", known.join(", "))
                };
                self.err(file, at, route, msg);
                false
            }
        }
    }

    fn check_queue_known(&mut self, file: &str, at: Location, route: &str, queue: &str) {
        if let Some(known) = &self.ctx.known_queues
            && !known.contains(queue)
        {
            let msg = format!(
                "unknown queue `{queue}` (queue auto-creation is off and it is not declared in the config)"
            );
            self.err(file, at, route, msg);
        }
    }

    /// Refuses a table whose worst-case fan-out is over `routes.max_fanout`.
    fn check_fanout(&mut self) {
        let max = self.ctx.max_fanout;
        if max == 0 {
            return;
        }
        if let Some((legs, at)) = fanout::worst_case(&self.routes)
            && legs > max
        {
            let r = &self.routes[at];
            self.errors.push(RouteError {
                file: r.file.clone(),
                line: r.line,
                column: r.column,
                route: Some(r.name.clone()),
                message: format!(
                    "worst-case fan-out: one publish to {} can become up to {legs} deliveries, over routes.max_fanout ({max})",
                    r.source_text
                ),
            });
        }
    }
}
