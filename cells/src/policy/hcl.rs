//! The syntax of policy documents: the subset of HCL 1 Vault policies use,
//! and the JSON form, read by one parser into one tree.
//!
//! JSON is nearly HCL already: `"key": value` is `key = value`, and a JSON
//! document is a bracketed HCL body. So the reader accepts both everywhere
//! (`=` or `:`, optional commas between entries) and the decoder in
//! `parse.rs` sees the same tree either way; `path "x" { .. }` is a labelled
//! entry, `"path": {"x": {..}}` a nested one. Errors carry the line and
//! column (1-based, counted in characters) of the token that broke.

use std::fmt;

/// Deepest nesting of lists and objects accepted, so hostile input cannot
/// exhaust the stack.
const MAX_DEPTH: usize = 32;

/// A place in the source, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

/// A syntax error at a place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    Number(serde_json::Number),
    Bool(bool),
    List(Vec<Node>),
    Object(Vec<Entry>),
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::List(_) => "a list",
            Value::Object(_) => "an object",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub pos: Pos,
}

/// `key "label" ... = value` or `key "label" { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub pos: Pos,
    pub labels: Vec<(String, Pos)>,
    pub value: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Number(String),
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Assign,
    Comma,
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "{s}"),
            Tok::Str(s) => write!(f, "{s:?}"),
            Tok::Number(s) => write!(f, "{s}"),
            Tok::LBrace => f.write_str("'{'"),
            Tok::RBrace => f.write_str("'}'"),
            Tok::LBracket => f.write_str("'['"),
            Tok::RBracket => f.write_str("']'"),
            Tok::Assign => f.write_str("'='"),
            Tok::Comma => f.write_str("','"),
            Tok::Eof => f.write_str("end of input"),
        }
    }
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    pos: Pos,
}

