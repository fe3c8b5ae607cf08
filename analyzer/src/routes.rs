//! HTTP routes as written in code: what a function's router-building statements
//! register (axum `Router::route/nest/merge/route_service` with method routers; actix-web
//! `App`/`web::scope`/`web::resource` with `.route/.service/.to/.configure`; rocket
//! `mount` with `routes![]`) and the route attributes on handlers (actix-web and rocket
//! `#[get("/x")]`…, `#[route(..)]`, utoipa `#[utoipa::path(get, path = "/x")]`).
//!
//! This is syntax only: a router built in another function is recorded as a call to
//! that function (with the prefix it is nested under) and resolved later, once every
//! file's functions are known. Routers held in local variables are followed through
//! `let` bindings and re-assignments within one function body.

use std::collections::HashMap;

use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Token};

use crate::syntax::{AttrArg, attr_args, last_seg, line_of, path_line, path_of, segs_of, str_lit};

/// Something a router-building function registers.
#[derive(Debug, Clone)]
pub(crate) enum RouterItem {
    /// A route: method, path (relative to the function's router) and handler path.
    Route {
        /// HTTP method, upper case, or `ANY`.
        method: String,
        /// The path, already joined with any prefix inside this function.
        path: String,
        /// The handler's path as written, when it is a path.
        handler: Option<Vec<String>>,
        /// Where the route is registered.
        line: usize,
    },
    /// A handler registered by name whose path is in its attribute (actix `.service(h)`,
    /// rocket `routes![h]`).
    Attributed {
        /// The handler's path as written.
        handler: Vec<String>,
        /// Prefix to put before the attribute's path.
        prefix: String,
        /// Where it is registered.
        line: usize,
        /// Its `#[utoipa::path]` is what is served (utoipa-axum's `routes!`).
        docs: bool,
    },
    /// A call to another function that may build routes (`.merge(users::routes())`,
    /// `.nest("/api", api(state))`, `.configure(config)`).
    Call {
        /// The function's path as written.
        target: Vec<String>,
        /// Prefix to put before its routes.
        prefix: String,
    },
}

impl RouterItem {
    fn prefixed(mut self, p: &str) -> Self {
        if p.is_empty() {
            return self;
        }
        match &mut self {
            RouterItem::Route { path, .. } => *path = join(p, path),
            RouterItem::Attributed { prefix, .. } | RouterItem::Call { prefix, .. } => *prefix = join(p, prefix),
        }
        self
    }

    /// An `Attributed` item whose documentation attribute is its route.
    fn served_by_docs(mut self) -> Self {
        if let RouterItem::Attributed { docs, .. } = &mut self {
            *docs = true;
        }
        self
    }
}

/// A route attribute on a function.
#[derive(Debug, Clone)]
pub(crate) struct RouteAttr {
    /// The function's name (`Type::name` for methods).
    pub fn_name: String,
    /// HTTP method, upper case.
    pub method: String,
    /// The path in the attribute.
    pub path: String,
    /// Line of the function.
    pub line: usize,
    /// From `#[utoipa::path]` (documentation) rather than a framework attribute.
    pub doc_only: bool,
}

const METHODS: &[&str] = &["get", "post", "put", "delete", "patch", "head", "options", "trace", "connect"];

/// Joins a prefix and a path with exactly one `/` between them.
pub(crate) fn join(prefix: &str, path: &str) -> String {
    if prefix.is_empty() {
        return path.to_string();
    }
    if path.is_empty() || path == "/" {
        return if prefix.ends_with('/') && prefix.len() > 1 {
            prefix.trim_end_matches('/').to_string()
        } else {
            prefix.to_string()
        };
    }
    format!("{}/{}", prefix.trim_end_matches('/'), path.trim_start_matches('/'))
}

