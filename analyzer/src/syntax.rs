//! Small syntax helpers shared by the fact extractors (`facts`, `routes`): lines of
//! spans, paths as strings, string literals in token streams, and a tolerant reader
//! of attribute arguments that works on tokens, so that arguments which are not
//! expressions (`body = Vec<Item>`, `("id" = Option<String>, Query)`) never hide the
//! keys around them.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::Expr;

/// Line of a span (1-based; 0 when unknown).
pub(crate) fn line_of(span: Span) -> usize {
    span.start().line
}

/// Line of a path (of its first segment).
pub(crate) fn path_line(p: &syn::Path) -> usize {
    match (&p.leading_colon, p.segments.first()) {
        (Some(c), _) => line_of(c.spans[0]),
        (None, Some(s)) => line_of(s.ident.span()),
        _ => 0,
    }
}

/// Segments of a syn path as strings.
pub(crate) fn segs_of(path: &syn::Path) -> Vec<String> {
    let mut out = Vec::with_capacity(path.segments.len() + 1);
    if path.leading_colon.is_some() {
        out.push("::".to_string());
    }
    out.extend(path.segments.iter().map(|s| s.ident.to_string()));
    out
}

/// The last segment of a path.
pub(crate) fn last_seg(p: &syn::Path) -> String {
    p.segments.last().map(|s| s.ident.to_string()).unwrap_or_default()
}

/// The value of a string literal expression (through parentheses and `&`).
pub(crate) fn str_lit(e: &Expr) -> Option<String> {
    match e {
        Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value()),
        Expr::Paren(p) => str_lit(&p.expr),
        Expr::Reference(r) => str_lit(&r.expr),
        _ => None,
    }
}

/// The path an expression is (through parentheses and `&`).
pub(crate) fn path_of(e: &Expr) -> Option<&syn::Path> {
    match e {
        Expr::Path(p) if p.qself.is_none() => Some(&p.path),
        Expr::Paren(p) => path_of(&p.expr),
        Expr::Reference(r) => path_of(&r.expr),
        _ => None,
    }
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

/// The value of a string literal token.
pub(crate) fn lit_str(l: &proc_macro2::Literal) -> Option<String> {
    syn::parse_str::<syn::LitStr>(&l.to_string()).ok().map(|s| s.value())
}

/// Every string literal in a token stream (nested groups included), with its line.
pub(crate) fn string_literals(tokens: TokenStream, out: &mut Vec<(String, usize)>) {
    for tt in tokens {
        match tt {
            TokenTree::Group(g) => string_literals(g.stream(), out),
            TokenTree::Literal(l) => {
                if let Some(s) = lit_str(&l) {
                    out.push((s, line_of(l.span())));
                }
            }
            _ => {}
        }
    }
}

/// One top-level argument of an attribute, read from its tokens: a bare word
/// (`get`), a string (`"/x"`), or `key = value` where the value is a string or the
/// last word of a path (`method = Method::GET` → `GET`). Anything else is `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttrArg {
    /// A bare identifier or path, by its last segment.
    Word(String),
    /// A string literal.
    Str(String),
    /// `key = "value"` or `key = path::WORD`.
    Key(String, String),
    /// Something else (a group, a generic type, a number).
    Other,
}

/// The top-level, comma-separated arguments of an attribute's token stream. Commas
/// inside groups are not split on; commas inside `<…>` at the top level are (which only
/// ever produces extra `Other` pieces, never loses a key).
pub(crate) fn attr_args(tokens: TokenStream) -> Vec<AttrArg> {
    let mut pieces: Vec<Vec<TokenTree>> = vec![Vec::new()];
    for tt in tokens {
        match &tt {
            TokenTree::Punct(p) if p.as_char() == ',' => pieces.push(Vec::new()),
            _ => pieces.last_mut().expect("never empty").push(tt),
        }
    }
    pieces.into_iter().filter(|p| !p.is_empty()).map(|p| read_arg(&p)).collect()
}

fn read_arg(toks: &[TokenTree]) -> AttrArg {
    let eq = toks.iter().position(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == '='));
    match eq {
        Some(i) => {
            // `key = value`: the key is the word before `=`; `=>` or `==` are not keys.
            let key = match &toks[..i] {
                [TokenTree::Ident(k)] => k.to_string(),
                _ => return AttrArg::Other,
            };
            match &toks[i + 1..] {
                [TokenTree::Literal(l)] => lit_str(l).map_or(AttrArg::Other, |v| AttrArg::Key(key, v)),
                rest => match path_word(rest) {
                    Some(w) => AttrArg::Key(key, w),
                    None => AttrArg::Other,
                },
            }
        }
        None => match toks {
            [TokenTree::Literal(l)] => lit_str(l).map_or(AttrArg::Other, AttrArg::Str),
            rest => path_word(rest).map_or(AttrArg::Other, AttrArg::Word),
        },
    }
}

/// The last word of a plain path written as tokens (`a::b::C` → `C`).
fn path_word(toks: &[TokenTree]) -> Option<String> {
    let mut last = None;
    for t in toks {
        match t {
            TokenTree::Ident(i) => last = Some(i.to_string()),
            TokenTree::Punct(p) if p.as_char() == ':' => {}
            _ => return None,
        }
    }
    last
}
