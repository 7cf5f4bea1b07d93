//! SearchGameServerSessions' `FilterExpression` and `SortExpression`: a tokenizer, a
//! recursive-descent parser to an expression tree, and its evaluation over a session. Pure;
//! shared by the agent's API and the control plane's.
//!
//! ```text
//! expr       := and ( OR and )*
//! and        := unary ( AND unary )*
//! unary      := NOT unary | primary
//! primary    := "(" expr ")" | field op value
//! field      := gameServerSessionName | gameServerSessionId | maximumSessions
//!             | creationTimeMillis | playerSessionCount | hasAvailablePlayerSessions
//!             | gameServerSessionProperties.<key>
//! op         := = | <> | > | >= | < | <=
//! value      := 'text' | "text" | integer | true | false
//! sort       := field ( ASC | DESC )
//! ```
//!
//! Keywords and `true`/`false` are matched without regard to case, field names exactly.
//! Number fields compare numerically; the name, id and properties compare as text, except that
//! a property compared with a number compares numerically when its value is a number (and is
//! otherwise unequal). `hasAvailablePlayerSessions` takes `=` and `<>` only. Every error names
//! the position (a 0-based character offset) and what was expected there.

use std::collections::HashMap;

/// A field of a session that an expression can test or sort on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `gameServerSessionName`.
    Name,
    /// `gameServerSessionId`.
    Id,
    /// `maximumSessions`: the session's maximum player sessions.
    MaximumSessions,
    /// `creationTimeMillis`.
    CreationTimeMillis,
    /// `playerSessionCount`: reserved and active player sessions.
    PlayerSessionCount,
    /// `hasAvailablePlayerSessions`.
    HasAvailablePlayerSessions,
    /// `gameServerSessionProperties.<key>`.
    Property(String),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// A literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Quoted text.
    Text(String),
    /// An integer.
    Int(i64),
    /// `true` or `false`.
    Bool(bool),
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `field op value`.
    Cmp(Field, Op, Value),
    /// `NOT e`.
    Not(Box<Expr>),
    /// `a AND b`.
    And(Box<Expr>, Box<Expr>),
    /// `a OR b`.
    Or(Box<Expr>, Box<Expr>),
}

/// A parsed sort: the field and whether it is descending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    /// What to sort on.
    pub field: Field,
    /// `DESC`.
    pub descending: bool,
}

/// Why an expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct SyntaxError {
    /// 0-based character offset.
    pub position: usize,
    /// What was expected or wrong.
    pub message: String,
}

/// What an expression is evaluated on.
#[derive(Debug, Clone, Default)]
pub struct Subject<'a> {
    /// The session's name.
    pub name: &'a str,
    /// Its id.
    pub id: &'a str,
    /// Its maximum player sessions.
    pub maximum_sessions: i64,
    /// Its creation time, Unix milliseconds.
    pub creation_time_millis: i64,
    /// Its reserved and active player sessions.
    pub player_session_count: i64,
    /// Whether a player could join now.
    pub has_available_player_sessions: bool,
    /// Its game properties.
    pub properties: HashMap<&'a str, &'a str>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Text(String),
    Int(i64),
    Op(Op),
    Open,
    Close,
}

fn err(position: usize, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        position,
        message: message.into(),
    }
}

/// Longest expression accepted, in characters.
pub const MAX_LEN: usize = 4096;

fn tokenize(text: &str) -> Result<Vec<(usize, Tok)>, SyntaxError> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() > MAX_LEN {
        return Err(err(MAX_LEN, format!("longer than {MAX_LEN} characters")));
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((start, Tok::Open));
                i += 1;
            }
            ')' => {
                out.push((start, Tok::Close));
                i += 1;
            }
            '=' => {
                out.push((start, Tok::Op(Op::Eq)));
                i += 1;
            }
            '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('<', Some('>')) => (Op::Ne, 2),
                    ('<', Some('=')) => (Op::Le, 2),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('<', _) => (Op::Lt, 1),
                    _ => (Op::Gt, 1),
                };
                out.push((start, Tok::Op(op)));
                i += len;
            }
            '\'' | '"' => {
                let quote = c;
                i += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(err(start, "a quoted string is not closed")),
                        Some(&q) if q == quote => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push((start, Tok::Text(s)));
            }
            c if c.is_ascii_digit() || c == '-' => {
                i += 1;
                while chars.get(i).is_some_and(|d| d.is_ascii_digit()) {
                    i += 1;
                }
                let digits: String = chars[start..i].iter().collect();
                let n = digits
                    .parse::<i64>()
                    .map_err(|_| err(start, format!("{digits:?} is not an integer")))?;
                out.push((start, Tok::Int(n)));
            }
            c if c.is_alphanumeric() || c == '_' => {
                while chars
                    .get(i)
                    .is_some_and(|d| d.is_alphanumeric() || matches!(d, '_' | '.' | '-'))
                {
                    i += 1;
                }
                out.push((start, Tok::Word(chars[start..i].iter().collect())));
            }
            other => return Err(err(start, format!("unexpected character {other:?}"))),
        }
    }
    Ok(out)
}

