//! Grouping: turns an event's message and stack into a fingerprint that stays the same across
//! repeats of one problem, however their ids, numbers, timestamps, line numbers and builds differ.
//!
//! The rules are versioned ([`GROUPING_VERSION`]): any change to them regroups new events, so a
//! change bumps the version and the worker stores it with each group. Everything here runs on every
//! event in the worker, so it is bounded (input is cut, output is capped) and its regexes are
//! compiled once.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use regex_automata::{Input, meta};
use sha2::{Digest, Sha256};

/// Bumped whenever the rules below change; stored with each group.
pub const GROUPING_VERSION: i32 = 1;

/// Only the start of a message is normalised: what identifies a problem comes first, and a
/// multi-megabyte message must not cost more than a short one.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// Placeholders are longer than what they replace (`1` → `<int>`), so the output needs its own cap
/// to stay bounded; it is stored with the group and shown to users.
pub const MAX_NORMALIZED_MESSAGE_BYTES: usize = 2048;

/// The innermost frames are where a problem happens; outer ones are framework plumbing that
/// differs between entry points to the same bug.
pub const MAX_FRAMES: usize = 30;

/// A pathological module or function name must not make one frame (and the stored group) huge.
pub const MAX_FRAME_PART_CHARS: usize = 200;

/// Frame names are cut to this before they are cleaned, so a client sending megabyte names costs no
/// more than one sending ordinary ones; the result is cut again to [`MAX_FRAME_PART_CHARS`].
const MAX_FRAME_INPUT_CHARS: usize = 4 * MAX_FRAME_PART_CHARS;

/// Stack traces longer than this are parsed from their head and tail only: the head holds the
/// innermost frames of most formats, the tail those of Python's.
pub const MAX_STACK_TRACE_BYTES: usize = 128 * 1024;

/// A stack frame as the Sentry protocol sends it, or as [`parse_stack_trace`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub struct Frame {
    pub module: Option<String>,
    pub function: Option<String>,
    pub filename: Option<String>,
    pub lineno: Option<u32>,
    pub colno: Option<u32>,
    pub in_app: Option<bool>,
}

/// What decided an event's group, kept with the group so users can see why events were merged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grouping {
    /// lowercase hex sha256, 64 chars
    pub fingerprint: String,
    pub normalized_message: String,
    /// the normalised frames that contributed ("module_or_file_basename:function"), outermost→innermost as given
    pub frames: Vec<String>,
    pub version: i32,
    /// true when a client-supplied fingerprint decided the group
    pub custom: bool,
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// What one pattern of [`MESSAGE_RE`] stands for, in the order of the patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Email,
    Url,
    Ipv4,
    Ipv6,
    Uuid,
    Sha1,
    Md5,
    Date,
    Hex,
    Number,
    Quoted,
}

/// Pattern `i` of [`MESSAGE_RE`] is `TOKENS[i]`.
const TOKENS: [Token; 11] = [
    Token::Email,
    Token::Url,
    Token::Ipv4,
    Token::Ipv6,
    Token::Uuid,
    Token::Sha1,
    Token::Md5,
    Token::Date,
    Token::Hex,
    Token::Number,
    Token::Quoted,
];

/// Every variable part of a message in one multi-pattern regex, so one left-to-right pass replaces
/// them all and, where two could start at the same place, the earlier pattern wins (an e-mail's
/// digits are not integers, a date is not three integers), exactly as in an alternation. The DFA
/// reports which pattern matched, so no capture groups need resolving: with one capture group per
/// alternative, resolving them (a backtracking pass over each match) was most of the worker's
/// grouping time. Word boundaries are ASCII-only (`(?-u:\b)`), which keeps the regex on the fast
/// DFA engines.
static MESSAGE_RE: LazyLock<meta::Regex> = LazyLock::new(|| {
    meta::Regex::new_many(&message_patterns()).expect("the message patterns are valid regexes")
});

/// The patterns of [`MESSAGE_RE`], pattern `i` standing for `TOKENS[i]`.
fn message_patterns() -> Vec<String> {
    const B: &str = r"(?-u:\b)";
    const H: &str = "[0-9A-Fa-f]{1,4}";
    const UNITS: &str = "(?i:ms|us|µs|ns|sec|secs|s|min|mins|m|hrs|hr|h|days|day|d|kib|mib|gib|tib|kb|mb|gb|tb|b|px)";
    let alternatives = [
        // Email
        r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}{B}",
        // Url: trailing punctuation belongs to the sentence, not the URL.
        r#"[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>]*[^\s"'<>.,;:!?)\]}]"#,
        // Ipv4
        r"{B}[0-9]{1,3}(?:\.[0-9]{1,3}){3}{B}",
        // Ipv6: all eight groups, or compressed with `::` (optionally ending in an IPv4 address).
        // False friends like `Error::new` are rejected after matching (see `plausible_ipv6`).
        r"(?:{H}:){7}{H}|(?:{H}(?::{H}){0,6})?::(?:{H}(?::{H}){0,6})?(?:(?:\.[0-9]{1,3}){3})?",
        // Uuid
        r"{B}[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}{B}",
        // Sha1
        r"{B}[0-9A-Fa-f]{40}{B}",
        // Md5
        r"{B}[0-9A-Fa-f]{32}{B}",
        // Date: ISO 8601 / RFC 3339 (also `YYYY-MM-DD HH:MM:SS` and bare dates), RFC 2822,
        // bare times.
        concat!(
            "{B}(?:",
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?)?",
            "|",
            r"(?i:(?:mon|tue|wed|thu|fri|sat|sun),?[ \t]+)?[0-9]{1,2}[ \t]+(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[ \t]+[0-9]{4}(?:[ \t]+[0-9]{2}:[0-9]{2}(?::[0-9]{2})?(?:[ \t]+(?:[+-][0-9]{4}|UTC|UT|GMT|Z|[ECMP][SD]T))?)?",
            "|",
            r"[0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})?",
            "){B}"
        ),
        // Hex
        r"{B}0[xX][0-9A-Fa-f]+{B}",
        // Number: integers, floats and dotted runs, with an optional unit glued on (`500ms`).
        // The sign is handled when replacing, because a `-` in the pattern would start the match
        // one character earlier and so beat an IP address or a date that starts at the digit.
        r"{B}[0-9]+(?:\.[0-9]+)*(?:[eE][+-]?[0-9]+)?{UNITS}?{B}",
        // Quoted
        r#"=[ \t]*(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"#,
    ];
    debug_assert_eq!(alternatives.len(), TOKENS.len());
    alternatives
        .iter()
        .map(|a| {
            a.replace("{B}", B)
                .replace("{H}", H)
                .replace("{UNITS}", UNITS)
        })
        .collect()
}

/// Keeps the first two non-empty lines of a message (trimmed, joined with `\n`) and replaces
/// the parts that vary between occurrences of one problem with placeholders: `<email>`, `<url>`,
/// `<ip>`, `<uuid>`, `<sha1>`, `<md5>`, `<date>`, `<hex>`, `<float>`, `<int>` and `=<quoted>`.
/// Numbers are replaced as whole tokens only (`user123` and `v2` stay), a unit glued to a number
/// stays (`500ms` → `<int>ms`), and a leading `-` is dropped unless it joins two words
/// (`-7` → `<int>`, `2-7` → `<int>-<int>`).
///
/// Only the first [`MAX_MESSAGE_CHARS`] characters are read and the result is at most
/// [`MAX_NORMALIZED_MESSAGE_BYTES`] long.
pub fn normalize_message(message: &str) -> String {
    let head = truncate_chars(message, MAX_MESSAGE_CHARS);
    let lines: Vec<&str> = head
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(2)
        .collect();
    parameterise(&lines.join("\n"))
}