/// Normalises a route path to `{param}` / `{*rest}` syntax: axum's `:id` and `*rest`,
/// rocket's `<id>` and `<rest..>`, actix's `{id:regex}`; drops a rocket query part.
pub(crate) fn normalise_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    let mut segs = Vec::new();
    for seg in path.split('/') {
        let s = if let Some(name) = seg.strip_prefix(':') {
            format!("{{{name}}}")
        } else if let Some(name) = seg.strip_prefix('*') {
            format!("{{*{name}}}")
        } else if seg.starts_with('<') && seg.ends_with('>') {
            let inner = &seg[1..seg.len() - 1];
            match inner.strip_suffix("..") {
                Some(rest) => format!("{{*{rest}}}"),
                None => format!("{{{inner}}}"),
            }
        } else if seg.starts_with('{') && seg.ends_with('}') && seg.contains(':') {
            let inner = &seg[1..seg.len() - 1];
            format!("{{{}}}", inner.split(':').next().unwrap_or(inner))
        } else {
            seg.to_string()
        };
        segs.push(s);
    }
    let out = segs.join("/");
    if out.is_empty() { "/".to_string() } else { out }
}

/// A route path or prefix as written: a string literal, a `format!("/{CONST}")` string,
/// or a const (`{CONST}`); `{NAME}` placeholders naming string consts are filled in
/// once every file's consts are known.
fn path_lit(e: &Expr) -> Option<String> {
    match e {
        Expr::Macro(m) if last_seg(&m.mac.path) == "format" => {
            let mut lits = Vec::new();
            crate::syntax::string_literals(m.mac.tokens.clone(), &mut lits);
            lits.into_iter().next().map(|(s, _)| s)
        }
        Expr::Path(p) => {
            let id = p.path.segments.last()?.ident.to_string();
            (id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).then(|| format!("{{{id}}}"))
        }
        Expr::Paren(p) => path_lit(&p.expr),
        Expr::Reference(r) => path_lit(&r.expr),
        Expr::MethodCall(m) if matches!(m.method.to_string().as_str(), "as_str" | "to_string" | "as_ref") => {
            path_lit(&m.receiver)
        }
        other => str_lit(other),
    }
}

/// Route attributes on a function: actix-web / rocket `#[get("/x")]` …, `#[route("/x",
/// method = "GET")]` (actix) or `#[route(GET, uri = "/x")]` (rocket), poem-openapi's
/// `#[oai(path = "/x", method = "get")]`, and utoipa's `#[utoipa::path(get, path = "/x")]`.
/// Arguments are read from their tokens, so anything that is not an expression
/// (`body = Vec<Item>`, `Response<'_>`) does not hide the method and path. A route-like
/// attribute without a readable path is reported in `unread` (line, what).
pub(crate) fn route_attrs(
    attrs: &[Attribute],
    fn_name: &str,
    line: usize,
    unread: &mut Vec<(usize, String)>,
) -> Vec<RouteAttr> {
    let mut out = Vec::new();
    for a in attrs {
        let segs = segs_of(a.path());
        let last = segs.last().map(String::as_str).unwrap_or("");
        let utoipa = segs.len() == 2 && segs[0] == "utoipa" && last == "path";
        let oai = segs.len() == 1 && last == "oai";
        let is_method = METHODS.contains(&last) || last == "route";
        if !utoipa && !oai && !is_method {
            continue;
        }
        let syn::Meta::List(list) = &a.meta else { continue };
        let mut path = None;
        let mut methods = Vec::new();
        if METHODS.contains(&last) {
            methods.push(last.to_uppercase());
        }
        for (i, arg) in attr_args(list.tokens.clone()).into_iter().enumerate() {
            match arg {
                AttrArg::Str(s) if i == 0 && !utoipa && !oai => path = Some(s),
                AttrArg::Key(k, v) if k == "path" || k == "uri" => path = Some(v),
                AttrArg::Key(k, v) if k == "method" => {
                    let m = v.to_lowercase();
                    if METHODS.contains(&m.as_str()) {
                        methods.push(m.to_uppercase());
                    }
                }
                AttrArg::Word(w) if (utoipa || last == "route") && i == 0 => {
                    let m = w.to_lowercase();
                    if METHODS.contains(&m.as_str()) {
                        methods.push(m.to_uppercase());
                    }
                }
                _ => {}
            }
        }
        let name = segs.join("::");
        let path = match path {
            Some(p) if p.starts_with('/') || p.is_empty() => p,
            Some(p) => {
                unread.push((
                    line,
                    format!("#[{name}] on `{fn_name}`: path {p:?} does not start with '/'; not counted as an endpoint"),
                ));
                continue;
            }
            None => {
                // `#[get]` with no arguments or a non-literal path (a const): not readable.
                unread.push((
                    line,
                    format!("#[{name}] on `{fn_name}`: no literal path found; not counted as an endpoint"),
                ));
                continue;
            }
        };
        if methods.is_empty() {
            methods.push("ANY".to_string());
        }
        for method in methods {
            out.push(RouteAttr { fn_name: fn_name.to_string(), method, path: path.clone(), line, doc_only: utoipa });
        }
    }
    out
}

