//! Parsers for the web protocol's non-JSON bodies (jslogin, login poll, synccheck, newloginpage),
//! plus the shared helpers for untrusted server text: a small XML tree, entity/emoji decoding and
//! lenient JSON field decoders.
//!
//! Everything here takes data straight from the network: nothing panics, errors say what was
//! malformed, and no error or `Debug` output repeats credential values (the redirect_uri carries
//! the login ticket; the newloginpage body carries skey, wxsid and pass_ticket).

use std::borrow::Cow;
use std::fmt;

use quick_xml::events::Event;
use url::Url;

/// Larger bodies are refused outright: every legitimate text body is a few kilobytes (the 201
/// avatar data URL is the largest), so anything bigger is an error page or an attack.
pub const MAX_TEXT_BODY: usize = 1 << 20;

/// Message XML (merged chat histories, long article lists) can be larger than login bodies.
pub const MAX_XML_BODY: usize = 4 << 20;

/// Nesting and size limits for [`parse_xml`], so hostile XML cannot exhaust the stack or memory.
const MAX_XML_DEPTH: usize = 64;
const MAX_XML_ELEMENTS: usize = 20_000;

/// A body that could not be understood. `detail` describes the defect, never the secret-bearing
/// content itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {detail}")]
pub struct ParseError {
    /// Which kind of body: "jslogin", "login poll", "synccheck", "newloginpage", "xml".
    pub what: &'static str,
    pub detail: String,
}

impl ParseError {
    pub fn new(what: &'static str, detail: impl Into<String>) -> Self {
        Self {
            what,
            detail: detail.into(),
        }
    }
}

fn check_size(what: &'static str, body: &str, max: usize) -> Result<(), ParseError> {
    if body.len() > max {
        return Err(ParseError::new(
            what,
            format!("body of {} bytes exceeds the {max}-byte limit", body.len()),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// `window.x = value;` statements (jslogin and login poll)
// ---------------------------------------------------------------------------------------------

/// The right-hand side of one `target = value;` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JsValue {
    /// A single- or double-quoted string, backslash escapes resolved.
    Str(String),
    /// Anything unquoted (a number, `true`, …), trimmed.
    Bare(String),
}

impl JsValue {
    /// Numbers are accepted quoted or not (`200` and `"200"`).
    fn as_i64(&self) -> Option<i64> {
        match self {
            JsValue::Str(s) | JsValue::Bare(s) => s.trim().parse().ok(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            JsValue::Str(s) | JsValue::Bare(s) => s,
        }
    }
}

fn is_js_target(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.'))
}

/// Reads a quoted string starting at `s[0]` (the quote). Returns the value and the rest after the
/// closing quote, or `None` when the string is not terminated.
fn read_quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.char_indices();
    let (_, quote) = chars.next()?;
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in chars {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == quote {
            return Some((out, &s[i + c.len_utf8()..]));
        } else {
            out.push(c);
        }
    }
    None
}

/// Splits a body made of `target = value;` statements. Whitespace (including newlines) is allowed
/// around every token; every statement must end with `;`, which is how truncation is detected.
fn js_assignments(what: &'static str, body: &str) -> Result<Vec<(String, JsValue)>, ParseError> {
    check_size(what, body, MAX_TEXT_BODY)?;
    let mut out = Vec::new();
    let mut rest = body.trim_start_matches('\u{feff}');
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let Some(eq) = rest.find('=') else {
            return Err(ParseError::new(what, "text without an assignment"));
        };
        let target = rest[..eq].trim();
        if !is_js_target(target) {
            return Err(ParseError::new(
                what,
                "unexpected text where a `window.…` assignment should be",
            ));
        }
        rest = rest[eq + 1..].trim_start();
        let value = if rest.starts_with(['"', '\'']) {
            let Some((value, after)) = read_quoted(rest) else {
                return Err(ParseError::new(
                    what,
                    format!("unterminated string assigned to {target} (truncated body?)"),
                ));
            };
            rest = after.trim_start();
            let Some(after) = rest.strip_prefix(';') else {
                return Err(ParseError::new(
                    what,
                    format!("assignment to {target} is not terminated by `;`"),
                ));
            };
            rest = after;
            JsValue::Str(value)
        } else {
            let Some(end) = rest.find(';') else {
                return Err(ParseError::new(
                    what,
                    format!("assignment to {target} is not terminated by `;` (truncated body?)"),
                ));
            };
            let value = rest[..end].trim();
            if value.is_empty() {
                return Err(ParseError::new(what, format!("empty value for {target}")));
            }
            rest = &rest[end + 1..];
            JsValue::Bare(value.to_owned())
        };
        out.push((target.to_owned(), value));
    }
    Ok(out)
}

fn lookup<'a>(assignments: &'a [(String, JsValue)], target: &str) -> Option<&'a JsValue> {
    assignments
        .iter()
        .find(|(t, _)| t == target)
        .map(|(_, v)| v)
}

fn required_code(
    what: &'static str,
    assignments: &[(String, JsValue)],
    target: &str,
) -> Result<i64, ParseError> {
    let value =
        lookup(assignments, target).ok_or_else(|| ParseError::new(what, format!("no {target}")))?;
    value
        .as_i64()
        .ok_or_else(|| ParseError::new(what, format!("{target} is not a number")))
}

// ---------------------------------------------------------------------------------------------
// jslogin
// ---------------------------------------------------------------------------------------------

/// The answer to `jslogin`: a status code and, for code 200, the QR uuid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsLogin {
    pub code: i64,
    /// Present (and validated) whenever `code` is 200.
    pub uuid: Option<String>,
}

/// Uuids are short URL-safe base64 strings; anything else would break the QR URL and the login
/// poll, so it is rejected rather than passed on.
fn valid_uuid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | '+' | '/'))
}