/// The single left-to-right pass behind [`normalize_message`].
fn parameterise(text: &str) -> String {
    let re = &*MESSAGE_RE;
    let mut out = Bounded::new(MAX_NORMALIZED_MESSAGE_BYTES);
    // `copied` is where the text not yet written starts; `search` where the next search starts
    // (they differ after a rejected match, whose text is then copied as it is).
    let mut copied = 0;
    let mut search = 0;
    while search <= text.len() {
        // The span keeps the text before `search` in view, so `\b` judges the match's start
        // by the character before it.
        let Some(m) = re.search(&Input::new(text).span(search..text.len())) else {
            break;
        };
        let (start, end) = (m.start(), m.end());
        let token = TOKENS.get(m.pattern().as_usize()).copied();
        let matched = &text[start..end];
        let reject =
            end == start || (token == Some(Token::Ipv6) && !plausible_ipv6(text, start, end));
        if reject {
            search = start + text[start..].chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let mut literal_end = start;
        if token == Some(Token::Number) && is_sign(text, copied, start) {
            literal_end = start - 1;
        }
        if !out.push(&text[copied..literal_end]) {
            return out.into_string();
        }
        let written = match token {
            Some(Token::Email) => out.push_whole("<email>"),
            Some(Token::Url) => out.push_whole("<url>"),
            Some(Token::Ipv4 | Token::Ipv6) => out.push_whole("<ip>"),
            Some(Token::Uuid) => out.push_whole("<uuid>"),
            Some(Token::Sha1) => out.push_whole("<sha1>"),
            Some(Token::Md5) => out.push_whole("<md5>"),
            Some(Token::Date) => out.push_whole("<date>"),
            Some(Token::Hex) => out.push_whole("<hex>"),
            Some(Token::Number) => out.push_whole(&number_placeholder(matched)),
            Some(Token::Quoted) => {
                let quote = matched.find(['"', '\'']).unwrap_or(matched.len());
                out.push_whole(&format!("{}<quoted>", &matched[..quote]))
            }
            None => out.push(matched),
        };
        if !written {
            return out.into_string();
        }
        copied = end;
        search = end;
    }
    out.push(&text[copied..]);
    out.into_string()
}

/// Whether the `-` right before a number at `start` is its sign (and not a dash joining two
/// words, as in `2-7` or `step-7`), provided it was not already written out.
fn is_sign(text: &str, copied: usize, start: usize) -> bool {
    start > copied
        && text[..start].ends_with('-')
        && !text[..start - 1]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// `<int>`, `<float>` or, for a dotted run like `1.2.3`, one `<int>` per part; a glued unit stays.
fn number_placeholder(matched: &str) -> String {
    let number = matched.trim_end_matches(char::is_alphabetic);
    let unit = &matched[number.len()..];
    let dots = number.matches('.').count();
    let exponent = number.contains(['e', 'E']);
    let placeholder = match (dots, exponent) {
        (0, false) => "<int>".to_string(),
        (0 | 1, _) => "<float>".to_string(),
        (n, _) => vec!["<int>"; n + 1].join("."),
    };
    placeholder + unit
}

/// The IPv6 alternative also matches Rust and C++ paths (`Error::new`, `Foo::bar2`); a real
/// address has a digit and stands on its own. (`a::b1` is a valid address, and is taken as one.)
fn plausible_ipv6(text: &str, start: usize, end: usize) -> bool {
    let joined = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    text[start..end].bytes().any(|b| b.is_ascii_digit())
        && !text[..start].chars().next_back().is_some_and(joined)
        && !text[end..].chars().next().is_some_and(joined)
}

/// A string builder that stops at a byte limit, never splitting a character or a placeholder.
struct Bounded {
    buf: String,
    limit: usize,
}

impl Bounded {
    fn new(limit: usize) -> Self {
        Self {
            buf: String::new(),
            limit,
        }
    }

    /// Appends as much of `s` as fits; false once the limit is reached.
    fn push(&mut self, s: &str) -> bool {
        let room = self.limit.saturating_sub(self.buf.len());
        if s.len() <= room {
            self.buf.push_str(s);
            true
        } else {
            self.buf.push_str(&s[..s.floor_char_boundary(room)]);
            false
        }
    }

    /// Appends all of `s` or nothing; false when it did not fit.
    fn push_whole(&mut self, s: &str) -> bool {
        if self.buf.len() + s.len() <= self.limit {
            self.buf.push_str(s);
            true
        } else {
            false
        }
    }

    fn into_string(self) -> String {
        self.buf
    }
}

fn truncate_chars(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ---------------------------------------------------------------------------------------------
// Stack traces
// ---------------------------------------------------------------------------------------------

fn compile(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a constant pattern is a valid regex")
}

/// Firefox and Safari: `fn@file:line:col`, `@file:line:col`, `global code@file:line:col`.
static FIREFOX_RE: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"^\s*(?P<func>[^@\s]*|global code|eval code|module code)@(?P<loc>\S.*?)\s*$")
});

/// Ruby: ``from file.rb:12:in `method'`` (3.4 quotes as `'method'`); the first line may carry the
/// message after the frame.
static RUBY_RE: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"^\s*(?:from\s+)?(?P<file>.+?):(?P<line>[0-9]+):in\s+[`'](?P<func>[^`']*)'(?::.*)?$")
});

/// PHP: `#0 /path/file.php(12): Class->method()`, `#1 [internal function]: fn()`, `#2 {main}`.
static PHP_RE: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"^\s*#[0-9]+\s+(?:(?:(?P<file>.+?)\((?P<line>[0-9]+)\)|\[internal function\]):\s*(?P<call>.+?)|(?P<main>\{main\}))\s*$",
    )
});

/// Rust backtrace function line: `  3: crate::module::func` (old format:
/// `  3: 0x55d4 - crate::module::func::h0123456789abcdef`).
static RUST_FN_RE: LazyLock<Regex> =
    LazyLock::new(|| compile(r"^\s*[0-9]+:\s+(?:0x[0-9a-fA-F]+\s+-\s+)?(?P<func>\S.*?)\s*$"));

/// Parse a free-text stack trace (JavaScript/V8 "at fn (file:line:col)" and "at file:line:col", Firefox "fn@file:line:col", Python 'File "x.py", line N, in fn', Java/Kotlin/C# "at pkg.Class.method(File.java:12)", Go "pkg.func(...)\n\t/path/file.go:12 +0x1d", Ruby "file.rb:12:in `method'", PHP "#0 /path/file.php(12): func()", Rust backtrace "  3: crate::module::func\n at src/x.rs:1:2") into frames. Lines that match nothing are ignored.
///
/// Frames come back outermost→innermost, the order Sentry sends structured frames in, so both
/// paths group alike: traces that print the innermost call first (all of the above but Python's)
/// are reversed. Traces longer than [`MAX_STACK_TRACE_BYTES`] are read from their head and tail.
pub fn parse_stack_trace(stack: &str) -> Vec<Frame> {
    let stack = bounded_stack(stack);
    let mut frames: Vec<Frame> = Vec::new();
    let mut python_frames = 0usize;
    // The frame of a Rust function line that its `at` line may complete.
    let mut rust_pending: Option<usize> = None;
    let mut lines = stack.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            rust_pending = None;
            continue;
        }
        if let Some(index) = rust_pending.take()
            && let Some(loc) = after_at(line)
        {
            let (file, lineno, colno) = split_location(loc);
            if let Some(frame) = frames.get_mut(index) {
                frame.filename = file.map(str::to_string);
                frame.lineno = lineno;
                frame.colno = colno;
            }
            continue;
        }
        let t = line.trim_start();
        let frame = if t.starts_with("File \"") {
            let frame = parse_python(line);
            python_frames += usize::from(frame.is_some());
            frame
        } else if t.starts_with("at ") || t.starts_with("at\t") {
            parse_at(line)
        } else if t.starts_with('#') {
            parse_php(line)
        } else if t.contains(":in ") {
            parse_ruby(line)
        } else if t.starts_with(|c: char| c.is_ascii_digit()) {
            let frame = parse_rust_fn(line);
            if frame.is_some() {
                rust_pending = Some(frames.len());
            }
            frame
        } else if t.contains('@') {
            parse_firefox(line)
        } else {
            // A Go frame is two lines: the function, then its location. Checking the cheap sign
            // of the second first keeps the regexes off the code lines of Python tracebacks.
            let frame = lines
                .peek()
                .filter(|next| next.contains(".go:") || next.contains(" +0x"))
                .and_then(|next| go_frame(line, next));
            if frame.is_some() {
                lines.next();
            }
            frame
        };
        frames.extend(frame);
    }
    if python_frames * 2 < frames.len() {
        frames.reverse();
    }
    frames
}

/// Head and tail of an over-long trace, cut at line ends.
fn bounded_stack(stack: &str) -> Cow<'_, str> {
    if stack.len() <= MAX_STACK_TRACE_BYTES {
        return Cow::Borrowed(stack);
    }
    let half = MAX_STACK_TRACE_BYTES / 2;
    let head = &stack[..stack.floor_char_boundary(half)];
    let head = head.rfind('\n').map_or(head, |i| &head[..i]);
    let tail = &stack[stack.ceil_char_boundary(stack.len() - half)..];
    let tail = tail.find('\n').map_or(tail, |i| &tail[i + 1..]);
    Cow::Owned(format!("{head}\n{tail}"))
}

