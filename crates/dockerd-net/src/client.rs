//! The CLI client: a small synchronous HTTP/1.1 client over the daemon's Unix socket, the
//! typed API calls ([`Client`]), and the `interface` / `port` / `link` / `state` / `health`
//! subcommands ([`ClientCmd`], [`run`]).
//!
//! The client is blocking and hand-written rather than hyper's: it sends one request per
//! connection (`Connection: close`) and reads one answer, so it needs neither a runtime nor a
//! new dependency, and the CLI stays a plain program. It reads answers framed by
//! `Content-Length` or `Transfer-Encoding: chunked` (hyper uses either), or by the close.
//!
//! Errors read like the docker CLI's: an error answer prints as
//! `Error response from daemon: <message>`, a missing daemon as
//! `cannot connect to dockerd-net at <socket>: <reason> (is the daemon running?)`.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use netcore::firewall::PortMapping;
use netcore::handlers::LinkSpec;
use netcore::mac::MacAddr;
use netcore::ports::Proto;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api;

/// Largest header block accepted in an answer.
const MAX_HEAD: usize = 64 * 1024;

/// Largest answer body accepted. `GET /v1/state` is the only large answer (about 200 bytes a
/// container), so this leaves room for far more containers than a bridge has addresses.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// The client's result.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// An error answer from the daemon: its HTTP status and its `message`.
///
/// Displays as the docker CLI prints a daemon error: `Error response from daemon: <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Error response from daemon: {message}")]
pub struct ApiError {
    /// The HTTP status (4xx or 5xx).
    pub status: u16,
    /// The daemon's message (its `{"message": ...}`, or the body's text if it sent no JSON).
    pub message: String,
}

/// Why a call to the daemon failed.
///
/// Every variant's text is complete (it includes the underlying error's text), so none has
/// a `source()`: `anyhow`'s `{:#}` would otherwise print the cause twice. (Hence the fields
/// are named `error`, not `source`, which thiserror would make the source.)
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `-H/--host` is not `unix:///path`.
    #[error(
        "invalid host {0:?}: expected unix:///path/to/socket (dockerd-net serves only a Unix socket)"
    )]
    BadHost(String),
    /// The socket could not be connected to.
    #[error(
        "cannot connect to dockerd-net at {}: {} ({})",
        socket.display(), os_text(error), connect_hint(error)
    )]
    Connect { socket: PathBuf, error: io::Error },
    /// Writing the request or reading the answer failed.
    #[error("talking to dockerd-net at {}: {}", socket.display(), os_text(error))]
    Io { socket: PathBuf, error: io::Error },
    /// No complete answer within the timeout.
    #[error(
        "dockerd-net at {} did not answer within {}s",
        socket.display(), after.as_secs_f64()
    )]
    Timeout { socket: PathBuf, after: Duration },
    /// The answer is not well-formed HTTP/1.x.
    #[error("malformed answer from dockerd-net at {}: {detail}", socket.display())]
    Protocol { socket: PathBuf, detail: String },
    /// A success answer whose body is not the expected JSON.
    #[error(
        "malformed answer from dockerd-net at {}: expected {what}: {error}",
        socket.display()
    )]
    Decode {
        socket: PathBuf,
        what: &'static str,
        error: serde_json::Error,
    },
    /// A value could not be turned into JSON.
    #[error("cannot encode JSON: {0}")]
    Encode(serde_json::Error),
    /// The daemon answered with an error status.
    #[error("{0}")]
    Api(ApiError),
}

impl ClientError {
    /// The daemon's error answer, if that is what this is.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) => Some(e),
            _ => None,
        }
    }
}

/// An OS error's text without Rust's ` (os error N)` suffix, as the docker CLI prints it.
fn os_text(e: &io::Error) -> String {
    let text = e.to_string();
    if let Some(code) = e.raw_os_error()
        && let Some(bare) = text.strip_suffix(&format!(" (os error {code})"))
    {
        return bare.to_owned();
    }
    text
}

fn connect_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "run as root or as a member of the socket's group",
        _ => "is the daemon running?",
    }
}

// ---------------------------------------------------------------------------------------------
// The socket address
// ---------------------------------------------------------------------------------------------

/// The socket path of a `-H/--host` value. Only `unix:///absolute/path` is accepted: the
/// daemon serves no TCP (an unauthenticated TCP socket would hand the host's firewall to
/// anyone who can reach it, the mistake Docker's `-H tcp://` without TLS invites).
pub fn parse_host(url: &str) -> Result<PathBuf> {
    match url.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') && path.len() > 1 => Ok(PathBuf::from(path)),
        _ => Err(ClientError::BadHost(url.to_owned())),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase (may be empty).
    pub reason: String,
    /// The headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The bytes of one request.
fn encode_request(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\n\
         Host: localhost\r\n\
         User-Agent: dockerd-net-cli/{}\r\n\
         Accept: application/json\r\n",
        env!("CARGO_PKG_VERSION")
    );
    match body {
        Some(body) => head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )),
        None if method != "GET" && method != "HEAD" => head.push_str("Content-Length: 0\r\n"),
        None => {}
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.unwrap_or_default());
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How the body of an answer ends.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

fn parse_status_line(line: &str) -> Result<(u16, String), String> {
    let bad = || format!("bad status line {line:?}");
    let (version, rest) = line.split_once(' ').ok_or_else(bad)?;
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(format!("unsupported protocol version {version:?}"));
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    if !(100..=599).contains(&status) {
        return Err(bad());
    }
    Ok((status, reason.to_owned()))
}

fn parse_header(line: &str) -> Result<(String, String), String> {
    if line.starts_with([' ', '\t']) {
        // Obsolete line folding (RFC 9112 §5.2): no server of ours sends it.
        return Err(format!("folded header line {line:?}"));
    }
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| format!("bad header line {line:?}"))?;
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("bad header name {name:?}"));
    }
    Ok((
        name.to_ascii_lowercase(),
        value.trim_matches([' ', '\t']).to_owned(),
    ))
}

fn framing(status: u16, headers: &[(String, String)]) -> Result<Framing, String> {
    if status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    let values = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect::<Vec<_>>()
    };
    // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3).
    let codings = values("transfer-encoding");
    if let Some(last) = codings.last() {
        return if codings.len() == 1 && last.eq_ignore_ascii_case("chunked") {
            Ok(Framing::Chunked)
        } else {
            Err(format!(
                "unsupported Transfer-Encoding {:?}",
                codings.join(", ")
            ))
        };
    }
    let lengths = values("content-length");
    let Some(first) = lengths.first() else {
        return Ok(Framing::UntilClose);
    };
    if lengths.iter().any(|l| l != first) {
        return Err(format!("conflicting Content-Length values {lengths:?}"));
    }
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad Content-Length {first:?}"));
    }
    match first.parse::<usize>() {
        Ok(n) if n <= MAX_ANSWER => Ok(Framing::Length(n)),
        _ => Err(format!(
            "Content-Length {first} exceeds the {MAX_ANSWER}-byte limit"
        )),
    }
}

/// De-chunks a chunked body. `Ok(None)`: more bytes are needed. Chunk sizes are followed
/// without copying, so calling this again after each read costs one step per chunk.
fn dechunk(body: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut pos = 0;
    let mut pieces: Vec<Range<usize>> = Vec::new();
    let mut total = 0usize;
    loop {
        let Some(eol) = find(&body[pos..], b"\r\n") else {
            return if body.len() - pos > 1024 {
                Err("chunk size line longer than 1024 bytes".to_owned())
            } else {
                Ok(None)
            };
        };
        let line = String::from_utf8_lossy(&body[pos..pos + eol]);
        // Chunk extensions (`;name=value`) carry nothing we use.
        let digits = line
            .split(';')
            .next()
            .unwrap_or("")
            .trim_matches([' ', '\t']);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("bad chunk size {line:?}"));
        }
        let size = usize::from_str_radix(digits, 16)
            .ok()
            .filter(|s| total.saturating_add(*s) <= MAX_ANSWER)
            .ok_or_else(|| format!("chunked body exceeds the {MAX_ANSWER}-byte limit"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailer fields up to an empty line; their content is ignored.
            loop {
                let Some(eol) = find(&body[pos..], b"\r\n") else {
                    return Ok(None);
                };
                if eol == 0 {
                    let mut out = Vec::with_capacity(total);
                    for r in pieces {
                        out.extend_from_slice(&body[r]);
                    }
                    return Ok(Some(out));
                }
                pos += eol + 2;
            }
        }
        if body.len() < pos + size + 2 {
            return Ok(None);
        }
        if &body[pos + size..pos + size + 2] != b"\r\n" {
            return Err(format!("chunk of {size} bytes not followed by CRLF"));
        }
        pieces.push(pos..pos + size);
        total += size;
        pos += size + 2;
    }
}

