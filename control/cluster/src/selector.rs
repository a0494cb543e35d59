//! Calico's label selector language (`projectcalico.org/v3` selectors), as used by an IP pool's
//! `nodeSelector` and by Calico network policy.
//!
//! ```text
//! selector   = ws , [ or_expr , ws ] ;            (* empty or blank input means all() *)
//! or_expr    = and_expr , { ws , "||" , and_expr } ;
//! and_expr   = unary , { ws , "&&" , unary } ;
//! unary      = ws , ( "!" , unary | "(" , or_expr , ws , ")" | term ) ;
//! term       = "all" , ws , "(" , ws , ")"
//!            | "has" , ws , "(" , ws , key , ws , ")"
//!            | key , ws , op ;
//! op         = "==" , ws , string
//!            | "!=" , ws , string
//!            | "in" , ws , set
//!            | "not" , ws1 , "in" , ws , set
//!            | "contains" , ws , string
//!            | "starts" , ws1 , "with" , ws , string
//!            | "ends" , ws1 , "with" , ws , string ;
//! set        = "{" , ws , [ string , { ws , "," , ws , string } , ws ] , "}" ;
//! string     = "'" , { any char but "'" } , "'" | '"' , { any char but '"' } , '"' ;
//! key        = [ prefix , "/" ] , name ;      (* Kubernetes label key, see below *)
//! prefix     = DNS subdomain: lowercase RFC 1123 labels joined by ".", at most 253 bytes ;
//! name       = 1 to 63 of [A-Za-z0-9._-], beginning and ending with [A-Za-z0-9] ;
//! ws         = { " " | "\t" | "\n" | "\r" } ;   ws1 = at least one ws character ;
//! ```
//!
//! A key and the word operators are read as a run of `[A-Za-z0-9._/-]`, so `in`, `not`, `has`
//! and `all` are keywords only where the grammar puts them: `has == 'x'` compares the label
//! `has`. `&&` binds tighter than `||`; `!` applies to the following unary (`!a == 'x'` is
//! `!(a == 'x')`). Strings have no escapes, as in Calico.
//!
//! Semantics follow Calico: `==`, `in`, `contains`, `starts with` and `ends with` need the label
//! to be present; `!=` and `not in` also match when the label is absent (they are the negations
//! of `==` and `in`). The empty set is accepted, as Calico's tokenizer accepts it: `k in {}`
//! matches nothing and `k not in {}` matches everything.
//!
//! Nesting (parentheses and `!`) is limited to [`MAX_DEPTH`] levels, so neither parsing,
//! evaluation nor dropping a selector can recurse without bound; `&&`/`||` chains are stored
//! flat and cost no depth. Parsing never panics.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// The deepest nesting of parentheses and `!` that [`Selector::parse`] accepts.
pub const MAX_DEPTH: usize = 64;

/// A parsed selector. Built by [`Selector::parse`] (or [`Selector::all`]); its [`Display`]
/// form is canonical and parses back to an equal selector.
///
/// [`Display`]: fmt::Display
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Selector {
    expr: Expr,
}

/// The syntax tree of a selector. `And` and `Or` hold at least two operands, none of which is
/// itself an `And` (for `And`) or an `Or` (for `Or`) unless it was parenthesised in the source;
/// a selector built by the parser always respects this.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `all()`: matches everything.
    All,
    /// `has(k)`: the label is present.
    Has(String),
    /// `!e`.
    Not(Box<Expr>),
    /// `k == 'v'`.
    Equal(String, String),
    /// `k != 'v'` (also matches when `k` is absent).
    NotEqual(String, String),
    /// `k in {'a', 'b'}`.
    In(String, BTreeSet<String>),
    /// `k not in {'a', 'b'}` (also matches when `k` is absent).
    NotIn(String, BTreeSet<String>),
    /// `k contains 's'`.
    Contains(String, String),
    /// `k starts with 's'`.
    StartsWith(String, String),
    /// `k ends with 's'`.
    EndsWith(String, String),
    /// `a && b && …`.
    And(Vec<Expr>),
    /// `a || b || …`.
    Or(Vec<Expr>),
}

