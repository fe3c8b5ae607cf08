//! Per-file syntax facts: what one `.rs` file declares (modules, items, `use`s) and what
//! it refers to (paths in calls, values, types and patterns; SQL-looking string
//! literals; diesel `table!`s; router-building code; route attributes). Extraction is
//! purely syntactic and runs on one file at a time, so files are read in parallel;
//! resolving names across files is `index`'s job.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Attribute, Expr, Token};

use crate::routes::{self, RouteAttr, RouterItem};
use crate::syntax::{last_seg, line_of, path_line, segs_of, string_literals};

/// What one file says, split into its module scopes (the file itself and each inline `mod`).
#[derive(Debug, Default)]
pub(crate) struct FileFacts {
    /// Lines in the file.
    pub lines: usize,
    /// Why the file could not be parsed: (line, message).
    pub error: Option<(usize, String)>,
    /// Route-like attributes and registrations that could not be read: (line, what).
    pub unread: Vec<(usize, String)>,
    /// Scope 0 is the file itself; the others are inline modules, parents before children.
    pub scopes: Vec<ScopeFacts>,
}

/// The facts of one module scope.
#[derive(Debug, Default)]
pub(crate) struct ScopeFacts {
    /// Path of an inline module inside its file (empty for the file itself).
    pub path: Vec<String>,
    /// Index of the enclosing scope (None for the file).
    pub parent: Option<usize>,
    /// Lines the scope spans (for inline modules).
    pub lines: usize,
    /// Out-of-line `mod name;` declarations.
    pub mods: Vec<ModDecl>,
    /// `use` aliases: the name brought in and the path it stands for.
    pub uses: Vec<(String, Vec<String>)>,
    /// `use path::*` targets.
    pub globs: Vec<Vec<String>>,
    /// Items declared here, by name (methods as `Type::name`).
    pub items: Vec<ItemDecl>,
    /// Paths this scope refers to.
    pub refs: Vec<PathRef>,
    /// Method calls `x.name(..)`, with what the receiver's type is known to be.
    pub method_calls: Vec<MethodCall>,
    /// Struct fields whose type names a type: (struct, field, type).
    pub fields: Vec<(String, String, String)>,
    /// String literals that may hold SQL.
    pub sql: Vec<SqlLit>,
    /// The table of a sea-orm entity module (`#[sea_orm(table_name = "x")]`).
    pub orm_table: Option<String>,
    /// Tables declared with diesel's `table!`.
    pub diesel_tables: Vec<(String, String)>,
    /// Paths passed to diesel's `insert_into` / `update` / `delete`.
    pub diesel_writes: Vec<(Vec<String>, usize)>,
    /// Functions that build routers, with what they register.
    pub routers: Vec<RouterFn>,
    /// Route attributes on functions (`#[get("/x")]`, `#[utoipa::path(..)]`).
    pub route_attrs: Vec<RouteAttr>,
    /// String consts: `const NAME: &str = "value";`.
    pub consts: Vec<(String, String)>,
    /// Macro calls whose first argument is a bare name: (macro, name, line). A project's
    /// own `insert!(users, NewUser)` helpers name diesel tables this way.
    pub macro_names: Vec<(String, String, usize)>,
}

/// A `mod name;` declaration.
#[derive(Debug)]
pub(crate) struct ModDecl {
    /// The module's name.
    pub name: String,
    /// The `#[path = "..."]` attribute, if any.
    pub path_attr: Option<String>,
}

/// What kind of item a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemKind {
    /// A function or method.
    Fn,
    /// A struct, enum, union, trait or type alias.
    Type,
    /// A const or static.
    Value,
}

/// An item declared in a scope.
#[derive(Debug)]
pub(crate) struct ItemDecl {
    /// Its name (`Type::method` for methods).
    pub name: String,
    /// Its kind.
    pub kind: ItemKind,
    /// Where it starts.
    pub line: usize,
}

/// How a path is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefKind {
    /// The callee of a call expression.
    Call,
    /// A path used as a value (a function passed as a handler, a const …).
    Value,
    /// A path in a type, a pattern or a struct literal.
    Type,
}