/// Parses an answer from the bytes read so far. `Ok(None)`: more bytes are needed (never
/// when `eof`, the peer having closed). Interim 1xx answers are skipped.
fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        let Some(head_len) = find(rest, b"\r\n\r\n") else {
            return if rest.len() > MAX_HEAD {
                Err(format!("headers longer than {MAX_HEAD} bytes"))
            } else if !eof {
                Ok(None)
            } else if rest.is_empty() {
                Err("the connection closed without an answer".to_owned())
            } else {
                Err("the connection closed in the middle of the headers".to_owned())
            };
        };
        if head_len > MAX_HEAD {
            return Err(format!("headers longer than {MAX_HEAD} bytes"));
        }
        let head = std::str::from_utf8(&rest[..head_len])
            .map_err(|_| "the headers are not UTF-8".to_owned())?;
        let mut lines = head.split("\r\n");
        let (status, reason) = parse_status_line(lines.next().unwrap_or_default())?;
        let headers = lines.map(parse_header).collect::<Result<Vec<_>, _>>()?;
        let body_start = start + head_len + 4;
        if status == 101 {
            return Err("unexpected 101 Switching Protocols".to_owned());
        }
        if status < 200 {
            start = body_start;
            continue;
        }
        let rest = &buf[body_start..];
        let body = match framing(status, &headers)? {
            Framing::Empty => Vec::new(),
            Framing::Length(n) if rest.len() >= n => rest[..n].to_vec(),
            Framing::Length(n) if eof => {
                return Err(format!(
                    "the connection closed after {} of {n} body bytes",
                    rest.len()
                ));
            }
            Framing::Chunked => match dechunk(rest)? {
                Some(body) => body,
                None if eof => {
                    return Err("the connection closed in the middle of a chunked body".into());
                }
                None => return Ok(None),
            },
            Framing::UntilClose if eof => rest.to_vec(),
            Framing::Length(_) | Framing::UntilClose => return Ok(None),
        };
        return Ok(Some(Response {
            status,
            reason,
            headers,
            body,
        }));
    }
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// A client of the daemon's v1 API.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// How long one call may take, connection to last byte. Generous: a call waits for its
    /// iptables-restore batch and for the state to reach the disk.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// A client of the daemon listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// A client of the daemon at a `-H/--host` value (`unix:///path`).
    pub fn from_host(url: &str) -> Result<Self> {
        parse_host(url).map(Self::new)
    }

    /// The same client with another timeout for each call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket this client connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `POST /v1/allocate_interface`.
    pub fn allocate_interface(&self, req: &api::AllocateInterface) -> Result<api::InterfaceReply> {
        self.call("POST", "allocate_interface", Some(req), "an interface")
    }

    /// `POST /v1/release_interface`.
    pub fn release_interface(&self, req: &api::ReleaseInterface) -> Result<api::Released> {
        self.call(
            "POST",
            "release_interface",
            Some(req),
            "a released interface",
        )
    }

    /// `POST /v1/allocate_port`.
    pub fn allocate_port(&self, req: &api::AllocatePort) -> Result<api::PortReply> {
        self.call("POST", "allocate_port", Some(req), "a port mapping")
    }

    /// `POST /v1/release_port`.
    pub fn release_port(&self, req: &api::ReleasePort) -> Result<api::PortReply> {
        self.call("POST", "release_port", Some(req), "a port mapping")
    }

    /// `POST /v1/link`.
    pub fn link(&self, req: &api::Link) -> Result<api::LinkReply> {
        self.call("POST", "link", Some(req), "a link answer")
    }

    /// `POST /v1/attach`.
    pub fn attach(&self, req: &api::Attach) -> Result<api::Attached> {
        self.call("POST", "attach", Some(req), "an attachment")
    }

    /// `POST /v1/detach`.
    pub fn detach(&self, req: &api::Detach) -> Result<api::Detached> {
        self.call("POST", "detach", Some(req), "a detach answer")
    }

    /// `GET /v1/state`.
    pub fn state(&self) -> Result<api::State> {
        self.call("GET", "state", None::<&()>, "the state")
    }

    /// `GET /v1/health`.
    pub fn health(&self) -> Result<api::Health> {
        self.call("GET", "health", None::<&()>, "a health answer")
    }

    fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        method: &str,
        endpoint: &str,
        req: Option<&Q>,
        what: &'static str,
    ) -> Result<A> {
        let body = req
            .map(serde_json::to_vec)
            .transpose()
            .map_err(ClientError::Encode)?;
        let path = format!("{}/{endpoint}", api::PREFIX);
        tracing::debug!(%method, %path, "calling dockerd-net");
        let resp = self.send(method, &path, body.as_deref())?;
        if !(200..300).contains(&resp.status) {
            return Err(ClientError::Api(api_error(&resp)));
        }
        serde_json::from_slice(&resp.body).map_err(|error| ClientError::Decode {
            socket: self.socket.clone(),
            what,
            error,
        })
    }

    /// Sends one raw request (a JSON body, if any) and returns the answer whatever its status.
    /// For tests and benchmarks that must send what the typed calls cannot (malformed JSON,
    /// huge bodies).
    pub fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response> {
        let deadline = Instant::now() + self.timeout;
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|error| ClientError::Connect {
                socket: self.socket.clone(),
                error,
            })?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(|e| self.io(e))?;
        // No shutdown(Write) after the request: hyper closes a connection whose read side
        // ends before it has answered (its `half_close` is off by default).
        if let Err(e) = stream.write_all(&encode_request(method, path, body)) {
            // A daemon that refuses a body (413) answers and closes before reading it all;
            // its answer is still there to read, and says more than EPIPE.
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) && let Ok(resp) = self.read_response(&mut stream, deadline)
            {
                return Ok(resp);
            }
            return Err(self.io(e));
        }
        self.read_response(&mut stream, deadline)
    }

    fn io(&self, error: io::Error) -> ClientError {
        if matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ClientError::Timeout {
                socket: self.socket.clone(),
                after: self.timeout,
            }
        } else {
            ClientError::Io {
                socket: self.socket.clone(),
                error,
            }
        }
    }

    fn read_response(&self, stream: &mut UnixStream, deadline: Instant) -> Result<Response> {
        let protocol = |detail| ClientError::Protocol {
            socket: self.socket.clone(),
            detail,
        };
        let mut buf = Vec::with_capacity(8 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(resp) = parse_response(&buf, false).map_err(protocol)? {
                return Ok(resp);
            }
            // One deadline for the whole answer, not one per read: a daemon trickling bytes
            // must not keep the CLI waiting forever.
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| self.io(io::ErrorKind::TimedOut.into()))?;
            stream
                .set_read_timeout(Some(left))
                .map_err(|e| self.io(e))?;
            match stream.read(&mut chunk) {
                Ok(0) => {
                    return parse_response(&buf, true)
                        .map_err(protocol)?
                        .ok_or_else(|| protocol("the connection closed early".to_owned()));
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > MAX_HEAD + MAX_ANSWER + 64 * 1024 {
                        return Err(protocol(format!(
                            "answer exceeds the {MAX_ANSWER}-byte limit"
                        )));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
    }
}

/// The error an error answer carries: the daemon's `{"message"}`, else the body's text,
/// else the status line.
fn api_error(resp: &Response) -> ApiError {
    let message = match serde_json::from_slice::<api::ErrorReply>(&resp.body) {
        Ok(reply) => reply.message,
        Err(_) => {
            let text = String::from_utf8_lossy(&resp.body).trim().to_owned();
            if text.is_empty() {
                format!("{} {}", resp.status, resp.reason)
                    .trim_end()
                    .to_owned()
            } else {
                text
            }
        }
    };
    ApiError {
        status: resp.status,
        message,
    }
}

// ---------------------------------------------------------------------------------------------
// Port specs
// ---------------------------------------------------------------------------------------------

/// A command-line value that does not parse; the text names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// `port publish`'s `[HOSTIP:][HOSTPORT:]CONTAINERPORT[/PROTO]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishSpec {
    /// None: the daemon's `--ip`.
    pub host_ip: Option<Ipv4Addr>,
    /// None: the next free port of 49153-65535.
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub proto: Proto,
}

impl PublishSpec {
    /// The request publishing this for container `id`.
    pub fn request(&self, id: &str) -> api::AllocatePort {
        api::AllocatePort {
            id: id.to_owned(),
            host_ip: self.host_ip.map(|ip| ip.to_string()),
            host_port: self.host_port,
            container_port: self.container_port,
            proto: Some(self.proto.name().to_owned()),
        }
    }
}

/// `port unpublish`'s `HOSTIP:HOSTPORT[/PROTO]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostBinding {
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub proto: Proto,
}

/// `link`'s `PORT[/PROTO]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortProto {
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for PortProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.proto)
    }
}

/// Splits `/PROTO` off. As Docker's `nat.SplitProtoPort`: no `/` or an empty protocol
/// (`80/`) means tcp, and the protocol is case-insensitive (`validateProto` lower-cases it).
fn split_proto(s: &str) -> Result<(&str, Proto), SpecError> {
    match s.split_once('/') {
        None | Some((_, "")) => Ok((s.split('/').next().unwrap_or(s), Proto::Tcp)),
        Some((port, proto)) => proto
            .to_ascii_lowercase()
            .parse::<Proto>()
            .map(|p| (port, p))
            .map_err(|_| {
                SpecError(format!(
                    "invalid protocol {proto:?} in {s:?}: expected tcp, udp or sctp"
                ))
            }),
    }
}

/// A port in 1-65535. Port 0 is refused everywhere: a dynamic host port is asked for by
/// leaving the host port out, as with `docker run -p`.
fn parse_port(whole: &str, what: &str, s: &str) -> Result<u16, SpecError> {
    if s.is_empty() {
        return Err(SpecError(format!("missing {what} in {whole:?}")));
    }
    if s.contains('-') && s.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        // Docker expands ranges into one mapping per port; the API publishes one port a call.
        return Err(SpecError(format!(
            "port ranges are not supported: {what} {s:?} in {whole:?}"
        )));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpecError(format!("invalid {what} {s:?} in {whole:?}")));
    }
    // Digits only, so the one way parsing fails is a number above 65535.
    match s.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(SpecError(format!(
            "invalid {what} {s:?} in {whole:?}: must be 1-65535"
        ))),
    }
}

