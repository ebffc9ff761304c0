//! Route files → a validated, immutable [`RouteTable`].
//!
//! Parse every file, then validate every route, collecting *all* errors (each with file,
//! line, column and route name) instead of stopping at the first, so `switchboard check`
//! and a failed reload show an operator everything to fix at once. Only a table without
//! errors is ever returned.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

use super::fanout::{self, Reach};
use super::jid_pattern::JidPattern;
use super::spec::{DeclareSpec, RouteFile, RouteSpec, SourceSpec, TargetSpec, TransformSpec};
use super::template::Template;
use super::{CompiledRoute, Declare, RouteTable, Source, Target, Transform, When};
use crate::core::trie::SubjectTrie;
use crate::core::{Pattern, validate_name};
use crate::translate::{mqtt_names, stomp_names};

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
}

/// `routes.max_fanout` when the settings do not say.
pub const DEFAULT_MAX_FANOUT: u64 = 1000;

impl Default for CompileContext {
    fn default() -> Self {
        Self {
            links: BTreeMap::new(),
            known_queues: None,
            max_fanout: DEFAULT_MAX_FANOUT,
        }
    }
}

/// Reads and compiles every `*.yaml` / `*.yml` file in `dir`.
pub fn load_dir(dir: &Path, ctx: &CompileContext) -> Result<RouteTable, Vec<RouteError>> {
    let files = route_files(dir).map_err(|e| vec![e])?;
    let mut sources = Vec::with_capacity(files.len());
    for path in files {
        let shown = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push((shown, text)),
            Err(e) => {
                return Err(vec![RouteError {
                    file: shown,
                    line: 0,
                    column: 0,
                    route: None,
                    message: format!("cannot read: {e}"),
                }]);
            }
        }
    }
    compile_sources(&sources, ctx)
}