/// Parses `window.QRLogin.code = 200; window.QRLogin.uuid = "gbyKnbsmqQ==";`.
pub fn parse_jslogin(body: &str) -> Result<JsLogin, ParseError> {
    const WHAT: &str = "jslogin";
    let a = js_assignments(WHAT, body)?;
    let code = required_code(WHAT, &a, "window.QRLogin.code")?;
    let uuid = lookup(&a, "window.QRLogin.uuid").map(|v| v.as_str().trim().to_owned());
    if code == 200 {
        match uuid {
            None => Err(ParseError::new(
                WHAT,
                "code 200 without window.QRLogin.uuid",
            )),
            Some(u) if u.is_empty() => Err(ParseError::new(WHAT, "code 200 with an empty uuid")),
            Some(u) if !valid_uuid(&u) => Err(ParseError::new(
                WHAT,
                "uuid has characters outside URL-safe base64",
            )),
            Some(u) => Ok(JsLogin {
                code,
                uuid: Some(u),
            }),
        }
    } else {
        Ok(JsLogin {
            code,
            uuid: uuid.filter(|u| valid_uuid(u)),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// login poll
// ---------------------------------------------------------------------------------------------

/// The state reported by one login poll (`window.code=…`).
#[derive(Clone, PartialEq, Eq)]
pub enum LoginPoll {
    /// 408: nothing yet (long poll timed out, or the user cancelled on the phone).
    Waiting,
    /// 201: scanned, waiting for the confirm tap; `avatar` is a `data:` URL when sent.
    Scanned { avatar: Option<String> },
    /// 200: confirmed. `redirect_uri` carries the login ticket: it is a secret.
    Confirmed { redirect_uri: String },
    /// 400: the uuid expired; a new QR is needed.
    Expired,
    /// Any other code.
    Other(i64),
}

impl fmt::Debug for LoginPoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginPoll::Waiting => f.write_str("Waiting"),
            LoginPoll::Scanned { avatar } => f
                .debug_struct("Scanned")
                .field(
                    "avatar",
                    &avatar.as_ref().map(|a| format!("<{} bytes>", a.len())),
                )
                .finish(),
            LoginPoll::Confirmed { redirect_uri } => {
                // Host and path help diagnose host-family problems; the query holds the ticket.
                let shown = Url::parse(redirect_uri)
                    .map(|u| {
                        format!(
                            "{}://{}{} (query redacted)",
                            u.scheme(),
                            u.host_str().unwrap_or(""),
                            u.path()
                        )
                    })
                    .unwrap_or_else(|_| "<redacted>".to_owned());
                f.debug_struct("Confirmed")
                    .field("redirect_uri", &shown)
                    .finish()
            }
            LoginPoll::Expired => f.write_str("Expired"),
            LoginPoll::Other(code) => f.debug_tuple("Other").field(code).finish(),
        }
    }
}

/// Parses `window.code=408;`, `window.code=201;window.userAvatar = '…';`,
/// `window.code=200;\nwindow.redirect_uri="https://…";` and `window.code=400;`.
pub fn parse_login_poll(body: &str) -> Result<LoginPoll, ParseError> {
    const WHAT: &str = "login poll";
    let a = js_assignments(WHAT, body)?;
    let code = required_code(WHAT, &a, "window.code")?;
    Ok(match code {
        408 => LoginPoll::Waiting,
        400 => LoginPoll::Expired,
        201 => LoginPoll::Scanned {
            avatar: lookup(&a, "window.userAvatar")
                .map(|v| v.as_str().trim().to_owned())
                .filter(|s| !s.is_empty()),
        },
        200 => {
            let uri = lookup(&a, "window.redirect_uri")
                .map(|v| v.as_str().trim())
                .ok_or_else(|| ParseError::new(WHAT, "code 200 without window.redirect_uri"))?;
            if uri.is_empty() {
                return Err(ParseError::new(WHAT, "code 200 with an empty redirect_uri"));
            }
            if uri.chars().any(char::is_whitespace) {
                return Err(ParseError::new(WHAT, "redirect_uri contains whitespace"));
            }
            match Url::parse(uri) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return Err(ParseError::new(
                        WHAT,
                        "redirect_uri is not an absolute http(s) url",
                    ));
                }
            }
            LoginPoll::Confirmed {
                redirect_uri: uri.to_owned(),
            }
        }
        other => LoginPoll::Other(other),
    })
}

// ---------------------------------------------------------------------------------------------
// synccheck
// ---------------------------------------------------------------------------------------------

/// `window.synccheck={retcode:"0",selector:"2"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncCheck {
    /// 0 ok; 1100/1101 logged out; 1102 cookies missing; 1205 too frequent (spec §3.9, §9).
    pub retcode: i64,
    /// Only meaningful when `retcode` is 0: non-zero means "call webwxsync".
    pub selector: i64,
}

impl SyncCheck {
    /// True when the server reports pending data (every client then calls webwxsync).
    pub fn has_news(&self) -> bool {
        self.retcode == 0 && self.selector != 0
    }
}

fn skip_ws(s: &str) -> &str {
    s.trim_start()
}

/// Reads a key or value: quoted (either quote) or bare up to one of `stops`.
fn read_token<'a>(s: &'a str, stops: &[char]) -> Option<(String, &'a str)> {
    if s.starts_with(['"', '\'']) {
        return read_quoted(s);
    }
    let end = s.find(stops).unwrap_or(s.len());
    let tok = s[..end].trim();
    if tok.is_empty() {
        return None;
    }
    Some((tok.to_owned(), &s[end..]))
}

/// Key/value pairs of a flat JS object literal, in source order.
type JsPairs = Vec<(String, String)>;

/// Parses the body of a flat JS object literal `{k:v,…}` with quoted or bare keys and values.
fn parse_js_object<'a>(what: &'static str, s: &'a str) -> Result<(JsPairs, &'a str), ParseError> {
    let mut rest = skip_ws(s)
        .strip_prefix('{')
        .ok_or_else(|| ParseError::new(what, "expected `{`"))?;
    let mut pairs = Vec::new();
    loop {
        rest = skip_ws(rest);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((pairs, after));
        }
        if rest.is_empty() {
            return Err(ParseError::new(what, "object not closed (truncated body?)"));
        }
        let (key, after) = read_token(rest, &[':', ',', '}'])
            .ok_or_else(|| ParseError::new(what, "missing or unterminated key"))?;
        rest = skip_ws(after)
            .strip_prefix(':')
            .ok_or_else(|| ParseError::new(what, "expected `:` after a key"))?;
        let (value, after) = read_token(skip_ws(rest), &[',', '}'])
            .ok_or_else(|| ParseError::new(what, "missing or unterminated value"))?;
        pairs.push((key, value));
        rest = skip_ws(after);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(ParseError::new(
                what,
                if rest.is_empty() {
                    "object not closed (truncated body?)"
                } else {
                    "expected `,` or `}` after a value"
                },
            ));
        }
    }
}