fn parse_ip(whole: &str, s: &str) -> Result<Ipv4Addr, SpecError> {
    s.parse().map_err(|_| {
        SpecError(format!(
            "invalid host IP {s:?} in {whole:?}: expected an IPv4 address"
        ))
    })
}

/// Parses `port publish`'s spec, `[HOSTIP:][HOSTPORT:]CONTAINERPORT[/PROTO]`, as
/// `docker run -p` does (Docker's `nat.ParsePortSpec`): `8080:80/tcp`, `127.0.0.1:8080:80`,
/// `80` (dynamic host port), `127.0.0.1::80/udp` (dynamic port on one IP).
/// IPv4 only, one port (no ranges).
pub fn parse_publish_spec(s: &str) -> Result<PublishSpec, SpecError> {
    let (rest, proto) = split_proto(s)?;
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host_port, container_port) = match parts.as_slice() {
        [c] => (None, None, *c),
        [h, c] => (None, Some(*h), *c),
        [ip, h, c] => (Some(*ip), Some(*h), *c),
        _ => {
            return Err(SpecError(format!(
                "invalid port spec {s:?}: expected [HOSTIP:][HOSTPORT:]CONTAINERPORT[/PROTO] \
                 with an IPv4 host IP"
            )));
        }
    };
    Ok(PublishSpec {
        // An empty IP (`:8080:80`) is no IP, as in Docker.
        host_ip: ip
            .filter(|ip| !ip.is_empty())
            .map(|ip| parse_ip(s, ip))
            .transpose()?,
        host_port: host_port
            .filter(|p| !p.is_empty())
            .map(|p| parse_port(s, "host port", p))
            .transpose()?,
        container_port: parse_port(s, "container port", container_port)?,
        proto,
    })
}

/// Parses `port unpublish`'s `HOSTIP:HOSTPORT[/PROTO]`, the host side `port publish` printed.
pub fn parse_host_binding(s: &str) -> Result<HostBinding, SpecError> {
    let (rest, proto) = split_proto(s)?;
    let (ip, port) = rest.rsplit_once(':').ok_or_else(|| {
        SpecError(format!(
            "invalid published port {s:?}: expected HOSTIP:HOSTPORT[/PROTO], \
             e.g. 0.0.0.0:49153/tcp"
        ))
    })?;
    Ok(HostBinding {
        host_ip: parse_ip(s, ip)?,
        host_port: parse_port(s, "host port", port)?,
        proto,
    })
}

/// Parses `link`'s `PORT[/PROTO]`.
pub fn parse_port_proto(s: &str) -> Result<PortProto, SpecError> {
    let (port, proto) = split_proto(s)?;
    Ok(PortProto {
        port: parse_port(s, "port", port)?,
        proto,
    })
}

// ---------------------------------------------------------------------------------------------
// The subcommands
// ---------------------------------------------------------------------------------------------

/// The client subcommands (each one API call).
#[derive(Debug, Subcommand)]
pub enum ClientCmd {
    /// Allocate or release a container's network interface (IP and MAC on the bridge)
    #[command(subcommand)]
    Interface(InterfaceCmd),
    /// Publish or unpublish a container's port on the host
    #[command(subcommand)]
    Port(PortCmd),
    /// Enable or disable a legacy link (with --icc=false, open ports from parent to child)
    #[command(subcommand)]
    Link(LinkCmd),
    /// Plug a container's network namespace into the bridge: a veth pair, the container end
    /// configured with the container's IP, MAC, MTU and default route (allocating its
    /// interface if it has none). Again for the same container: the same answer
    Attach {
        /// The container's id
        id: String,
        /// The container's network namespace: a path (/proc/PID/ns/net, /run/netns/NAME)
        /// or a process id
        netns: String,
        /// The interface's name inside the namespace [default: eth0]
        #[arg(long, value_name = "NAME")]
        ifname: Option<String>,
    },
    /// Unplug a container: take its veth off the bridge and down (the daemon deletes the pair
    /// in the background), and release its interface if attach allocated it (nothing to
    /// detach is not an error)
    Detach {
        /// The container's id
        id: String,
        /// Answer only once the veth pair is deleted, not as soon as it is unplugged
        #[arg(long)]
        wait: bool,
    },
    /// Show the daemon's allocations: containers, IPs, MACs, published ports, links
    State,
    /// Check that the daemon answers
    Health,
}

/// `interface ...`
#[derive(Debug, Subcommand)]
pub enum InterfaceCmd {
    /// Give a container an IP and a MAC on the bridge (again for the same container: the same answer)
    Allocate {
        /// The container's id
        id: String,
        /// Ask for this IP (in the bridge's range, and free). Not `--ip`: that is the daemon's
        /// default binding IP, a global flag
        #[arg(long, value_name = "IP")]
        requested_ip: Option<Ipv4Addr>,
        /// Ask for this MAC (default: 02:42 followed by the IP's four bytes)
        #[arg(long, value_name = "MAC")]
        requested_mac: Option<MacAddr>,
    },
    /// Release a container's interface: unpublish its ports, drop its links, free its IP
    Release {
        /// The container's id
        id: String,
    },
}

/// `port ...`
#[derive(Debug, Subcommand)]
pub enum PortCmd {
    /// Publish a container port on the host, as `docker run -p` does
    Publish {
        /// The container's id
        id: String,
        /// [HOSTIP:][HOSTPORT:]CONTAINERPORT[/PROTO], e.g. 8080:80/tcp, 127.0.0.1:8080:80,
        /// 80 (a free host port of 49153-65535), 127.0.0.1::80/udp
        #[arg(value_parser = parse_publish_spec, value_name = "SPEC")]
        spec: PublishSpec,
    },
    /// Unpublish a port
    Unpublish {
        /// The container's id
        id: String,
        /// HOSTIP:HOSTPORT[/PROTO], the host side `port publish` printed, e.g. 0.0.0.0:49153/tcp
        #[arg(value_parser = parse_host_binding, value_name = "HOSTIP:HOSTPORT[/PROTO]")]
        binding: HostBinding,
    },
}

/// `link ...`
#[derive(Debug, Subcommand)]
pub enum LinkCmd {
    /// Open the ports from the parent container to the child
    Enable(LinkArgs),
    /// Close them again
    Disable(LinkArgs),
}

/// The operands of `link enable|disable`.
#[derive(Debug, Args)]
pub struct LinkArgs {
    /// The parent's (the connecting container's) IP
    pub parent_ip: Ipv4Addr,
    /// The child's (the linked container's) IP
    pub child_ip: Ipv4Addr,
    /// PORT[/PROTO], e.g. 5432 or 53/udp (tcp by default)
    #[arg(required = true, value_parser = parse_port_proto, value_name = "PORT[/PROTO]")]
    pub ports: Vec<PortProto>,
}

impl LinkArgs {
    fn request(&self, enable: bool) -> api::Link {
        api::Link {
            parent_ip: self.parent_ip.to_string(),
            child_ip: self.child_ip.to_string(),
            ports: self.ports.iter().map(ToString::to_string).collect(),
            enable,
        }
    }
}

/// Runs one client subcommand against the daemon at `host` (`unix:///path`) and prints its
/// answer: human text, or the answer's JSON (pretty) with `json`. An error answer becomes an
/// error displaying as `Error response from daemon: <message>` (a [`ClientError::Api`]).
pub fn run(host: &str, cmd: ClientCmd, json: bool) -> anyhow::Result<()> {
    let client = Client::from_host(host)?;
    let out = execute(&client, cmd, json)?;
    let mut stdout = io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Runs a subcommand and returns what it prints.
fn execute(client: &Client, cmd: ClientCmd, json: bool) -> Result<String> {
    match cmd {
        ClientCmd::Interface(InterfaceCmd::Allocate {
            id,
            requested_ip,
            requested_mac,
        }) => {
            let reply = client.allocate_interface(&api::AllocateInterface {
                id,
                requested_ip: requested_ip.map(|ip| ip.to_string()),
                requested_mac: requested_mac.map(|mac| mac.to_string()),
            })?;
            render(json, &reply, human_interface)
        }
        ClientCmd::Interface(InterfaceCmd::Release { id }) => {
            let reply = client.release_interface(&api::ReleaseInterface { id })?;
            render(json, &reply, human_released)
        }
        ClientCmd::Port(PortCmd::Publish { id, spec }) => {
            let reply = client.allocate_port(&spec.request(&id))?;
            render(json, &reply, |m| format!("{}\n", human_mapping(m)))
        }
        ClientCmd::Port(PortCmd::Unpublish { id, binding }) => {
            let reply = client.release_port(&api::ReleasePort {
                id,
                host_ip: binding.host_ip.to_string(),
                host_port: binding.host_port,
                proto: Some(binding.proto.name().to_owned()),
            })?;
            render(json, &reply, |m| {
                format!("unpublished {}\n", human_mapping(m))
            })
        }
        ClientCmd::Link(cmd) => {
            let (args, enable) = match &cmd {
                LinkCmd::Enable(args) => (args, true),
                LinkCmd::Disable(args) => (args, false),
            };
            let reply = client.link(&args.request(enable))?;
            render(json, &reply, |r| human_link(r, enable))
        }
        ClientCmd::Attach { id, netns, ifname } => {
            let reply = client.attach(&api::Attach { id, netns, ifname })?;
            render(json, &reply, human_attached)
        }
        ClientCmd::Detach { id, wait } => {
            let reply = client.detach(&api::Detach { id, wait })?;
            render(json, &reply, |d| human_detached(d, wait))
        }
        ClientCmd::State => render(json, &client.state()?, human_state),
        ClientCmd::Health => render(json, &client.health()?, human_health),
    }
}

fn render<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) -> Result<String> {
    if json {
        let mut text = serde_json::to_string_pretty(value).map_err(ClientError::Encode)?;
        text.push('\n');
        Ok(text)
    } else {
        Ok(human(value))
    }
}