/// A path this scope refers to.
#[derive(Debug)]
pub(crate) struct PathRef {
    /// Its segments, with `Self` replaced by the impl's type.
    pub segs: Vec<String>,
    /// How it is used.
    pub kind: RefKind,
    /// Where.
    pub line: usize,
    /// The function it is in (an index into the scope's `items`).
    pub owner: Option<usize>,
}

/// What the receiver of a method call is, as far as syntax tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recv {
    /// A value of this type (its last path segment): `self`, a typed parameter or `let`,
    /// a `Type::new(..)` constructor, an extractor `State(s): State<AppState>`.
    Ty(String),
    /// A field of a receiver: `self.db`, `state.repo`.
    Field(Box<Recv>, String),
    /// Not known.
    Unknown,
}

/// A method call `receiver.method(..)`.
#[derive(Debug)]
pub(crate) struct MethodCall {
    /// What the receiver is.
    pub recv: Recv,
    /// The method's name.
    pub method: String,
    /// Where.
    pub line: usize,
    /// The function it is in (an index into the scope's `items`).
    pub owner: Option<usize>,
}

/// A string literal that may be SQL.
#[derive(Debug)]
pub(crate) struct SqlLit {
    /// Its value.
    pub text: String,
    /// Where.
    pub line: usize,
    /// Passed to a sqlx `query*` function or macro.
    pub sqlx: bool,
    /// The function it is in (an index into the scope's `items`).
    pub owner: Option<usize>,
}

/// A function whose body builds a router (or configures one).
#[derive(Debug)]
pub(crate) struct RouterFn {
    /// The function's name (`Type::name` for methods).
    pub name: String,
    /// What it registers.
    pub items: Vec<RouterItem>,
}

/// Reads one file's source into facts. Never panics on bad input: a parse error is
/// returned in `FileFacts::error` (and the file still counts its lines).
pub(crate) fn extract(source: &str) -> FileFacts {
    let lines = source.lines().count();
    let mut facts = FileFacts { lines, ..FileFacts::default() };
    match syn::parse_file(source) {
        Ok(file) => {
            let mut v = Extractor { facts: &mut facts, scope: 0, self_ty: None, owner: None, env: HashMap::new() };
            v.facts.scopes.push(ScopeFacts { lines, ..ScopeFacts::default() });
            for item in &file.items {
                v.visit_item(item);
            }
        }
        Err(e) => {
            let line = e.span().start().line;
            facts.error = Some((line.max(1), e.to_string()));
            facts.scopes.push(ScopeFacts { lines, ..ScopeFacts::default() });
        }
    }
    facts
}

fn is_cfg_test(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| {
        if !a.path().is_ident("cfg") {
            return false;
        }
        let mut test = false;
        let _ = a.parse_nested_meta(|m| {
            if m.path.is_ident("test") {
                test = true;
            }
            // Skip whatever follows (e.g. `feature = "x"`, `any(...)`) without failing.
            if m.input.peek(Token![=]) {
                let _: Expr = m.value()?.parse()?;
            } else if m.input.peek(syn::token::Paren) {
                let _ = m.parse_nested_meta(|_| Ok(()));
            }
            Ok(())
        });
        test
    })
}