fn field(position: usize, word: &str) -> Result<Field, SyntaxError> {
    Ok(match word {
        "gameServerSessionName" => Field::Name,
        "gameServerSessionId" => Field::Id,
        "maximumSessions" => Field::MaximumSessions,
        "creationTimeMillis" => Field::CreationTimeMillis,
        "playerSessionCount" => Field::PlayerSessionCount,
        "hasAvailablePlayerSessions" => Field::HasAvailablePlayerSessions,
        w => match w.strip_prefix("gameServerSessionProperties.") {
            Some(key) if !key.is_empty() => Field::Property(key.to_string()),
            _ => {
                return Err(err(
                    position,
                    format!(
                        "{w:?} is not a field (gameServerSessionName, gameServerSessionId, maximumSessions, creationTimeMillis, playerSessionCount, hasAvailablePlayerSessions, gameServerSessionProperties.<key>)"
                    ),
                ));
            }
        },
    })
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(_, t)| t)
    }

    fn position(&self) -> usize {
        self.toks.get(self.at).map_or(self.end, |(p, _)| *p)
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k))
    }

    fn or(&mut self, depth: usize) -> Result<Expr, SyntaxError> {
        let mut e = self.and(depth)?;
        while self.keyword("OR") {
            self.at += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and(depth)?));
        }
        Ok(e)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, SyntaxError> {
        let mut e = self.unary(depth)?;
        while self.keyword("AND") {
            self.at += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary(depth)?));
        }
        Ok(e)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, SyntaxError> {
        if depth > 64 {
            return Err(err(self.position(), "nested more than 64 deep"));
        }
        if self.keyword("NOT") {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.peek() == Some(&Tok::Open) {
            self.at += 1;
            let e = self.or(depth + 1)?;
            if self.peek() != Some(&Tok::Close) {
                return Err(err(self.position(), "expected `)`"));
            }
            self.at += 1;
            return Ok(e);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, SyntaxError> {
        let position = self.position();
        let f = match self.peek() {
            Some(Tok::Word(w)) => field(position, &w.clone())?,
            _ => return Err(err(position, "expected a field name, `NOT` or `(`")),
        };
        self.at += 1;
        let op_position = self.position();
        let op = match self.peek() {
            Some(Tok::Op(op)) => *op,
            _ => {
                return Err(err(
                    op_position,
                    "expected an operator (=, <>, >, >=, <, <=)",
                ));
            }
        };
        self.at += 1;
        let value_position = self.position();
        let value = match self.peek() {
            Some(Tok::Text(s)) => Value::Text(s.clone()),
            Some(Tok::Int(n)) => Value::Int(*n),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Value::Bool(true),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Value::Bool(false),
            _ => {
                return Err(err(
                    value_position,
                    "expected a value: a quoted string, an integer, true or false",
                ));
            }
        };
        self.at += 1;
        check_types(&f, op, &value, value_position)?;
        Ok(Expr::Cmp(f, op, value))
    }
}

fn check_types(f: &Field, op: Op, v: &Value, position: usize) -> Result<(), SyntaxError> {
    let ok = match f {
        Field::Name | Field::Id => matches!(v, Value::Text(_)),
        Field::MaximumSessions | Field::CreationTimeMillis | Field::PlayerSessionCount => {
            matches!(v, Value::Int(_))
        }
        Field::HasAvailablePlayerSessions => {
            if !matches!(op, Op::Eq | Op::Ne) {
                return Err(err(
                    position,
                    "hasAvailablePlayerSessions takes = or <> only",
                ));
            }
            matches!(v, Value::Bool(_))
        }
        Field::Property(_) => matches!(v, Value::Text(_) | Value::Int(_)),
    };
    if ok {
        Ok(())
    } else {
        Err(err(position, format!("{v:?} is not a value for {f:?}")))
    }
}

/// Parses a `FilterExpression`.
pub fn parse_filter(text: &str) -> Result<Expr, SyntaxError> {
    let toks = tokenize(text)?;
    let end = text.chars().count();
    let mut p = Parser { toks, at: 0, end };
    if p.toks.is_empty() {
        return Err(err(0, "the expression is empty"));
    }
    let e = p.or(0)?;
    if p.at != p.toks.len() {
        return Err(err(p.position(), "expected `AND`, `OR` or the end"));
    }
    Ok(e)
}

/// Parses a `SortExpression`.
pub fn parse_sort(text: &str) -> Result<Sort, SyntaxError> {
    let toks = tokenize(text)?;
    let end = text.chars().count();
    match toks.as_slice() {
        [(p, Tok::Word(f)), (q, Tok::Word(dir))] => {
            let field = field(*p, f)?;
            let descending = if dir.eq_ignore_ascii_case("ASC") {
                false
            } else if dir.eq_ignore_ascii_case("DESC") {
                true
            } else {
                return Err(err(*q, "expected ASC or DESC"));
            };
            Ok(Sort { field, descending })
        }
        [(p, Tok::Word(f))] => {
            field(*p, f)?;
            Err(err(end, "expected ASC or DESC"))
        }
        [] => Err(err(0, "the expression is empty")),
        [(p, _), ..] => Err(err(*p, "expected `<field> ASC|DESC`")),
    }
}

fn compare<T: Ord>(a: T, op: Op, b: T) -> bool {
    match op {
        Op::Eq => a == b,
        Op::Ne => a != b,
        Op::Gt => a > b,
        Op::Ge => a >= b,
        Op::Lt => a < b,
        Op::Le => a <= b,
    }
}

impl Expr {
    /// Whether `s` matches.
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Expr::Not(e) => !e.matches(s),
            Expr::And(a, b) => a.matches(s) && b.matches(s),
            Expr::Or(a, b) => a.matches(s) || b.matches(s),
            Expr::Cmp(f, op, v) => match (f, v) {
                (Field::Name, Value::Text(t)) => compare(s.name, *op, t.as_str()),
                (Field::Id, Value::Text(t)) => compare(s.id, *op, t.as_str()),
                (Field::MaximumSessions, Value::Int(n)) => compare(s.maximum_sessions, *op, *n),
                (Field::CreationTimeMillis, Value::Int(n)) => {
                    compare(s.creation_time_millis, *op, *n)
                }
                (Field::PlayerSessionCount, Value::Int(n)) => {
                    compare(s.player_session_count, *op, *n)
                }
                (Field::HasAvailablePlayerSessions, Value::Bool(b)) => {
                    compare(s.has_available_player_sessions, *op, *b)
                }
                (Field::Property(k), v) => match (s.properties.get(k.as_str()), v) {
                    (None, _) => *op == Op::Ne,
                    (Some(have), Value::Text(t)) => compare(*have, *op, t.as_str()),
                    (Some(have), Value::Int(n)) => match have.trim().parse::<i64>() {
                        Ok(h) => compare(h, *op, *n),
                        Err(_) => *op == Op::Ne,
                    },
                    (Some(_), Value::Bool(_)) => false,
                },
                _ => false,
            },
        }
    }
}