fn human_interface(i: &api::InterfaceReply) -> String {
    format!(
        "{}/{} gw {} mac {} on {}\n",
        i.ip, i.prefix_len, i.gateway, i.mac, i.bridge
    )
}

/// `0.0.0.0:49153 -> 172.17.0.2:80/tcp`
fn human_mapping(m: &PortMapping) -> String {
    format!(
        "{}:{} -> {}:{}/{}",
        m.host_ip, m.host_port, m.container_ip, m.container_port, m.proto
    )
}

fn human_released(r: &api::Released) -> String {
    let mut out = format!("released {} of {}\n", r.ip, r.id);
    for m in &r.ports {
        out.push_str(&format!("unpublished {}\n", human_mapping(m)));
    }
    out
}

/// `attached c1: eth0 172.17.0.2/16 gw 172.17.42.1 mac 02:42:ac:11:00:02 mtu 1500 in
/// /proc/4242/ns/net (host veth veth1a2b3c4 on docker0)`, on one line.
fn human_attached(a: &api::Attached) -> String {
    let i = &a.interface;
    format!(
        "attached {}: {} {}/{} gw {} mac {} mtu {} in {} (host veth {} on {})\n",
        a.id, a.ifname, i.ip, i.prefix_len, i.gateway, i.mac, a.mtu, a.netns, a.host_veth, i.bridge
    )
}

/// `waited`: detach was asked to answer once the veth is deleted (`--wait`); otherwise it is
/// unplugged and being deleted.
fn human_detached(d: &api::Detached, waited: bool) -> String {
    if !d.detached {
        return format!("nothing to detach: {} is not attached\n", d.id);
    }
    let mut out = match &d.host_veth {
        Some(veth) if waited => format!("detached {}: removed {veth}\n", d.id),
        Some(veth) => format!(
            "detached {}: unplugged {veth} (deleted in the background)\n",
            d.id
        ),
        None => format!("detached {}\n", d.id),
    };
    match &d.released {
        Some(r) => out.push_str(&human_released(r)),
        None => out.push_str(&format!(
            "{}'s interface stays allocated (it was allocated before attach)\n",
            d.id
        )),
    }
    out
}

fn human_link(r: &api::LinkReply, enable: bool) -> String {
    if r.changed.is_empty() {
        let state = if enable { "enabled" } else { "disabled" };
        return format!("nothing changed: already {state}\n");
    }
    let verb = if enable { "linked" } else { "unlinked" };
    r.changed
        .iter()
        .map(|l: &LinkSpec| {
            format!(
                "{verb} {} -> {} {}/{}\n",
                l.parent, l.child, l.port, l.proto
            )
        })
        .collect()
}