/// Python: `File "x.py", line 12, in handler` (by hand, like [`parse_at`], for speed).
fn parse_python(line: &str) -> Option<Frame> {
    let rest = line.trim().strip_prefix("File \"")?;
    let (file, rest) = rest.split_once("\", line ")?;
    let (number, func) = match rest.split_once(", in ") {
        Some((number, func)) => (number, Some(func)),
        None => (rest, None),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(make_frame(
        None,
        func,
        Some(file),
        number.parse().ok(),
        None,
    ))
}

/// What follows `at ` on a line, if the line starts with it.
fn after_at(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix("at")?;
    let rest = rest.strip_prefix(char::is_whitespace)?.trim_start();
    (!rest.is_empty()).then_some(rest)
}

/// Lines starting with `at`: Java/Kotlin/C# (`at pkg.Class.method(args)`, no space before the
/// parenthesis), then V8 with a function (`at fn (file:line:col)`), then V8 without one
/// (`at file:line:col`). Parsed by hand rather than by regex: these are most lines of most
/// traces, and a capturing regex costs about a microsecond per line.
fn parse_at(line: &str) -> Option<Frame> {
    let rest = after_at(line)?;
    if let Some(frame) = parse_java(rest) {
        return Some(frame);
    }
    if let Some(inner) = rest.strip_suffix(')')
        && let Some(space) = inner.find(" (")
    {
        let mut func = inner[..space].trim();
        for prefix in ["async ", "new "] {
            func = func.strip_prefix(prefix).unwrap_or(func).trim_start();
        }
        let loc = &inner[space + 2..];
        let (file, lineno, colno) = match loc.strip_prefix("eval at ") {
            // `eval at outer (file:1:2), <anonymous>:3:4`: the evaluating file is what is stable.
            Some(rest) => match (rest.find('('), rest.find(')')) {
                (Some(open), Some(close)) if open < close => split_location(&rest[open + 1..close]),
                _ => (None, None, None),
            },
            None => split_location(loc),
        };
        return Some(make_frame(None, Some(func), file, lineno, colno));
    }
    let (file, lineno, colno) = split_location(rest);
    lineno?;
    Some(make_frame(None, None, file, lineno, colno))
}

/// Java and Kotlin: `pkg.Class.method(File.java:12)`, optionally followed by a `~[app.jar:1.0]`
/// note; C#: `Ns.Class.Method(String s) in C:\x\File.cs:line 12`.
fn parse_java(rest: &str) -> Option<Frame> {
    let open = rest.find('(')?;
    let func = &rest[..open];
    if func.is_empty() || func.contains(char::is_whitespace) {
        return None;
    }
    let after = &rest[open + 1..];
    let close = after.find(')')?;
    let args = &after[..close];
    let tail = after[close + 1..].trim();
    let (file, lineno) = if tail.is_empty() || tail.starts_with('[') || tail.starts_with("~[") {
        java_source(args)
    } else {
        let (file, line) = tail.strip_prefix("in ")?.rsplit_once(":line ")?;
        (Some(file.trim()), line.trim().parse().ok())
    };
    let (module, function) = split_java(strip_java_module_prefix(func));
    Some(make_frame(module, Some(&function), file, lineno, None))
}

/// `java.base/java.lang.Thread.run` and `app//com.example.Foo.bar` carry a module or class
/// loader name before the class; a lambda's hidden class (`Foo$$Lambda/0x…`) also has a `/`, but
/// after a `$`.
fn strip_java_module_prefix(func: &str) -> &str {
    match func.find('/') {
        Some(slash) if !func[..slash].contains('$') => {
            let rest = &func[slash + 1..];
            rest.strip_prefix('/').unwrap_or(rest)
        }
        _ => func,
    }
}

/// `com.example.Foo.bar` → (`com.example.Foo`, `bar`); C#'s `Foo..ctor` → (`Foo`, `.ctor`).
fn split_java(func: &str) -> (Option<&str>, String) {
    match func.rsplit_once('.') {
        Some((module, function)) if module.ends_with('.') => {
            (Some(module.trim_end_matches('.')), format!(".{function}"))
        }
        Some((module, function)) => (Some(module), function.to_string()),
        None => (None, func.to_string()),
    }
}

/// The parenthesised part of a Java frame: `File.java:12`, `File.java`, `Native Method`,
/// `Unknown Source`, or a C# parameter list.
fn java_source(args: &str) -> (Option<&str>, Option<u32>) {
    let args = args.trim();
    if args.is_empty() || args.contains([' ', ',']) || !args.contains('.') {
        return (None, None);
    }
    match args.rsplit_once(':') {
        Some((file, line)) => (Some(file), line.parse().ok()),
        None => (Some(args), None),
    }
}

fn parse_firefox(line: &str) -> Option<Frame> {
    let caps = FIREFOX_RE.captures(line)?;
    let (file, lineno, colno) = split_location(&caps["loc"]);
    // Without a line number this is not a frame but some text with an `@` in it.
    lineno?;
    let func = caps["func"].trim_start_matches("async*");
    Some(make_frame(None, Some(func), file, lineno, colno))
}

fn parse_ruby(line: &str) -> Option<Frame> {
    let caps = RUBY_RE.captures(line)?;
    Some(make_frame(
        None,
        Some(&caps["func"]),
        Some(&caps["file"]),
        caps["line"].parse().ok(),
        None,
    ))
}

fn parse_php(line: &str) -> Option<Frame> {
    let caps = PHP_RE.captures(line)?;
    if caps.name("main").is_some() {
        return Some(make_frame(None, Some("{main}"), None, None, None));
    }
    let call = caps.name("call").map_or("", |m| m.as_str());
    let name = call.find('(').map_or(call, |i| &call[..i]).trim();
    // `Class->method` or `Class::method`; both separators are two bytes long.
    let split = name.rfind("->").max(name.rfind("::"));
    let (module, function) = match split {
        Some(i) => (Some(&name[..i]), &name[i + 2..]),
        None => (None, name),
    };
    Some(make_frame(
        module,
        Some(function),
        caps.name("file").map(|m| m.as_str()),
        caps.name("line").and_then(|m| m.as_str().parse().ok()),
        None,
    ))
}

fn parse_rust_fn(line: &str) -> Option<Frame> {
    let caps = RUST_FN_RE.captures(line)?;
    let func = strip_rust_hash(&caps["func"]);
    let (module, function) = match rsplit_path(func, "::") {
        Some((module, function)) => (Some(module), function),
        None => (None, func),
    };
    Some(make_frame(module, Some(function), None, None, None))
}

/// A Go frame from a function line and the line after it, if they are one.
fn go_frame(func_line: &str, location_line: &str) -> Option<Frame> {
    let func = go_function(func_line)?;
    let (file, lineno) = go_location(location_line)?;
    // `github.com/org/repo/pkg.(*T).Method`: the package ends at the first `.` after the last `/`.
    let after_slash = func.rfind('/').map_or(0, |i| i + 1);
    let (module, function) = match func[after_slash..].find('.') {
        Some(dot) => (
            Some(&func[..after_slash + dot]),
            &func[after_slash + dot + 1..],
        ),
        None => (None, func),
    };
    Some(make_frame(module, Some(function), Some(file), lineno, None))
}

/// The function of a goroutine dump's function line: `pkg.func(args)` (arguments without
/// parentheses) or `created by pkg.func in goroutine 1`.
fn go_function(line: &str) -> Option<&str> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("created by ") {
        return rest.split_whitespace().next();
    }
    let inner = line.strip_suffix(')')?;
    let open = inner.rfind('(')?;
    let func = &inner[..open];
    let plain =
        !func.is_empty() && !func.contains(char::is_whitespace) && !inner[open + 1..].contains(')');
    plain.then_some(func)
}

/// A goroutine dump's location line: `\t/path/file.go:12 +0x1d` (the offset is optional, but
/// without it the file must be a `.go` file).
fn go_location(line: &str) -> Option<(&str, Option<u32>)> {
    let line = line.trim();
    let (location, offset) = match line.rsplit_once(" +0x") {
        Some((head, hex)) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (head.trim_end(), true)
        }
        _ => (line, false),
    };
    let (file, number) = location.rsplit_once(':')?;
    let valid = !file.is_empty()
        && !file.contains(char::is_whitespace)
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && (offset || file.ends_with(".go"));
    valid.then(|| (file, number.parse().ok()))
}

/// `file:line:col`, `file:line` or `file` (which may itself contain `:`, as URLs do).
fn split_location(loc: &str) -> (Option<&str>, Option<u32>, Option<u32>) {
    fn trailing_number(s: &str) -> Option<(&str, Option<u32>)> {
        let (head, tail) = s.rsplit_once(':')?;
        (!tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()))
            .then(|| (head, tail.parse().ok()))
    }
    let loc = loc.trim();
    let (file, lineno, colno) = match trailing_number(loc) {
        Some((rest, last)) => match trailing_number(rest) {
            Some((file, line)) => (file, line, last),
            None => (rest, last, None),
        },
        None => (loc, None, None),
    };
    // V8 writes `(native)`, `(<anonymous>)` or `(index 0)` where there is no file.
    let no_file = file.is_empty()
        || matches!(file, "native" | "<anonymous>")
        || (lineno.is_none() && file.contains(char::is_whitespace));
    let file = (!no_file).then_some(file);
    (file, lineno, colno)
}