/// What a function body registers on routers, following `let` bindings within it;
/// registrations that look like routes but could not be read go to `unread`.
pub(crate) fn router_items(block: &syn::Block, unread: &mut Vec<(usize, String)>) -> Vec<RouterItem> {
    if !mentions_router(block) {
        return Vec::new();
    }
    let mut it = Interp { locals: HashMap::new(), unread };
    it.block(block)
}

/// Router-building methods (`mentions_router` looks for these).
const ROUTER_METHODS: &[&str] = &[
    "route",
    "nest",
    "merge",
    "service",
    "configure",
    "mount",
    "route_service",
    "nest_service",
    "to",
    "api_route",
    "api_route_with",
    "routes",
    "at",
];

/// Macros that never register routes.
const PLAIN_MACROS: &[&str] = &[
    "format",
    "format_args",
    "println",
    "print",
    "eprintln",
    "eprint",
    "write",
    "writeln",
    "vec",
    "panic",
    "matches",
    "json",
    "info",
    "debug",
    "warn",
    "error",
    "trace",
    "event",
    "span",
    "query",
    "query_as",
    "query_scalar",
    "concat",
    "include_str",
    "include_bytes",
    "env",
    "todo",
    "unimplemented",
    "unreachable",
    "dbg",
    "bail",
    "anyhow",
    "ensure",
    "select",
    "join",
    "pin",
    "try_join",
    "lazy_static",
    "thread_local",
    "cfg",
    "stringify",
    "line",
    "file",
    "column",
];