fn path_attr(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// First keyword of a string if it starts like an SQL statement.
pub(crate) fn sql_keyword(text: &str) -> Option<&str> {
    let t = text.trim_start().trim_start_matches('(').trim_start();
    let end = t.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(t.len());
    let word = &t[..end];
    let known = ["select", "insert", "update", "delete", "with", "replace", "create"];
    if known.iter().any(|k| word.eq_ignore_ascii_case(k)) && t.len() > end && t.contains(char::is_whitespace) {
        Some(word)
    } else {
        None
    }
}

const SQLX_FNS: &[&str] = &[
    "query",
    "query_as",
    "query_scalar",
    "query_with",
    "query_as_with",
    "query_scalar_with",
    "query_unchecked",
    "query_as_unchecked",
    "query_scalar_unchecked",
];

/// Methods that hand back (a view of) their receiver: `state.db.clone().find()` is a
/// call on `state.db`.
const PASS_THROUGH: &[&str] = &[
    "clone",
    "as_ref",
    "as_mut",
    "borrow",
    "borrow_mut",
    "lock",
    "read",
    "write",
    "unwrap",
    "expect",
    "deref",
    "get_ref",
];

/// Wrappers whose first type argument is what a value really is (`State<Arc<AppState>>`).
const WRAPPERS: &[&str] = &[
    "Arc",
    "Rc",
    "Box",
    "State",
    "Data",
    "Extension",
    "Option",
    "Mutex",
    "RwLock",
    "Cow",
    "Ref",
    "RefMut",
    "Inject",
    "Extract",
    "ReqData",
];

/// The name of the type a value of type `ty` really is: `&State<Arc<AppState>>` → `AppState`.
fn type_name(ty: &syn::Type) -> Option<String> {
    match ty {
        syn::Type::Reference(r) => type_name(&r.elem),
        syn::Type::Paren(p) => type_name(&p.elem),
        syn::Type::Group(g) => type_name(&g.elem),
        syn::Type::Path(tp) if tp.qself.is_none() => {
            let seg = tp.path.segments.last()?;
            let id = seg.ident.to_string();
            if WRAPPERS.contains(&id.as_str())
                && let syn::PathArguments::AngleBracketed(a) = &seg.arguments
            {
                return a.args.iter().find_map(|g| match g {
                    syn::GenericArgument::Type(t) => type_name(t),
                    _ => None,
                });
            }
            id.starts_with(|c: char| c.is_ascii_uppercase()).then_some(id)
        }
        _ => None,
    }
}

/// The table of a sea-orm entity: `#[sea_orm(table_name = "users")]`.
fn orm_table(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().filter(|a| a.path().is_ident("sea_orm")).find_map(|a| match &a.meta {
        syn::Meta::List(l) => crate::syntax::attr_args(l.tokens.clone()).into_iter().find_map(|arg| match arg {
            crate::syntax::AttrArg::Key(k, v) if k == "table_name" => Some(v),
            _ => None,
        }),
        _ => None,
    })
}

/// Binds the names a typed pattern introduces: `db: &Db`, `State(state): State<AppState>`,
/// `Extension(repo): Extension<Arc<Repo>>`.
fn bind_pat(pat: &syn::Pat, ty: &syn::Type, env: &mut HashMap<String, Recv>) {
    let Some(t) = type_name(ty) else { return };
    match pat {
        syn::Pat::Ident(id) => {
            env.insert(id.ident.to_string(), Recv::Ty(t));
        }
        syn::Pat::TupleStruct(ts) if ts.elems.len() == 1 => {
            if let Some(syn::Pat::Ident(id)) = ts.elems.first() {
                env.insert(id.ident.to_string(), Recv::Ty(t));
            }
        }
        _ => {}
    }
}

struct Extractor<'f> {
    facts: &'f mut FileFacts,
    scope: usize,
    self_ty: Option<String>,
    /// The function being read (an index into the current scope's `items`).
    owner: Option<usize>,
    /// Local names whose type is known in the function being read.
    env: HashMap<String, Recv>,
}