/// The route files in `dir`, sorted by name (the order routes are evaluated in).
pub fn route_files(dir: &Path) -> Result<Vec<PathBuf>, RouteError> {
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

/// Compiles route files given as (display name, text) pairs.
pub fn compile_sources(
    sources: &[(String, String)],
    ctx: &CompileContext,
) -> Result<RouteTable, Vec<RouteError>> {
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
    let mut c = Compiler {
        ctx,
        errors,
        names: HashMap::new(),
        routes: Vec::new(),
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
    let mut table = RouteTable {
        version: 0,
        routes: c.routes,
        by_queue: HashMap::new(),
        by_topic: SubjectTrie::new(),
        files: sources.iter().map(|(f, _)| f.clone()).collect(),
    };
    for (i, r) in table.routes.iter().enumerate() {
        match &r.source {
            Source::Queue(q) => table.by_queue.entry(q.clone()).or_default().push(i),
            Source::Topic(p) => table.by_topic.insert(p, i),
            Source::Amqp { .. } | Source::Xmpp { .. } => {}
        }
    }
    Ok(table)
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

struct Compiler<'a> {
    ctx: &'a CompileContext,
    errors: Vec<RouteError>,
    names: HashMap<String, (String, u64)>,
    routes: Vec<CompiledRoute>,
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
        let when = r.when.as_ref().map(|w| When {
            headers: w
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            content_type: w.content_type.clone(),
            origin: w.origin.clone(),
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
        });
    }

    /// Validates a route's AMQP declarations and settles which link they are for.
    fn declare(
        &mut self,
        file: &str,
        route: &str,
        d: &Spanned<DeclareSpec>,
        source: &Option<Source>,
        targets: &[Target],
    ) -> Option<Declare> {
        let at = d.referenced;
        let spec = &d.value;
        let link = match &spec.link {
            Some(l) => {
                if !self.check_link(file, at, route, l, LinkKind::Amqp) {
                    return None;
                }
                l.clone()
            }
            None => {
                let mut used: BTreeSet<&str> = targets
                    .iter()
                    .filter_map(|t| match t {
                        Target::Amqp { link, .. } => Some(link.as_str()),
                        _ => None,
                    })
                    .collect();
                if let Some(Source::Amqp { link, .. }) = source {
                    used.insert(link);
                }
                if used.len() != 1 {
                    self.err(
                        file,
                        at,
                        route,
                        "`declare` needs `link:` unless the route uses exactly one AMQP link",
                    );
                    return None;
                }
                used.into_iter().next().unwrap_or_default().to_owned()
            }
        };
        let mut ok = true;
        let mut check_args =
            |this: &mut Self, what: &str, args: &BTreeMap<String, serde_json::Value>| {
                for (k, v) in args {
                    if v.is_array() || v.is_object() || v.is_null() {
                        this.err(file, at, route, format!("{what} argument `{k}`: only strings, numbers and booleans are supported"));
                        ok = false;
                    }
                }
            };
        for x in &spec.exchanges {
            check_args(self, &format!("exchange `{}`", x.name), &x.arguments);
        }
        for q in &spec.queues {
            check_args(self, &format!("queue `{}`", q.name), &q.arguments);
        }
        for b in &spec.bindings {
            check_args(
                self,
                &format!("binding `{}`→`{}`", b.exchange, b.queue),
                &b.arguments,
            );
        }
        let names = spec
            .exchanges
            .iter()
            .flat_map(|x| std::iter::once(&x.name).chain(x.arguments.keys()))
            .chain(
                spec.queues
                    .iter()
                    .flat_map(|q| std::iter::once(&q.name).chain(q.arguments.keys())),
            )
            .chain(spec.bindings.iter().flat_map(|b| {
                [&b.exchange, &b.queue, &b.routing_key]
                    .into_iter()
                    .chain(b.arguments.keys())
            }));
        let long: Vec<String> = names.filter(|n| n.len() > 255).cloned().collect();
        for n in long {
            self.err(
                file,
                at,
                route,
                format!("`{n}` is longer than AMQP's 255-byte limit"),
            );
            ok = false;
        }
        for x in &spec.exchanges {
            if x.name.is_empty() || x.name.starts_with("amq.") {
                self.err(file, at, route, format!("cannot declare exchange `{}`: the default exchange and names starting `amq.` belong to RabbitMQ", x.name));
                ok = false;
            }
        }
        for q in &spec.queues {
            if q.name.is_empty() || q.name.starts_with("amq.") {
                self.err(
                    file,
                    at,
                    route,
                    format!(
                        "cannot declare queue `{}`: give it a name that does not start with `amq.`",
                        q.name
                    ),
                );
                ok = false;
            }
        }
        for b in &spec.bindings {
            if b.exchange.is_empty() {
                self.err(
                    file,
                    at,
                    route,
                    format!(
                        "binding of `{}`: the default exchange cannot be bound",
                        b.queue
                    ),
                );
                ok = false;
            }
        }
        ok.then(|| Declare {
            link,
            spec: spec.clone(),
        })
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

    fn source(&mut self, file: &str, route: &str, from: &Spanned<SourceSpec>) -> Option<Source> {
        let at = from.referenced;
        let pattern = |this: &mut Self, text: &str, what: &str| -> Option<Pattern> {
            match Pattern::parse(text) {
                Ok(p) => Some(p),
                Err(e) => {
                    this.err(file, at, route, format!("invalid {what} `{text}`: {e}"));
                    None
                }
            }
        };
        match &from.value {
            SourceSpec::Queue(q) => {
                if let Err(e) = validate_name(q) {
                    self.err(file, at, route, format!("invalid queue name `{q}`: {e}"));
                    return None;
                }
                self.check_queue_known(file, at, route, q);
                Some(Source::Queue(q.clone()))
            }
            SourceSpec::Topic(t) => pattern(self, t, "topic pattern").map(Source::Topic),
            SourceSpec::Stomp(d) => match stomp_names::parse(d, true) {
                Ok(stomp_names::StompDest::Queue(q)) => {
                    self.check_queue_known(file, at, route, &q);
                    Some(Source::Queue(q))
                }
                Ok(stomp_names::StompDest::Topic(t)) => {
                    pattern(self, &t, "topic pattern").map(Source::Topic)
                }
                Ok(stomp_names::StompDest::TempQueue(_)) => {
                    self.err(file, at, route, format!("`{d}`: temporary queues are private to a connection and cannot be a route source"));
                    None
                }
                Err(e) => {
                    self.err(file, at, route, e.to_string());
                    None
                }
            },
            SourceSpec::Mqtt(f) => {
                if let Err(e) = mqtt_names::validate_filter(f) {
                    self.err(file, at, route, e);
                    return None;
                }
                pattern(self, &mqtt_names::filter_to_internal(f), "topic pattern")
                    .map(Source::Topic)
            }
            SourceSpec::Amqp(a) => {
                let mut link_ok = self.check_link(file, at, route, &a.link, LinkKind::Amqp);
                for n in [&a.queue, &a.exchange, &a.binding_key]
                    .into_iter()
                    .flatten()
                {
                    if n.len() > 255 {
                        self.err(
                            file,
                            at,
                            route,
                            format!("`{n}` is longer than AMQP's 255-byte limit"),
                        );
                        link_ok = false;
                    }
                }
                match (&a.queue, &a.exchange) {
                    (Some(_), Some(_)) | (None, None) => {
                        self.err(file, at, route, "an amqp source takes either `queue` or `exchange` (with `binding_key`)");
                        None
                    }
                    (None, Some(x)) if x.is_empty() => {
                        self.err(file, at, route, "the default exchange (`\"\"`) cannot be bound: consume a queue instead");
                        None
                    }
                    _ if !link_ok => None,
                    _ => {
                        // A binding key is an AMQP topic pattern, the same grammar as
                        // ours, so its wildcards give captures for the targets.
                        let binding = match (&a.exchange, &a.binding_key) {
                            (Some(_), Some(k)) => pattern(self, k, "binding key"),
                            _ => None,
                        };
                        Some(Source::Amqp {
                            link: a.link.clone(),
                            queue: a.queue.clone(),
                            exchange: a.exchange.clone(),
                            binding_key: a.binding_key.clone(),
                            binding,
                        })
                    }
                }
            }
            SourceSpec::Xmpp(x) => {
                let link_ok = self.check_link(file, at, route, &x.link, LinkKind::Xmpp);
                match (&x.jid, &x.presence) {
                    (Some(_), Some(_)) | (None, None) => {
                        self.err(
                            file,
                            at,
                            route,
                            "an xmpp source takes either `jid` or `presence`",
                        );
                        None
                    }
                    _ if !link_ok => None,
                    _ => {
                        let text = x.jid.as_deref().or(x.presence.as_deref());
                        let jid_pattern = match text.map(JidPattern::parse) {
                            Some(Ok(p)) => Some(p),
                            Some(Err(e)) => {
                                let msg =
                                    format!("invalid JID pattern `{}`: {e}", text.unwrap_or(""));
                                self.err(file, at, route, msg);
                                return None;
                            }
                            None => None,
                        };
                        Some(Source::Xmpp {
                            link: x.link.clone(),
                            jid: x.jid.clone(),
                            presence: x.presence.clone(),
                            jid_pattern,
                        })
                    }
                }
            }
        }
    }

    fn template(
        &mut self,
        file: &str,
        at: Location,
        route: &str,
        text: &str,
        captures: usize,
    ) -> Option<Template> {
        let t = match Template::parse(text) {
            Ok(t) => t,
            Err(e) => {
                self.err(file, at, route, e);
                return None;
            }
        };
        if t.max_capture() > captures {
            let msg = format!(
                "template `{text}` uses {{{}}} but the source pattern has {captures} wildcard{}",
                t.max_capture(),
                if captures == 1 { "" } else { "s" }
            );
            self.err(file, at, route, msg);
            return None;
        }
        Some(t)
    }

    /// Checks that a name template renders to a valid name: literal templates exactly,
    /// templates with captures with a placeholder in each capture.
    fn check_name(
        &mut self,
        file: &str,
        at: Location,
        route: &str,
        t: &Template,
        what: &str,
    ) -> bool {
        let probe = t.probe();
        match validate_name(&probe) {
            Ok(()) => true,
            Err(e) => {
                self.err(
                    file,
                    at,
                    route,
                    format!("invalid {what} `{}`: {e}", t.as_str()),
                );
                false
            }
        }
    }

    fn target(
        &mut self,
        file: &str,
        route: &str,
        t: &Spanned<TargetSpec>,
        captures: usize,
    ) -> Option<Target> {
        let at = t.referenced;
        match &t.value {
            TargetSpec::Queue(q) => {
                let tpl = self.template(file, at, route, q, captures)?;
                if !self.check_name(file, at, route, &tpl, "queue name") {
                    return None;
                }
                if tpl.is_literal() {
                    self.check_queue_known(file, at, route, q);
                }
                Some(Target::Queue(tpl))
            }
            TargetSpec::Topic(n) => {
                let tpl = self.template(file, at, route, n, captures)?;
                self.check_name(file, at, route, &tpl, "topic name")
                    .then_some(Target::Topic(tpl))
            }
            TargetSpec::Stomp(d) => {
                if let Some(q) = d.strip_prefix("/queue/") {
                    let tpl = self.template(file, at, route, q, captures)?;
                    if !self.check_name(file, at, route, &tpl, "queue name") {
                        return None;
                    }
                    if tpl.is_literal() {
                        self.check_queue_known(file, at, route, q);
                    }
                    Some(Target::Queue(tpl))
                } else if let Some(n) = d.strip_prefix("/topic/") {
                    let tpl = self.template(file, at, route, n, captures)?;
                    self.check_name(file, at, route, &tpl, "topic name")
                        .then_some(Target::Topic(tpl))
                } else {
                    self.err(
                        file,
                        at,
                        route,
                        format!("STOMP target `{d}` must start with /queue/ or /topic/"),
                    );
                    None
                }
            }
            TargetSpec::Mqtt(topic) => {
                let tpl = self.template(file, at, route, topic, captures)?;
                let probe = tpl.probe();
                if let Err(e) = mqtt_names::validate_topic(&probe) {
                    self.err(file, at, route, e);
                    return None;
                }
                Some(Target::Mqtt(tpl))
            }
            TargetSpec::Amqp(a) => {
                let mut link_ok = self.check_link(file, at, route, &a.link, LinkKind::Amqp);
                if a.exchange.len() > 255 {
                    let msg = format!(
                        "exchange `{}` is longer than AMQP's 255-byte limit",
                        a.exchange
                    );
                    self.err(file, at, route, msg);
                    link_ok = false;
                }
                let rk = match &a.routing_key {
                    Some(k) => Some(self.template(file, at, route, k, captures)?),
                    None => None,
                };
                link_ok.then(|| Target::Amqp {
                    link: a.link.clone(),
                    exchange: a.exchange.clone(),
                    routing_key: rk,
                })
            }
            TargetSpec::Xmpp(x) => {
                let link_ok = self.check_link(file, at, route, &x.link, LinkKind::Xmpp);
                let to = self.template(file, at, route, &x.to, captures)?;
                let from = match &x.from {
                    Some(f) => Some(self.template(file, at, route, f, captures)?),
                    None => None,
                };
                let kind = x.kind.clone().unwrap_or_else(|| "chat".into());
                if !matches!(kind.as_str(), "chat" | "normal" | "headline" | "groupchat") {
                    self.err(
                        file,
                        at,
                        route,
                        format!(
                            "unknown XMPP message type `{kind}` (chat, normal, headline, groupchat)"
                        ),
                    );
                    return None;
                }
                link_ok.then(|| Target::Xmpp {
                    link: x.link.clone(),
                    to,
                    from,
                    kind,
                })
            }
        }
    }

    fn transform(
        &mut self,
        file: &str,
        route: &str,
        t: &Spanned<TransformSpec>,
        captures: usize,
    ) -> Transform {
        let at = t.referenced;
        let mut out = Transform {
            rename: t
                .value
                .rename_headers
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
            remove: t.value.remove_headers.clone(),
            body: t.value.body,
            ..Transform::default()
        };
        for (k, v) in &t.value.set_headers {
            if let Some(tpl) = self.template(file, at, route, v, captures) {
                out.set.push((k.clone(), tpl));
            }
        }
        out
    }

    /// Finds cycles among routes whose targets can feed other routes' sources.
    fn find_loops(&mut self) {
        let n = self.routes.len();
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); n];
        let sources = fanout::source_patterns(&self.routes);
        for (i, r) in self.routes.iter().enumerate() {
            for t in &r.targets {
                // A name taken from a header could be anything; such loops are caught at
                // run time by the depth limit instead of flagging every such route here.
                if let Reach::Routes(js) = fanout::reach(r, t, &sources) {
                    edges[i].extend(js);
                }
            }
        }
        // Depth-first search with colours; report each cycle once, at its first route.
        let mut color = vec![0u8; n];
        let mut stack = Vec::new();
        let mut reported = BTreeSet::new();
        for start in 0..n {
            if color[start] == 0 {
                self.dfs(start, &edges, &mut color, &mut stack, &mut reported);
            }
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

    fn dfs(
        &mut self,
        v: usize,
        edges: &[Vec<usize>],
        color: &mut [u8],
        stack: &mut Vec<usize>,
        reported: &mut BTreeSet<Vec<usize>>,
    ) {
        color[v] = 1;
        stack.push(v);
        for &w in &edges[v] {
            if color[w] == 1 {
                let pos = stack.iter().position(|&x| x == w).unwrap_or(0);
                let mut cycle: Vec<usize> = stack[pos..].to_vec();
                let mut key = cycle.clone();
                key.sort();
                if reported.insert(key) {
                    cycle.push(w);
                    let names: Vec<&str> = cycle
                        .iter()
                        .map(|&i| self.routes[i].name.as_str())
                        .collect();
                    let r = &self.routes[w];
                    self.errors.push(RouteError {
                        file: r.file.clone(),
                        line: r.line,
                        column: r.column,
                        route: Some(r.name.clone()),
                        message: format!("routing loop: {}", names.join(" → ")),
                    });
                }
            } else if color[w] == 0 {
                self.dfs(w, edges, color, stack, reported);
            }
        }
        stack.pop();
        color[v] = 2;
    }
}

fn describe_source(s: &SourceSpec) -> String {
    match s {
        SourceSpec::Queue(q) => format!("queue {q}"),
        SourceSpec::Topic(t) => format!("topic {t}"),
        SourceSpec::Stomp(d) => format!("stomp {d}"),
        SourceSpec::Mqtt(f) => format!("mqtt {f}"),
        SourceSpec::Amqp(a) => match (&a.queue, &a.exchange) {
            (Some(q), _) => format!("amqp {} queue {q}", a.link),
            (_, Some(x)) => format!(
                "amqp {} exchange {x} key {}",
                a.link,
                a.binding_key.as_deref().unwrap_or("#")
            ),
            _ => format!("amqp {}", a.link),
        },
        SourceSpec::Xmpp(x) => match (&x.jid, &x.presence) {
            (Some(j), _) => format!("xmpp {} jid {j}", x.link),
            (_, Some(p)) => format!("xmpp {} presence {p}", x.link),
            _ => format!("xmpp {}", x.link),
        },
    }
}