/// Parses `window.synccheck={retcode:"0",selector:"2"}`; keys and values may be quoted or not,
/// spaces are allowed and a trailing `;` is optional.
pub fn parse_synccheck(body: &str) -> Result<SyncCheck, ParseError> {
    const WHAT: &str = "synccheck";
    check_size(WHAT, body, MAX_TEXT_BODY)?;
    let rest = body.trim_start_matches('\u{feff}').trim_start();
    let rest = rest
        .strip_prefix("window.synccheck")
        .ok_or_else(|| ParseError::new(WHAT, "body does not start with window.synccheck"))?;
    let rest = skip_ws(rest)
        .strip_prefix('=')
        .ok_or_else(|| ParseError::new(WHAT, "expected `=` after window.synccheck"))?;
    let (pairs, after) = parse_js_object(WHAT, rest)?;
    let after = skip_ws(after);
    let after = after.strip_prefix(';').unwrap_or(after);
    if !after.trim().is_empty() {
        return Err(ParseError::new(WHAT, "unexpected text after the object"));
    }
    let field = |name: &str| -> Result<i64, ParseError> {
        let (_, v) = pairs
            .iter()
            .find(|(k, _)| k == name)
            .ok_or_else(|| ParseError::new(WHAT, format!("no {name}")))?;
        v.trim()
            .parse()
            .map_err(|_| ParseError::new(WHAT, format!("{name} is not a number")))
    };
    Ok(SyncCheck {
        retcode: field("retcode")?,
        selector: field("selector")?,
    })
}

// ---------------------------------------------------------------------------------------------
// newloginpage
// ---------------------------------------------------------------------------------------------

/// The `<error>…</error>` document returned by `webwxnewloginpage`.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginPage {
    /// 0 on success; 1203 when web login is refused for the account.
    pub ret: i64,
    pub message: String,
    pub skey: Option<String>,
    pub wxsid: Option<String>,
    pub wxuin: Option<String>,
    /// Already URL-encoded by the server; pass through unchanged.
    pub pass_ticket: Option<String>,
    pub is_grayscale: Option<i64>,
}

impl LoginPage {
    pub fn is_ok(&self) -> bool {
        self.ret == 0
    }
}

fn redacted(v: &Option<String>) -> &'static str {
    if v.is_some() { "<redacted>" } else { "<none>" }
}

impl fmt::Debug for LoginPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginPage")
            .field("ret", &self.ret)
            .field("message", &self.message)
            .field("skey", &redacted(&self.skey))
            .field("wxsid", &redacted(&self.wxsid))
            // The uin identifies the account, not a credential, but it pairs with wxsid as the
            // session's authentication cookies, so it is kept out of logs too.
            .field("wxuin", &redacted(&self.wxuin))
            .field("pass_ticket", &redacted(&self.pass_ticket))
            .field("is_grayscale", &self.is_grayscale)
            .finish()
    }
}

/// Parses the newloginpage XML. `<ret>` is required; credentials are optional because error
/// answers (ret 1203) carry none and some clients take them from the cookies instead.
pub fn parse_newloginpage(body: &str) -> Result<LoginPage, ParseError> {
    const WHAT: &str = "newloginpage";
    check_size(WHAT, body, MAX_TEXT_BODY)?;
    let root = parse_xml(body).map_err(|e| ParseError::new(WHAT, e.detail))?;
    let ret_el = root
        .child("ret")
        .ok_or_else(|| ParseError::new(WHAT, "no <ret> element"))?;
    let ret = ret_el
        .text()
        .parse()
        .map_err(|_| ParseError::new(WHAT, "<ret> is not a number"))?;
    let opt = |name: &str| {
        root.child(name)
            .map(|e| e.text().to_owned())
            .filter(|s| !s.is_empty())
    };
    Ok(LoginPage {
        ret,
        message: root.child_text("message").unwrap_or_default().to_owned(),
        skey: opt("skey"),
        wxsid: opt("wxsid"),
        wxuin: opt("wxuin"),
        pass_ticket: opt("pass_ticket"),
        // Informational only, so a garbled value is dropped rather than failing the login.
        is_grayscale: root.child_text("isgrayscale").and_then(|s| s.parse().ok()),
    })
}

// ---------------------------------------------------------------------------------------------
// A small XML tree
// ---------------------------------------------------------------------------------------------

/// One element of a parsed XML document: the protocol's XML bodies are small, so a tree is simpler
/// to query than a streaming reader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XmlElement {
    pub name: String,
    /// Attribute values with entities resolved.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<XmlElement>,
    /// Direct text and CDATA content (not that of children), entities resolved, untrimmed.
    pub raw_text: String,
}

impl XmlElement {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first direct child with this name.
    pub fn child(&self, name: &str) -> Option<&XmlElement> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The first element with this name in document order, this one included.
    pub fn find(&self, name: &str) -> Option<&XmlElement> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }

    /// Follows direct children by name: `path(&["appattach", "totallen"])`.
    pub fn path(&self, names: &[&str]) -> Option<&XmlElement> {
        names.iter().try_fold(self, |el, name| el.child(name))
    }

    /// The element's own text, trimmed.
    pub fn text(&self) -> &str {
        self.raw_text.trim()
    }

    /// Trimmed text of the first direct child with this name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(XmlElement::text)
    }
}

/// Resolves an entity reference met inside XML: the XML ones, numeric references and HTML named
/// entities (the server's XML is written by HTML-minded code). Unknown names are kept literally.
fn resolve_xml_ref(name: &str) -> Cow<'static, str> {
    match name {
        "lt" => Cow::Borrowed("<"),
        "gt" => Cow::Borrowed(">"),
        "amp" => Cow::Borrowed("&"),
        "quot" => Cow::Borrowed("\""),
        "apos" => Cow::Borrowed("'"),
        _ => Cow::Owned(html_escape::decode_html_entities(&format!("&{name};")).into_owned()),
    }
}