impl Extractor<'_> {
    fn cur(&mut self) -> &mut ScopeFacts {
        &mut self.facts.scopes[self.scope]
    }

    fn push_ref(&mut self, path: &syn::Path, kind: RefKind, line: usize) {
        let mut segs = segs_of(path);
        if segs.first().is_some_and(|s| s == "Self") {
            match &self.self_ty {
                Some(t) => segs[0] = t.clone(),
                None => return,
            }
        }
        let owner = self.owner;
        self.cur().refs.push(PathRef { segs, kind, line, owner });
    }

    fn push_item(&mut self, name: String, kind: ItemKind, span: Span) -> usize {
        let line = line_of(span);
        self.cur().items.push(ItemDecl { name, kind, line });
        self.cur().items.len() - 1
    }

    /// Reads a function: its facts are owned by it, its typed parameters are known.
    fn in_fn(&mut self, item: usize, sig: &syn::Signature, body: impl FnOnce(&mut Self)) {
        let saved_owner = self.owner.replace(item);
        let saved_env = std::mem::take(&mut self.env);
        for input in &sig.inputs {
            match input {
                syn::FnArg::Receiver(_) => {
                    if let Some(t) = &self.self_ty {
                        self.env.insert("self".into(), Recv::Ty(t.clone()));
                    }
                }
                syn::FnArg::Typed(pt) => bind_pat(&pt.pat, &pt.ty, &mut self.env),
            }
        }
        // A parameter of a generic type (`s: &S` with `S: Store`) is of no type we know:
        // its methods resolve by name, to every impl.
        for g in sig.generics.type_params() {
            let name = g.ident.to_string();
            self.env.retain(|_, r| *r != Recv::Ty(name.clone()));
        }
        body(self);
        self.owner = saved_owner;
        self.env = saved_env;
    }

    /// A value of the type named `ty` (`Self` is the impl's type).
    fn named(&self, ty: String) -> Recv {
        match (ty.as_str(), &self.self_ty) {
            ("Self", Some(t)) => Recv::Ty(t.clone()),
            ("Self", None) => Recv::Unknown,
            _ => Recv::Ty(ty),
        }
    }

    /// What an expression's type is, as far as syntax tells.
    fn recv_of(&self, e: &Expr) -> Recv {
        match e {
            Expr::Path(p) if p.qself.is_none() => match p.path.get_ident() {
                Some(id) => self.env.get(&id.to_string()).cloned().unwrap_or(Recv::Unknown),
                None => Recv::Unknown,
            },
            Expr::Field(f) => match (&f.member, self.recv_of(&f.base)) {
                (_, Recv::Unknown) => Recv::Unknown,
                (syn::Member::Named(n), base) => Recv::Field(Box::new(base), n.to_string()),
                _ => Recv::Unknown,
            },
            Expr::MethodCall(m) if PASS_THROUGH.iter().any(|p| m.method == p) => self.recv_of(&m.receiver),
            Expr::Call(c) => match &*c.func {
                // `Type::new(..)`, `Type::connect(..)`: constructors most often return `Self`.
                Expr::Path(p) if p.path.segments.len() >= 2 => {
                    let ty = p.path.segments[p.path.segments.len() - 2].ident.to_string();
                    if ty.starts_with(|c: char| c.is_ascii_uppercase()) { self.named(ty) } else { Recv::Unknown }
                }
                _ => Recv::Unknown,
            },
            Expr::Struct(s) => self.named(last_seg(&s.path)),
            Expr::Paren(p) => self.recv_of(&p.expr),
            Expr::Reference(r) => self.recv_of(&r.expr),
            Expr::Unary(u) => self.recv_of(&u.expr),
            Expr::Try(t) => self.recv_of(&t.expr),
            Expr::Await(a) => self.recv_of(&a.base),
            _ => Recv::Unknown,
        }
    }

    fn push_sql(&mut self, text: String, line: usize, sqlx: bool) {
        if sqlx || sql_keyword(&text).is_some() {
            let owner = self.owner;
            let cur = self.cur();
            if let Some(prev) = cur.sql.iter_mut().find(|s| s.line == line && s.text == text) {
                prev.sqlx |= sqlx;
            } else {
                cur.sql.push(SqlLit { text, line, sqlx, owner });
            }
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let name = n.ident.to_string();
                if name == "self" {
                    if let Some(last) = prefix.last().cloned() {
                        self.cur().uses.push((last, prefix.clone()));
                    }
                } else {
                    let mut full = prefix.clone();
                    full.push(name.clone());
                    self.cur().uses.push((name, full));
                }
            }
            syn::UseTree::Rename(r) => {
                let alias = r.rename.to_string();
                let mut full = prefix.clone();
                if r.ident != "self" {
                    full.push(r.ident.to_string());
                }
                if alias != "_" {
                    self.cur().uses.push((alias, full));
                }
            }
            syn::UseTree::Glob(_) => {
                let p = prefix.clone();
                self.cur().globs.push(p);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    fn fn_body(&mut self, name: String, attrs: &[Attribute], block: &syn::Block, span: Span) {
        for ra in routes::route_attrs(attrs, &name, line_of(span), &mut self.facts.unread) {
            self.facts.scopes[self.scope].route_attrs.push(ra);
        }
        let items = routes::router_items(block, &mut self.facts.unread);
        if !items.is_empty() {
            self.cur().routers.push(RouterFn { name, items });
        }
    }

    /// Macro bodies are token streams: read them as comma-separated expressions when
    /// they are (most call-like macros), else only pick out their string literals.
    fn visit_macro_tokens(&mut self, mac: &syn::Macro) {
        let name = mac.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
        let line = path_line(&mac.path);
        match name.as_str() {
            "table" => {
                let _ = line;
                for t in crate::sql::diesel_table_names(mac.tokens.clone()) {
                    self.cur().diesel_tables.push(t);
                }
                return;
            }
            "macro_rules" => return,
            "routes" => {
                if let Ok(paths) = mac.parse_body_with(Punctuated::<syn::Path, Token![,]>::parse_terminated) {
                    for p in &paths {
                        self.push_ref(p, RefKind::Value, path_line(p));
                    }
                }
                return;
            }
            _ => {}
        }
        let sqlx_macro = SQLX_FNS.contains(&name.as_str());
        if sqlx_macro || name == "concat" {
            let mut lits = Vec::new();
            string_literals(mac.tokens.clone(), &mut lits);
            if name == "concat" {
                let text: String = lits.iter().map(|(s, _)| s.as_str()).collect();
                self.push_sql(text, line, false);
            } else {
                // `query_as!(Type, "SQL", args…)`: the SQL is the first literal.
                if let Some((text, l)) = lits.into_iter().next() {
                    self.push_sql(text, l, true);
                }
            }
        }
        if let Ok(exprs) = mac.parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated) {
            if let Some(Expr::Path(p)) = exprs.first()
                && let Some(id) = p.path.get_ident()
            {
                self.cur().macro_names.push((name.clone(), id.to_string(), line));
            }
            for e in &exprs {
                self.visit_expr(e);
            }
        } else if !sqlx_macro {
            let mut lits = Vec::new();
            string_literals(mac.tokens.clone(), &mut lits);
            for (text, l) in lits {
                self.push_sql(text, l, false);
            }
        }
    }
}