/// Why a selector did not parse: a message and the byte offset in the input where it applies.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} at offset {offset} in {input:?}")]
pub struct SelectorError {
    /// Byte offset into `input`.
    pub offset: usize,
    /// What was wrong, e.g. `expected ')'`.
    pub message: String,
    /// The whole selector text.
    pub input: String,
}

impl Selector {
    /// The selector that matches everything (`all()`, also what `""` parses to).
    pub fn all() -> Self {
        Selector { expr: Expr::All }
    }

    /// Parses a selector. The empty (or blank) string means `all()`, as in an IP pool's
    /// `nodeSelector`.
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        let mut p = Parser {
            src: input,
            bytes: input.as_bytes(),
            pos: 0,
            depth: 0,
        };
        p.skip_ws();
        if p.at_end() {
            return Ok(Selector::all());
        }
        let expr = p.parse_or()?;
        p.skip_ws();
        if !p.at_end() {
            let msg = match p.peek() {
                Some(b')') => "unmatched ')'".to_string(),
                _ => "unexpected trailing input (expected '&&', '||' or end)".to_string(),
            };
            return Err(p.error(p.pos, msg));
        }
        Ok(Selector { expr })
    }

    /// The syntax tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether a set of labels matches.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.expr.matches(labels)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl Expr {
    /// Whether a set of labels matches (recursion is bounded by the nesting depth).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let get = |k: &String| labels.get(k).map(String::as_str);
        match self {
            Expr::All => true,
            Expr::Has(k) => labels.contains_key(k),
            Expr::Not(e) => !e.matches(labels),
            Expr::Equal(k, v) => get(k) == Some(v.as_str()),
            Expr::NotEqual(k, v) => get(k) != Some(v.as_str()),
            Expr::In(k, set) => get(k).is_some_and(|v| set.contains(v)),
            Expr::NotIn(k, set) => !get(k).is_some_and(|v| set.contains(v)),
            Expr::Contains(k, s) => get(k).is_some_and(|v| v.contains(s.as_str())),
            Expr::StartsWith(k, s) => get(k).is_some_and(|v| v.starts_with(s.as_str())),
            Expr::EndsWith(k, s) => get(k).is_some_and(|v| v.ends_with(s.as_str())),
            Expr::And(es) => es.iter().all(|e| e.matches(labels)),
            Expr::Or(es) => es.iter().any(|e| e.matches(labels)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Printing

/// Writes a string literal: double quotes unless the value contains one.
fn write_str(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if s.contains('"') {
        write!(f, "'{s}'")
    } else {
        write!(f, "\"{s}\"")
    }
}

fn write_set(f: &mut fmt::Formatter<'_>, set: &BTreeSet<String>) -> fmt::Result {
    f.write_str("{")?;
    for (i, v) in set.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_str(f, v)?;
    }
    f.write_str("}")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Has(k) => write!(f, "has({k})"),
            Expr::Not(e) => match **e {
                Expr::All | Expr::Has(_) | Expr::Not(_) => write!(f, "!{e}"),
                _ => write!(f, "!({e})"),
            },
            Expr::Equal(k, v) => {
                write!(f, "{k} == ")?;
                write_str(f, v)
            }
            Expr::NotEqual(k, v) => {
                write!(f, "{k} != ")?;
                write_str(f, v)
            }
            Expr::In(k, set) => {
                write!(f, "{k} in ")?;
                write_set(f, set)
            }
            Expr::NotIn(k, set) => {
                write!(f, "{k} not in ")?;
                write_set(f, set)
            }
            Expr::Contains(k, v) => {
                write!(f, "{k} contains ")?;
                write_str(f, v)
            }
            Expr::StartsWith(k, v) => {
                write!(f, "{k} starts with ")?;
                write_str(f, v)
            }
            Expr::EndsWith(k, v) => {
                write!(f, "{k} ends with ")?;
                write_str(f, v)
            }
            Expr::And(es) => {
                for (i, e) in es.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" && ")?;
                    }
                    match e {
                        Expr::And(_) | Expr::Or(_) => write!(f, "({e})")?,
                        _ => write!(f, "{e}")?,
                    }
                }
                Ok(())
            }
            Expr::Or(es) => {
                for (i, e) in es.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" || ")?;
                    }
                    match e {
                        Expr::Or(_) => write!(f, "({e})")?,
                        _ => write!(f, "{e}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

// ---------------------------------------------------------------------------------------------
// Label keys

/// Checks a Kubernetes label key: `[prefix/]name`, the prefix a DNS subdomain (at most 253
/// bytes of lowercase RFC 1123 labels), the name 1 to 63 of `[A-Za-z0-9._-]` beginning and
/// ending with an alphanumeric. Returns why not.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("the prefix before '/' is empty".into());
        }
        if prefix.len() > 253 {
            return Err("the prefix is longer than 253 bytes".into());
        }
        for label in prefix.split('.') {
            let b = label.as_bytes();
            let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            let ok = !b.is_empty()
                && b.len() <= 63
                && b.first().is_some_and(alnum)
                && b.last().is_some_and(alnum)
                && b.iter().all(|c| alnum(c) || *c == b'-');
            if !ok {
                return Err(
                    "the prefix must be a DNS subdomain (lowercase alphanumerics, '-' and '.')"
                        .into(),
                );
            }
        }
    }
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > 63 {
        return Err("the name is longer than 63 bytes".into());
    }
    let b = name.as_bytes();
    let ok = b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        return Err(
            "the name must be alphanumerics, '-', '_' or '.', beginning and ending with an \
             alphanumeric"
                .into(),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Parsing

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

type PResult<T> = Result<T, SelectorError>;

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'/')
}