/// A cheap test that skips bodies with no router-building method at all.
fn mentions_router(block: &syn::Block) -> bool {
    struct Finder(bool);
    impl<'a> syn::visit::Visit<'a> for Finder {
        fn visit_expr_method_call(&mut self, m: &'a syn::ExprMethodCall) {
            if ROUTER_METHODS.contains(&m.method.to_string().as_str()) {
                self.0 = true;
                return;
            }
            syn::visit::visit_expr_method_call(self, m);
        }
        fn visit_macro(&mut self, m: &'a syn::Macro) {
            // std's and the logging crates' macros never build routers; reading a token
            // stream copies it, and these are most of the macros in any body.
            if m.path.segments.last().is_some_and(|s| {
                let n = s.ident.to_string();
                PLAIN_MACROS.contains(&n.as_str()) || n.starts_with("assert") || n.starts_with("debug_assert")
            }) {
                return;
            }
            fn has(ts: proc_macro2::TokenStream) -> bool {
                ts.into_iter().any(|t| match t {
                    proc_macro2::TokenTree::Ident(i) => ROUTER_METHODS.contains(&i.to_string().as_str()),
                    proc_macro2::TokenTree::Group(g) => has(g.stream()),
                    _ => false,
                })
            }
            self.0 |= has(m.tokens.clone());
        }
        fn visit_item(&mut self, _: &'a syn::Item) {}
    }
    let mut f = Finder(false);
    syn::visit::Visit::visit_block(&mut f, block);
    f.0
}

fn pat_ident(p: &syn::Pat) -> Option<String> {
    match p {
        syn::Pat::Ident(i) => Some(i.ident.to_string()),
        syn::Pat::Type(t) => pat_ident(&t.pat),
        _ => None,
    }
}

/// The innermost receiver of a method-call chain.
fn chain_root(e: &Expr) -> &Expr {
    let mut cur = e;
    loop {
        match cur {
            Expr::MethodCall(m) => cur = &m.receiver,
            Expr::Paren(p) => cur = &p.expr,
            _ => return cur,
        }
    }
}

/// `web::scope("/p")` / `Scope::new("/p")` → Some("/p") (and `resource`, for resources).
fn root_call_path(e: &Expr, names: &[&str]) -> Option<String> {
    if let Expr::Call(c) = chain_root(e)
        && let Some(p) = path_of(&c.func)
    {
        let segs = segs_of(p);
        let last = segs.last().map(String::as_str).unwrap_or("");
        let owner = if segs.len() >= 2 { segs[segs.len() - 2].as_str() } else { "" };
        let hit = names.contains(&last) || (last == "new" && names.iter().any(|n| owner.eq_ignore_ascii_case(n)));
        if hit {
            return c.args.first().and_then(str_lit);
        }
    }
    None
}

const BUILDERS: &[&str] = &["new", "build", "custom", "default", "scope", "resource", "route", "ignite"];

/// Nesting deeper than this (closures in closures, routers in arguments) is not followed.
const MAX_DEPTH: usize = 64;

/// The interpretation of one function body: routers bound to locals, and what could not be read.
struct Interp<'u> {
    locals: HashMap<String, Vec<RouterItem>>,
    unread: &'u mut Vec<(usize, String)>,
}