impl<'ast> Visit<'ast> for Extractor<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if is_cfg_test(&m.attrs) {
            return;
        }
        let name = m.ident.to_string();
        match &m.content {
            None => {
                let path_attr = path_attr(&m.attrs);
                self.cur().mods.push(ModDecl { name, path_attr });
            }
            Some((_, items)) => {
                let mut path = self.facts.scopes[self.scope].path.clone();
                path.push(name);
                let (brace, _) = m.content.as_ref().map(|c| (c.0.span.close(), ())).unwrap_or((m.ident.span(), ()));
                let lines = brace.end().line.saturating_sub(m.mod_token.span.start().line) + 1;
                let parent = self.scope;
                self.facts.scopes.push(ScopeFacts { path, parent: Some(parent), lines, ..ScopeFacts::default() });
                let saved = std::mem::replace(&mut self.scope, self.facts.scopes.len() - 1);
                let saved_ty = self.self_ty.take();
                for item in items {
                    self.visit_item(item);
                }
                self.scope = saved;
                self.self_ty = saved_ty;
            }
        }
    }

    fn visit_item(&mut self, i: &'ast syn::Item) {
        let attrs: &[Attribute] = match i {
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(x) => &x.attrs,
            syn::Item::Struct(x) => &x.attrs,
            syn::Item::Enum(x) => &x.attrs,
            syn::Item::Const(x) => &x.attrs,
            syn::Item::Static(x) => &x.attrs,
            syn::Item::Trait(x) => &x.attrs,
            syn::Item::Use(x) => &x.attrs,
            syn::Item::Mod(x) => &x.attrs,
            _ => &[],
        };
        if is_cfg_test(attrs) {
            return;
        }
        visit::visit_item(self, i);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut prefix = Vec::new();
        if u.leading_colon.is_some() {
            prefix.push("::".to_string());
        }
        self.use_tree(&mut prefix, &u.tree);
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        let name = f.sig.ident.to_string();
        let item = self.push_item(name.clone(), ItemKind::Fn, f.sig.ident.span());
        self.fn_body(name, &f.attrs, &f.block, f.sig.ident.span());
        self.in_fn(item, &f.sig, |v| visit::visit_item_fn(v, f));
    }

    fn visit_local(&mut self, l: &'ast syn::Local) {
        visit::visit_local(self, l);
        match (&l.pat, &l.init) {
            (syn::Pat::Type(pt), _) => bind_pat(&pt.pat, &pt.ty, &mut self.env),
            (syn::Pat::Ident(id), Some(init)) => {
                let r = self.recv_of(&init.expr);
                if r != Recv::Unknown {
                    self.env.insert(id.ident.to_string(), r);
                }
            }
            _ => {}
        }
    }

    fn visit_expr_method_call(&mut self, m: &'ast syn::ExprMethodCall) {
        let recv = self.recv_of(&m.receiver);
        // `x.unwrap()`, `v.iter()` on a receiver of unknown type resolve to nothing: not kept
        // (checked before anything is allocated: most method calls are these).
        let everyday = || crate::index::EVERYDAY_METHODS.iter().any(|e| m.method == e);
        if recv != Recv::Unknown || !everyday() {
            let (method, line, owner) = (m.method.to_string(), line_of(m.method.span()), self.owner);
            self.cur().method_calls.push(MethodCall { recv, method, line, owner });
        }
        visit::visit_expr_method_call(self, m);
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if is_cfg_test(&i.attrs) {
            return;
        }
        let ty = match &*i.self_ty {
            syn::Type::Path(tp) => tp.path.segments.last().map(|s| s.ident.to_string()),
            _ => None,
        };
        if let Some((_, trait_path, _)) = &i.trait_ {
            self.push_ref(trait_path, RefKind::Type, path_line(trait_path));
        }
        let saved = std::mem::replace(&mut self.self_ty, ty);
        visit::visit_item_impl(self, i);
        self.self_ty = saved;
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_cfg_test(&f.attrs) {
            return;
        }
        let name = match &self.self_ty {
            Some(t) => format!("{t}::{}", f.sig.ident),
            None => f.sig.ident.to_string(),
        };
        let item = self.push_item(name.clone(), ItemKind::Fn, f.sig.ident.span());
        self.fn_body(name, &f.attrs, &f.block, f.sig.ident.span());
        self.in_fn(item, &f.sig, |v| visit::visit_impl_item_fn(v, f));
    }

    fn visit_item_struct(&mut self, s: &'ast syn::ItemStruct) {
        self.push_item(s.ident.to_string(), ItemKind::Type, s.ident.span());
        if let Some(t) = orm_table(&s.attrs) {
            self.cur().orm_table = Some(t);
        }
        for f in &s.fields {
            if let (Some(name), Some(ty)) = (&f.ident, type_name(&f.ty)) {
                let entry = (s.ident.to_string(), name.to_string(), ty);
                self.cur().fields.push(entry);
            }
        }
        visit::visit_item_struct(self, s);
    }

    fn visit_item_enum(&mut self, s: &'ast syn::ItemEnum) {
        self.push_item(s.ident.to_string(), ItemKind::Type, s.ident.span());
        visit::visit_item_enum(self, s);
    }

    fn visit_item_union(&mut self, s: &'ast syn::ItemUnion) {
        self.push_item(s.ident.to_string(), ItemKind::Type, s.ident.span());
        visit::visit_item_union(self, s);
    }

    fn visit_item_trait(&mut self, s: &'ast syn::ItemTrait) {
        self.push_item(s.ident.to_string(), ItemKind::Type, s.ident.span());
        let saved = self.self_ty.replace(s.ident.to_string());
        visit::visit_item_trait(self, s);
        self.self_ty = saved;
    }

    fn visit_item_type(&mut self, s: &'ast syn::ItemType) {
        self.push_item(s.ident.to_string(), ItemKind::Type, s.ident.span());
        visit::visit_item_type(self, s);
    }

    fn visit_item_const(&mut self, s: &'ast syn::ItemConst) {
        self.push_item(s.ident.to_string(), ItemKind::Value, s.ident.span());
        if let Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(v), .. }) = &*s.expr {
            self.cur().consts.push((s.ident.to_string(), v.value()));
        }
        visit::visit_item_const(self, s);
    }

    fn visit_item_static(&mut self, s: &'ast syn::ItemStatic) {
        self.push_item(s.ident.to_string(), ItemKind::Value, s.ident.span());
        visit::visit_item_static(self, s);
    }

    fn visit_item_macro(&mut self, m: &'ast syn::ItemMacro) {
        if let Some(ident) = &m.ident {
            // `macro_rules! name { … }`: a macro definition, not code to read.
            self.push_item(ident.to_string(), ItemKind::Value, ident.span());
            return;
        }
        self.visit_macro_tokens(&m.mac);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.visit_macro_tokens(m);
    }

    fn visit_expr_call(&mut self, c: &'ast syn::ExprCall) {
        if let Expr::Path(p) = &*c.func {
            let line = path_line(&p.path);
            self.push_ref(&p.path, RefKind::Call, line);
            let last = p.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
            if SQLX_FNS.contains(&last.as_str())
                && let Some(Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. })) = c.args.first()
            {
                self.push_sql(s.value(), line_of(s.span()), true);
            }
            if matches!(last.as_str(), "insert_into" | "update" | "delete" | "replace_into" | "insert_or_ignore_into")
                && let Some(arg) = c.args.first()
            {
                let mut paths = Vec::new();
                crate::syntax::paths_in(arg, &mut paths);
                for segs in paths {
                    self.cur().diesel_writes.push((segs, line));
                }
            }
            // The callee is recorded; visit the generic arguments and the call's arguments.
            for seg in &p.path.segments {
                visit::visit_path_arguments(self, &seg.arguments);
            }
            for a in &c.args {
                self.visit_expr(a);
            }
            return;
        }
        visit::visit_expr_call(self, c);
    }

    fn visit_expr_path(&mut self, p: &'ast syn::ExprPath) {
        if p.qself.is_none() {
            self.push_ref(&p.path, RefKind::Value, path_line(&p.path));
        }
        visit::visit_expr_path(self, p);
    }

    fn visit_type_path(&mut self, t: &'ast syn::TypePath) {
        if t.qself.is_none() {
            self.push_ref(&t.path, RefKind::Type, path_line(&t.path));
        }
        visit::visit_type_path(self, t);
    }

    fn visit_expr_struct(&mut self, s: &'ast syn::ExprStruct) {
        self.push_ref(&s.path, RefKind::Type, path_line(&s.path));
        visit::visit_expr_struct(self, s);
    }

    fn visit_pat_tuple_struct(&mut self, s: &'ast syn::PatTupleStruct) {
        self.push_ref(&s.path, RefKind::Type, path_line(&s.path));
        visit::visit_pat_tuple_struct(self, s);
    }

    fn visit_pat_struct(&mut self, s: &'ast syn::PatStruct) {
        self.push_ref(&s.path, RefKind::Type, path_line(&s.path));
        visit::visit_pat_struct(self, s);
    }

    fn visit_lit_str(&mut self, s: &'ast syn::LitStr) {
        let v = s.value();
        if sql_keyword(&v).is_some() {
            self.push_sql(v, line_of(s.span()), false);
        }
    }

    fn visit_attribute(&mut self, _: &'ast Attribute) {}
}