impl Parser<'_> {
    fn error(&self, offset: usize, message: impl Into<String>) -> SelectorError {
        SelectorError {
            offset,
            message: message.into(),
            input: self.src.to_string(),
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.bytes[self.pos..].starts_with(token.as_bytes()) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    /// Describes what is at the current position, for error messages.
    fn found(&self) -> String {
        match self.src.get(self.pos..).and_then(|s| s.chars().next()) {
            None => "end of input".into(),
            Some(c) => format!("{c:?}"),
        }
    }

    fn expect(&mut self, c: u8) -> PResult<()> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(
                self.pos,
                format!("expected '{}', found {}", c as char, self.found()),
            ))
        }
    }

    /// Reads a run of key characters (ASCII, so the slice is on char boundaries).
    fn word(&mut self) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(is_word_byte) {
            self.pos += 1;
        }
        &self.src[start..self.pos]
    }

    fn enter(&mut self, at: usize) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(at, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn parse_or(&mut self) -> PResult<Expr> {
        let mut terms = vec![self.parse_and()?];
        loop {
            self.skip_ws();
            if self.eat("||") {
                terms.push(self.parse_and()?);
            } else {
                break;
            }
        }
        Ok(if terms.len() == 1 {
            terms.swap_remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn parse_and(&mut self) -> PResult<Expr> {
        let mut terms = vec![self.parse_unary()?];
        loop {
            self.skip_ws();
            if self.eat("&&") {
                terms.push(self.parse_unary()?);
            } else {
                break;
            }
        }
        Ok(if terms.len() == 1 {
            terms.swap_remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn parse_unary(&mut self) -> PResult<Expr> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some(b'!') => {
                self.pos += 1;
                self.enter(start)?;
                let inner = self.parse_unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(inner)))
            }
            Some(b'(') => {
                self.pos += 1;
                self.enter(start)?;
                let inner = self.parse_or()?;
                self.skip_ws();
                if self.peek() != Some(b')') {
                    return Err(self.error(
                        self.pos,
                        format!(
                            "expected ')' to close '(' at offset {start}, found {}",
                            self.found()
                        ),
                    ));
                }
                self.pos += 1;
                self.depth -= 1;
                Ok(inner)
            }
            _ => self.parse_term(),
        }
    }

    fn key(&mut self) -> PResult<String> {
        self.skip_ws();
        let start = self.pos;
        let key = self.word().to_string();
        if key.is_empty() {
            return Err(self.error(
                start,
                format!("expected a label key, found {}", self.found()),
            ));
        }
        check_label_key(&key)
            .map_err(|why| self.error(start, format!("invalid label key '{key}': {why}")))?;
        Ok(key)
    }

    fn parse_term(&mut self) -> PResult<Expr> {
        let start = self.pos;
        let word = self.word().to_string();
        if word.is_empty() {
            return Err(self.error(
                start,
                format!(
                    "expected a label key, 'all()', 'has(', '!' or '(', found {}",
                    self.found()
                ),
            ));
        }
        let after_word = self.pos;
        self.skip_ws();
        if self.peek() == Some(b'(') {
            self.pos += 1;
            return match word.as_str() {
                "all" => {
                    self.expect(b')')?;
                    Ok(Expr::All)
                }
                "has" => {
                    let key = self.key()?;
                    self.expect(b')')?;
                    Ok(Expr::Has(key))
                }
                _ => Err(self.error(
                    start,
                    format!("unknown function '{word}()' (only all() and has() exist)"),
                )),
            };
        }
        self.pos = after_word;
        check_label_key(&word)
            .map_err(|why| self.error(start, format!("invalid label key '{word}': {why}")))?;
        let key = word;
        self.skip_ws();
        if self.eat("==") {
            return Ok(Expr::Equal(key, self.string()?));
        }
        if self.eat("!=") {
            return Ok(Expr::NotEqual(key, self.string()?));
        }
        let op_start = self.pos;
        let op = self.word().to_string();
        match op.as_str() {
            "in" => Ok(Expr::In(key, self.set()?)),
            "not" => {
                self.second_word("not", "in")?;
                Ok(Expr::NotIn(key, self.set()?))
            }
            "contains" => Ok(Expr::Contains(key, self.string()?)),
            "starts" => {
                self.second_word("starts", "with")?;
                Ok(Expr::StartsWith(key, self.string()?))
            }
            "ends" => {
                self.second_word("ends", "with")?;
                Ok(Expr::EndsWith(key, self.string()?))
            }
            "" => {
                let msg = if self.peek() == Some(b'=') {
                    "unknown operator '=' (use '==')".to_string()
                } else {
                    format!(
                        "expected an operator ('==', '!=', 'in', 'not in', 'contains', \
                         'starts with' or 'ends with'), found {}",
                        self.found()
                    )
                };
                Err(self.error(op_start, msg))
            }
            _ => Err(self.error(op_start, format!("unknown operator '{op}'"))),
        }
    }

    /// The second word of `not in`, `starts with`, `ends with`.
    fn second_word(&mut self, first: &str, second: &str) -> PResult<()> {
        let gap = self.skip_ws();
        let at = self.pos;
        if gap == 0 || self.word() != second {
            return Err(self.error(at, format!("expected '{second}' after '{first}'")));
        }
        Ok(())
    }

    fn string(&mut self) -> PResult<String> {
        self.skip_ws();
        let start = self.pos;
        let Some(quote @ (b'\'' | b'"')) = self.peek() else {
            return Err(self.error(
                start,
                format!("expected a quoted string, found {}", self.found()),
            ));
        };
        let body = start + 1;
        match self.bytes[body..].iter().position(|&c| c == quote) {
            Some(len) => {
                self.pos = body + len + 1;
                Ok(self.src[body..body + len].to_string())
            }
            None => Err(self.error(start, "unterminated string")),
        }
    }

    fn set(&mut self) -> PResult<BTreeSet<String>> {
        self.skip_ws();
        let open = self.pos;
        if self.peek() != Some(b'{') {
            return Err(self.error(open, format!("expected '{{', found {}", self.found())));
        }
        self.pos += 1;
        let mut set = BTreeSet::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(set);
        }
        loop {
            set.insert(self.string()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(set);
                }
                _ => {
                    return Err(self.error(
                        self.pos,
                        format!(
                            "expected ',' or '}}' in the set opened at offset {open}, found {}",
                            self.found()
                        ),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn evaluates_calico_examples() {
        let web_prod = labels(&[("type", "webserver"), ("deployment", "prod")]);
        let web_dev = labels(&[("type", "webserver"), ("deployment", "dev")]);
        let db = labels(&[("type", "database"), ("tier", "backend-1")]);
        let none = labels(&[]);
        let pool = labels(&[("kubernetes.io/hostname", "k8s-w1"), ("zone", "a")]);
        #[rustfmt::skip]
        let cases: &[(&str, &BTreeMap<String, String>, bool)] = &[
            ("", &none, true),
            ("   ", &web_prod, true),
            ("all()", &none, true),
            ("all()", &web_prod, true),
            ("!all()", &none, false),
            ("!all()", &web_prod, false),
            ("has(type)", &web_prod, true),
            ("has(type)", &none, false),
            ("!has(type)", &none, true),
            ("!has(type)", &db, false),
            ("has(kubernetes.io/hostname)", &pool, true),
            ("type == 'webserver'", &web_prod, true),
            ("type == \"webserver\"", &web_prod, true),
            ("type == 'webserver'", &db, false),
            ("type == 'webserver'", &none, false),
            ("type != 'webserver'", &db, true),
            ("type != 'webserver'", &none, true),
            ("type != 'webserver'", &web_prod, false),
            ("deployment in {'prod', 'staging'}", &web_prod, true),
            ("deployment in {\"prod\",'staging'}", &web_dev, false),
            ("deployment in {'prod'}", &none, false),
            ("deployment not in {'prod','staging'}", &web_dev, true),
            ("deployment not in {'prod','staging'}", &none, true),
            ("deployment not in {'prod','staging'}", &web_prod, false),
            ("deployment in {}", &web_prod, false),
            ("deployment not in {}", &web_prod, true),
            ("tier contains 'end'", &db, true),
            ("tier contains 'front'", &db, false),
            ("tier contains ''", &none, false),
            ("tier starts with 'back'", &db, true),
            ("tier starts with 'end'", &db, false),
            ("tier ends with '-1'", &db, true),
            ("tier ends with 'back'", &db, false),
            ("kubernetes.io/hostname == 'k8s-w1'", &pool, true),
            // && binds tighter than ||.
            ("type == 'database' || type == 'webserver' && deployment == 'dev'", &web_prod, false),
            ("type == 'database' || type == 'webserver' && deployment == 'dev'", &db, true),
            ("(type == 'database' || type == 'webserver') && deployment == 'prod'", &web_prod, true),
            ("(type == 'database' || type == 'webserver') && deployment == 'prod'", &db, false),
            ("type == 'webserver' && deployment == 'prod'", &web_prod, true),
            ("type == 'webserver' && deployment == 'prod'", &web_dev, false),
            ("!type == 'webserver'", &db, true),
            ("!(has(type) && !has(tier))", &db, true),
            ("!(has(type) && !has(tier))", &web_prod, false),
            ("((((has(type)))))", &db, true),
            ("!!has(type)", &db, true),
            ("((a == 'x' || has(tier)) && (!has(zone) || zone == 'b'))", &db, true),
            ("\t has ( type ) &&\n type=='database'  ", &db, true),
            ("type in{'database'}&&tier contains\"back\"", &db, true),
            ("has == 'x' || in == 'y' || all == 'z'", &labels(&[("in", "y")]), true),
            ("type == 'it''s'", &db, false),
        ];
        for (s, l, want) in cases {
            match Selector::parse(s) {
                Ok(selector) => assert_eq!(selector.matches(l), *want, "{s:?} on {l:?}"),
                // The last case is not valid: a string ends at its first quote.
                Err(e) => assert_eq!(*s, "type == 'it''s'", "{e}"),
            }
        }
    }

    #[test]
    fn quotes_of_either_kind_hold_the_other() {
        let s = sel(r#"a == "it's" || b == 'say "hi"'"#);
        assert!(s.matches(&labels(&[("a", "it's")])));
        assert!(s.matches(&labels(&[("b", "say \"hi\"")])));
        assert_eq!(s.to_string(), r#"a == "it's" || b == 'say "hi"'"#);
    }

    #[test]
    fn canonical_form() {
        #[rustfmt::skip]
        let cases = [
            ("", "all()"),
            ("!all()", "!all()"),
            ("  has( a )", "has(a)"),
            ("a=='x'", "a == \"x\""),
            ("a in {'z','y', 'z'}", "a in {\"y\", \"z\"}"),
            ("a not   in {}", "a not in {}"),
            ("a starts   with 'p'", "a starts with \"p\""),
            ("!a == 'x'", "!(a == \"x\")"),
            ("(a == 'x')", "a == \"x\""),
            ("a == 'x' || b == 'y' && c == 'z'", "a == \"x\" || b == \"y\" && c == \"z\""),
            ("(a == 'x' || b == 'y') && c == 'z'", "(a == \"x\" || b == \"y\") && c == \"z\""),
            ("(has(a) && has(b)) && has(c)", "(has(a) && has(b)) && has(c)"),
            ("has(a) || (has(b) || has(c))", "has(a) || (has(b) || has(c))"),
            ("!(has(a) || has(b))", "!(has(a) || has(b))"),
        ];
        for (input, want) in cases {
            let s = sel(input);
            assert_eq!(s.to_string(), want, "{input:?}");
            assert_eq!(sel(want), s, "{want:?}");
        }
        assert_eq!(sel(""), Selector::all());
        assert_eq!("has(a)".parse::<Selector>(), Ok(sel("has(a)")));
    }

    #[test]
    fn errors_say_what_and_where() {
        #[rustfmt::skip]
        let cases: &[(&str, usize, &str)] = &[
            ("has(a) && (b == 'x'", 19, "expected ')' to close '(' at offset 10"),
            ("(((all())", 9, "expected ')'"),
            ("a == 'x", 5, "unterminated string"),
            ("a == \"x'", 5, "unterminated string"),
            ("a in {'x', 'y'", 14, "expected ',' or '}'"),
            ("a in {'x' 'y'}", 10, "expected ',' or '}'"),
            ("a in {'x',}", 10, "expected a quoted string"),
            ("a in 'x'", 5, "expected '{'"),
            ("a = 'v'", 2, "unknown operator '='"),
            ("a === 'v'", 4, "expected a quoted string"),
            ("a like 'v'", 2, "unknown operator 'like'"),
            ("a not 'v'", 6, "expected 'in' after 'not'"),
            ("a notin {'v'}", 2, "unknown operator 'notin'"),
            ("a starts 'v'", 9, "expected 'with' after 'starts'"),
            ("a == v", 5, "expected a quoted string"),
            ("a", 1, "expected an operator"),
            ("a == 'x' b", 9, "unexpected trailing input"),
            ("all() )", 6, "unmatched ')'"),
            ("all() &&", 8, "expected a label key"),
            ("&& all()", 0, "expected a label key"),
            ("has()", 4, "expected a label key"),
            ("has(a", 5, "expected ')'"),
            ("all(x)", 4, "expected ')'"),
            ("global()", 0, "unknown function 'global()'"),
            ("-a == 'x'", 0, "invalid label key '-a'"),
            ("a/b/c == 'x'", 0, "invalid label key 'a/b/c'"),
            ("Example.com/a == 'x'", 0, "invalid label key 'Example.com/a'"),
            ("/a == 'x'", 0, "the prefix before '/' is empty"),
            ("example.com/ == 'x'", 0, "the name is empty"),
            ("has(a_)", 4, "invalid label key 'a_'"),
            ("a & b", 2, "expected an operator"),
            ("é == 'x'", 0, "expected a label key"),
        ];
        for (input, offset, msg) in cases {
            let err = Selector::parse(input).expect_err(input);
            assert_eq!(err.offset, *offset, "{input:?}: {err}");
            assert!(err.message.contains(msg), "{input:?}: {err}");
            assert_eq!(err.input, *input);
        }
        let err = Selector::parse("has(a) && (b == 'x'").unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected ')' to close '(' at offset 10, found end of input at offset 19 in \
             \"has(a) && (b == 'x'\""
        );
    }

    #[test]
    fn label_keys_follow_kubernetes() {
        let long_name = "a".repeat(63);
        let too_long_name = "a".repeat(64);
        let long_prefix = format!(
            "{}.{}.{}.{}",
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(63),
            "e".repeat(61)
        );
        assert_eq!(long_prefix.len(), 253);
        for good in [
            "a",
            "A.b_c-D9",
            "kubernetes.io/hostname",
            "projectcalico.org/namespace",
            "x-1.y/Z",
            &long_name,
            &format!("{long_prefix}/a"),
        ] {
            assert_eq!(check_label_key(good), Ok(()), "{good}");
            assert!(Selector::parse(&format!("has({good})")).is_ok(), "{good}");
        }
        for bad in [
            "",
            "_a",
            "a.",
            "a/",
            "/a",
            "A.io/a",
            "a..b/c",
            "-a.io/b",
            "a/b/c",
            &too_long_name,
            &format!("{long_prefix}x/a"),
        ] {
            assert!(check_label_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}all(){}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(Selector::parse(&ok).is_ok());
        let deep = format!(
            "{}all(){}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let err = Selector::parse(&deep).unwrap_err();
        assert_eq!(err.offset, MAX_DEPTH);
        assert!(err.message.contains("nesting deeper than 64"), "{err}");
        assert!(Selector::parse(&format!("{}all()", "!".repeat(MAX_DEPTH))).is_ok());
        assert!(Selector::parse(&"!".repeat(1_000_000)).is_err());
        assert!(Selector::parse(&"(".repeat(1_000_000)).is_err());
        // Long flat chains cost no depth.
        let chain = vec!["has(a)"; 100_000].join(" && ");
        let s = sel(&chain);
        assert!(s.matches(&labels(&[("a", "")])));
        assert_eq!(sel(&s.to_string()), s);
    }

    // --- property tests -----------------------------------------------------------------------

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a"),
            Just("b"),
            Just("in"),
            Just("has"),
            Just("x.io/c-1")
        ]
        .prop_map(String::from)
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(""),
            Just("v"),
            Just("vw"),
            Just("w"),
            Just("it's"),
            Just("\"q\""),
            Just("a b")
        ]
        .prop_map(String::from)
    }

    fn leaf() -> impl Strategy<Value = Expr> {
        let set = || prop::collection::btree_set(value(), 0..3);
        prop_oneof![
            Just(Expr::All),
            key().prop_map(Expr::Has),
            (key(), value()).prop_map(|(k, v)| Expr::Equal(k, v)),
            (key(), value()).prop_map(|(k, v)| Expr::NotEqual(k, v)),
            (key(), set()).prop_map(|(k, s)| Expr::In(k, s)),
            (key(), set()).prop_map(|(k, s)| Expr::NotIn(k, s)),
            (key(), value()).prop_map(|(k, v)| Expr::Contains(k, v)),
            (key(), value()).prop_map(|(k, v)| Expr::StartsWith(k, v)),
            (key(), value()).prop_map(|(k, v)| Expr::EndsWith(k, v)),
        ]
    }

    /// Trees the parser can produce: no `And` directly in an `And` is lost, because the printer
    /// parenthesises it, so any nesting is fine.
    fn expr() -> impl Strategy<Value = Expr> {
        leaf().prop_recursive(4, 32, 3, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
                prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
            ]
        })
    }

    fn label_map() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map(key(), value(), 0..4)
    }

    /// Reference semantics, written independently of `Expr::matches`.
    fn reference(e: &Expr, l: &BTreeMap<String, String>) -> bool {
        match e {
            Expr::All => true,
            Expr::Has(k) => l.contains_key(k),
            Expr::Not(e) => !reference(e, l),
            Expr::Equal(k, v) => l.get(k) == Some(v),
            Expr::NotEqual(k, v) => !reference(&Expr::Equal(k.clone(), v.clone()), l),
            Expr::In(k, s) => s.iter().any(|v| l.get(k) == Some(v)),
            Expr::NotIn(k, s) => !s.iter().any(|v| l.get(k) == Some(v)),
            Expr::Contains(k, v) => l.get(k).is_some_and(|x| x.contains(v.as_str())),
            Expr::StartsWith(k, v) => l.get(k).is_some_and(|x| x.starts_with(v.as_str())),
            Expr::EndsWith(k, v) => l.get(k).is_some_and(|x| x.ends_with(v.as_str())),
            Expr::And(es) => es.iter().fold(true, |acc, e| acc & reference(e, l)),
            Expr::Or(es) => es.iter().fold(false, |acc, e| acc | reference(e, l)),
        }
    }

    fn token_soup() -> impl Strategy<Value = String> {
        let tok = prop_oneof![
            Just("("),
            Just(")"),
            Just("!"),
            Just("&&"),
            Just("||"),
            Just("all()"),
            Just("has("),
            Just("a"),
            Just("x.io/b"),
            Just("=="),
            Just("!="),
            Just("="),
            Just("in"),
            Just("not"),
            Just("starts"),
            Just("with"),
            Just("contains"),
            Just("{"),
            Just("}"),
            Just(","),
            Just("'v'"),
            Just("\"w\""),
            Just("'"),
            Just(" "),
            Just("é"),
        ];
        prop::collection::vec(tok, 0..24).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_text_never_panics(s in "\\PC{0,40}") {
            if let Ok(sel) = Selector::parse(&s) {
                prop_assert_eq!(Selector::parse(&sel.to_string()), Ok(sel));
            }
        }

        #[test]
        fn token_soup_never_panics_and_round_trips(s in token_soup()) {
            match Selector::parse(&s) {
                Ok(sel) => prop_assert_eq!(Selector::parse(&sel.to_string()), Ok(sel)),
                Err(e) => {
                    prop_assert!(e.offset <= s.len());
                    prop_assert!(s.is_char_boundary(e.offset));
                }
            }
        }

        #[test]
        fn printed_trees_parse_back_and_agree(e in expr(), maps in prop::collection::vec(label_map(), 4)) {
            let sel = Selector { expr: e };
            let text = sel.to_string();
            let back = Selector::parse(&text);
            prop_assert_eq!(back.as_ref(), Ok(&sel), "{}", text);
            let back = back.unwrap();
            for l in &maps {
                prop_assert_eq!(back.matches(l), sel.matches(l));
                prop_assert_eq!(sel.matches(l), reference(&sel.expr, l), "{} on {:?}", text, l);
            }
        }
    }
}
