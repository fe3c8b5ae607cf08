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

use proc_macro2::{TokenStream, TokenTree};
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Token};

use crate::facts::{line_of, path_line, segs_of};

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

fn str_lit(e: &Expr) -> Option<String> {
    match e {
        Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value()),
        Expr::Paren(p) => str_lit(&p.expr),
        Expr::Reference(r) => str_lit(&r.expr),
        _ => None,
    }
}

/// A route path or prefix as written: a string literal, a `format!("/{CONST}")` string,
/// or a const (`{CONST}`); `{NAME}` placeholders naming string consts are filled in
/// once every file's consts are known.
fn path_lit(e: &Expr) -> Option<String> {
    match e {
        Expr::Macro(m) if last_seg(&m.mac.path) == "format" => {
            let mut lits = Vec::new();
            crate::facts::string_literals(m.mac.tokens.clone(), &mut lits);
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

fn path_of(e: &Expr) -> Option<&syn::Path> {
    match e {
        Expr::Path(p) if p.qself.is_none() => Some(&p.path),
        Expr::Paren(p) => path_of(&p.expr),
        Expr::Reference(r) => path_of(&r.expr),
        _ => None,
    }
}

fn last_seg(p: &syn::Path) -> String {
    p.segments.last().map(|s| s.ident.to_string()).unwrap_or_default()
}

/// Every plain path inside an expression (used for diesel `insert_into(users::table)`).
pub(crate) fn paths_in(e: &Expr, out: &mut Vec<Vec<String>>) {
    match e {
        Expr::Path(p) => out.push(segs_of(&p.path)),
        Expr::MethodCall(m) => {
            paths_in(&m.receiver, out);
            for a in &m.args {
                paths_in(a, out);
            }
        }
        Expr::Call(c) => {
            for a in &c.args {
                paths_in(a, out);
            }
        }
        Expr::Paren(p) => paths_in(&p.expr, out),
        Expr::Reference(r) => paths_in(&r.expr, out),
        Expr::Field(f) => paths_in(&f.base, out),
        _ => {}
    }
}

/// The tables in a diesel `table! { name (id) { … } … }` body: (name in Rust, name in SQL).
pub(crate) fn diesel_table_names(tokens: TokenStream) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let toks: Vec<TokenTree> = tokens.into_iter().collect();
    let mut sql_name: Option<String> = None;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            TokenTree::Punct(p) if p.as_char() == '#' => {
                // `#[sql_name = "real_name"]` renames the next table.
                if let Some(TokenTree::Group(g)) = toks.get(i + 1) {
                    let mut lits = Vec::new();
                    crate::facts::string_literals(g.stream(), &mut lits);
                    if g.stream().to_string().contains("sql_name") {
                        sql_name = lits.into_iter().next().map(|(s, _)| s);
                    }
                }
                i += 2;
                continue;
            }
            TokenTree::Ident(id) => {
                // `schema.table (pk) { … }` or `table (pk) { … }` or `table { … }`.
                let mut j = i + 1;
                let mut name = id.to_string();
                if let (Some(TokenTree::Punct(p)), Some(TokenTree::Ident(t))) = (toks.get(j), toks.get(j + 1))
                    && p.as_char() == '.'
                {
                    name = t.to_string();
                    j += 2;
                }
                if let Some(TokenTree::Group(g)) = toks.get(j)
                    && g.delimiter() == proc_macro2::Delimiter::Parenthesis
                {
                    j += 1;
                }
                if let Some(TokenTree::Group(g)) = toks.get(j)
                    && g.delimiter() == proc_macro2::Delimiter::Brace
                {
                    let rust = name.trim_start_matches("r#").to_string();
                    out.push((rust.clone(), sql_name.take().unwrap_or(rust)));
                    i = j + 1;
                    continue;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// Route attributes on a function: actix-web / rocket `#[get("/x")]` …, `#[route("/x",
/// method = "GET")]` (actix) or `#[route(GET, uri = "/x")]` (rocket), and utoipa's
/// `#[utoipa::path(get, path = "/x")]`.
pub(crate) fn route_attrs(attrs: &[Attribute], fn_name: &str, line: usize) -> Vec<RouteAttr> {
    let mut out = Vec::new();
    for a in attrs {
        let segs = segs_of(a.path());
        let last = segs.last().map(String::as_str).unwrap_or("");
        let utoipa = segs.len() == 2 && segs[0] == "utoipa" && last == "path";
        let is_method = METHODS.contains(&last) || last == "route";
        if !utoipa && !is_method {
            continue;
        }
        let Ok(args) = a.parse_args_with(Punctuated::<Expr, Token![,]>::parse_terminated) else { continue };
        let mut path = None;
        let mut methods = Vec::new();
        if METHODS.contains(&last) {
            methods.push(last.to_uppercase());
        }
        for (i, arg) in args.iter().enumerate() {
            match arg {
                Expr::Lit(_) if i == 0 && !utoipa => path = str_lit(arg),
                Expr::Assign(asg) => {
                    let key = path_of(&asg.left).map(last_seg).unwrap_or_default();
                    match key.as_str() {
                        "path" | "uri" => path = str_lit(&asg.right),
                        "method" => {
                            if let Some(m) = str_lit(&asg.right).or_else(|| path_of(&asg.right).map(last_seg)) {
                                methods.push(m.to_uppercase());
                            }
                        }
                        _ => {}
                    }
                }
                Expr::Path(p) if (utoipa || last == "route") && i == 0 => {
                    let m = last_seg(&p.path).to_lowercase();
                    if METHODS.contains(&m.as_str()) {
                        methods.push(m.to_uppercase());
                    }
                }
                _ => {}
            }
        }
        let Some(path) = path else { continue };
        if !path.starts_with('/') {
            continue;
        }
        if methods.is_empty() {
            methods.push("ANY".to_string());
        }
        for method in methods {
            out.push(RouteAttr { fn_name: fn_name.to_string(), method, path: path.clone(), line, doc_only: utoipa });
        }
    }
    out
}

/// What a function body registers on routers, following `let` bindings within it.
pub(crate) fn router_items(block: &syn::Block) -> Vec<RouterItem> {
    if !mentions_router(block) {
        return Vec::new();
    }
    let mut locals: HashMap<String, Vec<RouterItem>> = HashMap::new();
    let mut out = Vec::new();
    let n = block.stmts.len();
    for (i, stmt) in block.stmts.iter().enumerate() {
        match stmt {
            syn::Stmt::Local(l) => {
                let Some(init) = &l.init else { continue };
                let items = interp(&init.expr, &mut locals, true, 0);
                if let Some(name) = pat_ident(&l.pat) {
                    if !items.is_empty() {
                        locals.insert(name, items);
                    }
                } else {
                    out.extend(items);
                }
            }
            syn::Stmt::Expr(e, semi) => {
                let tail = semi.is_none() && i + 1 == n;
                match e {
                    Expr::Assign(a) => {
                        let items = interp(&a.right, &mut locals, true, 0);
                        match path_of(&a.left).and_then(|p| p.get_ident()) {
                            Some(id) if !items.is_empty() => {
                                locals.insert(id.to_string(), items);
                            }
                            _ => out.extend(items),
                        }
                    }
                    Expr::Return(r) => {
                        if let Some(e) = &r.expr {
                            out.extend(interp(e, &mut locals, true, 0));
                        }
                    }
                    _ => out.extend(interp(e, &mut locals, tail, 0)),
                }
            }
            _ => {}
        }
    }
    // Routers bound to a variable and then handed to something else (`axum::serve(l, app)`).
    let mut rest: Vec<_> = locals.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, items) in rest {
        out.extend(items);
    }
    out
}

/// A cheap test that skips bodies with no router-building method at all.
fn mentions_router(block: &syn::Block) -> bool {
    struct Finder(bool);
    impl<'a> syn::visit::Visit<'a> for Finder {
        fn visit_expr_method_call(&mut self, m: &'a syn::ExprMethodCall) {
            let n = m.method.to_string();
            if matches!(
                n.as_str(),
                "route"
                    | "nest"
                    | "merge"
                    | "service"
                    | "configure"
                    | "mount"
                    | "route_service"
                    | "nest_service"
                    | "to"
            ) {
                self.0 = true;
                return;
            }
            syn::visit::visit_expr_method_call(self, m);
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

fn interp(e: &Expr, locals: &mut HashMap<String, Vec<RouterItem>>, calls_ok: bool, depth: usize) -> Vec<RouterItem> {
    if depth > 64 {
        return Vec::new();
    }
    let d = depth + 1;
    match e {
        Expr::MethodCall(m) => {
            let name = m.method.to_string();
            let line = line_of(m.method.span());
            let mut out = interp(&m.receiver, locals, false, d);
            let scope = root_call_path(&m.receiver, &["scope"]).unwrap_or_default();
            let args: Vec<&Expr> = m.args.iter().collect();
            match (name.as_str(), args.as_slice()) {
                ("route", [p, mr]) if path_lit(p).is_some() => {
                    let path = join(&scope, &path_lit(p).unwrap_or_default());
                    for (method, handler) in methods_of(mr, d) {
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
                ("nest" | "nest_service", [p, inner]) if path_lit(p).is_some() => {
                    let prefix = path_lit(p).unwrap_or_default();
                    out.extend(interp(inner, locals, true, d).into_iter().map(|i| i.prefixed(&prefix)));
                }
                ("mount", [p, inner]) if path_lit(p).is_some() => {
                    let prefix = path_lit(p).unwrap_or_default();
                    out.extend(service_arg(inner, locals, line, d).into_iter().map(|i| i.prefixed(&prefix)));
                }
                ("merge", [inner]) => out.extend(interp(inner, locals, true, d)),
                ("service", [inner]) => {
                    out.extend(service_arg(inner, locals, line, d).into_iter().map(|i| i.prefixed(&scope)));
                }
                ("configure", [f]) => {
                    if let Some(p) = path_of(f) {
                        out.push(RouterItem::Call { target: segs_of(p), prefix: scope.clone() });
                    } else if let Expr::Closure(cl) = f {
                        out.extend(interp(&cl.body, locals, true, d).into_iter().map(|i| i.prefixed(&scope)));
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
                out.extend(nested(a, locals, d));
            }
            if calls_ok && !BUILDERS.contains(&last) && !METHODS.contains(&last) {
                out.push(RouterItem::Call { target: segs, prefix: String::new() });
            }
            out
        }
        Expr::Path(p) => match p.path.get_ident() {
            Some(id) => locals.remove(&id.to_string()).unwrap_or_default(),
            None => Vec::new(),
        },
        Expr::Macro(m) => routes_macro(&m.mac, String::new()),
        Expr::Closure(_) | Expr::Async(_) => nested(e, locals, d),
        Expr::Paren(p) => interp(&p.expr, locals, calls_ok, d),
        Expr::Reference(r) => interp(&r.expr, locals, calls_ok, d),
        Expr::Try(t) => interp(&t.expr, locals, calls_ok, d),
        Expr::Await(a) => interp(&a.base, locals, calls_ok, d),
        Expr::Block(b) => match b.block.stmts.last() {
            Some(syn::Stmt::Expr(e, None)) => interp(e, locals, calls_ok, d),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Routers built inside a closure or an async block: a block body is read statement by
/// statement, like a function body.
fn nested(e: &Expr, locals: &mut HashMap<String, Vec<RouterItem>>, d: usize) -> Vec<RouterItem> {
    if d > 64 {
        return Vec::new();
    }
    match e {
        Expr::Closure(cl) => match &*cl.body {
            Expr::Block(b) => router_items(&b.block),
            Expr::Async(a) => router_items(&a.block),
            body => interp(body, locals, true, d + 1),
        },
        Expr::Async(a) => router_items(&a.block),
        _ => Vec::new(),
    }
}

/// What `.service(x)` / `.mount(p, x)` registers: a handler by name (its attribute holds
/// the path), a scope or resource chain, a `routes![…]` list, or a function returning one.
fn service_arg(e: &Expr, locals: &mut HashMap<String, Vec<RouterItem>>, line: usize, d: usize) -> Vec<RouterItem> {
    match e {
        Expr::Path(p) => {
            if let Some(id) = p.path.get_ident()
                && let Some(items) = locals.remove(&id.to_string())
            {
                return items;
            }
            vec![RouterItem::Attributed { handler: segs_of(&p.path), prefix: String::new(), line }]
        }
        Expr::Macro(m) => routes_macro(&m.mac, String::new()),
        Expr::Call(_) if root_call_path(e, &["resource"]).is_some() || root_call_path(e, &["scope"]).is_some() => {
            Vec::new()
        }
        Expr::MethodCall(_) => interp(e, locals, true, d),
        Expr::Array(a) => a.elems.iter().flat_map(|x| service_arg(x, locals, line, d)).collect(),
        Expr::Tuple(a) => a.elems.iter().flat_map(|x| service_arg(x, locals, line, d)).collect(),
        _ => interp(e, locals, true, d),
    }
}

fn routes_macro(mac: &syn::Macro, prefix: String) -> Vec<RouterItem> {
    if last_seg(&mac.path) != "routes" {
        return Vec::new();
    }
    let line = path_line(&mac.path);
    match mac.parse_body_with(Punctuated::<syn::Path, Token![,]>::parse_terminated) {
        Ok(paths) => {
            paths.iter().map(|p| RouterItem::Attributed { handler: segs_of(p), prefix: prefix.clone(), line }).collect()
        }
        Err(_) => Vec::new(),
    }
}

/// The (method, handler) pairs of a method router: axum `get(h).post(h2)`,
/// `on(MethodFilter::GET, h)`, `any(h)`, `get_service(s)`; actix `web::get().to(h)`,
/// `web::route().guard(guard::Post()).to(h)`, `web::method(Method::PUT).to(h)`.
fn methods_of(e: &Expr, d: usize) -> Vec<(String, Option<Vec<String>>)> {
    if d > 64 {
        return Vec::new();
    }
    let handler = |x: Option<&Expr>| x.and_then(path_of).map(segs_of);
    match e {
        Expr::MethodCall(m) => {
            let name = m.method.to_string();
            if METHODS.contains(&name.as_str()) || name == "any" {
                let mut out = methods_of(&m.receiver, d + 1);
                out.push((name.to_uppercase(), handler(m.args.first())));
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
            let base = name.trim_end_matches("_service");
            if METHODS.contains(&base) || base == "any" {
                return vec![(base.to_uppercase(), handler(c.args.first()))];
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