impl Interp<'_> {
    fn block(&mut self, block: &syn::Block) -> Vec<RouterItem> {
        let saved = std::mem::take(&mut self.locals);
        let mut out = Vec::new();
        let n = block.stmts.len();
        for (i, stmt) in block.stmts.iter().enumerate() {
            match stmt {
                syn::Stmt::Local(l) => {
                    let Some(init) = &l.init else { continue };
                    let items = self.expr(&init.expr, true, 0);
                    if let Some(name) = pat_ident(&l.pat) {
                        if !items.is_empty() {
                            self.locals.insert(name, items);
                        }
                    } else {
                        out.extend(items);
                    }
                }
                syn::Stmt::Expr(e, semi) => {
                    let tail = semi.is_none() && i + 1 == n;
                    match e {
                        Expr::Assign(a) => {
                            let items = self.expr(&a.right, true, 0);
                            match path_of(&a.left).and_then(|p| p.get_ident()) {
                                Some(id) if !items.is_empty() => {
                                    self.locals.insert(id.to_string(), items);
                                }
                                _ => out.extend(items),
                            }
                        }
                        Expr::Return(r) => {
                            if let Some(e) = &r.expr {
                                out.extend(self.expr(e, true, 0));
                            }
                        }
                        _ => out.extend(self.expr(e, tail, 0)),
                    }
                }
                syn::Stmt::Macro(m) => out.extend(self.macro_args(&m.mac, 0)),
                _ => {}
            }
        }
        // Routers bound to a variable and then handed to something else (`axum::serve(l, app)`).
        let mut rest: Vec<_> = std::mem::replace(&mut self.locals, saved).into_iter().collect();
        rest.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, items) in rest {
            out.extend(items);
        }
        out
    }

    fn expr(&mut self, e: &Expr, calls_ok: bool, depth: usize) -> Vec<RouterItem> {
        if depth > MAX_DEPTH {
            return Vec::new();
        }
        let d = depth + 1;
        match e {
            Expr::MethodCall(_) => {
                // A builder chain `Router::new().route(..).route(..)…` can be hundreds of
                // calls long: walk it as a list, root first, not by recursion.
                let mut chain = Vec::new();
                let mut cur = e;
                while let Expr::MethodCall(m) = cur {
                    chain.push(m);
                    cur = &m.receiver;
                }
                let mut out = self.expr(cur, false, d);
                for m in chain.into_iter().rev() {
                    self.method(m, &mut out, d);
                }
                out
            }
            Expr::Call(c) => {
                let Some(p) = path_of(&c.func) else { return Vec::new() };
                let segs = segs_of(p);
                let last = segs.last().map(String::as_str).unwrap_or("");
                // `HttpServer::new(|| App::new()…)`, `tokio::spawn(async move { … })`: apps
                // built in closure or async-block arguments.
                let mut out = Vec::new();
                for a in &c.args {
                    out.extend(self.nested(a, d));
                }
                if calls_ok && !BUILDERS.contains(&last) && !METHODS.contains(&last) {
                    out.push(RouterItem::Call { target: segs, prefix: String::new() });
                }
                out
            }
            Expr::Path(p) => match p.path.get_ident() {
                Some(id) => self.locals.remove(&id.to_string()).unwrap_or_default(),
                None => Vec::new(),
            },
            Expr::Macro(m) => self.macro_args(&m.mac, d),
            Expr::Closure(_) | Expr::Async(_) => self.nested(e, d),
            Expr::Paren(p) => self.expr(&p.expr, calls_ok, d),
            Expr::Reference(r) => self.expr(&r.expr, calls_ok, d),
            Expr::Try(t) => self.expr(&t.expr, calls_ok, d),
            Expr::Await(a) => self.expr(&a.base, calls_ok, d),
            Expr::Block(b) => match b.block.stmts.last() {
                Some(syn::Stmt::Expr(e, None)) => self.expr(e, calls_ok, d),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// A macro in router-building code: rocket's `routes![..]`, or a project's own macro
    /// whose arguments read as expressions (`with_auth!(Router::new().route(..))`): its
    /// routers are read from those arguments. What the macro itself generates is not seen.
    fn macro_args(&mut self, mac: &syn::Macro, d: usize) -> Vec<RouterItem> {
        if last_seg(&mac.path) == "routes" {
            return routes_macro(mac, String::new());
        }
        match mac.parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated) {
            Ok(args) => args.iter().flat_map(|a| self.expr(a, true, d + 1)).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// One call of a builder chain, applied to what the chain registered so far.
    fn method(&mut self, m: &syn::ExprMethodCall, out: &mut Vec<RouterItem>, d: usize) {
        let name = m.method.to_string();
        let line = line_of(m.method.span());
        let scope = root_call_path(&m.receiver, &["scope"]).unwrap_or_default();
        let args: Vec<&Expr> = m.args.iter().collect();
        match (name.as_str(), args.as_slice()) {
            // axum `route`, aide `api_route` / `api_route_with(path, methods, tag)`, poem `at`.
            ("route" | "api_route" | "at", [p, mr]) | ("api_route_with", [p, mr, _]) => {
                let Some(lit) = path_lit(p) else {
                    self.unread.push((
                        line,
                        format!(
                            "`.{name}(..)` with a path that is not a literal or a const; its routes are not counted"
                        ),
                    ));
                    return;
                };
                let path = join(&scope, &lit);
                let methods = methods_of(mr, d);
                if methods.is_empty() && !matches!(mr, Expr::Path(_) | Expr::Call(_)) {
                    self.unread.push((line, format!("`.{name}({lit:?}, ..)`: the method router could not be read")));
                }
                for (method, handler) in methods {
                    out.push(RouterItem::Route { method, path: path.clone(), handler, line });
                }
            }
            ("route", [mr]) => {
                if let Some(res) = root_call_path(&m.receiver, &["resource"]) {
                    for (method, handler) in methods_of(mr, d) {
                        out.push(RouterItem::Route { method, path: res.clone(), handler, line });
                    }
                }
            }
            ("to", [h]) => {
                if let Some(res) = root_call_path(&m.receiver, &["resource"]) {
                    let handler = path_of(h).map(segs_of);
                    out.push(RouterItem::Route { method: "ANY".into(), path: res, handler, line });
                }
            }
            ("nest" | "nest_service" | "nest_api_service", [p, inner]) => {
                let Some(prefix) = path_lit(p) else {
                    self.unread.push((line, format!("`.{name}(..)` with a prefix that is not a literal or a const; its routes are counted without it")));
                    out.extend(self.expr(inner, true, d));
                    return;
                };
                out.extend(self.expr(inner, true, d).into_iter().map(|i| i.prefixed(&prefix)));
            }
            ("mount", [p, inner]) if path_lit(p).is_some() => {
                let prefix = path_lit(p).unwrap_or_default();
                out.extend(self.service_arg(inner, line, d).into_iter().map(|i| i.prefixed(&prefix)));
            }
            ("merge", [inner]) => out.extend(self.expr(inner, true, d)),
            ("service", [inner]) => {
                out.extend(self.service_arg(inner, line, d).into_iter().map(|i| i.prefixed(&scope)));
            }
            // utoipa-axum: `OpenApiRouter::new().routes(routes!(a, b))`, the paths are in
            // the handlers' `#[utoipa::path]`, which here is what is served.
            ("routes", [inner]) => {
                let items = match inner {
                    Expr::Macro(mac) => routes_macro(&mac.mac, String::new()),
                    other => self.expr(other, true, d),
                };
                out.extend(items.into_iter().map(RouterItem::served_by_docs));
            }
            ("configure", [f]) => {
                if let Some(p) = path_of(f) {
                    out.push(RouterItem::Call { target: segs_of(p), prefix: scope.clone() });
                } else if let Expr::Closure(cl) = f {
                    out.extend(self.expr(&cl.body, true, d).into_iter().map(|i| i.prefixed(&scope)));
                }
            }
            ("route_service", [p, svc]) if path_lit(p).is_some() => {
                let handler = match svc {
                    Expr::Call(c) => path_of(&c.func).map(segs_of),
                    other => path_of(other).map(segs_of),
                };
                out.push(RouterItem::Route {
                    method: "ANY".into(),
                    path: path_lit(p).unwrap_or_default(),
                    handler,
                    line,
                });
            }
            _ => {}
        }
    }

    /// Routers built inside a closure or an async block: a block body is read statement by
    /// statement, like a function body.
    fn nested(&mut self, e: &Expr, d: usize) -> Vec<RouterItem> {
        if d > MAX_DEPTH {
            return Vec::new();
        }
        match e {
            Expr::Closure(cl) => match &*cl.body {
                Expr::Block(b) => self.block(&b.block),
                Expr::Async(a) => self.block(&a.block),
                body => self.expr(body, true, d + 1),
            },
            Expr::Async(a) => self.block(&a.block),
            _ => Vec::new(),
        }
    }

    /// What `.service(x)` / `.mount(p, x)` registers: a handler by name (its attribute holds
    /// the path), a scope or resource chain, a `routes![…]` list, or a function returning one.
    fn service_arg(&mut self, e: &Expr, line: usize, d: usize) -> Vec<RouterItem> {
        match e {
            Expr::Path(p) => {
                if let Some(id) = p.path.get_ident()
                    && let Some(items) = self.locals.remove(&id.to_string())
                {
                    return items;
                }
                vec![RouterItem::Attributed { handler: segs_of(&p.path), prefix: String::new(), line, docs: false }]
            }
            Expr::Macro(m) => routes_macro(&m.mac, String::new()),
            Expr::Call(_) if root_call_path(e, &["resource"]).is_some() || root_call_path(e, &["scope"]).is_some() => {
                Vec::new()
            }
            Expr::MethodCall(_) => self.expr(e, true, d),
            Expr::Array(a) => a.elems.iter().flat_map(|x| self.service_arg(x, line, d)).collect(),
            Expr::Tuple(a) => a.elems.iter().flat_map(|x| self.service_arg(x, line, d)).collect(),
            _ => self.expr(e, true, d),
        }
    }
}

fn routes_macro(mac: &syn::Macro, prefix: String) -> Vec<RouterItem> {
    if last_seg(&mac.path) != "routes" {
        return Vec::new();
    }
    let line = path_line(&mac.path);
    match mac.parse_body_with(Punctuated::<syn::Path, Token![,]>::parse_terminated) {
        Ok(paths) => paths
            .iter()
            .map(|p| RouterItem::Attributed { handler: segs_of(p), prefix: prefix.clone(), line, docs: false })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The (method, handler) pairs of a method router: axum `get(h).post(h2)`,
/// `on(MethodFilter::GET, h)`, `any(h)`, `get_service(s)`; aide `post_with(h, op)
/// .get_with(h2, op2)`; actix `web::get().to(h)`, `web::route().guard(guard::Post()).to(h)`,
/// `web::method(Method::PUT).to(h)`.
fn methods_of(e: &Expr, d: usize) -> Vec<(String, Option<Vec<String>>)> {
    if d > MAX_DEPTH {
        return Vec::new();
    }
    let handler = |x: Option<&Expr>| x.and_then(path_of).map(segs_of);
    let method_word = |name: &str| -> Option<String> {
        let base = name.trim_end_matches("_service").trim_end_matches("_with");
        (METHODS.contains(&base) || base == "any").then(|| base.to_uppercase())
    };
    match e {
        Expr::MethodCall(m) => {
            let name = m.method.to_string();
            if let Some(method) = method_word(&name) {
                let mut out = methods_of(&m.receiver, d + 1);
                out.push((method, handler(m.args.first())));
                return out;
            }
            if name == "to" {
                let method = actix_method(&m.receiver).unwrap_or_else(|| "ANY".to_string());
                return vec![(method, handler(m.args.first()))];
            }
            if name == "on" && m.args.len() == 2 {
                let mut out = methods_of(&m.receiver, d + 1);
                let method = m.args.first().and_then(path_of).map(last_seg).unwrap_or_else(|| "ANY".into());
                out.push((method.to_uppercase(), handler(m.args.iter().nth(1))));
                return out;
            }
            methods_of(&m.receiver, d + 1)
        }
        Expr::Call(c) => {
            let Some(p) = path_of(&c.func) else { return Vec::new() };
            let name = last_seg(p);
            if let Some(method) = method_word(&name) {
                return vec![(method, handler(c.args.first()))];
            }
            if name == "on" && c.args.len() == 2 {
                let method = c.args.first().and_then(path_of).map(last_seg).unwrap_or_else(|| "ANY".into());
                return vec![(method.to_uppercase(), handler(c.args.iter().nth(1)))];
            }
            Vec::new()
        }
        Expr::Paren(p) => methods_of(&p.expr, d + 1),
        _ => Vec::new(),
    }
}

/// The method of an actix route builder: `web::get()`, `web::method(Method::GET)`,
/// `web::route().guard(guard::Get())`.
fn actix_method(e: &Expr) -> Option<String> {
    match e {
        Expr::Call(c) => {
            let p = path_of(&c.func)?;
            let name = last_seg(p);
            if METHODS.contains(&name.as_str()) {
                return Some(name.to_uppercase());
            }
            if name == "method" {
                return c.args.first().and_then(path_of).map(|p| last_seg(p).to_uppercase());
            }
            None
        }
        Expr::MethodCall(m) => {
            if m.method == "guard"
                && let Some(Expr::Call(g)) = m.args.first()
                && let Some(p) = path_of(&g.func)
            {
                let n = last_seg(p).to_lowercase();
                if METHODS.contains(&n.as_str()) {
                    return Some(n.to_uppercase());
                }
            }
            actix_method(&m.receiver)
        }
        _ => None,
    }
}
