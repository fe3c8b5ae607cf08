//! SQL text → the tables it reads, writes and creates, with a real SQL parser
//! (sqlparser: the generic dialect first, then PostgreSQL, SQLite and MySQL, so `$1`,
//! `?` and `?1` placeholders all parse). INSERT/UPDATE/DELETE/MERGE targets are
//! written; every other relation (FROM, JOIN, subqueries, INSERT … SELECT sources) is
//! read; names a `WITH` introduces are CTEs, not tables. Names are compared in lower
//! case without their schema (`public.users` is `users`).

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use proc_macro2::{TokenStream, TokenTree};
use sqlparser::ast::{ObjectName, Query, Statement, TableFactor, TableObject, Visit, Visitor};
use sqlparser::dialect::{Dialect, GenericDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

/// The tables one piece of SQL touches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SqlTables {
    /// Tables only read.
    pub reads: BTreeSet<String>,
    /// Tables written (INSERT, UPDATE, DELETE, MERGE targets).
    pub writes: BTreeSet<String>,
    /// Tables created (CREATE TABLE).
    pub creates: BTreeSet<String>,
}

impl SqlTables {
    /// True when the SQL touches no table.
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty() && self.writes.is_empty() && self.creates.is_empty()
    }
}

/// Parses SQL (one or more statements) and returns the tables it touches, or the
/// parser's message when no dialect understands it.
pub fn tables(sql: &str) -> Result<SqlTables, String> {
    let dialects: [&dyn Dialect; 4] = [&GenericDialect {}, &PostgreSqlDialect {}, &SQLiteDialect {}, &MySqlDialect {}];
    let mut first_err = None;
    for d in dialects {
        match Parser::parse_sql(d, sql) {
            Ok(stmts) => return Ok(of_statements(&stmts)),
            Err(e) => {
                first_err.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Err(first_err.unwrap_or_default())
}

/// The tables created by a migration file: parses it whole, else statement by
/// statement (split on `;`), so one statement the parser does not know does not hide
/// the others.
pub fn created_tables(script: &str) -> BTreeSet<String> {
    if let Ok(t) = tables(script) {
        return t.creates;
    }
    let mut out = BTreeSet::new();
    for stmt in script.split(';') {
        if let Ok(t) = tables(stmt) {
            out.extend(t.creates);
        } else if let Some(name) = create_table_name(stmt) {
            out.insert(name);
        }
    }
    out
}

/// `CREATE TABLE [IF NOT EXISTS] name` read by hand, for statements no dialect parses.
fn create_table_name(stmt: &str) -> Option<String> {
    let mut words = stmt
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .flat_map(str::split_whitespace)
        .map(|w| w.to_ascii_lowercase());
    loop {
        let w = words.next()?;
        if w == "create" {
            break;
        }
    }
    let mut w = words.next()?;
    while matches!(w.as_str(), "temporary" | "temp" | "unlogged" | "or" | "replace") {
        w = words.next()?;
    }
    if w != "table" {
        return None;
    }
    let mut name = words.next()?;
    if name == "if" {
        words.next()?;
        words.next()?;
        name = words.next()?;
    }
    let name = name.split('(').next().unwrap_or("");
    let n = clean(name.rsplit('.').next().unwrap_or(name));
    (!n.is_empty()).then_some(n)
}

fn clean(s: &str) -> String {
    s.trim_matches(|c| c == '"' || c == '`' || c == '[' || c == ']').to_ascii_lowercase()
}

fn name_of(o: &ObjectName) -> String {
    o.0.last()
        .map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()).unwrap_or_else(|| clean(&p.to_string())))
        .unwrap_or_default()
}

#[derive(Default)]
struct Collect {
    relations: BTreeSet<String>,
    ctes: BTreeSet<String>,
    writes: BTreeSet<String>,
    creates: BTreeSet<String>,
}

impl Visitor for Collect {
    type Break = ();
    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_ascii_lowercase());
            }
        }
        ControlFlow::Continue(())
    }
    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        self.relations.insert(name_of(r));
        ControlFlow::Continue(())
    }
    // Called for nested statements too: data-modifying CTEs (`WITH x AS (INSERT …)`).
    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        write_targets(s, &mut self.writes, &mut self.creates);
        ControlFlow::Continue(())
    }
}

fn factor_name(f: &TableFactor) -> Option<String> {
    match f {
        TableFactor::Table { name, .. } => Some(name_of(name)),
        _ => None,
    }
}

fn write_targets(s: &Statement, writes: &mut BTreeSet<String>, creates: &mut BTreeSet<String>) {
    match s {
        Statement::Insert(i) => {
            if let TableObject::TableName(n) = &i.table {
                writes.insert(name_of(n));
            }
        }
        Statement::Update(u) => {
            if let Some(n) = factor_name(&u.table.relation) {
                writes.insert(n);
            }
        }
        Statement::Delete(d) => {
            for t in &d.tables {
                writes.insert(name_of(t));
            }
            if d.tables.is_empty() {
                let from = match &d.from {
                    sqlparser::ast::FromTable::WithFromKeyword(v) | sqlparser::ast::FromTable::WithoutKeyword(v) => v,
                };
                for t in from {
                    if let Some(n) = factor_name(&t.relation) {
                        writes.insert(n);
                    }
                }
            }
        }
        Statement::Merge(m) => {
            if let Some(n) = factor_name(&m.table) {
                writes.insert(n);
            }
        }
        Statement::CreateTable(ct) => {
            creates.insert(name_of(&ct.name));
        }
        _ => {}
    }
}

fn of_statements(stmts: &[Statement]) -> SqlTables {
    let mut c = Collect::default();
    for s in stmts {
        let _ = s.visit(&mut c);
    }
    let mut out = SqlTables { writes: c.writes, creates: c.creates, ..SqlTables::default() };
    for r in c.relations {
        if r.is_empty() || c.ctes.contains(&r) || out.writes.contains(&r) || out.creates.contains(&r) {
            continue;
        }
        out.reads.insert(r);
    }
    for cte in &c.ctes {
        out.writes.remove(cte);
    }
    out
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
                    crate::syntax::string_literals(g.stream(), &mut lits);
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