/// Describes a quick-xml error without quoting the document (tag names could come from anywhere).
fn describe_xml_error(e: &quick_xml::Error) -> String {
    match e {
        quick_xml::Error::Syntax(s) => s.to_string(),
        quick_xml::Error::IllFormed(_) => "ill-formed xml (mismatched or unexpected tag)".into(),
        quick_xml::Error::InvalidAttr(_) => "invalid attribute".into(),
        _ => "invalid xml".into(),
    }
}

fn element_from_start(start: &quick_xml::events::BytesStart<'_>) -> Result<XmlElement, String> {
    let name = start.name().as_ref().to_owned();
    let mut attrs = Vec::new();
    for attr in start.html_attributes() {
        let attr = attr.map_err(|_| "invalid attribute".to_owned())?;
        let key = attr.key.as_ref().to_owned();
        attrs.push((key, decode_entities(&attr.value).into_owned()));
    }
    Ok(XmlElement {
        name,
        attrs,
        ..XmlElement::default()
    })
}

/// Parses one XML document into a tree. Leading declarations, comments and whitespace are
/// skipped; the first element is the root and anything after it is ignored. Bare `&` are kept as
/// text. Errors on truncation, mismatched tags, excessive depth or size.
pub fn parse_xml(body: &str) -> Result<XmlElement, ParseError> {
    const WHAT: &str = "xml";
    check_size(WHAT, body, MAX_XML_BODY)?;
    let mut reader = quick_xml::Reader::from_str(body.trim_start_matches('\u{feff}'));
    reader.config_mut().allow_dangling_amp = true;
    // Open elements, innermost last.
    let mut stack: Vec<XmlElement> = Vec::new();
    let mut count = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| {
            ParseError::new(
                WHAT,
                format!(
                    "{} near byte {}",
                    describe_xml_error(&e),
                    reader.error_position()
                ),
            )
        })?;
        match event {
            Event::Start(_) | Event::Empty(_) if stack.len() >= MAX_XML_DEPTH => {
                return Err(ParseError::new(WHAT, "elements nested too deeply"));
            }
            Event::Start(start) => {
                count += 1;
                if count > MAX_XML_ELEMENTS {
                    return Err(ParseError::new(WHAT, "too many elements"));
                }
                let el = element_from_start(&start).map_err(|d| ParseError::new(WHAT, d))?;
                stack.push(el);
            }
            Event::Empty(start) => {
                count += 1;
                if count > MAX_XML_ELEMENTS {
                    return Err(ParseError::new(WHAT, "too many elements"));
                }
                let el = element_from_start(&start).map_err(|d| ParseError::new(WHAT, d))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::End(_) => {
                // quick-xml checks that end names match, so the stack is never empty here.
                let Some(done) = stack.pop() else {
                    return Err(ParseError::new(WHAT, "closing tag without an opening tag"));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            Event::Text(t) => {
                if let Some(el) = stack.last_mut() {
                    el.raw_text.push_str(&t.xml10_content());
                } else if !t.xml10_content().trim().is_empty() {
                    return Err(ParseError::new(WHAT, "text outside the root element"));
                }
            }
            Event::CData(t) => {
                if let Some(el) = stack.last_mut() {
                    el.raw_text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(el) = stack.last_mut() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => el.raw_text.push(c),
                        Ok(None) => el.raw_text.push_str(&resolve_xml_ref(&r.xml10_content())),
                        // An invalid numeric reference is kept as written rather than failing.
                        Err(_) => {
                            el.raw_text.push('&');
                            el.raw_text.push_str(&r.xml10_content());
                            el.raw_text.push(';');
                        }
                    }
                }
            }
            Event::Eof => {
                return Err(ParseError::new(
                    WHAT,
                    if stack.is_empty() {
                        "no element"
                    } else {
                        "document ends inside an element (truncated?)"
                    },
                ));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server text: entities, `<br/>`, emoji spans
// ---------------------------------------------------------------------------------------------

/// Decodes HTML character references once (named, decimal, hex); unknown or malformed references
/// are left as written.
pub fn decode_entities(s: &str) -> Cow<'_, str> {
    html_escape::decode_html_entities(s)
}

/// Decodes the references that a second round of XML escaping produces (`&amp;lt;` arrives as
/// `&lt;` after the first pass): only the five XML entities and numeric references, so ordinary
/// text containing `&` is left alone.
pub fn decode_xml_entities_lenient(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        // References are short; look for the `;` within a small window only.
        let window = rest.char_indices().take(12).find(|&(_, c)| c == ';');
        let decoded = window.and_then(|(end, _)| {
            let name = &rest[1..end];
            let c = match name {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let num = name.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code).filter(|c| *c != '\0')
                }
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Turns the hex run of an `emojiXXXX` class into characters. The server writes one code point
/// (4–6 hex digits) or two fused ones (8 digits = 4+4, e.g. keycaps; 10 digits = 5+5, e.g. flags).
fn emoji_chars(hex: &str) -> Option<String> {
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let one = |h: &str| u32::from_str_radix(h, 16).ok().and_then(char::from_u32);
    let out: String = match hex.len() {
        1..=6 => one(hex)?.into(),
        8 => [one(&hex[..4])?, one(&hex[4..])?].iter().collect(),
        10 => [one(&hex[..5])?, one(&hex[5..])?].iter().collect(),
        _ => return None,
    };
    Some(out)
}

/// Replaces `<span class="emoji emoji1f604"></span>` spans by the characters they stand for.
/// Spans that cannot be decoded are kept as they are, so nothing is silently lost.
pub fn replace_emoji_spans(s: &str) -> Cow<'_, str> {
    const OPEN: &str = "<span class=\"emoji emoji";
    const CLOSE: &str = "></span>";
    if !s.contains(OPEN) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(OPEN) {
        out.push_str(&rest[..pos]);
        let after_open = &rest[pos + OPEN.len()..];
        // `"` then optional spaces, then `></span>`.
        let parsed = after_open.find('"').and_then(|q| {
            let hex = &after_open[..q];
            let tail = after_open[q + 1..].trim_start();
            let tail = tail.strip_prefix(CLOSE)?;
            Some((emoji_chars(hex)?, tail))
        });
        match parsed {
            Some((chars, tail)) => {
                out.push_str(&chars);
                rest = tail;
            }
            None => {
                out.push_str(OPEN);
                rest = after_open;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Replaces the HTML line breaks the server uses (`<br/>`, `<br />`, `<br>`) with `\n`.
pub fn replace_line_breaks(s: &str) -> Cow<'_, str> {
    if !s.contains("<br") {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.replace("<br/>", "\n")
            .replace("<br />", "\n")
            .replace("<br>", "\n"),
    )
}

// ---------------------------------------------------------------------------------------------
// Lenient JSON fields
// ---------------------------------------------------------------------------------------------

/// `deserialize_with` helpers for JSON objects from the server, whose field types differ between
/// endpoints and eras (numbers as strings, `null` for empty lists). None of them ever fails: a value
/// of an unusable type becomes the default.
pub mod lenient {
    use serde::de::value::MapAccessDeserializer;
    use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    fn value_to_i64(v: &Value) -> i64 {
        match v {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                        .map(|f| f as i64)
                })
                .unwrap_or(0),
            Value::String(s) => {
                let s = s.trim();
                s.parse::<i64>()
                    .ok()
                    .or_else(|| {
                        s.parse::<f64>()
                            .ok()
                            .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                            .map(|f| f as i64)
                    })
                    .unwrap_or(0)
            }
            Value::Bool(b) => i64::from(*b),
            _ => 0,
        }
    }

    fn value_to_string(v: Value) -> String {
        match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => String::new(),
        }
    }

    /// A number, a numeric string, a bool or anything else (→ 0).
    pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        Ok(value_to_i64(&Value::deserialize(d)?))
    }

    /// A string, or a number/bool rendered as text; `null`, objects and arrays give `""`.
    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(value_to_string(Value::deserialize(d)?))
    }

    /// A list whose unusable entries are skipped; `null` or a non-list gives an empty list.
    pub fn vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: serde::de::DeserializeOwned,
    {
        Ok(match Value::deserialize(d)? {
            Value::Array(items) => items
                .into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect(),
            _ => Vec::new(),
        })
    }

    /// An object, for a type that reads every object (all its fields lenient); `null` or any
    /// other non-object gives `None`. The object is read straight into the type, without a
    /// `Value` tree in between. Straight from text, a key given twice is an error rather than
    /// "the last one wins"; the webwxsync reader then reads the answer through a `Value`,
    /// where it is not (src/wechat/sync_answer.rs).
    pub fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        d.deserialize_any(ObjectOrNothing(std::marker::PhantomData))
    }

    struct ObjectOrNothing<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOrNothing<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map)).map(Some)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }

        fn visit_unit<E>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_bool<E>(self, _: bool) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_i64<E>(self, _: i64) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_u64<E>(self, _: u64) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_f64<E>(self, _: f64) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_str<E>(self, _: &str) -> Result<Option<T>, E> {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- jslogin ----

    #[test]
    fn jslogin_exact_server_form() {
        let j =
            parse_jslogin(r#"window.QRLogin.code = 200; window.QRLogin.uuid = "gbyKnbsmqQ==";"#)
                .unwrap();
        assert_eq!(j.code, 200);
        assert_eq!(j.uuid.as_deref(), Some("gbyKnbsmqQ=="));
    }

    #[test]
    fn jslogin_tolerates_spacing_quotes_and_newlines() {
        for body in [
            r#"window.QRLogin.code=200;window.QRLogin.uuid="obpi9Rft-A==";"#,
            "window.QRLogin.code = 200;\nwindow.QRLogin.uuid = 'obpi9Rft-A==';\n",
            "\u{feff}  window.QRLogin.code  =  \"200\" ;  window.QRLogin.uuid =\t\"obpi9Rft-A==\" ;",
        ] {
            let j = parse_jslogin(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
            assert_eq!(j.code, 200, "{body:?}");
            assert_eq!(j.uuid.as_deref(), Some("obpi9Rft-A=="), "{body:?}");
        }
    }

    #[test]
    fn jslogin_non_200_needs_no_uuid() {
        let j = parse_jslogin("window.QRLogin.code = 400;").unwrap();
        assert_eq!(
            j,
            JsLogin {
                code: 400,
                uuid: None
            }
        );
    }

    #[test]
    fn jslogin_errors() {
        let cases = [
            ("", "no window.QRLogin.code"),
            ("   ", "no window.QRLogin.code"),
            ("window.QRLogin.code = 200;", "without window.QRLogin.uuid"),
            (
                r#"window.QRLogin.code = 200; window.QRLogin.uuid = "";"#,
                "empty uuid",
            ),
            (
                r#"window.QRLogin.code = 200; window.QRLogin.uuid = "a b";"#,
                "URL-safe",
            ),
            (
                r#"window.QRLogin.code = 200; window.QRLogin.uuid = "gbyK"#,
                "unterminated",
            ),
            (
                r#"window.QRLogin.code = 200; window.QRLogin.uuid = "gbyKnbsmqQ==""#,
                "`;`",
            ),
            ("window.QRLogin.code = 20", "not terminated"),
            ("window.QRLogin.code = abc;", "not a number"),
            ("window.QRLogin.code = ;", "empty value"),
            (
                "<html><body>502 Bad Gateway</body></html>",
                "text without an assignment",
            ),
            (
                "<html><head><meta charset=utf-8></head></html>",
                "unexpected text",
            ),
            ("window.QRLogin.uuid = \"x\";", "no window.QRLogin.code"),
        ];
        for (body, want) in cases {
            let err = parse_jslogin(body).expect_err(body);
            assert_eq!(err.what, "jslogin");
            assert!(err.to_string().contains(want), "{body:?} gave {err}");
        }
    }

    #[test]
    fn huge_bodies_are_refused() {
        let huge = format!(
            "window.QRLogin.code = 200; window.QRLogin.uuid = \"{}\";",
            "a".repeat(MAX_TEXT_BODY)
        );
        assert!(parse_jslogin(&huge).unwrap_err().detail.contains("limit"));
        let huge = format!(
            "window.code=201;window.userAvatar = '{}';",
            "A".repeat(2 << 20)
        );
        assert!(parse_login_poll(&huge).is_err());
        let huge = format!(
            "window.synccheck={{retcode:\"0\",selector:\"{}\"}}",
            "9".repeat(2 << 20)
        );
        assert!(parse_synccheck(&huge).is_err());
    }

    // ---- login poll ----

    #[test]
    fn login_poll_waiting_and_expired() {
        assert_eq!(
            parse_login_poll("window.code=408;").unwrap(),
            LoginPoll::Waiting
        );
        assert_eq!(
            parse_login_poll("window.code=400;").unwrap(),
            LoginPoll::Expired
        );
        assert_eq!(
            parse_login_poll("window.code = 408 ;\n").unwrap(),
            LoginPoll::Waiting
        );
        assert_eq!(
            parse_login_poll("window.code=500;").unwrap(),
            LoginPoll::Other(500)
        );
        assert_eq!(
            parse_login_poll("window.code=\"408\";").unwrap(),
            LoginPoll::Waiting
        );
    }

    #[test]
    fn login_poll_scanned_with_avatar() {
        let body = "window.code=201;window.userAvatar = 'data:img/jpg;base64,/9j/4AAQSkZJRg==';";
        assert_eq!(
            parse_login_poll(body).unwrap(),
            LoginPoll::Scanned {
                avatar: Some("data:img/jpg;base64,/9j/4AAQSkZJRg==".into())
            }
        );
        assert_eq!(
            parse_login_poll("window.code=201;").unwrap(),
            LoginPoll::Scanned { avatar: None }
        );
        assert_eq!(
            parse_login_poll("window.code=201;window.userAvatar = '';").unwrap(),
            LoginPoll::Scanned { avatar: None }
        );
    }

    const REDIRECT: &str = "https://wx.qq.com/cgi-bin/mmwebwx-bin/webwxnewloginpage?ticket=AaXdHpmbWGYo_ZOk7ylAnnCY@qrticket_0&uuid=gbyKnbsmqQ==&lang=zh_CN&scan=1546211468";

    #[test]
    fn login_poll_confirmed_with_and_without_newline() {
        for sep in ["", "\n", "\r\n", " "] {
            let body = format!("window.code=200;{sep}window.redirect_uri=\"{REDIRECT}\";");
            assert_eq!(
                parse_login_poll(&body).unwrap(),
                LoginPoll::Confirmed {
                    redirect_uri: REDIRECT.into()
                },
                "{sep:?}"
            );
        }
        let single = format!("window.code=200; window.redirect_uri = '{REDIRECT}' ;");
        assert!(matches!(
            parse_login_poll(&single).unwrap(),
            LoginPoll::Confirmed { .. }
        ));
    }

    #[test]
    fn login_poll_debug_hides_ticket() {
        let p = LoginPoll::Confirmed {
            redirect_uri: REDIRECT.into(),
        };
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("qrticket"), "{dbg}");
        assert!(dbg.contains("wx.qq.com"), "{dbg}");
        let p = LoginPoll::Confirmed {
            redirect_uri: "not a url ticket=secret".into(),
        };
        assert!(!format!("{p:?}").contains("secret"));
    }

    #[test]
    fn login_poll_errors_never_echo_the_ticket() {
        let cases = [
            ("", "no window.code"),
            ("window.code=;", "empty value"),
            ("window.code=4o8;", "not a number"),
            ("window.code=200;", "without window.redirect_uri"),
            (
                "window.code=200;window.redirect_uri=\"\";",
                "empty redirect_uri",
            ),
            (
                "window.code=200;window.redirect_uri=\"https://wx.qq.com/x?ticket=SECRET&a b\";",
                "whitespace",
            ),
            (
                "window.code=200;window.redirect_uri=\"/relative?ticket=SECRET\";",
                "absolute",
            ),
            (
                "window.code=200;window.redirect_uri=\"ftp://h/?ticket=SECRET\";",
                "absolute",
            ),
            (
                "window.code=200;window.redirect_uri=\"https://wx.qq.com/?ticket=SECRET",
                "unterminated",
            ),
            (
                "window.code=200;window.redirect_uri=\"https://wx.qq.com/?ticket=SECRET\"",
                "`;`",
            ),
            ("window.code=408", "not terminated"),
        ];
        for (body, want) in cases {
            let err = parse_login_poll(body).expect_err(body);
            let msg = err.to_string();
            assert!(msg.contains(want), "{body:?} gave {msg}");
            assert!(!msg.contains("SECRET"), "{msg}");
        }
    }

    // ---- synccheck ----

    #[test]
    fn synccheck_forms() {
        let cases = [
            (r#"window.synccheck={retcode:"0",selector:"2"}"#, (0, 2)),
            (
                r#"window.synccheck={retcode:"1101",selector:"0"}"#,
                (1101, 0),
            ),
            (
                r#"window.synccheck = { retcode : "0" , selector : "7" } ;"#,
                (0, 7),
            ),
            (r#"window.synccheck={"retcode":"0","selector":"4"}"#, (0, 4)),
            (
                r#"window.synccheck={'retcode':'1102','selector':'0'}"#,
                (1102, 0),
            ),
            ("window.synccheck={retcode:0,selector:6}\n", (0, 6)),
            (
                r#"window.synccheck={selector:"3",retcode:"0",extra:"x"}"#,
                (0, 3),
            ),
        ];
        for (body, (retcode, selector)) in cases {
            assert_eq!(
                parse_synccheck(body).unwrap_or_else(|e| panic!("{body}: {e}")),
                SyncCheck { retcode, selector },
                "{body}"
            );
        }
        assert!(
            parse_synccheck(r#"window.synccheck={retcode:"0",selector:"2"}"#)
                .unwrap()
                .has_news()
        );
        assert!(
            !parse_synccheck(r#"window.synccheck={retcode:"1101",selector:"2"}"#)
                .unwrap()
                .has_news()
        );
    }

    #[test]
    fn synccheck_errors() {
        let cases = [
            ("", "window.synccheck"),
            ("garbage", "window.synccheck"),
            ("window.synccheck", "`=`"),
            ("window.synccheck=", "`{`"),
            (
                r#"window.synccheck={retcode:"0",selector:"2""#,
                "not closed",
            ),
            (r#"window.synccheck={retcode:"0",sel"#, "`:`"),
            (r#"window.synccheck={retcode:"0",selector:"#, "value"),
            (r#"window.synccheck={retcode:"0",selector:"2"#, "value"),
            (
                r#"window.synccheck={retcode:"x",selector:"2"}"#,
                "retcode is not a number",
            ),
            (
                r#"window.synccheck={retcode:"0",selector:"two"}"#,
                "selector is not a number",
            ),
            (r#"window.synccheck={selector:"2"}"#, "no retcode"),
            (r#"window.synccheck={retcode:"0"}"#, "no selector"),
            (
                r#"window.synccheck={retcode:"0" selector:"2"}"#,
                "expected `,`",
            ),
            (
                r#"window.synccheck={retcode:"0",selector:"2"} trailing"#,
                "after the object",
            ),
            (r#"window.synccheck={}"#, "no retcode"),
        ];
        for (body, want) in cases {
            let err = parse_synccheck(body).expect_err(body);
            assert!(err.to_string().contains(want), "{body:?} gave {err}");
        }
    }

    // ---- newloginpage ----

    const LOGIN_OK: &str = "<error><ret>0</ret><message></message><skey>@crypt_63d18dea_a7de6934c67e2f89ac399fa35b689a50</skey><wxsid>5YpLHmVgWwH5LxN1</wxsid><wxuin>176666155</wxuin><pass_ticket>kbmy5Jt9nj%2BJzBaJZYNpUBQyBwRTejeXq1sM%2FYH7iOI%3D</pass_ticket><isgrayscale>1</isgrayscale></error>";

    #[test]
    fn newloginpage_success() {
        let p = parse_newloginpage(LOGIN_OK).unwrap();
        assert!(p.is_ok());
        assert_eq!(p.message, "");
        assert_eq!(
            p.skey.as_deref(),
            Some("@crypt_63d18dea_a7de6934c67e2f89ac399fa35b689a50")
        );
        assert_eq!(p.wxsid.as_deref(), Some("5YpLHmVgWwH5LxN1"));
        assert_eq!(p.wxuin.as_deref(), Some("176666155"));
        assert_eq!(
            p.pass_ticket.as_deref(),
            Some("kbmy5Jt9nj%2BJzBaJZYNpUBQyBwRTejeXq1sM%2FYH7iOI%3D")
        );
        assert_eq!(p.is_grayscale, Some(1));
        let pretty = format!(
            "<?xml version=\"1.0\"?>\n{}\n",
            LOGIN_OK.replace("><", ">\n  <")
        );
        assert_eq!(parse_newloginpage(&pretty).unwrap(), p);
    }

    #[test]
    fn newloginpage_debug_redacts() {
        let p = parse_newloginpage(LOGIN_OK).unwrap();
        let dbg = format!("{p:?}");
        for secret in [
            "@crypt_63d18dea",
            "5YpLHmVgWwH5LxN1",
            "kbmy5Jt9nj",
            "176666155",
        ] {
            assert!(!dbg.contains(secret), "{dbg}");
        }
        assert!(dbg.contains("ret: 0"), "{dbg}");
    }

    #[test]
    fn newloginpage_refused() {
        let body = "<error><ret>1203</ret><message>为了你的帐号安全，此微信号不能登录网页微信。&amp;你可以使用Windows微信</message></error>";
        let p = parse_newloginpage(body).unwrap();
        assert_eq!(p.ret, 1203);
        assert!(!p.is_ok());
        assert!(p.message.starts_with("为了你的帐号安全"));
        assert!(p.message.contains("。&你可以"));
        assert_eq!(
            (p.skey, p.wxsid, p.wxuin, p.pass_ticket),
            (None, None, None, None)
        );
        let p = parse_newloginpage(
            "<error><ret>0</ret><skey></skey><isgrayscale>x</isgrayscale></error>",
        )
        .unwrap();
        assert_eq!(p.skey, None);
        assert_eq!(p.is_grayscale, None);
    }

    #[test]
    fn newloginpage_errors_do_not_leak() {
        let cases = [
            ("", "no element"),
            ("not xml at all", "text outside"),
            ("<error><message>x</message></error>", "no <ret>"),
            ("<error><ret>zero</ret></error>", "not a number"),
            (
                "<error><ret>0</ret><skey>@crypt_SECRET</skey><wxsid>SEC",
                "truncated",
            ),
            (
                "<error><ret>0</ret><skey>@crypt_SECRET</wxsid></error>",
                "ill-formed",
            ),
            ("<html><body>502</body></html>", "no <ret>"),
        ];
        for (body, want) in cases {
            let err = parse_newloginpage(body).expect_err(body);
            let msg = err.to_string();
            assert!(msg.starts_with("malformed newloginpage"), "{msg}");
            assert!(msg.contains(want), "{body:?} gave {msg}");
            assert!(!msg.contains("SECRET"), "{msg}");
        }
    }

    /// Every strict prefix of a valid body is a truncated body and must be refused, not misread.
    #[test]
    fn every_truncation_is_an_error() {
        let jslogin = r#"window.QRLogin.code = 200; window.QRLogin.uuid = "gbyKnbsmqQ==";"#;
        let poll = format!("window.code=200;\nwindow.redirect_uri=\"{REDIRECT}\";");
        let sync = r#"window.synccheck={retcode:"0",selector:"2"}"#;
        for (i, _) in jslogin.char_indices() {
            assert!(parse_jslogin(&jslogin[..i]).is_err(), "{:?}", &jslogin[..i]);
        }
        for (i, _) in poll.char_indices() {
            assert!(parse_login_poll(&poll[..i]).is_err(), "{:?}", &poll[..i]);
        }
        for (i, _) in sync.char_indices() {
            assert!(parse_synccheck(&sync[..i]).is_err(), "{:?}", &sync[..i]);
        }
        for (i, _) in LOGIN_OK.char_indices() {
            assert!(
                parse_newloginpage(&LOGIN_OK[..i]).is_err(),
                "{:?}",
                &LOGIN_OK[..i]
            );
        }
    }

    /// Arbitrary bytes never panic any parser.
    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let alphabet: Vec<char> = "window.QRLogin.code=200;uuid\"'{}:,<>/&#x;[]!?- \n\u{2005}é😄"
            .chars()
            .collect();
        for _ in 0..3000 {
            let len = (seed % 80) as usize;
            let mut s = String::new();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let _ = parse_jslogin(&s);
            let _ = parse_login_poll(&s);
            let _ = parse_synccheck(&s);
            let _ = parse_newloginpage(&s);
            let _ = parse_xml(&s);
            let _ = replace_emoji_spans(&s);
            let _ = decode_xml_entities_lenient(&s);
        }
    }

    // ---- xml tree ----

    #[test]
    fn xml_tree_queries() {
        let x = parse_xml(
            "<?xml version=\"1.0\"?><msg><appmsg appid=\"wx1\" sdkver=\"0\"><title>a &amp; b</title>\
             <des><![CDATA[<raw> & text]]></des><appattach><totallen>42</totallen></appattach>\
             <url>http://x/?a=1&amp;b=2</url><empty/></appmsg></msg>",
        )
        .unwrap();
        assert_eq!(x.name, "msg");
        let app = x.find("appmsg").unwrap();
        assert_eq!(app.attr("appid"), Some("wx1"));
        assert_eq!(app.child_text("title"), Some("a & b"));
        assert_eq!(app.child_text("des"), Some("<raw> & text"));
        assert_eq!(
            app.path(&["appattach", "totallen"]).map(XmlElement::text),
            Some("42")
        );
        assert_eq!(app.child_text("url"), Some("http://x/?a=1&b=2"));
        assert_eq!(app.child_text("empty"), Some(""));
        assert!(app.child("missing").is_none());
        assert!(x.path(&["appmsg", "nope"]).is_none());
    }

    #[test]
    fn xml_is_lenient_about_entities_and_quotes() {
        let x = parse_xml(
            "<msg a='1 &amp;&nbsp;2' b=\"&copy;\">x &hellip; &unknown; &#x1F604; & y</msg>",
        )
        .unwrap();
        assert_eq!(x.attr("a"), Some("1 &\u{a0}2"));
        assert_eq!(x.attr("b"), Some("©"));
        assert_eq!(x.text(), "x … &unknown; 😄 & y");
    }

    #[test]
    fn xml_limits_and_garbage() {
        let deep = "<a>".repeat(MAX_XML_DEPTH + 1);
        assert!(parse_xml(&deep).unwrap_err().detail.contains("deeply"));
        let many = format!("<a>{}</a>", "<b/>".repeat(MAX_XML_ELEMENTS + 1));
        assert!(parse_xml(&many).unwrap_err().detail.contains("too many"));
        let big = format!("<a>{}</a>", "x".repeat(MAX_XML_BODY));
        assert!(parse_xml(&big).unwrap_err().detail.contains("limit"));
        for garbage in [
            "<",
            "<a",
            "<a b=>",
            "</a>",
            "<a></b>",
            "<a><!-- ",
            "<![CDATA[x",
            "\u{0}\u{1}",
        ] {
            assert!(parse_xml(garbage).is_err(), "{garbage:?}");
        }
    }

    // ---- text helpers ----

    #[test]
    fn emoji_spans() {
        assert_eq!(
            replace_emoji_spans("hi<span class=\"emoji emoji1f604\"></span>!"),
            "hi😄!"
        );
        assert_eq!(
            replace_emoji_spans("<span class=\"emoji emoji2600\"></span>"),
            "☀"
        );
        assert_eq!(
            replace_emoji_spans("<span class=\"emoji emoji1f1e81f1f3\"></span>"),
            "\u{1f1e8}\u{1f1f3}"
        );
        assert_eq!(
            replace_emoji_spans("<span class=\"emoji emoji002320e3\"></span>"),
            "#\u{20e3}"
        );
        // Undecodable spans are kept.
        for odd in [
            "<span class=\"emoji emojizzzz\"></span>",
            "<span class=\"emoji emoji1234567\"></span>",
            "<span class=\"emoji emojid800\"></span>",
            "<span class=\"emoji emoji1f604\">",
            "<span class=\"emoji emoji1f604",
        ] {
            assert_eq!(replace_emoji_spans(odd), odd);
        }
        assert_eq!(replace_emoji_spans("plain"), "plain");
    }

    #[test]
    fn entity_helpers() {
        assert_eq!(
            decode_entities("a &lt;b&gt; &amp;lt; &copy; &bogus;"),
            "a <b> &lt; © &bogus;"
        );
        assert_eq!(
            decode_xml_entities_lenient("&lt;x&gt; &amp; &#65;&#x42; &copy; & ;"),
            "<x> & AB &copy; & ;"
        );
        assert_eq!(
            decode_xml_entities_lenient("&#0; &#xZZ; &"),
            "&#0; &#xZZ; &"
        );
        assert_eq!(replace_line_breaks("a<br/>b<br />c<br>d"), "a\nb\nc\nd");
    }

    // ---- lenient fields ----

    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(default)]
    struct L {
        #[serde(deserialize_with = "lenient::i64")]
        n: i64,
        #[serde(deserialize_with = "lenient::string")]
        s: String,
        #[serde(deserialize_with = "lenient::vec")]
        v: Vec<u8>,
    }

    #[test]
    fn lenient_fields() {
        let l: L = serde_json::from_str(r#"{"n":"42","s":17,"v":[1,"x",2]}"#).unwrap();
        assert_eq!((l.n, l.s.as_str(), l.v), (42, "17", vec![1, 2]));
        let l: L = serde_json::from_str(r#"{"n":null,"s":null,"v":null}"#).unwrap();
        assert_eq!((l.n, l.s.as_str(), l.v.len()), (0, "", 0));
        let l: L = serde_json::from_str(r#"{"n":{"a":1},"s":[1],"v":{}}"#).unwrap();
        assert_eq!((l.n, l.s.as_str(), l.v.len()), (0, "", 0));
        let l: L = serde_json::from_str(r#"{"n":1.9e3,"s":true}"#).unwrap();
        assert_eq!((l.n, l.s.as_str()), (1900, "true"));
        let l: L = serde_json::from_str(r#"{"n":"  -7 "}"#).unwrap();
        assert_eq!(l.n, -7);
        let l: L = serde_json::from_str(r#"{"n":18446744073709551615}"#).unwrap();
        assert_eq!(l.n, 0);
        let l: L = serde_json::from_str(r#"{"n":""}"#).unwrap();
        assert_eq!(l.n, 0);
    }
}
