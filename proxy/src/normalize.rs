//! Request-path normalisation, done before any routing decision so that a path cannot reach a
//! route's upstream, nor avoid it, by being spelt differently.
//!
//! The rules (RFC 3986 §6.2.2 plus the usual proxy hardening):
//! - the path must start with `/` and hold only visible ASCII (no control bytes, no spaces);
//! - `%XX` of an unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded, every other `%XX`
//!   keeps its encoding with upper-case hex digits; a broken `%` escape is refused;
//! - an encoded slash or backslash (`%2F`, `%5C`) is refused: upstreams disagree on whether `%2F`
//!   separates segments, so it is the one spelling that could slip past a route; so is an encoded
//!   control byte (`%00`-`%1F`, `%7F`), which no real path holds;
//! - repeated slashes are merged and `.` / `..` segments removed (`..` above the root stays at
//!   the root).

use std::borrow::Cow;

/// Why a request path was refused; every variant maps to a 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The request target does not start with `/`.
    #[error("the request path must start with '/'")]
    NotAbsolute,
    /// A control byte, space or non-ASCII byte.
    #[error("the request path holds a byte that is not visible ASCII")]
    BadByte,
    /// `%` not followed by two hex digits.
    #[error("the request path holds a broken percent escape")]
    BadEscape,
    /// `%2F` or `%5C`.
    #[error("the request path holds an encoded slash or backslash")]
    EncodedSeparator,
    /// An encoded control byte (`%00`-`%1F`, `%7F`); Pingora encodes raw control bytes this way.
    #[error("the request path holds a control character")]
    EncodedControl,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalises a request path (without its query). Borrows when the path is already normal, so
/// the common case allocates nothing.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut needs_work = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(0x21..0x7f).contains(&b) {
            return Err(PathError::BadByte);
        }
        match b {
            b'%' => {
                let (Some(h), Some(l)) =
                    (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
                else {
                    return Err(PathError::BadEscape);
                };
                let decoded = h * 16 + l;
                if matches!(decoded, b'/' | b'\\') {
                    return Err(PathError::EncodedSeparator);
                }
                if decoded < 0x20 || decoded == 0x7f {
                    return Err(PathError::EncodedControl);
                }
                // Decoded unreserved bytes and lower-case hex digits both need rewriting.
                if is_unreserved(decoded) || bytes[i + 1].is_ascii_lowercase() || bytes[i + 2].is_ascii_lowercase() {
                    needs_work = true;
                }
                i += 3;
                continue;
            }
            b'/' => {
                // `//`, `/./`, `/../`, or a trailing `/.` or `/..`.
                let rest = &bytes[i + 1..];
                if rest.starts_with(b"/")
                    || rest == b"."
                    || rest == b".."
                    || rest.starts_with(b"./")
                    || rest.starts_with(b"../")
                {
                    needs_work = true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    // Decode unreserved escapes and upper-case the rest.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let value = hex(bytes[i + 1]).unwrap_or(0) * 16 + hex(bytes[i + 2]).unwrap_or(0);
            if is_unreserved(value) {
                decoded.push(value as char);
            } else {
                decoded.push('%');
                decoded.push(bytes[i + 1].to_ascii_uppercase() as char);
                decoded.push(bytes[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            decoded.push(bytes[i] as char);
            i += 1;
        }
    }
    // Remove empty, `.` and `..` segments.
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing_slash = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing_slash && !segments.is_empty()) {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/api/products/1", Ok("/api/products/1")),
            ("/", Ok("/")),
            ("//api/products/1", Ok("/api/products/1")),
            ("/api//products/1", Ok("/api/products/1")),
            ("/api/%70roducts/1", Ok("/api/products/1")),
            ("/api/./products/1", Ok("/api/products/1")),
            ("/api/x/../products/1", Ok("/api/products/1")),
            ("/api/products/../orders", Ok("/api/orders")),
            ("/api/products/%2e%2e/orders", Ok("/api/orders")),
            ("/api/products/%2E%2E/orders", Ok("/api/orders")),
            ("/api/products/.%2e/orders", Ok("/api/orders")),
            ("/../../etc/passwd", Ok("/etc/passwd")),
            ("/api/products/", Ok("/api/products/")),
            ("/api/products/.", Ok("/api/products/")),
            ("/api/products/..", Ok("/api/")),
            ("/..", Ok("/")),
            ("/a%20b", Ok("/a%20b")),
            ("/a%3fb", Ok("/a%3Fb")),
            ("/api/products%2F1", Err(PathError::EncodedSeparator)),
            ("/api/products%2f1", Err(PathError::EncodedSeparator)),
            ("/api/products%5c1", Err(PathError::EncodedSeparator)),
            ("/a%00", Err(PathError::EncodedControl)),
            ("/a%01", Err(PathError::EncodedControl)),
            ("/a%7f", Err(PathError::EncodedControl)),
            ("/a%zz", Err(PathError::BadEscape)),
            ("/a%2", Err(PathError::BadEscape)),
            ("no-slash", Err(PathError::NotAbsolute)),
            ("", Err(PathError::NotAbsolute)),
            ("/a\u{1}", Err(PathError::BadByte)),
            ("/a b", Err(PathError::BadByte)),
            ("/caf\u{e9}", Err(PathError::BadByte)),
        ];
        for (input, want) in cases {
            let got = normalize_path(input).map(|c| c.into_owned());
            assert_eq!(got, want.clone().map(str::to_owned), "normalize_path({input:?})");
        }
    }

    #[test]
    fn already_normal_paths_are_borrowed() {
        assert!(matches!(normalize_path("/api/products/1").unwrap(), Cow::Borrowed(_)));
        assert!(matches!(normalize_path("/a%20b").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in ["//a/./b/../c//", "/%7euser/%41", "/x/%2e/y", "/a/b/../../.."] {
            let once = normalize_path(p).unwrap().into_owned();
            assert_eq!(normalize_path(&once).unwrap(), once.as_str(), "{p}");
        }
    }
}