fn err<T>(pos: Pos, message: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        pos,
        message: message.into(),
    })
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            chars: src.chars().peekable(),
            pos: Pos { line: 1, column: 1 },
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.pos.line += 1;
            self.pos.column = 1;
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    /// Skips whitespace and the three comment forms.
    fn skip_trivia(&mut self) -> Result<(), SyntaxError> {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => self.skip_line(),
                Some('/') => {
                    let start = self.pos;
                    self.bump();
                    match self.bump() {
                        Some('/') => self.skip_line(),
                        Some('*') => self.skip_block_comment(start)?,
                        _ => {
                            return err(start, "unexpected '/' (comments start with '//' or '/*')");
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.bump() {
            if c == '\n' {
                break;
            }
        }
    }

    fn skip_block_comment(&mut self, start: Pos) -> Result<(), SyntaxError> {
        let mut star = false;
        while let Some(c) = self.bump() {
            if star && c == '/' {
                return Ok(());
            }
            star = c == '*';
        }
        err(start, "unterminated comment")
    }

    fn next(&mut self) -> Result<(Tok, Pos), SyntaxError> {
        self.skip_trivia()?;
        let pos = self.pos;
        let Some(c) = self.peek() else {
            return Ok((Tok::Eof, pos));
        };
        let single = match c {
            '{' => Some(Tok::LBrace),
            '}' => Some(Tok::RBrace),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            '=' | ':' => Some(Tok::Assign),
            ',' => Some(Tok::Comma),
            _ => None,
        };
        if let Some(tok) = single {
            self.bump();
            return Ok((tok, pos));
        }
        if c == '"' {
            self.bump();
            return Ok((Tok::Str(self.string(pos)?), pos));
        }
        if c == '-' || c.is_ascii_digit() {
            return Ok((Tok::Number(self.number(pos)?), pos));
        }
        if c.is_alphabetic() || c == '_' {
            let mut s = String::new();
            while let Some(c) = self.peek() {
                if c.is_alphanumeric() || matches!(c, '_' | '-' | '.') {
                    s.push(c);
                    self.bump();
                } else {
                    break;
                }
            }
            return Ok((Tok::Ident(s), pos));
        }
        err(pos, format!("unexpected character {c:?}"))
    }

    fn string(&mut self, start: Pos) -> Result<String, SyntaxError> {
        let mut out = String::new();
        loop {
            let here = self.pos;
            match self.bump() {
                None | Some('\n') => return err(start, "unterminated string"),
                Some('"') => return Ok(out),
                Some('\\') => {
                    let c = match self.bump() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('u') => self.unicode_escape(here)?,
                        _ => return err(here, "invalid escape in string"),
                    };
                    out.push(c);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn hex4(&mut self, at: Pos) -> Result<u32, SyntaxError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = self.bump().and_then(|c| c.to_digit(16));
            match d {
                Some(d) => v = v * 16 + d,
                None => return err(at, "invalid \\u escape in string"),
            }
        }
        Ok(v)
    }

    /// `\uXXXX`, with JSON's surrogate pairs for characters past the BMP.
    fn unicode_escape(&mut self, at: Pos) -> Result<char, SyntaxError> {
        let hi = self.hex4(at)?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if self.bump() != Some('\\') || self.bump() != Some('u') {
                return err(at, "unpaired surrogate in \\u escape");
            }
            let lo = self.hex4(at)?;
            if !(0xDC00..0xE000).contains(&lo) {
                return err(at, "unpaired surrogate in \\u escape");
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).map_or_else(|| err(at, "invalid \\u escape in string"), Ok)
    }

    fn number(&mut self, start: Pos) -> Result<String, SyntaxError> {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.') {
                s.push(c);
                self.bump();
            } else {
                break;
            }
        }
        if serde_json::from_str::<serde_json::Number>(&s).is_err() {
            return err(start, format!("invalid number {s:?}"));
        }
        Ok(s)
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    tok: Tok,
    pos: Pos,
    depth: usize,
}

/// Reads a whole document: an HCL body, or one object (JSON, or HCL written
/// inside braces) when the first token is `{`.
pub(crate) fn parse(src: &str) -> Result<Vec<Entry>, SyntaxError> {
    let mut lexer = Lexer::new(src);
    let (tok, pos) = lexer.next()?;
    let mut p = Parser {
        lexer,
        tok,
        pos,
        depth: 0,
    };
    let entries = if p.tok == Tok::LBrace {
        p.advance()?;
        let entries = p.body(Tok::RBrace)?;
        p.advance()?;
        entries
    } else {
        p.body(Tok::Eof)?
    };
    if p.tok != Tok::Eof {
        return err(p.pos, format!("unexpected {} after the document", p.tok));
    }
    Ok(entries)
}

impl Parser<'_> {
    fn advance(&mut self) -> Result<(), SyntaxError> {
        let (tok, pos) = self.lexer.next()?;
        self.tok = tok;
        self.pos = pos;
        Ok(())
    }

    fn enter(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(self.pos, "nesting too deep");
        }
        Ok(())
    }

    /// Entries up to (not consuming) `end`.
    fn body(&mut self, end: Tok) -> Result<Vec<Entry>, SyntaxError> {
        let mut entries = Vec::new();
        while self.tok != end {
            let pos = self.pos;
            let key = match std::mem::replace(&mut self.tok, Tok::Eof) {
                Tok::Ident(s) | Tok::Str(s) => s,
                Tok::Eof => return err(pos, "unexpected end of input, expected '}'"),
                other => return err(pos, format!("expected a key, found {other}")),
            };
            self.advance()?;
            let mut labels = Vec::new();
            while let Tok::Str(label) = &self.tok {
                labels.push((label.clone(), self.pos));
                self.advance()?;
            }
            let value = match self.tok {
                Tok::Assign => {
                    self.advance()?;
                    self.value()?
                }
                Tok::LBrace => self.value()?,
                _ => {
                    return err(
                        self.pos,
                        format!("expected '=' or '{{' after key {key:?}, found {}", self.tok),
                    );
                }
            };
            entries.push(Entry {
                key,
                pos,
                labels,
                value,
            });
            if self.tok == Tok::Comma {
                self.advance()?;
            }
        }
        Ok(entries)
    }

    fn value(&mut self) -> Result<Node, SyntaxError> {
        let pos = self.pos;
        let value = match std::mem::replace(&mut self.tok, Tok::Eof) {
            Tok::Str(s) => {
                self.advance()?;
                Value::Str(s)
            }
            Tok::Number(n) => {
                self.advance()?;
                match serde_json::from_str(&n) {
                    Ok(n) => Value::Number(n),
                    Err(_) => return err(pos, format!("invalid number {n:?}")),
                }
            }
            Tok::Ident(s) if s == "true" || s == "false" => {
                self.advance()?;
                Value::Bool(s == "true")
            }
            Tok::LBracket => {
                self.enter()?;
                self.advance()?;
                let mut items = Vec::new();
                while self.tok != Tok::RBracket {
                    items.push(self.value()?);
                    match self.tok {
                        Tok::Comma => self.advance()?,
                        Tok::RBracket => {}
                        _ => {
                            return err(
                                self.pos,
                                format!("expected ',' or ']' in list, found {}", self.tok),
                            );
                        }
                    }
                }
                self.advance()?;
                self.depth -= 1;
                Value::List(items)
            }
            Tok::LBrace => {
                self.enter()?;
                self.advance()?;
                let entries = self.body(Tok::RBrace)?;
                self.advance()?;
                self.depth -= 1;
                Value::Object(entries)
            }
            other => return err(pos, format!("expected a value, found {other}")),
        };
        Ok(Node { value, pos })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(src: &str) -> (usize, usize, String) {
        let e = parse(src).expect_err("should fail");
        (e.pos.line, e.pos.column, e.message)
    }

    #[test]
    fn reads_hcl_blocks_lists_and_comments() {
        let src = r#"
# hash comment
// slash comment
/* block
   comment */ path "secret/*" {
  capabilities = ["read", "list",]
  allowed_parameters {
    "a" = []
    b = ["x\"y", 1, true]
  }
}
"#;
        let doc = parse(src).expect("parses");
        assert_eq!(doc.len(), 1);
        assert_eq!(doc[0].key, "path");
        assert_eq!(doc[0].labels[0].0, "secret/*");
        assert_eq!(
            doc[0].pos,
            Pos {
                line: 5,
                column: 15
            }
        );
        let Value::Object(body) = &doc[0].value.value else {
            panic!("object expected");
        };
        assert_eq!(body.len(), 2);
        let Value::Object(params) = &body[1].value.value else {
            panic!("object expected");
        };
        assert_eq!(params[1].key, "b");
        let Value::List(values) = &params[1].value.value else {
            panic!("list expected");
        };
        assert_eq!(values[0].value, Value::Str("x\"y".into()));
        assert_eq!(values[2].value, Value::Bool(true));
    }

    #[test]
    fn reads_json() {
        let doc = parse(r#" {"path": {"a/\u00e9\ud83d\ude00": {"capabilities": ["read"]}}} "#)
            .expect("parses");
        let Value::Object(paths) = &doc[0].value.value else {
            panic!("object expected");
        };
        assert_eq!(paths[0].key, "a/é😀");
    }

    #[test]
    fn errors_name_line_and_column() {
        assert_eq!(
            error("path \"a\" {\n  capabilities [\"read\"]\n}"),
            (
                2,
                16,
                "expected '=' or '{' after key \"capabilities\", found '['".into()
            )
        );
        assert_eq!(
            error("path \"a\" {\n"),
            (2, 1, "unexpected end of input, expected '}'".into())
        );
        assert_eq!(error("path \"a"), (1, 6, "unterminated string".into()));
        assert_eq!(error("/* x"), (1, 1, "unterminated comment".into()));
        assert_eq!(
            error("a = [1 2]"),
            (1, 8, "expected ',' or ']' in list, found 2".into())
        );
        assert_eq!(error("a = @"), (1, 5, "unexpected character '@'".into()));
        assert_eq!(
            error("{} x"),
            (1, 4, "unexpected x after the document".into())
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = format!("a = {}", "[".repeat(10_000));
        assert_eq!(error(&src).2, "nesting too deep");
    }
}