/// Columns separated by three spaces, as `docker ps` aligns them; no trailing blanks.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn human_state(s: &api::State) -> String {
    let mut out = format!("bridge {} {}\n", s.bridge, s.address);
    if s.containers.is_empty() {
        out.push_str("no containers\n");
    } else {
        let mut rows = vec![vec![
            "CONTAINER".to_owned(),
            "IP".to_owned(),
            "MAC".to_owned(),
            "PORTS".to_owned(),
        ]];
        for (id, ep) in &s.containers {
            // `docker ps`'s spelling of a published port.
            let ports: Vec<String> = ep
                .ports
                .iter()
                .map(|m| {
                    format!(
                        "{}:{}->{}/{}",
                        m.host_ip, m.host_port, m.container_port, m.proto
                    )
                })
                .collect();
            rows.push(vec![
                id.clone(),
                ep.ip.to_string(),
                ep.mac.to_string(),
                ports.join(", "),
            ]);
        }
        out.push_str(&table(&rows));
    }
    if !s.links.is_empty() {
        let mut rows = vec![vec![
            "LINK PARENT".to_owned(),
            "CHILD".to_owned(),
            "PORT".to_owned(),
        ]];
        for l in &s.links {
            rows.push(vec![
                l.parent.to_string(),
                l.child.to_string(),
                format!("{}/{}", l.port, l.proto),
            ]);
        }
        out.push('\n');
        out.push_str(&table(&rows));
    }
    if !s.attachments.is_empty() {
        let mut rows = vec![vec![
            "ATTACHED".to_owned(),
            "NETNS".to_owned(),
            "IFNAME".to_owned(),
            "HOST VETH".to_owned(),
            "MTU".to_owned(),
        ]];
        for (id, a) in &s.attachments {
            rows.push(vec![
                id.clone(),
                a.netns.clone(),
                a.ifname.clone(),
                a.host_veth.clone(),
                a.mtu.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&table(&rows));
    }
    out
}

fn human_health(h: &api::Health) -> String {
    format!(
        "status: {}\nversion: {}\nlink backend: {}\ncontainers: {}\n",
        h.status, h.version, h.link_backend, h.containers
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread::{self, JoinHandle};

    use clap::{CommandFactory, Parser};
    use netcore::handlers::{Endpoint, Interface};

    // ----- HTTP answer parsing ---------------------------------------------------------------

    fn parsed(raw: &str) -> Response {
        match parse_response(raw.as_bytes(), true) {
            Ok(Some(r)) => r,
            other => panic!("{raw:?} did not parse: {other:?}"),
        }
    }

    fn parse_err(raw: &[u8], eof: bool) -> String {
        match parse_response(raw, eof) {
            Err(e) => e,
            other => panic!("{:?} parsed: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn content_length_body_is_taken_exactly() {
        let raw = "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n\
                   Content-Length: 7\r\n\r\n{\"a\":1}trailing junk";
        let r = parsed(raw);
        assert_eq!(r.status, 201);
        assert_eq!(r.reason, "Created");
        assert_eq!(r.body, b"{\"a\":1}");
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.header("CONTENT-LENGTH"), Some("7"));
        assert_eq!(r.header("x-missing"), None);
    }

    #[test]
    fn answers_are_complete_only_once_every_byte_is_there() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                       4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let length = "HTTP/1.1 409 Conflict\r\nContent-Length: 5\r\n\r\nabcde";
        for (raw, body) in [(chunked, "Wikipedia"), (length, "abcde")] {
            let raw = raw.as_bytes();
            for cut in 0..raw.len() {
                assert_eq!(
                    parse_response(&raw[..cut], false),
                    Ok(None),
                    "complete after {cut} of {} bytes",
                    raw.len()
                );
                assert!(
                    parse_response(&raw[..cut], true).is_err(),
                    "a close after {cut} bytes must be an error"
                );
            }
            let r = match parse_response(raw, false) {
                Ok(Some(r)) => r,
                other => panic!("complete answer not parsed: {other:?}"),
            };
            assert_eq!(r.body, body.as_bytes());
        }
    }

    #[test]
    fn truncated_bodies_name_what_is_missing() {
        let e = parse_err(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true);
        assert_eq!(e, "the connection closed after 3 of 10 body bytes");
        let e = parse_err(b"", true);
        assert_eq!(e, "the connection closed without an answer");
        let e = parse_err(b"HTTP/1.1 200 OK\r\nContent-", true);
        assert_eq!(e, "the connection closed in the middle of the headers");
    }

    #[test]
    fn body_without_length_runs_to_the_close() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello";
        assert_eq!(parse_response(raw, false), Ok(None));
        let r = parsed(std::str::from_utf8(raw).unwrap_or_default());
        assert_eq!(r.body, b"hello");
    }

    #[test]
    fn no_content_has_no_body() {
        let r = parsed("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
        // Not even when the server wrongly sends bytes after it.
        let r = parsed("HTTP/1.1 204 No Content\r\n\r\nstray");
        assert!(r.body.is_empty());
    }

    #[test]
    fn interim_answers_are_skipped() {
        let r =
            parsed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));
        let e = parse_err(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", true);
        assert!(e.contains("101"), "{e}");
    }

    #[test]
    fn bad_status_lines_are_refused() {
        for (line, want) in [
            ("HTTP/2 200 OK", "unsupported protocol version \"HTTP/2\""),
            ("HTTP/1.1 2000 OK", "bad status line \"HTTP/1.1 2000 OK\""),
            ("HTTP/1.1 abc OK", "bad status line \"HTTP/1.1 abc OK\""),
            ("HTTP/1.1 099 Low", "bad status line \"HTTP/1.1 099 Low\""),
            ("hello", "bad status line \"hello\""),
            (
                "SSH-2.0-OpenSSH_9.6",
                "bad status line \"SSH-2.0-OpenSSH_9.6\"",
            ),
        ] {
            let raw = format!("{line}\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(parse_err(raw.as_bytes(), true), want);
        }
        // A status line without a reason phrase is valid.
        let r = parsed("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((r.status, r.reason.as_str()), (200, ""));
    }

    #[test]
    fn bad_headers_are_refused() {
        for (head, want) in [
            ("no colon here", "bad header line \"no colon here\""),
            (" folded: value", "folded header line \" folded: value\""),
            ("bad name: x", "bad header name \"bad name\""),
            (": x", "bad header name \"\""),
            ("Content-Length: 1\r\nContent-Length: 2", "conflicting"),
            ("Content-Length: -1", "bad Content-Length \"-1\""),
            ("Content-Length: 99999999999", "exceeds"),
            (
                "Transfer-Encoding: gzip",
                "unsupported Transfer-Encoding \"gzip\"",
            ),
            (
                "Transfer-Encoding: chunked, gzip",
                "unsupported Transfer-Encoding \"chunked, gzip\"",
            ),
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\n{head}\r\n\r\n");
            let e = parse_err(raw.as_bytes(), true);
            assert!(e.contains(want), "{head:?}: {e:?} lacks {want:?}");
        }
        // The same value repeated is one length (RFC 9110 allows the list form).
        let r = parsed("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok");
        assert_eq!(r.body, b"ok");
    }

    #[test]
    fn transfer_encoding_overrides_content_length() {
        let r = parsed(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\ntransfer-encoding: Chunked\r\n\r\n\
             2\r\nok\r\n0\r\n\r\n",
        );
        assert_eq!(r.body, b"ok");
    }

    #[test]
    fn bad_chunks_are_refused() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (chunks, want) in [
            ("zz\r\nab\r\n0\r\n\r\n", "bad chunk size \"zz\""),
            ("\r\n", "bad chunk size \"\""),
            ("+2\r\nab\r\n0\r\n\r\n", "bad chunk size \"+2\""),
            (
                "2\r\nabc\r\n0\r\n\r\n",
                "chunk of 2 bytes not followed by CRLF",
            ),
            ("ffffffffffffffffff\r\n", "exceeds"),
        ] {
            let e = parse_err(format!("{head}{chunks}").as_bytes(), true);
            assert!(e.contains(want), "{chunks:?}: {e:?} lacks {want:?}");
        }
        let long = format!("{head}{}", "1".repeat(2000));
        assert!(parse_err(long.as_bytes(), false).contains("longer than 1024"));
    }

    #[test]
    fn endless_headers_are_refused_before_the_close() {
        let raw = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD + 1));
        assert!(parse_err(raw.as_bytes(), false).contains("headers longer than"));
    }

    #[test]
    fn requests_carry_json_length_and_close() {
        let raw = encode_request("POST", "/v1/link", Some(b"{\"a\":1}"));
        let text = String::from_utf8(raw).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("POST /v1/link HTTP/1.1"));
        let headers: Vec<&str> = lines.collect();
        for want in [
            "Host: localhost",
            "Content-Type: application/json",
            "Content-Length: 7",
            "Connection: close",
        ] {
            assert!(headers.contains(&want), "{headers:?} lacks {want}");
        }
        assert_eq!(body, "{\"a\":1}");
        let get = String::from_utf8(encode_request("GET", "/v1/state", None)).unwrap_or_default();
        assert!(get.starts_with("GET /v1/state HTTP/1.1\r\n"));
        assert!(!get.contains("Content-Length") && !get.contains("Content-Type"));
        assert!(get.ends_with("Connection: close\r\n\r\n"));
        let post = String::from_utf8(encode_request("POST", "/v1/x", None)).unwrap_or_default();
        assert!(post.contains("Content-Length: 0\r\n"));
    }

    // ----- host -------------------------------------------------------------------------------

    #[test]
    fn only_absolute_unix_hosts_are_accepted() {
        assert_eq!(
            parse_host(api::DEFAULT_HOST).ok(),
            Some(PathBuf::from("/run/dockerd-net.sock"))
        );
        assert_eq!(
            parse_host("unix:///tmp/a b.sock").ok(),
            Some(PathBuf::from("/tmp/a b.sock"))
        );
        for bad in [
            "tcp://127.0.0.1:2375",
            "unix://relative.sock",
            "unix://",
            "unix:///",
            "/run/dockerd-net.sock",
            "",
        ] {
            let e = parse_host(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.starts_with(&format!("invalid host {bad:?}: expected unix:///")),
                "{bad:?}: {e:?}"
            );
        }
    }

    // ----- specs ------------------------------------------------------------------------------

    const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

    fn publish(host_ip: Option<Ipv4Addr>, host_port: Option<u16>, c: u16, p: Proto) -> PublishSpec {
        PublishSpec {
            host_ip,
            host_port,
            container_port: c,
            proto: p,
        }
    }

    #[test]
    fn publish_specs_parse_as_docker_run_p() {
        for (spec, want) in [
            ("8080:80/tcp", publish(None, Some(8080), 80, Proto::Tcp)),
            (
                "127.0.0.1:8080:80",
                publish(Some(LOCAL), Some(8080), 80, Proto::Tcp),
            ),
            ("80", publish(None, None, 80, Proto::Tcp)),
            (
                "127.0.0.1::80/udp",
                publish(Some(LOCAL), None, 80, Proto::Udp),
            ),
            (
                "0.0.0.0:65535:1/sctp",
                publish(Some(Ipv4Addr::UNSPECIFIED), Some(65535), 1, Proto::Sctp),
            ),
            (":80", publish(None, None, 80, Proto::Tcp)),
            (":8080:80", publish(None, Some(8080), 80, Proto::Tcp)),
            ("53/UDP", publish(None, None, 53, Proto::Udp)),
            // Docker's SplitProtoPort: an empty protocol is tcp.
            ("80/", publish(None, None, 80, Proto::Tcp)),
        ] {
            assert_eq!(parse_publish_spec(spec), Ok(want), "{spec}");
        }
    }

    #[test]
    fn bad_publish_specs_name_the_value() {
        for (spec, want) in [
            (
                "0",
                "invalid container port \"0\" in \"0\": must be 1-65535",
            ),
            (
                "8080:0",
                "invalid container port \"0\" in \"8080:0\": must be 1-65535",
            ),
            (
                "0:80",
                "invalid host port \"0\" in \"0:80\": must be 1-65535",
            ),
            (
                "65536",
                "invalid container port \"65536\" in \"65536\": must be 1-65535",
            ),
            ("80:99999999999", "invalid container port \"99999999999\""),
            (
                "70000:80",
                "invalid host port \"70000\" in \"70000:80\": must be 1-65535",
            ),
            (
                "80/icmp",
                "invalid protocol \"icmp\" in \"80/icmp\": expected tcp, udp or sctp",
            ),
            ("80/tcp/x", "invalid protocol \"tcp/x\" in \"80/tcp/x\""),
            (
                "localhost:80:80",
                "invalid host IP \"localhost\" in \"localhost:80:80\"",
            ),
            (
                "1.2.3:80:80",
                "invalid host IP \"1.2.3\" in \"1.2.3:80:80\"",
            ),
            ("256.0.0.1::80", "invalid host IP \"256.0.0.1\""),
            ("[::1]:80:80", "invalid port spec \"[::1]:80:80\""),
            ("1:2:3:4", "invalid port spec \"1:2:3:4\""),
            ("", "missing container port in \"\""),
            ("8080:", "missing container port in \"8080:\""),
            ("/tcp", "missing container port in \"/tcp\""),
            ("abc", "invalid container port \"abc\" in \"abc\""),
            ("+80", "invalid container port \"+80\""),
            (" 80", "invalid container port \" 80\""),
            (
                "8000-8010:80",
                "port ranges are not supported: host port \"8000-8010\"",
            ),
            (
                "80-81",
                "port ranges are not supported: container port \"80-81\"",
            ),
        ] {
            let e = parse_publish_spec(spec)
                .err()
                .map(|e| e.0)
                .unwrap_or_default();
            assert!(
                e.starts_with(want),
                "{spec:?}: {e:?} does not start with {want:?}"
            );
        }
    }

    #[test]
    fn a_publish_spec_becomes_its_request() {
        let req = publish(Some(LOCAL), None, 53, Proto::Udp).request("c1");
        assert_eq!(
            req,
            api::AllocatePort {
                id: "c1".into(),
                host_ip: Some("127.0.0.1".into()),
                host_port: None,
                container_port: 53,
                proto: Some("udp".into()),
            }
        );
    }

    #[test]
    fn host_bindings_parse_and_bad_ones_name_the_value() {
        let b = |ip: Ipv4Addr, port, proto| HostBinding {
            host_ip: ip,
            host_port: port,
            proto,
        };
        assert_eq!(
            parse_host_binding("0.0.0.0:49153/tcp"),
            Ok(b(Ipv4Addr::UNSPECIFIED, 49153, Proto::Tcp))
        );
        assert_eq!(
            parse_host_binding("127.0.0.1:8080"),
            Ok(b(LOCAL, 8080, Proto::Tcp))
        );
        assert_eq!(
            parse_host_binding("127.0.0.1:53/udp"),
            Ok(b(LOCAL, 53, Proto::Udp))
        );
        for (spec, want) in [
            (
                "49153",
                "invalid published port \"49153\": expected HOSTIP:HOSTPORT[/PROTO]",
            ),
            ("0.0.0.0:0", "invalid host port \"0\" in \"0.0.0.0:0\""),
            ("0.0.0.0:", "missing host port in \"0.0.0.0:\""),
            ("x:80", "invalid host IP \"x\" in \"x:80\""),
            (":80", "invalid host IP \"\" in \":80\""),
            (
                "0.0.0.0:80/foo",
                "invalid protocol \"foo\" in \"0.0.0.0:80/foo\"",
            ),
            ("0.0.0.0:65536", "invalid host port \"65536\""),
        ] {
            let e = parse_host_binding(spec)
                .err()
                .map(|e| e.0)
                .unwrap_or_default();
            assert!(
                e.starts_with(want),
                "{spec:?}: {e:?} does not start with {want:?}"
            );
        }
    }

    #[test]
    fn link_ports_parse_and_bad_ones_name_the_value() {
        let pp = |port, proto| PortProto { port, proto };
        assert_eq!(parse_port_proto("5432"), Ok(pp(5432, Proto::Tcp)));
        assert_eq!(parse_port_proto("53/udp"), Ok(pp(53, Proto::Udp)));
        assert_eq!(pp(53, Proto::Udp).to_string(), "53/udp");
        for (spec, want) in [
            ("0", "invalid port \"0\" in \"0\": must be 1-65535"),
            ("x/tcp", "invalid port \"x\" in \"x/tcp\""),
            ("53/xyz", "invalid protocol \"xyz\" in \"53/xyz\""),
            (
                "65536/udp",
                "invalid port \"65536\" in \"65536/udp\": must be 1-65535",
            ),
        ] {
            let e = parse_port_proto(spec)
                .err()
                .map(|e| e.0)
                .unwrap_or_default();
            assert!(
                e.starts_with(want),
                "{spec:?}: {e:?} does not start with {want:?}"
            );
        }
    }

    // ----- the command line ------------------------------------------------------------------

    /// The client subcommands under a root with the flags the real CLI makes global
    /// (`--ip` is the daemon's default binding IP), so a name clash fails here.
    #[derive(Debug, Parser)]
    #[command(name = "dockerd-net")]
    struct TestCli {
        #[arg(long, global = true)]
        ip: Option<String>,
        #[arg(long, global = true)]
        json: bool,
        #[arg(short = 'H', long, global = true)]
        host: Option<String>,
        #[command(subcommand)]
        cmd: ClientCmd,
    }

    fn cli(args: &[&str]) -> std::result::Result<ClientCmd, String> {
        TestCli::try_parse_from(std::iter::once("dockerd-net").chain(args.iter().copied()))
            .map(|c| c.cmd)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn subcommands_parse() {
        TestCli::command().debug_assert();
        let cmd = cli(&["port", "publish", "c1", "127.0.0.1::80/udp"]);
        assert!(
            matches!(&cmd, Ok(ClientCmd::Port(PortCmd::Publish { id, spec }))
                if id == "c1" && *spec == publish(Some(LOCAL), None, 80, Proto::Udp)),
            "{cmd:?}"
        );
        let cmd = cli(&[
            "interface",
            "allocate",
            "c2",
            "--requested-ip",
            "172.17.0.9",
            "--requested-mac",
            "02:42:ac:11:00:99",
        ]);
        assert!(
            matches!(&cmd, Ok(ClientCmd::Interface(InterfaceCmd::Allocate { id, requested_ip, requested_mac }))
                if id == "c2"
                    && *requested_ip == Some(Ipv4Addr::new(172, 17, 0, 9))
                    && requested_mac.map(|m| m.to_string()).as_deref() == Some("02:42:ac:11:00:99")),
            "{cmd:?}"
        );
        let cmd = cli(&[
            "link",
            "disable",
            "172.17.0.3",
            "172.17.0.2",
            "5432",
            "53/udp",
        ]);
        match cmd {
            Ok(ClientCmd::Link(LinkCmd::Disable(args))) => assert_eq!(
                args.request(false),
                api::Link {
                    parent_ip: "172.17.0.3".into(),
                    child_ip: "172.17.0.2".into(),
                    ports: vec!["5432/tcp".into(), "53/udp".into()],
                    enable: false,
                }
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            cli(&["attach", "c1", "4242"]),
            Ok(ClientCmd::Attach { id, netns, ifname: None }) if id == "c1" && netns == "4242"
        ));
        assert!(matches!(
            cli(&["attach", "c1", "/run/netns/red", "--ifname", "eth1"]),
            Ok(ClientCmd::Attach { id, netns, ifname: Some(i) })
                if id == "c1" && netns == "/run/netns/red" && i == "eth1"
        ));
        assert!(
            matches!(cli(&["detach", "c1"]), Ok(ClientCmd::Detach { id, wait: false }) if id == "c1")
        );
        assert!(matches!(
            cli(&["detach", "c1", "--wait"]),
            Ok(ClientCmd::Detach { id, wait: true }) if id == "c1"
        ));
        assert!(cli(&["attach", "c1"]).is_err_and(|e| e.contains("<NETNS>")));
        assert!(matches!(cli(&["state"]), Ok(ClientCmd::State)));
        assert!(matches!(cli(&["health", "--json"]), Ok(ClientCmd::Health)));
    }

    #[test]
    fn bad_operands_are_refused_naming_the_value() {
        for (args, want) in [
            (
                &["port", "publish", "c1", "0:80"][..],
                "invalid host port \"0\" in \"0:80\"",
            ),
            (
                &["port", "unpublish", "c1", "49153"][..],
                "invalid published port \"49153\"",
            ),
            (
                &["link", "enable", "172.17.0.3", "172.17.0.2"][..],
                "required",
            ),
            (
                &["link", "enable", "172.17.0.3", "172.17.0.2", "0"][..],
                "invalid port \"0\"",
            ),
            (
                &["link", "enable", "parent", "172.17.0.2", "80"][..],
                "'parent'",
            ),
            (
                &["interface", "allocate", "c1", "--requested-ip", "1.2.3"][..],
                "'1.2.3'",
            ),
            (
                &["interface", "allocate", "c1", "--requested-mac", "zz"][..],
                "invalid MAC address \"zz\"",
            ),
        ] {
            let e = cli(args).err().unwrap_or_default();
            assert!(e.contains(want), "{args:?}: {e:?} lacks {want:?}");
        }
    }

    // ----- human output -----------------------------------------------------------------------

    fn mapping(host: Ipv4Addr, hp: u16, c: Ipv4Addr, cp: u16, proto: Proto) -> PortMapping {
        PortMapping {
            host_ip: host,
            host_port: hp,
            container_ip: c,
            container_port: cp,
            proto,
        }
    }

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap_or(MacAddr([0; 6]))
    }

    const C2: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
    const C3: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 3);

    fn interface() -> Interface {
        Interface {
            ip: C2,
            prefix_len: 16,
            mask: Ipv4Addr::new(255, 255, 0, 0),
            gateway: Ipv4Addr::new(172, 17, 42, 1),
            bridge: "docker0".into(),
            mac: mac("02:42:ac:11:00:02"),
        }
    }

    fn state() -> api::State {
        let mut containers = BTreeMap::new();
        containers.insert(
            "web".to_owned(),
            Endpoint {
                ip: C2,
                mac: mac("02:42:ac:11:00:02"),
                ports: vec![
                    mapping(Ipv4Addr::UNSPECIFIED, 49153, C2, 80, Proto::Tcp),
                    mapping(LOCAL, 8443, C2, 443, Proto::Tcp),
                ],
            },
        );
        containers.insert(
            "database-with-a-long-id".to_owned(),
            Endpoint {
                ip: C3,
                mac: mac("02:42:ac:11:00:03"),
                ports: vec![],
            },
        );
        api::State {
            bridge: "docker0".into(),
            address: "172.17.42.1/16".into(),
            containers,
            links: vec![LinkSpec {
                parent: C2,
                child: C3,
                port: 5432,
                proto: Proto::Tcp,
            }],
            attachments: BTreeMap::from([("web".to_owned(), attached())]),
        }
    }

    fn attached() -> api::Attached {
        api::Attached {
            id: "web".into(),
            interface: interface(),
            host_veth: "veth1a2b3c4".into(),
            netns: "/proc/4242/ns/net".into(),
            ifname: "eth0".into(),
            mtu: 1500,
        }
    }

    #[test]
    fn human_output_reads_like_docker() {
        assert_eq!(
            human_interface(&interface()),
            "172.17.0.2/16 gw 172.17.42.1 mac 02:42:ac:11:00:02 on docker0\n"
        );
        assert_eq!(
            human_mapping(&mapping(Ipv4Addr::UNSPECIFIED, 49153, C2, 80, Proto::Tcp)),
            "0.0.0.0:49153 -> 172.17.0.2:80/tcp"
        );
        let released = api::Released {
            id: "web".into(),
            ip: C2,
            ports: vec![mapping(LOCAL, 53, C2, 53, Proto::Udp)],
        };
        assert_eq!(
            human_released(&released),
            "released 172.17.0.2 of web\nunpublished 127.0.0.1:53 -> 172.17.0.2:53/udp\n"
        );
        let link = api::LinkReply {
            changed: vec![LinkSpec {
                parent: C3,
                child: C2,
                port: 5432,
                proto: Proto::Tcp,
            }],
        };
        assert_eq!(
            human_link(&link, true),
            "linked 172.17.0.3 -> 172.17.0.2 5432/tcp\n"
        );
        assert_eq!(
            human_link(&link, false),
            "unlinked 172.17.0.3 -> 172.17.0.2 5432/tcp\n"
        );
        let none = api::LinkReply { changed: vec![] };
        assert_eq!(
            human_link(&none, false),
            "nothing changed: already disabled\n"
        );
        let health = api::Health {
            status: "ok".into(),
            version: "0.1.0".into(),
            link_backend: "netlink".into(),
            containers: 2,
        };
        assert_eq!(
            human_health(&health),
            "status: ok\nversion: 0.1.0\nlink backend: netlink\ncontainers: 2\n"
        );
        assert_eq!(
            human_attached(&attached()),
            "attached web: eth0 172.17.0.2/16 gw 172.17.42.1 mac 02:42:ac:11:00:02 mtu 1500 \
             in /proc/4242/ns/net (host veth veth1a2b3c4 on docker0)\n"
        );
        let detached = api::Detached {
            id: "web".into(),
            detached: true,
            host_veth: Some("veth1a2b3c4".into()),
            released: Some(api::Released {
                id: "web".into(),
                ip: C2,
                ports: vec![],
            }),
        };
        assert_eq!(
            human_detached(&detached, true),
            "detached web: removed veth1a2b3c4\nreleased 172.17.0.2 of web\n"
        );
        assert_eq!(
            human_detached(&detached, false),
            "detached web: unplugged veth1a2b3c4 (deleted in the background)\n\
             released 172.17.0.2 of web\n"
        );
        let kept = api::Detached {
            released: None,
            ..detached
        };
        assert_eq!(
            human_detached(&kept, true),
            "detached web: removed veth1a2b3c4\n\
             web's interface stays allocated (it was allocated before attach)\n"
        );
        let nothing = api::Detached {
            id: "web".into(),
            detached: false,
            host_veth: None,
            released: None,
        };
        assert_eq!(
            human_detached(&nothing, true),
            "nothing to detach: web is not attached\n"
        );
    }

    #[test]
    fn state_is_an_aligned_table() {
        let want = "\
bridge docker0 172.17.42.1/16
CONTAINER                 IP           MAC                 PORTS
database-with-a-long-id   172.17.0.3   02:42:ac:11:00:03
web                       172.17.0.2   02:42:ac:11:00:02   0.0.0.0:49153->80/tcp, 127.0.0.1:8443->443/tcp

LINK PARENT   CHILD        PORT
172.17.0.2    172.17.0.3   5432/tcp

ATTACHED   NETNS               IFNAME   HOST VETH     MTU
web        /proc/4242/ns/net   eth0     veth1a2b3c4   1500
";
        assert_eq!(human_state(&state()), want);
        let empty = api::State {
            containers: BTreeMap::new(),
            links: vec![],
            attachments: BTreeMap::new(),
            ..state()
        };
        assert_eq!(
            human_state(&empty),
            "bridge docker0 172.17.42.1/16\nno containers\n"
        );
    }

    // ----- against a server -------------------------------------------------------------------

    /// A socket path unique to this test process and call; removed on drop.
    struct TempSocket(PathBuf);

    impl TempSocket {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "dockerd-net-client-test-{}-{n}.sock",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&path);
            TempSocket(path)
        }
    }

    impl Drop for TempSocket {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// What the server does once it has read the request's headers (and body, if `read_body`).
    #[derive(Clone)]
    enum Script {
        /// Write these pieces with a pause between, then close.
        Answer(Vec<Vec<u8>>),
        /// Write this, then keep the connection open until the client closes it.
        AnswerAndHold(Vec<u8>),
        /// Never answer; wait for the client to give up.
        Silence,
    }

    /// Serves one connection; the thread returns the request it read.
    fn serve(sock: &TempSocket, script: Script, read_body: bool) -> JoinHandle<String> {
        let listener = match UnixListener::bind(&sock.0) {
            Ok(l) => l,
            Err(e) => panic!("bind {}: {e}", sock.0.display()),
        };
        thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else {
                return String::new();
            };
            let mut req = Vec::new();
            let mut byte = [0u8; 1];
            // Byte by byte up to the blank line, so nothing of the body is read unasked.
            while !req.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                req.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&req).into_owned();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if read_body {
                let mut body = vec![0u8; length];
                let _ = conn.read_exact(&mut body);
                req.extend_from_slice(&body);
            }
            match script {
                Script::Answer(pieces) => {
                    for piece in pieces {
                        let _ = conn.write_all(&piece);
                        let _ = conn.flush();
                        thread::sleep(Duration::from_millis(20));
                    }
                }
                Script::AnswerAndHold(answer) => {
                    let _ = conn.write_all(&answer);
                    let _ = conn.read_to_end(&mut Vec::new());
                }
                Script::Silence => {
                    let _ = conn.read_to_end(&mut Vec::new());
                }
            }
            String::from_utf8_lossy(&req).into_owned()
        })
    }

    fn json_answer(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             date: Sat, 29 Nov 2025 06:00:00 GMT\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn client(sock: &TempSocket) -> Client {
        Client::new(&sock.0).with_timeout(Duration::from_secs(10))
    }

    fn joined(h: JoinHandle<String>) -> String {
        h.join().unwrap_or_default()
    }

    fn request_body(req: &str) -> serde_json::Value {
        let body = req
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }

    #[test]
    fn allocate_interface_round_trip() {
        let sock = TempSocket::new();
        let reply = serde_json::to_string(&interface()).unwrap_or_default();
        let server = serve(
            &sock,
            Script::Answer(vec![json_answer("201 Created", &reply)]),
            true,
        );
        let got = client(&sock).allocate_interface(&api::AllocateInterface {
            id: "c1".into(),
            requested_ip: Some("172.17.0.2".into()),
            requested_mac: None,
        });
        assert_eq!(got.ok(), Some(interface()));
        let req = joined(server);
        assert!(
            req.starts_with("POST /v1/allocate_interface HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(
            req.contains("\r\nContent-Type: application/json\r\n"),
            "{req}"
        );
        assert!(req.contains("\r\nConnection: close\r\n"), "{req}");
        assert_eq!(
            request_body(&req),
            serde_json::json!({"id": "c1", "requested_ip": "172.17.0.2"})
        );
    }

    #[test]
    fn an_error_answer_carries_status_and_message() {
        let sock = TempSocket::new();
        let msg = "Bind for 0.0.0.0:8080 failed: port is already allocated";
        let body = serde_json::json!({ "message": msg }).to_string();
        let server = serve(
            &sock,
            Script::Answer(vec![json_answer("409 Conflict", &body)]),
            true,
        );
        let err = client(&sock)
            .allocate_port(&publish(None, Some(8080), 80, Proto::Tcp).request("c1"))
            .err();
        joined(server);
        let api = err.as_ref().and_then(ClientError::api);
        assert_eq!(
            api,
            Some(&ApiError {
                status: 409,
                message: msg.into()
            })
        );
        assert_eq!(
            err.map(|e| e.to_string()).unwrap_or_default(),
            format!("Error response from daemon: {msg}")
        );
    }

    #[test]
    fn an_error_without_json_uses_the_text_or_the_status() {
        for (answer, want) in [
            (
                "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 15\r\n\r\n  disk is full\n",
                (500, "disk is full"),
            ),
            (
                "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n",
                (502, "502 Bad Gateway"),
            ),
            // A JSON body that is not an error object is shown as text too.
            (
                "HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
                (400, "{}"),
            ),
        ] {
            let sock = TempSocket::new();
            let server = serve(&sock, Script::Answer(vec![answer.into()]), false);
            let err = client(&sock).state().err();
            joined(server);
            let got = err
                .as_ref()
                .and_then(ClientError::api)
                .map(|e| (e.status, e.message.as_str()));
            assert_eq!(got, Some(want), "{answer:?}");
        }
    }

    #[test]
    fn a_chunked_answer_in_pieces_is_read_whole() {
        let sock = TempSocket::new();
        let body = serde_json::to_string(&state()).unwrap_or_default();
        let (a, b) = body.split_at(body.len() / 2);
        let pieces = vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n".to_vec(),
            format!("\r\n{:x}\r\n{a}\r\n{:x}", a.len(), b.len()).into_bytes(),
            format!("\r\n{b}\r\n0\r\n").into_bytes(),
            b"\r\n".to_vec(),
        ];
        let server = serve(&sock, Script::Answer(pieces), false);
        let got = client(&sock).state();
        let req = joined(server);
        assert!(req.starts_with("GET /v1/state HTTP/1.1\r\n"), "{req}");
        assert_eq!(got.ok(), Some(state()));
    }

    #[test]
    fn an_answer_with_a_length_does_not_wait_for_the_close() {
        let sock = TempSocket::new();
        let health = r#"{"status":"ok","version":"0.1.0","link_backend":"netlink","containers":0}"#;
        let server = serve(
            &sock,
            Script::AnswerAndHold(json_answer("200 OK", health)),
            false,
        );
        // The server holds the connection open for as long as the client keeps it: a client
        // waiting for the close would time out.
        let got = client(&sock).with_timeout(Duration::from_secs(5)).health();
        assert_eq!(got.map(|h| h.status).ok(), Some("ok".to_owned()));
        joined(server);
    }

    #[test]
    fn malformed_answers_are_errors_naming_the_socket() {
        let cases: [(Vec<u8>, &str); 4] = [
            (
                json_answer("200 OK", "not json"),
                "expected the state: expected ident",
            ),
            (
                json_answer("200 OK", "{\"bridge\":1}"),
                "expected the state: invalid type",
            ),
            (b"garbage\r\n\r\n".to_vec(), "bad status line \"garbage\""),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"bri".to_vec(),
                "the connection closed after 5 of 100 body bytes",
            ),
        ];
        for (answer, want) in cases {
            let sock = TempSocket::new();
            let server = serve(&sock, Script::Answer(vec![answer]), false);
            let err = client(&sock).state().err();
            joined(server);
            let text = err.as_ref().map(ToString::to_string).unwrap_or_default();
            let prefix = format!(
                "malformed answer from dockerd-net at {}: ",
                sock.0.display()
            );
            assert!(
                text.starts_with(&prefix) && text.contains(want),
                "{text:?} lacks {want:?}"
            );
            assert!(matches!(
                err,
                Some(ClientError::Protocol { .. } | ClientError::Decode { .. })
            ));
        }
    }

    #[test]
    fn no_daemon_is_a_clear_connect_error() {
        let sock = TempSocket::new();
        let err = client(&sock).health().err();
        // As the CLI prints it (`{:#}` shows the causes too: they must not repeat the text).
        let err = err.map(|e| format!("{:#}", anyhow::Error::from(e)));
        assert_eq!(
            err.as_deref(),
            Some(
                format!(
                    "cannot connect to dockerd-net at {}: No such file or directory \
                     (is the daemon running?)",
                    sock.0.display()
                )
                .as_str()
            )
        );
        // A socket file left by a dead daemon: nobody listens.
        drop(UnixListener::bind(&sock.0));
        let err = client(&sock).health().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                format!(
                    "cannot connect to dockerd-net at {}: Connection refused \
                     (is the daemon running?)",
                    sock.0.display()
                )
                .as_str()
            )
        );
    }

    #[test]
    fn a_silent_daemon_times_out() {
        let sock = TempSocket::new();
        let server = serve(&sock, Script::Silence, false);
        let started = Instant::now();
        let err = client(&sock)
            .with_timeout(Duration::from_millis(200))
            .health()
            .err();
        let waited = started.elapsed();
        assert!(
            matches!(err, Some(ClientError::Timeout { after, .. }) if after == Duration::from_millis(200)),
            "{err:?}"
        );
        // It gave up (the bound is loose on purpose: this checks "stopped", not speed).
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(
            err.map(|e| e.to_string()).unwrap_or_default(),
            format!(
                "dockerd-net at {} did not answer within 0.2s",
                sock.0.display()
            )
        );
        joined(server);
    }

    #[test]
    fn an_answer_to_an_unread_body_is_still_reported() {
        // The daemon refuses a huge body after its headers and closes without reading it:
        // the client's write fails (EPIPE), but the 413 answer is what it must report.
        let sock = TempSocket::new();
        let body = r#"{"message":"request body larger than 65536 bytes"}"#;
        let server = serve(
            &sock,
            Script::Answer(vec![json_answer("413 Payload Too Large", body)]),
            false,
        );
        let huge = vec![b'x'; 8 * 1024 * 1024];
        let got = client(&sock).send("POST", "/v1/link", Some(&huge));
        joined(server);
        let got = got.map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()));
        assert_eq!(got.ok(), Some((413, body.to_owned())));
    }

    // ----- subcommands end to end (client side) ------------------------------------------------

    fn run_against(cmd: ClientCmd, json: bool, answer: Vec<u8>) -> (Result<String>, String) {
        let sock = TempSocket::new();
        let server = serve(&sock, Script::Answer(vec![answer]), true);
        let out = execute(&client(&sock), cmd, json);
        (out, joined(server))
    }

    #[test]
    fn port_publish_sends_the_spec_and_prints_the_mapping() {
        let m = mapping(LOCAL, 8080, C2, 80, Proto::Udp);
        let cmd = ClientCmd::Port(PortCmd::Publish {
            id: "web".into(),
            spec: publish(Some(LOCAL), Some(8080), 80, Proto::Udp),
        });
        let answer = json_answer(
            "201 Created",
            &serde_json::to_string(&m).unwrap_or_default(),
        );
        let (out, req) = run_against(cmd, false, answer);
        assert_eq!(
            out.ok().as_deref(),
            Some("127.0.0.1:8080 -> 172.17.0.2:80/udp\n")
        );
        assert!(
            req.starts_with("POST /v1/allocate_port HTTP/1.1\r\n"),
            "{req}"
        );
        assert_eq!(
            request_body(&req),
            serde_json::json!({"id": "web", "host_ip": "127.0.0.1", "host_port": 8080,
                               "container_port": 80, "proto": "udp"})
        );
    }

    #[test]
    fn port_unpublish_and_interface_release_send_their_requests() {
        let m = mapping(Ipv4Addr::UNSPECIFIED, 49153, C2, 80, Proto::Tcp);
        let cmd = ClientCmd::Port(PortCmd::Unpublish {
            id: "web".into(),
            binding: HostBinding {
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 49153,
                proto: Proto::Tcp,
            },
        });
        let answer = json_answer("200 OK", &serde_json::to_string(&m).unwrap_or_default());
        let (out, req) = run_against(cmd, false, answer);
        assert_eq!(
            out.ok().as_deref(),
            Some("unpublished 0.0.0.0:49153 -> 172.17.0.2:80/tcp\n")
        );
        assert!(
            req.starts_with("POST /v1/release_port HTTP/1.1\r\n"),
            "{req}"
        );
        assert_eq!(
            request_body(&req),
            serde_json::json!({"id": "web", "host_ip": "0.0.0.0", "host_port": 49153, "proto": "tcp"})
        );

        let released = api::Released {
            id: "web".into(),
            ip: C2,
            ports: vec![],
        };
        let cmd = ClientCmd::Interface(InterfaceCmd::Release { id: "web".into() });
        let answer = json_answer(
            "200 OK",
            &serde_json::to_string(&released).unwrap_or_default(),
        );
        let (out, req) = run_against(cmd, false, answer);
        assert_eq!(out.ok().as_deref(), Some("released 172.17.0.2 of web\n"));
        assert!(
            req.starts_with("POST /v1/release_interface HTTP/1.1\r\n"),
            "{req}"
        );
        assert_eq!(request_body(&req), serde_json::json!({"id": "web"}));
    }

    #[test]
    fn attach_and_detach_send_their_requests() {
        let cmd = ClientCmd::Attach {
            id: "web".into(),
            netns: "4242".into(),
            ifname: None,
        };
        let answer = json_answer(
            "201 Created",
            &serde_json::to_string(&attached()).unwrap_or_default(),
        );
        let (out, req) = run_against(cmd, false, answer);
        assert_eq!(out.ok(), Some(human_attached(&attached())));
        assert!(req.starts_with("POST /v1/attach HTTP/1.1\r\n"), "{req}");
        // No ifname: the daemon's default (eth0) applies.
        assert_eq!(
            request_body(&req),
            serde_json::json!({"id": "web", "netns": "4242"})
        );
        let cmd = ClientCmd::Attach {
            id: "web".into(),
            netns: "/run/netns/red".into(),
            ifname: Some("eth1".into()),
        };
        let answer = json_answer(
            "200 OK",
            &serde_json::to_string(&attached()).unwrap_or_default(),
        );
        let (out, req) = run_against(cmd, true, answer);
        let back: Option<api::Attached> = out.ok().and_then(|o| serde_json::from_str(&o).ok());
        assert_eq!(back, Some(attached()));
        assert_eq!(
            request_body(&req),
            serde_json::json!({"id": "web", "netns": "/run/netns/red", "ifname": "eth1"})
        );

        let cmd = ClientCmd::Detach {
            id: "web".into(),
            wait: false,
        };
        let answer = json_answer("200 OK", r#"{"id":"web","detached":false}"#);
        let (out, req) = run_against(cmd, false, answer);
        assert_eq!(
            out.ok().as_deref(),
            Some("nothing to detach: web is not attached\n")
        );
        assert!(req.starts_with("POST /v1/detach HTTP/1.1\r\n"), "{req}");
        // Without --wait the field is left out (the daemon's default).
        assert_eq!(request_body(&req), serde_json::json!({"id": "web"}));
        let cmd = ClientCmd::Detach {
            id: "web".into(),
            wait: true,
        };
        let answer = json_answer(
            "200 OK",
            r#"{"id":"web","detached":true,"host_veth":"veth1a2b3c4"}"#,
        );
        let (out, req) = run_against(cmd, false, answer);
        assert!(
            out.ok()
                .is_some_and(|o| o.starts_with("detached web: removed veth1a2b3c4\n")),
        );
        assert_eq!(
            request_body(&req),
            serde_json::json!({"id": "web", "wait": true})
        );
    }

    #[test]
    fn json_output_is_the_answer_pretty_printed() {
        let answer = json_answer(
            "200 OK",
            &serde_json::to_string(&state()).unwrap_or_default(),
        );
        let (out, _) = run_against(ClientCmd::State, true, answer);
        let out = out.ok().unwrap_or_default();
        assert!(
            out.ends_with("}\n") && out.contains("\n  \"bridge\": \"docker0\""),
            "{out}"
        );
        let back: Option<api::State> = serde_json::from_str(&out).ok();
        assert_eq!(back, Some(state()));
    }

    #[test]
    fn a_daemon_error_fails_the_subcommand_with_docker_text() {
        let cmd = ClientCmd::Interface(InterfaceCmd::Release { id: "nope".into() });
        let body = r#"{"message":"No network information to release for nope"}"#;
        let (out, _) = run_against(cmd, false, json_answer("404 Not Found", body));
        let err = out.err();
        assert_eq!(
            err.as_ref().and_then(|e| e.api()).map(|e| e.status),
            Some(404)
        );
        assert_eq!(
            err.map(|e| e.to_string()).unwrap_or_default(),
            "Error response from daemon: No network information to release for nope"
        );
    }
}