impl Sort {
    /// Orders two subjects by this sort (ties keep their order: the sort is stable). A
    /// session without the property sorts last either way; property values that are both
    /// numbers compare as numbers, as the filter does.
    pub fn cmp(&self, a: &Subject<'_>, b: &Subject<'_>) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        let o = match &self.field {
            Field::Name => a.name.cmp(b.name),
            Field::Id => a.id.cmp(b.id),
            Field::MaximumSessions => a.maximum_sessions.cmp(&b.maximum_sessions),
            Field::CreationTimeMillis => a.creation_time_millis.cmp(&b.creation_time_millis),
            Field::PlayerSessionCount => a.player_session_count.cmp(&b.player_session_count),
            Field::HasAvailablePlayerSessions => a
                .has_available_player_sessions
                .cmp(&b.has_available_player_sessions),
            Field::Property(k) => {
                match (a.properties.get(k.as_str()), b.properties.get(k.as_str())) {
                    (None, None) => return Ordering::Equal,
                    (None, Some(_)) => return Ordering::Greater,
                    (Some(_), None) => return Ordering::Less,
                    (Some(x), Some(y)) => {
                        match (x.trim().parse::<i64>(), y.trim().parse::<i64>()) {
                            (Ok(x), Ok(y)) => x.cmp(&y),
                            _ => x.cmp(y),
                        }
                    }
                }
            }
        };
        if self.descending { o.reverse() } else { o }
    }
}

pub mod request;

#[cfg(test)]
mod tests;