fn make_frame(
    module: Option<&str>,
    function: Option<&str>,
    filename: Option<&str>,
    lineno: Option<u32>,
    colno: Option<u32>,
) -> Frame {
    let owned = |s: Option<&str>| {
        s.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Frame {
        module: owned(module),
        function: owned(function),
        filename: owned(filename),
        lineno,
        colno,
        in_app: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// Rust's symbol hash (`::h0123456789abcdef`) changes with every build.
static RUST_HASH_RE: LazyLock<Regex> = LazyLock::new(|| compile(r"::h[0-9a-f]{16}$"));

/// The numbered parts of Java class and method names, in one pass: a lambda's hidden class is
/// numbered per run (`$$Lambda$123/0x0000000800c0b040`, `$$Lambda/0x…` on JDK 21,
/// `$$Lambda$1/1915318863` on JDK 8), reflection accessors and proxies in the order they were
/// generated (`GeneratedMethodAccessor57`, `$Proxy12`), anonymous classes (`Foo$1`) and synthetic
/// lambda methods (`lambda$main$0`) in source order, which an unrelated edit shifts.
static JAVA_NUMBERED_RE: LazyLock<Regex> = LazyLock::new(|| {
    compile(
        r"\$\$Lambda(?:\$[0-9]+)?(?:/(?:0x)?[0-9a-fA-F]+)?|(?:GeneratedMethodAccessor|GeneratedConstructorAccessor|GeneratedSerializationConstructorAccessor|\$Proxy)[0-9]+|\$[0-9]+",
    )
});

/// Go closures are numbered in source order: `main.func1`, `Handler.func2.1`, `gowrap1`.
static GO_CLOSURE_RE: LazyLock<Regex> =
    LazyLock::new(|| compile(r"\.(func|gowrap|deferwrap)[0-9]+(?:\.[0-9]+)*"));

/// Memory addresses (`0x7fff5fbff8c0`, `+ 0x1d`) differ between runs.
static ADDRESS_RE: LazyLock<Regex> =
    LazyLock::new(|| compile(r"(?:\s*[+-]\s*)?(?-u:\b)0[xX][0-9a-fA-F]+(?-u:\b)"));

/// The normalised form of one frame used for grouping, or None when it carries nothing usable.
///
/// The form is `"{module_or_file_basename}:{function}"` (`?` for a missing side). Line and column
/// numbers are left out, as are the parts that change with every build or run rather than with
/// the code: memory addresses, Rust symbol hashes, the numbers of Java lambdas, anonymous classes
/// and generated accessors, of Go closures, and bundler hashes and query strings in file names.
pub fn normalize_frame(frame: &Frame) -> Option<String> {
    let module = frame
        .module
        .as_deref()
        .map(|m| scrub(truncate_chars(m, MAX_FRAME_INPUT_CHARS), false))
        .filter(|m| !m.is_empty());
    let location = module.or_else(|| {
        frame
            .filename
            .as_deref()
            .map(|f| file_basename(truncate_chars(f, MAX_FRAME_INPUT_CHARS)))
            .filter(|f| !f.is_empty())
    });
    let function = frame
        .function
        .as_deref()
        .map(|f| scrub(truncate_chars(f, MAX_FRAME_INPUT_CHARS), true))
        .filter(|f| !f.is_empty() && f != "?" && f != "<unknown>");
    if location.is_none() && function.is_none() {
        return None;
    }
    let location = location.as_deref().unwrap_or("?");
    let function = function.as_deref().unwrap_or("?");
    Some(format!(
        "{}:{}",
        truncate_chars(location, MAX_FRAME_PART_CHARS),
        truncate_chars(function, MAX_FRAME_PART_CHARS)
    ))
}

/// Removes the build- and run-specific parts of a module or function name. Each regex runs only
/// when a cheap check finds its marker: most names have none, and a regex call costs far more
/// than scanning a short name.
fn scrub(name: &str, is_function: bool) -> String {
    let mut s = Cow::Borrowed(name.trim());
    if has(&s, "::h") {
        s = Cow::Owned(strip_rust_hash(&s).to_string());
    }
    if has(&s, "$") || has(&s, "Generated") {
        s = Cow::Owned(generalise_java_numbers(&s));
    }
    if is_function && (has(&s, ".func") || has(&s, "wrap")) {
        s = Cow::Owned(GO_CLOSURE_RE.replace_all(&s, ".$1<n>").into_owned());
    }
    if has(&s, "0x") || has(&s, "0X") {
        s = Cow::Owned(ADDRESS_RE.replace_all(&s, "").into_owned());
    }
    s.trim().to_string()
}

/// Substring test without `str::contains`' searcher set-up, which dominates on short names.
fn has(haystack: &str, needle: &str) -> bool {
    !needle.is_empty()
        && haystack
            .as_bytes()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
}

/// Applies [`JAVA_NUMBERED_RE`] with `find_iter`, which needs no capture groups and so stays on
/// the regex crate's fastest engine.
fn generalise_java_numbers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    for m in JAVA_NUMBERED_RE.find_iter(s) {
        out.push_str(&s[copied..m.start()]);
        let matched = m.as_str();
        if matched.starts_with("$$Lambda") {
            out.push_str("$$Lambda");
        } else {
            out.push_str(matched.trim_end_matches(|c: char| c.is_ascii_digit()));
            out.push_str("<n>");
        }
        copied = m.end();
    }
    out.push_str(&s[copied..]);
    out
}

fn strip_rust_hash(name: &str) -> &str {
    match RUST_HASH_RE.find(name) {
        Some(m) => &name[..m.start()],
        None => name,
    }
}

/// Splits at the last `sep` outside `<…>`, so `core::ptr::drop_in_place<alloc::vec::Vec<u8>>`
/// splits before `drop_in_place` (the `>` of a `->` in a function type closes nothing).
fn rsplit_path<'a>(s: &'a str, sep: &str) -> Option<(&'a str, &'a str)> {
    let mut depth = 0i32;
    let mut split = None;
    for (i, c) in s.char_indices() {
        match c {
            '<' => depth += 1,
            '>' if !s[..i].ends_with('-') => depth -= 1,
            _ if depth == 0 && s[i..].starts_with(sep) => split = Some(i),
            _ => {}
        }
    }
    split.map(|i| (&s[..i], &s[i + sep.len()..]))
}

/// The file name without directories, query string, fragment or bundler content hash:
/// `https://cdn/assets/main.3f2a9c1b.js?v=123` → `main.js`, `index-BfXz12ab.js` → `index.js`.
fn file_basename(path: &str) -> String {
    let path = path.trim();
    let path = path.find(['?', '#']).map_or(path, |i| &path[..i]);
    let base = path.rsplit(['/', '\\']).next().unwrap_or(path);
    // Hashes sit in a middle segment (two dots or more) or after a `-`; most names have neither.
    if base.bytes().filter(|&b| b == b'.').count() < 2 && !base.contains('-') {
        return base.to_string();
    }
    let segments: Vec<&str> = base.split('.').collect();
    let last = segments.len() - 1;
    segments
        .iter()
        .enumerate()
        .filter(|&(i, seg)| i == 0 || i == last || !is_hex_hash(seg))
        .map(|(i, seg)| {
            if i == last && last > 0 {
                *seg
            } else {
                strip_dash_hash(seg)
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// webpack, Parcel and Next.js name chunks with a hex content hash (`main.3f2a9c1b.js`,
/// `page-3f2a9c1b2c3d4e5f.js`).
fn is_hex_hash(s: &str) -> bool {
    s.len() >= 8 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Strips a `-hash` suffix: hex of any length from 8, or Rollup/Vite's 8 characters of base64url
/// (`index-BfXz12ab`). The latter could be a word, so it must look random: a digit, or two capitals.
fn strip_dash_hash(seg: &str) -> &str {
    if let Some((stem, tail)) = seg.rsplit_once('-')
        && !stem.is_empty()
        && is_hex_hash(tail)
    {
        return stem;
    }
    let len = seg.len();
    if len > 9
        && seg.as_bytes()[len - 9] == b'-'
        && let (Some(stem), Some(hash)) = (seg.get(..len - 9), seg.get(len - 8..))
    {
        let base64url = hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let random_looking = hash.bytes().any(|b| b.is_ascii_digit())
            || hash.bytes().filter(u8::is_ascii_uppercase).count() >= 2;
        if base64url && random_looking {
            return stem;
        }
    }
    seg
}

// ---------------------------------------------------------------------------------------------
// Grouping
// ---------------------------------------------------------------------------------------------

/// The frames that decide the group: in-app ones when the client marked any, the innermost
/// [`MAX_FRAMES`] usable ones, outermost→innermost.
fn contributing_frames(frames: &[Frame]) -> Vec<String> {
    let any_in_app = frames.iter().any(|f| f.in_app == Some(true));
    let mut out: Vec<String> = frames
        .iter()
        .rev()
        .filter(|f| !any_in_app || f.in_app == Some(true))
        .filter_map(normalize_frame)
        .take(MAX_FRAMES)
        .collect();
    out.reverse();
    out
}

/// sha256 over length-prefixed fields, so no two different field lists hash the same input
/// (`["ab", "c"]` and `["a", "bc"]` differ). `kind` keeps the three kinds of fingerprint apart.
fn digest<'a>(kind: &str, source: &str, fields: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(GROUPING_VERSION.to_string().as_bytes());
    field(kind.as_bytes());
    field(source.as_bytes());
    for f in fields {
        field(f.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// `{{ default }}` in a client fingerprint, spelled with any case and spacing.
fn is_default_placeholder(item: &str) -> bool {
    item.trim()
        .strip_prefix("{{")
        .and_then(|s| s.strip_suffix("}}"))
        .is_some_and(|inner| inner.trim().eq_ignore_ascii_case("default"))
}

/// source: the event's source ("backend"); frames: structured frames if the client sent them (Sentry path), otherwise parsed from stack_trace; client_fingerprint: the event's optional `fingerprint` array.
///
/// Usable frames decide the group and the message does not (a message often embeds values our
/// placeholders miss); without any, the normalised message does. A non-empty client fingerprint
/// replaces both, with `{{ default }}` standing for what the group would otherwise have been.
pub fn compute(
    source: &str,
    message: &str,
    stack_trace: Option<&str>,
    frames: Option<&[Frame]>,
    client_fingerprint: Option<&[String]>,
) -> Grouping {
    let normalized_message = normalize_message(message);
    let parsed: Vec<Frame>;
    let frames = match frames {
        Some(frames) if !frames.is_empty() => frames,
        _ => {
            parsed = stack_trace.map(parse_stack_trace).unwrap_or_default();
            &parsed
        }
    };
    let frames = contributing_frames(frames);
    let default = if frames.is_empty() {
        digest("message", source, [normalized_message.as_str()])
    } else {
        digest("frames", source, frames.iter().map(String::as_str))
    };
    let (fingerprint, custom) = match client_fingerprint {
        Some(items) if !items.is_empty() => {
            let items = items.iter().map(|item| {
                if is_default_placeholder(item) {
                    default.as_str()
                } else {
                    item.as_str()
                }
            });
            (digest("custom", source, items), true)
        }
        _ => (default, false),
    };
    Grouping {
        fingerprint,
        normalized_message,
        frames,
        version: GROUPING_VERSION,
        custom,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(module: Option<&str>, function: Option<&str>, filename: Option<&str>) -> Frame {
        Frame {
            module: module.map(str::to_string),
            function: function.map(str::to_string),
            filename: filename.map(str::to_string),
            ..Frame::default()
        }
    }

    fn in_app(mut f: Frame, in_app: bool) -> Frame {
        f.in_app = Some(in_app);
        f
    }

    fn normalized(frames: &[Frame]) -> Vec<String> {
        frames.iter().filter_map(normalize_frame).collect()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    // --- messages ------------------------------------------------------------------------------

    #[test]
    fn only_the_first_two_non_empty_lines_are_kept_trimmed() {
        assert_eq!(
            normalize_message("\n  first line  \n\n\t second line\r\nthird line\n"),
            "first line\nsecond line"
        );
        assert_eq!(normalize_message("   \n \n"), "");
    }

    #[test]
    fn emails_become_a_placeholder() {
        assert_eq!(
            normalize_message("no account for jane.doe+test@example.co.uk, sorry"),
            "no account for <email>, sorry"
        );
    }

    #[test]
    fn urls_become_a_placeholder_without_trailing_punctuation() {
        assert_eq!(
            normalize_message("GET https://api.example.com:8443/v1/users/42?x=1 failed."),
            "GET <url> failed."
        );
        assert_eq!(normalize_message("(see http://10.0.0.1/x)"), "(see <url>)");
    }

    #[test]
    fn ipv4_addresses_become_a_placeholder() {
        assert_eq!(
            normalize_message("connect to 192.168.1.20:5432 refused"),
            "connect to <ip>:<int> refused"
        );
    }

    #[test]
    fn ipv6_addresses_become_a_placeholder() {
        assert_eq!(
            normalize_message("from ::1 and fe80::1ff:fe23:4567:890a"),
            "from <ip> and <ip>"
        );
        assert_eq!(
            normalize_message("peer 2001:0db8:85a3:0000:0000:8a2e:0370:7334 gone"),
            "peer <ip> gone"
        );
        assert_eq!(
            normalize_message("mapped ::ffff:192.0.2.128"),
            "mapped <ip>"
        );
    }

    #[test]
    fn rust_and_cpp_paths_are_not_mistaken_for_ipv6() {
        assert_eq!(
            normalize_message(
                "`Option::unwrap()` on Error::new in crate::v1::api, Foo::bar2, std::vector"
            ),
            "`Option::unwrap()` on Error::new in crate::v1::api, Foo::bar2, std::vector"
        );
        // Short forms that are valid addresses are still addresses.
        assert_eq!(normalize_message("a::b1"), "<ip>");
    }

    #[test]
    fn uuids_become_a_placeholder() {
        assert_eq!(
            normalize_message("order 0191F3A2-7C4E-7B1A-9D2E-3F4A5B6C7D8E not found"),
            "order <uuid> not found"
        );
    }

    #[test]
    fn sha1_hashes_become_a_placeholder() {
        assert_eq!(
            normalize_message("commit da39a3ee5e6b4b0d3255bfef95601890afd80709 missing"),
            "commit <sha1> missing"
        );
    }

    #[test]
    fn md5_hashes_become_a_placeholder() {
        assert_eq!(
            normalize_message("etag d41d8cd98f00b204e9800998ecf8427e mismatch"),
            "etag <md5> mismatch"
        );
    }

    #[test]
    fn iso_8601_and_rfc_3339_timestamps_become_a_date() {
        for ts in [
            "2025-08-29T12:00:00Z",
            "2025-08-29T12:00:00.123456+02:00",
            "2025-08-29t12:00:00,5-0700",
            "2025-08-29 12:00:00",
            "2025-08-29",
        ] {
            assert_eq!(
                normalize_message(&format!("expired at {ts}.")),
                "expired at <date>.",
                "{ts}"
            );
        }
    }

    #[test]
    fn rfc_2822_dates_become_a_date() {
        assert_eq!(
            normalize_message("Date: Fri, 29 Aug 2025 12:00:00 +0000 rejected"),
            "Date: <date> rejected"
        );
        assert_eq!(normalize_message("on 1 Sep 2025 10:15 GMT"), "on <date>");
    }

    #[test]
    fn bare_times_become_a_date() {
        assert_eq!(
            normalize_message("job at 12:00:00 and 7:30 and 23:59:59.999Z"),
            "job at <date> and <date> and <date>"
        );
    }

    #[test]
    fn hex_literals_become_a_placeholder() {
        assert_eq!(
            normalize_message("segfault at 0x7fff5fbff8c0 code 0XDEAD"),
            "segfault at <hex> code <hex>"
        );
    }

    #[test]
    fn floats_become_a_placeholder() {
        assert_eq!(
            normalize_message("ratio 0.75 above -1.5 and 6.02e23"),
            "ratio <float> above <float> and <float>"
        );
    }

    #[test]
    fn integers_become_a_placeholder_only_as_whole_tokens() {
        assert_eq!(
            normalize_message("user123 v2 got 42 rows, id=42, x_7 and 3f2a"),
            "user123 v2 got <int> rows, id=<int>, x_7 and 3f2a"
        );
    }

    #[test]
    fn a_minus_sign_is_dropped_but_a_dash_between_words_is_kept() {
        assert_eq!(normalize_message("-7 and x=-3"), "<int> and x=<int>");
        assert_eq!(
            normalize_message("pages 2-7 of step-9"),
            "pages <int>-<int> of step-<int>"
        );
    }

    #[test]
    fn a_unit_glued_to_a_number_is_kept() {
        assert_eq!(
            normalize_message("timeout after 500ms (limit 2.5s, 10MB)"),
            "timeout after <int>ms (limit <float>s, <int>MB)"
        );
    }

    #[test]
    fn dotted_version_numbers_become_one_int_per_part() {
        assert_eq!(normalize_message("needs 1.2.3"), "needs <int>.<int>.<int>");
    }

    #[test]
    fn quoted_values_after_an_equals_sign_become_a_placeholder() {
        assert_eq!(
            normalize_message(r#"bad key="a b \"c\"" and name='x@y.com' kept "here""#),
            r#"bad key=<quoted> and name=<quoted> kept "here""#
        );
    }

    #[test]
    fn earlier_rules_win_where_two_could_match() {
        // E-mail over integer, URL over IP, IP over float, UUID over integers, sha1 over integer,
        // date over integers, hex over integer.
        assert_eq!(normalize_message("42@example.com"), "<email>");
        assert_eq!(normalize_message("http://1.2.3.4/"), "<url>");
        assert_eq!(normalize_message("1.2.3.4"), "<ip>");
        assert_eq!(
            normalize_message("12345678-1234-1234-1234-123456789012"),
            "<uuid>"
        );
        assert_eq!(normalize_message(&"1".repeat(40)), "<sha1>");
        assert_eq!(normalize_message(&"1".repeat(32)), "<md5>");
        assert_eq!(
            normalize_message("backup-2025-08-29 done"),
            "backup-<date> done"
        );
        assert_eq!(normalize_message("0x10"), "<hex>");
    }

    #[test]
    fn only_the_first_1024_characters_are_read() {
        let message = format!("{}é tail", "é".repeat(MAX_MESSAGE_CHARS - 1));
        let out = normalize_message(&message);
        assert_eq!(out.chars().count(), MAX_MESSAGE_CHARS);
        assert!(!out.contains("tail"));
    }

    #[test]
    fn the_normalised_message_is_bounded_even_when_placeholders_grow_it() {
        let message = "1 ".repeat(2000);
        let out = normalize_message(&message);
        assert!(out.len() <= MAX_NORMALIZED_MESSAGE_BYTES);
        assert!(
            out.ends_with("<int>") || out.ends_with(' '),
            "no split placeholder: {out}"
        );
    }

    // --- stack traces ------------------------------------------------------------------------------

    #[test]
    fn v8_frames_are_parsed_with_and_without_a_function() {
        let stack = "TypeError: Cannot read properties of undefined (reading 'id')\n    at Object.<anonymous> (/app/src/db.js:10:5)\n    at async Promise.all (index 0)\n    at new Repo (file:///app/repo.mjs:3:9)\n    at /app/src/index.js:99:1\n    at <anonymous>";
        assert_eq!(
            normalized(&parse_stack_trace(stack)),
            [
                "index.js:?",
                "repo.mjs:Repo",
                "?:Promise.all",
                "db.js:Object.<anonymous>"
            ]
        );
        let frames = parse_stack_trace(stack);
        assert_eq!(frames[3].lineno, Some(10));
        assert_eq!(frames[3].colno, Some(5));
        assert_eq!(frames[3].filename.as_deref(), Some("/app/src/db.js"));
    }

    #[test]
    fn firefox_and_safari_frames_are_parsed() {
        let stack = "handleClick@https://example.com/assets/main.3f2a9c1b.js:1:2345\n@https://example.com/x.js?v=123:7:1\nasync*load@http://localhost:8080/app.js:4:2\nglobal code@http://localhost/y.js:1:1\nfailed for user@host";
        assert_eq!(
            normalized(&parse_stack_trace(stack)),
            [
                "y.js:global code",
                "app.js:load",
                "x.js:?",
                "main.js:handleClick"
            ]
        );
    }

    #[test]
    fn python_tracebacks_are_parsed_in_their_own_order() {
        let stack = "Traceback (most recent call last):\n  File \"/srv/app/main.py\", line 12, in <module>\n    run()\n  File \"/srv/app/db.py\", line 40, in query\n    raise ValueError(x)\nValueError: boom";
        let frames = parse_stack_trace(stack);
        assert_eq!(normalized(&frames), ["main.py:<module>", "db.py:query"]);
        assert_eq!(frames[1].lineno, Some(40));
    }

    #[test]
    fn java_and_kotlin_frames_are_parsed() {
        let stack = "java.lang.IllegalStateException: boom\n\tat com.example.Repo.find(Repo.java:42) ~[app.jar:1.0]\n\tat com.example.Service$1.run(Service.kt:7)\n\tat java.base/java.lang.Thread.run(Thread.java:833)\n\tat jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)\nCaused by: x\n\t... 3 more";
        let frames = parse_stack_trace(stack);
        assert_eq!(
            normalized(&frames),
            [
                "jdk.internal.reflect.NativeMethodAccessorImpl:invoke0",
                "java.lang.Thread:run",
                "com.example.Service$<n>:run",
                "com.example.Repo:find",
            ]
        );
        assert_eq!(frames[3].filename.as_deref(), Some("Repo.java"));
        assert_eq!(frames[3].lineno, Some(42));
        assert_eq!(frames[0].filename, None);
    }

    #[test]
    fn csharp_frames_are_parsed() {
        let stack = "System.Exception: boom\n   at MyApp.Orders.Load(Int32 id, String name) in C:\\src\\Orders.cs:line 17\n   at MyApp.Orders..ctor()";
        let frames = parse_stack_trace(stack);
        assert_eq!(
            normalized(&frames),
            ["MyApp.Orders:.ctor", "MyApp.Orders:Load"]
        );
        assert_eq!(frames[1].filename.as_deref(), Some("C:\\src\\Orders.cs"));
        assert_eq!(frames[1].lineno, Some(17));
    }

    #[test]
    fn go_goroutine_dumps_are_parsed() {
        let stack = "panic: boom\n\ngoroutine 1 [running]:\nmain.main.func1(0x0)\n\t/tmp/x.go:8 +0x1d\ngithub.com/org/repo/pkg.(*Store).Get(...)\n\t/go/src/github.com/org/repo/pkg/store.go:10\nmain.main()\n\t/tmp/x.go:12 +0x25\ncreated by main.start in goroutine 1\n\t/tmp/x.go:5 +0x3c\nnot(a frame)\nexit status 2";
        let frames = parse_stack_trace(stack);
        assert_eq!(
            normalized(&frames),
            [
                "main:start",
                "main:main",
                "github.com/org/repo/pkg:(*Store).Get",
                "main:main.func<n>",
            ]
        );
        assert_eq!(frames[3].lineno, Some(8));
    }

    #[test]
    fn ruby_backtraces_are_parsed() {
        let stack = "app/models/user.rb:12:in `save!': invalid (RuntimeError)\n\tfrom app/controllers/users_controller.rb:30:in `block in create'\n\tfrom /gems/x.rb:5:in 'Foo#bar'";
        assert_eq!(
            normalized(&parse_stack_trace(stack)),
            [
                "x.rb:Foo#bar",
                "users_controller.rb:block in create",
                "user.rb:save!"
            ]
        );
    }

    #[test]
    fn php_traces_are_parsed() {
        let stack = "#0 /var/www/src/Repo.php(12): App\\Repo->find(42)\n#1 [internal function]: App\\Http\\Controller::index(Object(Request))\n#2 /var/www/index.php(5): handle()\n#3 {main}";
        assert_eq!(
            normalized(&parse_stack_trace(stack)),
            [
                "?:{main}",
                "index.php:handle",
                "App\\Http\\Controller:index",
                "App\\Repo:find"
            ]
        );
    }

    #[test]
    fn rust_backtraces_are_parsed() {
        let stack = "thread 'main' panicked at src/main.rs:2:5:\nboom\nstack backtrace:\n   0: rust_begin_unwind\n             at /rustc/abc/library/std/src/panicking.rs:652:5\n   1: app::db::query::h0123456789abcdef\n             at src/db.rs:10:9\n   2: core::ptr::drop_in_place<alloc::vec::Vec<u8>>\n   3:     0x55d4a0c0 - <T as app::Handler>::call::hfedcba9876543210\n   4: <fn() -> u8 as core::ops::FnOnce<()>>::call_once\nnote: Some details are omitted";
        let frames = parse_stack_trace(stack);
        assert_eq!(
            normalized(&frames),
            [
                "<fn() -> u8 as core::ops::FnOnce<()>>:call_once",
                "<T as app::Handler>:call",
                "core::ptr:drop_in_place<alloc::vec::Vec<u8>>",
                "app::db:query",
                "panicking.rs:rust_begin_unwind",
            ]
        );
        assert_eq!(frames[3].filename.as_deref(), Some("src/db.rs"));
        assert_eq!(frames[3].colno, Some(9));
    }

    #[test]
    fn lines_that_match_nothing_are_ignored() {
        assert!(parse_stack_trace("Error: boom\nsomething happened at noon\n\n...").is_empty());
        assert!(parse_stack_trace("").is_empty());
    }

    #[test]
    fn an_over_long_trace_is_read_from_its_head_and_tail() {
        let filler = "x".repeat(100);
        let mut stack = String::from("    at inner (/app/a.js:1:1)\n");
        while stack.len() < 3 * MAX_STACK_TRACE_BYTES {
            stack.push_str(&filler);
            stack.push('\n');
        }
        stack.push_str("    at outer (/app/b.js:1:1)\n");
        assert_eq!(
            normalized(&parse_stack_trace(&stack)),
            ["b.js:outer", "a.js:inner"]
        );
    }

    // --- frames ------------------------------------------------------------------------------------

    #[test]
    fn a_frame_keeps_its_module_and_function_but_not_its_position() {
        let mut f = frame(Some("app.db"), Some("query"), Some("app/db.py"));
        f.lineno = Some(12);
        f.colno = Some(4);
        assert_eq!(normalize_frame(&f).as_deref(), Some("app.db:query"));
    }

    #[test]
    fn a_frame_without_a_module_uses_its_file_basename() {
        let f = frame(None, Some("query"), Some("/srv/app/lib/db.js"));
        assert_eq!(normalize_frame(&f).as_deref(), Some("db.js:query"));
        let f = frame(None, Some("Load"), Some("C:\\src\\Orders.cs"));
        assert_eq!(normalize_frame(&f).as_deref(), Some("Orders.cs:Load"));
    }

    #[test]
    fn a_missing_function_becomes_a_question_mark() {
        let f = frame(None, None, Some("/app/db.js"));
        assert_eq!(normalize_frame(&f).as_deref(), Some("db.js:?"));
        let f = frame(None, Some("<unknown>"), Some("/app/db.js"));
        assert_eq!(normalize_frame(&f).as_deref(), Some("db.js:?"));
    }

    #[test]
    fn a_frame_with_nothing_usable_is_dropped() {
        assert_eq!(normalize_frame(&Frame::default()), None);
        let f = frame(Some("  "), Some("0x7fff5fbff8c0"), Some(""));
        assert_eq!(normalize_frame(&f), None);
    }

    #[test]
    fn rust_symbol_hashes_are_dropped() {
        let f = frame(Some("app::db"), Some("query::h0123456789abcdef"), None);
        assert_eq!(normalize_frame(&f).as_deref(), Some("app::db:query"));
    }

    #[test]
    fn java_lambdas_generated_classes_and_anonymous_classes_are_generalised() {
        for module in [
            "com.example.Foo$$Lambda$123/0x0000000800c0b040",
            "com.example.Foo$$Lambda/0x000001f0c1012345",
            "com.example.Foo$$Lambda$1/1915318863",
        ] {
            let f = frame(Some(module), Some("apply"), None);
            assert_eq!(
                normalize_frame(&f).as_deref(),
                Some("com.example.Foo$$Lambda:apply")
            );
        }
        let f = frame(Some("com.example.Foo$1$12"), Some("lambda$main$0"), None);
        assert_eq!(
            normalize_frame(&f).as_deref(),
            Some("com.example.Foo$<n>$<n>:lambda$main$<n>")
        );
        let f = frame(
            Some("jdk.internal.reflect.GeneratedMethodAccessor57"),
            Some("invoke"),
            None,
        );
        assert_eq!(
            normalize_frame(&f).as_deref(),
            Some("jdk.internal.reflect.GeneratedMethodAccessor<n>:invoke")
        );
        let f = frame(Some("jdk.proxy2.$Proxy12"), Some("save"), None);
        assert_eq!(
            normalize_frame(&f).as_deref(),
            Some("jdk.proxy2.$Proxy<n>:save")
        );
    }

    #[test]
    fn go_closures_are_generalised() {
        let f = frame(Some("main"), Some("main.func1"), None);
        assert_eq!(normalize_frame(&f).as_deref(), Some("main:main.func<n>"));
        let f = frame(Some("main"), Some("(*Server).Serve.func12.3"), None);
        assert_eq!(
            normalize_frame(&f).as_deref(),
            Some("main:(*Server).Serve.func<n>")
        );
        let f = frame(Some("main"), Some("main.gowrap2"), None);
        assert_eq!(normalize_frame(&f).as_deref(), Some("main:main.gowrap<n>"));
        // A JavaScript function that happens to be called func1 is left alone.
        let f = frame(None, Some("func1"), Some("a.js"));
        assert_eq!(normalize_frame(&f).as_deref(), Some("a.js:func1"));
    }

    #[test]
    fn bundler_hashes_and_query_strings_are_dropped_from_file_names() {
        for (path, base) in [
            (
                "https://cdn.example.com/static/js/main.3f2a9c1b.js",
                "main.js",
            ),
            ("/assets/main.3f2a9c1b.chunk.js", "main.chunk.js"),
            ("/assets/index-BfXz12ab.js", "index.js"),
            ("/assets/index-4f2a9c1b.js", "index.js"),
            ("/_next/static/chunks/page-3f2a9c1b2c3d4e5f.js", "page.js"),
            ("/app/db.js?v=123", "db.js"),
            ("/app/db.js#L10", "db.js"),
            ("/app/use-settings.js", "use-settings.js"),
            ("/app/.eslintrc.js", ".eslintrc.js"),
            ("webpack:///./src/db.js", "db.js"),
        ] {
            assert_eq!(file_basename(path), base, "{path}");
        }
    }

    #[test]
    fn memory_addresses_are_dropped() {
        let f = frame(Some("libfoo"), Some("do_work + 0x1d"), None);
        assert_eq!(normalize_frame(&f).as_deref(), Some("libfoo:do_work"));
    }

    #[test]
    fn a_huge_frame_name_is_cut() {
        let f = frame(Some(&"m".repeat(10_000)), Some(&"f".repeat(10_000)), None);
        let s = normalize_frame(&f).unwrap_or_default();
        assert_eq!(s.len(), 2 * MAX_FRAME_PART_CHARS + 1);
    }

    // --- grouping ----------------------------------------------------------------------------------

    #[test]
    fn frames_decide_the_group_and_the_message_does_not() {
        let stack = "Error\n    at query (/app/db.js:10:5)\n    at main (/app/index.js:1:1)";
        let a = compute(
            "backend",
            "connection reset by peer",
            Some(stack),
            None,
            None,
        );
        let b = compute("backend", "totally different text", Some(stack), None, None);
        assert_eq!(a.fingerprint, b.fingerprint);
        let moved = "Error\n    at query (/app/db.js:99:1)\n    at main (/app/index.js:7:7)";
        let c = compute("backend", "x", Some(moved), None, None);
        assert_eq!(a.fingerprint, c.fingerprint);
        let other = "Error\n    at insert (/app/db.js:10:5)\n    at main (/app/index.js:1:1)";
        let d = compute(
            "backend",
            "connection reset by peer",
            Some(other),
            None,
            None,
        );
        assert_ne!(a.fingerprint, d.fingerprint);
    }

    #[test]
    fn without_frames_the_normalised_message_decides() {
        let a = compute("backend", "user 1 not found", None, None, None);
        let b = compute(
            "backend",
            "user 2 not found",
            Some("no frames here"),
            Some(&[]),
            None,
        );
        let c = compute("backend", "order 1 not found", None, None, None);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        assert!(a.frames.is_empty());
    }

    #[test]
    fn the_source_is_part_of_the_fingerprint() {
        let a = compute("backend", "boom", None, None, None);
        let b = compute("frontend", "boom", None, None, None);
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn structured_frames_take_precedence_over_the_stack_trace() {
        let frames = [frame(None, Some("query"), Some("db.js"))];
        let stack = "Error\n    at other (/app/x.js:1:1)";
        let g = compute("backend", "boom", Some(stack), Some(&frames), None);
        assert_eq!(g.frames, ["db.js:query"]);
    }

    #[test]
    fn only_in_app_frames_count_when_any_frame_is_in_app() {
        let frames = [
            in_app(frame(Some("django.core"), Some("handle"), None), false),
            in_app(frame(Some("app.views"), Some("index"), None), true),
            frame(Some("app.util"), Some("helper"), None),
            in_app(frame(Some("psycopg"), Some("execute"), None), false),
        ];
        let g = compute("backend", "boom", None, Some(&frames), None);
        assert_eq!(g.frames, ["app.views:index"]);
    }

    #[test]
    fn all_frames_count_when_none_is_in_app() {
        let frames = [
            in_app(frame(Some("django.core"), Some("handle"), None), false),
            frame(Some("app.views"), Some("index"), None),
        ];
        let g = compute("backend", "boom", None, Some(&frames), None);
        assert_eq!(g.frames, ["django.core:handle", "app.views:index"]);
    }

    #[test]
    fn only_the_innermost_30_frames_count() {
        let frames: Vec<Frame> = (0..45)
            .map(|i| frame(Some(&format!("m{i}")), Some("f"), None))
            .collect();
        let g = compute("backend", "boom", None, Some(&frames), None);
        assert_eq!(g.frames.len(), MAX_FRAMES);
        assert_eq!(g.frames[0], "m15:f");
        assert_eq!(g.frames[29], "m44:f");
        let mut outer_changed = frames.clone();
        outer_changed[0].function = Some("other".into());
        let h = compute("backend", "boom", None, Some(&outer_changed), None);
        assert_eq!(g.fingerprint, h.fingerprint);
    }

    #[test]
    fn a_parsed_trace_and_the_same_structured_frames_group_alike() {
        let stack = "Error: boom\n    at query (/app/db.js:10:5)\n    at main (/app/index.js:1:1)";
        let frames = [
            frame(None, Some("main"), Some("/app/index.js")),
            frame(None, Some("query"), Some("/app/db.js")),
        ];
        let parsed = compute("backend", "boom", Some(stack), None, None);
        let structured = compute("backend", "boom", None, Some(&frames), None);
        assert_eq!(parsed.fingerprint, structured.fingerprint);
        assert_eq!(parsed.frames, ["index.js:main", "db.js:query"]);
    }

    #[test]
    fn a_client_fingerprint_replaces_the_default() {
        let custom = strings(&["payments", "stripe-timeout"]);
        let a = compute("backend", "user 1", None, None, Some(&custom));
        let b = compute(
            "backend",
            "something else",
            Some("    at x (/a.js:1:1)"),
            None,
            Some(&custom),
        );
        assert!(a.custom && b.custom);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(
            a.fingerprint,
            compute("backend", "user 1", None, None, None).fingerprint
        );
        assert_eq!(a.normalized_message, "user <int>");
        assert_eq!(b.frames, ["a.js:x"]);
    }

    #[test]
    fn the_default_placeholder_in_a_client_fingerprint_stands_for_the_default_fingerprint() {
        let spellings = [
            "{{ default }}",
            "{{default}}",
            " {{  DEFAULT }} ",
            "{{Default }}",
        ];
        let fingerprints: Vec<String> = spellings
            .iter()
            .map(|s| {
                let custom = strings(&[s, "tenant-a"]);
                compute("backend", "user 1 failed", None, None, Some(&custom)).fingerprint
            })
            .collect();
        assert!(fingerprints.windows(2).all(|w| w[0] == w[1]));
        // Still split by what the default would have been...
        let other = strings(&["{{ default }}", "tenant-a"]);
        let other = compute("backend", "order 1 failed", None, None, Some(&other));
        assert_ne!(fingerprints[0], other.fingerprint);
        // ...and by the other items.
        let tenant_b = strings(&["{{ default }}", "tenant-b"]);
        let tenant_b = compute("backend", "user 1 failed", None, None, Some(&tenant_b));
        assert_ne!(fingerprints[0], tenant_b.fingerprint);
        // `{{ default }}` is not the literal text.
        let literal = strings(&["{{ defaults }}", "tenant-a"]);
        let literal = compute("backend", "user 1 failed", None, None, Some(&literal));
        assert_ne!(fingerprints[0], literal.fingerprint);
    }

    #[test]
    fn an_empty_client_fingerprint_is_ignored() {
        let g = compute("backend", "boom", None, None, Some(&[]));
        assert!(!g.custom);
        assert_eq!(
            g.fingerprint,
            compute("backend", "boom", None, None, None).fingerprint
        );
    }

    #[test]
    fn hashed_fields_cannot_run_into_each_other() {
        let a = compute("backend", "x", None, None, Some(&strings(&["ab", "c"])));
        let b = compute("backend", "x", None, None, Some(&strings(&["a", "bc"])));
        let c = compute("backend", "x", None, None, Some(&strings(&["abc"])));
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        // A message that reads like a frame list does not collide with that frame list.
        let frames = [frame(None, Some("query"), Some("db.js"))];
        let by_frames = compute("backend", "", None, Some(&frames), None);
        let by_message = compute("backend", "db.js:query", None, None, None);
        assert_ne!(by_frames.fingerprint, by_message.fingerprint);
    }

    #[test]
    fn the_grouping_carries_message_frames_version_and_a_sha256_hex_fingerprint() {
        let stack = "Error\n    at query (/app/db.js:10:5)";
        let g = compute(
            "backend",
            "user 42 failed\nat step 3\nmore",
            Some(stack),
            None,
            None,
        );
        assert_eq!(g.normalized_message, "user <int> failed\nat step <int>");
        assert_eq!(g.frames, ["db.js:query"]);
        assert_eq!(g.version, GROUPING_VERSION);
        assert!(!g.custom);
        assert_eq!(g.fingerprint.len(), 64);
        assert!(
            g.fingerprint
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    // --- properties --------------------------------------------------------------------------------

    /// Numbers glued to words or to each other (`v2`, `10:30`, `1.2.3.4`) are not meant to be
    /// stable; these templates keep every number a token of its own.
    const TEMPLATES: &[&str] = &[
        "user {} failed at step {}",
        "order {} not found (retry {} of {})",
        "timeout after {}ms talking to shard {}",
        "id={} status={} attempts: {}",
        "balance is -{} after {} transfers",
        "took {}.{} seconds\nqueue depth {}",
    ];

    fn fill(template: &str, numbers: &[u64]) -> String {
        let mut out = String::new();
        let mut numbers = numbers.iter().cycle();
        for (i, part) in template.split("{}").enumerate() {
            if i > 0 {
                out.push_str(&numbers.next().copied().unwrap_or(0).to_string());
            }
            out.push_str(part);
        }
        out
    }

    /// Lines that look like the formats the parser knows, with arbitrary parts, mixed with junk.
    fn stack_line() -> impl Strategy<Value = String> {
        let part = "[^\n]{0,20}";
        prop_oneof![
            (part, part, any::<u32>(), any::<u32>())
                .prop_map(|(f, p, l, c)| format!("    at {f} ({p}:{l}:{c})")),
            (part, any::<u32>()).prop_map(|(p, l)| format!("    at {p}:{l}:1")),
            (part, part, any::<u32>()).prop_map(|(f, p, l)| format!("{f}@{p}:{l}:3")),
            (part, any::<u32>(), part)
                .prop_map(|(p, l, f)| format!("  File \"{p}\", line {l}, in {f}")),
            (part, part).prop_map(|(f, a)| format!("\tat {f}({a})")),
            (part, part).prop_map(|(f, p)| format!("{f}(...)\n\t{p}.go:12 +0x1d")),
            (part, part).prop_map(|(p, f)| format!("{p}:12:in `{f}'")),
            (part, part).prop_map(|(p, f)| format!("#0 {p}(12): {f}()")),
            (part, part).prop_map(|(f, p)| format!("  3: {f}\n      at {p}:1:2")),
            "\\PC{0,40}",
        ]
    }

    /// The message patterns as one alternation with a capture group each: how [`MESSAGE_RE`] was
    /// built for grouping version 1. Compiled once, not for every generated case.
    static ALTERNATION: LazyLock<Regex> = LazyLock::new(|| {
        let groups: Vec<String> = message_patterns()
            .iter()
            .map(|p| format!("({p})"))
            .collect();
        Regex::new(&groups.join("|")).unwrap()
    });

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn compute_is_deterministic(
            message in "\\PC{0,200}",
            stack in proptest::collection::vec(stack_line(), 0..20),
            custom in proptest::option::of(proptest::collection::vec("\\PC{0,10}|\\{\\{ ?default ?\\}\\}", 0..4)),
        ) {
            let stack = stack.join("\n");
            let a = compute("backend", &message, Some(&stack), None, custom.as_deref());
            let b = compute("backend", &message, Some(&stack), None, custom.as_deref());
            prop_assert_eq!(a, b);
        }

        #[test]
        fn the_fingerprint_is_stable_when_the_numbers_in_the_message_change(
            template in proptest::sample::select(TEMPLATES),
            first in proptest::collection::vec(any::<u64>(), 3),
            second in proptest::collection::vec(any::<u64>(), 3),
        ) {
            let a = compute("backend", &fill(template, &first), None, None, None);
            let b = compute("backend", &fill(template, &second), None, None, None);
            prop_assert_eq!(&a.normalized_message, &b.normalized_message);
            prop_assert_eq!(a.fingerprint, b.fingerprint);
        }

        #[test]
        fn nothing_panics_on_arbitrary_input(
            message in any::<String>(),
            stack in any::<String>(),
            lines in proptest::collection::vec(stack_line(), 0..20),
            module in proptest::option::of(any::<String>()),
            function in proptest::option::of(any::<String>()),
            filename in proptest::option::of(any::<String>()),
        ) {
            let _ = compute("backend", &message, Some(&stack), None, None);
            let _ = compute(&stack, &message, Some(&lines.join("\n")), None, Some(std::slice::from_ref(&message)));
            let f = Frame { module, function, filename, lineno: None, colno: None, in_app: Some(true) };
            let _ = normalize_frame(&f);
            let _ = compute("backend", &message, None, Some(&[f]), None);
        }

        /// The multi-pattern regex finds what the alternation of the same patterns, one capture
        /// group each, found before it (grouping version 1 was defined by that alternation): the
        /// same spans and the same token, match after match.
        #[test]
        fn the_patterns_match_what_their_alternation_matched(
            parts in proptest::collection::vec(prop_oneof![
                "[0-9a-fA-F.:@/=\"' xX+-]{1,12}",
                "[a-z]{1,8}@[a-z]{1,6}\\.[a-z]{2,3}",
                "https?://[a-z./?=&]{0,20}[),.]?",
                "[0-9]{1,3}(\\.[0-9]{1,3}){3}",
                "[0-9a-f]{1,4}(::?[0-9a-f]{1,4}){1,7}",
                "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                "[0-9a-f]{32}|[0-9a-f]{40}",
                "20[0-9]{2}-[01][0-9]-[0-3][0-9]([T ][0-2][0-9]:[0-5][0-9](:[0-5][0-9])?Z?)?",
                "(Mon, )?[0-9]{1,2} (Jan|Dec) 20[0-9]{2}( 12:00(:00)?( GMT)?)?",
                "-?[0-9]{1,6}(\\.[0-9]{1,3})*(e-?[0-9])?(ms|s|MiB|px)?",
                "=[ ]?(\"[^\"]{0,6}\"|'[^']{0,6}')",
                "\\PC{0,6}",
            ], 0..12),
        ) {
            let text = parts.join(" ");
            let alternation = &*ALTERNATION;
            let mut locs = alternation.capture_locations();
            let mut at = 0;
            while at <= text.len() {
                let before = alternation.captures_read_at(&mut locs, &text, at).map(|m| {
                    let group = (1..=TOKENS.len()).find(|&g| locs.get(g).is_some()).unwrap();
                    (m.start(), m.end(), group - 1)
                });
                let now = MESSAGE_RE
                    .search(&Input::new(&text).span(at..text.len()))
                    .map(|m| (m.start(), m.end(), m.pattern().as_usize()));
                prop_assert_eq!(before, now, "in {:?} from {}", &text, at);
                let Some((start, end, _)) = now else { break };
                at = if end > start { end } else { start + text[start..].chars().next().map_or(1, char::len_utf8) };
            }
        }

        #[test]
        fn the_output_is_bounded(
            unit in "[0-9 .:a-f@=\"-]{1,8}|\\PC{1,4}",
            repeat in 1usize..3000,
            lines in proptest::collection::vec(stack_line(), 0..100),
        ) {
            let message = unit.repeat(repeat);
            let g = compute("backend", &message, Some(&lines.join("\n")), None, None);
            prop_assert!(g.normalized_message.len() <= MAX_NORMALIZED_MESSAGE_BYTES);
            prop_assert!(g.frames.len() <= MAX_FRAMES);
            for f in &g.frames {
                prop_assert!(f.chars().count() <= 2 * MAX_FRAME_PART_CHARS + 1);
            }
        }
    }
}
