//! The resources a device reaches, and the response to each request:
//!
//! | path | method | what |
//! |---|---|---|
//! | `/t` | POST | telemetry: JSON (50, or no Content-Format), CBOR (60), SenML JSON (110) or SenML CBOR (112) |
//! | `/t/{metric}` | POST | one bare value: text (0, or none) or a JSON scalar (50) |
//!
//! A body larger than a datagram comes in blocks (Block1, RFC 7959): each
//! block but the last is answered 2.31 Continue, and the last, once the
//! whole body is durable, 2.04 Changed.
//! | `/c` | GET | with Observe 0: commands, as notifications ([`crate::observe`]) |
//! | `/c/{id}` | POST | the reply to command `id` |
//! | `/.well-known/core` | GET | the resources, in link format (RFC 6690) |
//!
//! A device authenticates with its token in option [`TOKEN_OPTION`], never
//! in the URI: a Uri-Query is refused. Errors carry a diagnostic payload
//! (RFC 7252 section 5.5.2), and Max-Age says when to retry.

use std::fmt::Display;

use tributary_coap_codec::{Code, Message, content_format, option};
use tributary_core::directory::Principal;
use tributary_core::formats;
use tributary_core::model::{Point, Value, validate_point};
use tributary_ingest::{IngestError, Ingestor, Rejection, RequestContext};

use crate::metrics::{CoapMetrics, Refusal};
use crate::uploads::Step;

/// The option that carries a device's token (`tbd_…`): a number from the
/// experimental range (RFC 7252 section 12.2), critical and unsafe to
/// forward, so that a server or proxy that does not know it refuses the
/// request rather than drop the credential.
pub const TOKEN_OPTION: u16 = 65003;

/// Critical options a request may carry; any other is refused (4.02).
/// (Observe is elective.)
const UNDERSTOOD: &[u16] = &[
    option::URI_HOST,
    option::URI_PORT,
    option::URI_PATH,
    option::URI_QUERY,
    option::ACCEPT,
    option::BLOCK1,
    option::BLOCK2,
    TOKEN_OPTION,
];

/// A response, before it is framed as an ACK, a CON or a NON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub code: Code,
    pub options: Vec<(u16, Vec<u8>)>,
    pub payload: Vec<u8>,
}

impl Reply {
    pub(crate) fn new(code: Code) -> Self {
        Reply {
            code,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// An error with a diagnostic message for the device's developer.
    pub(crate) fn error(code: Code, diagnostic: impl Display) -> Self {
        let mut r = Reply::new(code);
        let mut text = diagnostic.to_string();
        // A diagnostic is short: it must fit a datagram with the headers.
        if text.len() > 512 {
            let mut cut = 509;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("...");
        }
        r.payload = text.into_bytes();
        r
    }

    /// With Max-Age: when to retry, for 4.29 and 5.03.
    pub(crate) fn retry_after(mut self, secs: u32) -> Self {
        self.options
            .push((option::MAX_AGE, option::encode_uint(secs)));
        self
    }

    pub(crate) fn with_uint(mut self, number: u16, value: u32) -> Self {
        self.options.push((number, option::encode_uint(value)));
        self
    }

    /// Writes the reply into `msg` (its code, options and payload). An
    /// error's diagnostic is left out when it would make the answer larger
    /// than the `request_len`-byte request: a spoofed source address then
    /// gains no amplification from an error.
    pub(crate) fn apply(&self, msg: &mut Message, request_len: usize) {
        msg.code = self.code;
        for (n, v) in &self.options {
            msg.add_option(*n, v.clone());
        }
        msg.payload.clone_from(&self.payload);
        if self.code.class() != 2 && msg.encoded_len() > request_len {
            msg.payload.clear();
        }
    }
}

/// What a request is for, once routed.
enum Route<'a> {
    Telemetry,
    Bare(&'a str),
    Discovery,
    /// GET `/c`: observe (or stop observing) commands.
    Commands,
    /// POST `/c/{id}`: the reply to a command.
    CommandReply(&'a str),
    /// POST `/rd`: an LwM2M registration.
    Register,
    /// POST `/rd/{id}`: an LwM2M registration update.
    Update(&'a str),
    /// DELETE `/rd/{id}`: an LwM2M deregistration.
    Deregister(&'a str),
}

/// What a request may use: the ingestor, and a share of the exchange table
/// for its tenant.
pub(crate) struct Context<'a> {
    pub ingestor: &'a Ingestor,
    pub metrics: &'a CoapMetrics,
    pub max_body: usize,
    /// Counts the request against its tenant's share of remembered
    /// exchanges; false when the tenant holds its share.
    pub claim: &'a (dyn Fn(&str) -> bool + Sync),
    /// The client's endpoint.
    pub peer: std::net::SocketAddr,
    /// Block-wise uploads in progress.
    pub uploads: &'a crate::uploads::SharedUploads,
    /// Registrations for commands, and commands waiting for replies.
    pub commands: &'a crate::observe::Commands,
    /// The device of the DTLS session the request came in, if any: it
    /// needs no token.
    pub session: Option<&'a crate::dtls::SessionAuth>,
    /// The LwM2M registrations.
    pub lwm2m: &'a crate::lwm2m::Lwm2m,
}

/// Who sent a request: the DTLS session's device, or the device (or
/// tenant) of the token in option 65003. With the credential's id.
async fn principal_of(cx: &Context<'_>, req: &Message) -> Result<(Principal, String), Reply> {
    if let Some(session) = cx.session {
        return Ok((session.principal.clone(), session.credential.id.clone()));
    }
    let token = req
        .option(TOKEN_OPTION)
        .and_then(|t| std::str::from_utf8(t).ok())
        .ok_or_else(|| {
            let reply = Reply::error(Code::UNAUTHORIZED, "send the device token in option 65003");
            cx.metrics.refused(Refusal::Unauthenticated, &reply);
            reply
        })?;
    match cx.ingestor.authenticate_credential(token).await {
        Ok((principal, credential)) => Ok((principal, credential.id)),
        Err(e) => Err(ingest_error(e, cx.max_body)),
    }
}

/// The device a request speaks for (its session's, or its token's):
/// tenant, device, and the credential's id.
pub(crate) async fn device_of(
    cx: &Context<'_>,
    req: &Message,
) -> Result<(String, String, String), Reply> {
    match principal_of(cx, req).await? {
        (Principal::Device { tenant, device }, credential) => Ok((tenant, device, credential)),
        (Principal::TenantIngest { .. }, _) => Err(Reply::error(
            Code::FORBIDDEN,
            "commands go to devices: use a device token",
        )),
    }
}

/// GET `/c`: Observe 0 registers the device for commands (2.05 with the
/// Observe option, an empty representation); Observe 1, or none, ends its
/// registration (2.05 without Observe).
async fn observe(cx: &Context<'_>, req: &Message) -> Result<Reply, Reply> {
    let (tenant, device, credential) = device_of(cx, req).await?;
    let register = req
        .observe()
        .map_err(|e| Reply::error(Code::BAD_REQUEST, e))?
        == Some(0);
    let mut reply = Reply::new(Code::CONTENT).with_uint(option::CONTENT_FORMAT, 50);
    if register {
        let seq = cx
            .commands
            .register(
                &tenant,
                &device,
                &credential,
                cx.peer,
                req.token,
                std::time::Instant::now(),
            )
            .map_err(|bound| {
                let reply = Reply::error(
                    Code::SERVICE_UNAVAILABLE,
                    format_args!("the server holds as many command registrations as it may ({bound}); retry later"),
                )
                .retry_after(60);
                cx.metrics.refused(Refusal::Observers, &reply);
                reply
            })?;
        cx.commands.report(&tenant, &device, true).await;
        reply
            .options
            .push((option::OBSERVE, option::encode_uint(seq)));
    } else if cx.commands.deregister(&tenant, &device, None) {
        cx.commands.report(&tenant, &device, false).await;
    }
    cx.metrics.observers(cx.commands.observers());
    Ok(reply)
}

/// POST `/c/{id}`: the device's reply to command `id`.
async fn command_reply(cx: &Context<'_>, req: &Message, id: &str) -> Result<Reply, Reply> {
    let (tenant, device, _) = device_of(cx, req).await?;
    let format = req
        .content_format()
        .map_err(|e| Reply::error(Code::BAD_REQUEST, e))?;
    let content_type = match format {
        None => "",
        Some(content_format::TEXT) => "text/plain",
        Some(content_format::JSON) => "application/json",
        Some(content_format::CBOR) => "application/cbor",
        Some(content_format::OCTET_STREAM) => "application/octet-stream",
        Some(content_format::SENML_JSON) => "application/senml+json",
        Some(content_format::SENML_CBOR) => "application/senml+cbor",
        Some(_) => "",
    };
    let answered = cx.commands.reply(
        &tenant,
        &device,
        id,
        crate::observe::DeviceReply {
            payload: req.payload.clone(),
            content_type: content_type.to_owned(),
        },
    );
    if answered {
        Ok(Reply::new(Code::CHANGED))
    } else {
        Err(Reply::error(
            Code::NOT_FOUND,
            format_args!("no command {id:?} of this device waits for a reply"),
        ))
    }
}

/// Answers one request. Returns only once an acknowledged write is durable.
pub(crate) async fn handle(cx: &Context<'_>, req: &Message) -> Reply {
    let reply = route_and_answer(cx, req).await;
    block2(req, reply)
}

/// The block of a 2.05 answer's body that a Block2 option asks for (RFC
/// 7959 2.4: a client may ask for smaller blocks, or a later one).
fn block2(req: &Message, reply: Reply) -> Reply {
    let Ok(Some(want)) = req.block2() else {
        return reply;
    };
    if reply.code != Code::CONTENT {
        return reply;
    }
    let total = reply.payload.len();
    let offset = want.offset();
    if offset >= total && !(offset == 0 && total == 0) {
        return Reply::error(
            Code::BAD_REQUEST,
            format_args!(
                "block {} is past the end of the {total}-byte body",
                want.num
            ),
        );
    }
    let end = (offset + want.size()).min(total);
    let Some(block) = tributary_coap_codec::Block::new(want.num, end < total, want.size()) else {
        return reply;
    };
    let mut sliced = Reply {
        code: reply.code,
        options: reply.options,
        payload: reply.payload[offset..end].to_vec(),
    };
    sliced.options.push((option::BLOCK2, block.encode()));
    if want.num == 0 {
        sliced
            .options
            .push((option::SIZE2, option::encode_uint(total as u32)));
    }
    sliced
}

async fn route_and_answer(cx: &Context<'_>, req: &Message) -> Reply {
    match route(req) {
        Ok(Route::Discovery) => discovery(),
        Ok(Route::Telemetry) => upload(cx, req, None).await,
        Ok(Route::Bare(metric)) => upload(cx, req, Some(metric)).await,
        Ok(Route::Commands) => match observe(cx, req).await {
            Ok(reply) | Err(reply) => reply,
        },
        Ok(Route::CommandReply(id)) => match command_reply(cx, req, id).await {
            Ok(reply) | Err(reply) => reply,
        },
        Ok(Route::Register) => match crate::lwm2m::interface::register(cx, req).await {
            Ok(reply) | Err(reply) => reply,
        },
        Ok(Route::Update(id)) => match crate::lwm2m::interface::update(cx, req, id).await {
            Ok(reply) | Err(reply) => reply,
        },
        Ok(Route::Deregister(id)) => match crate::lwm2m::interface::deregister(cx, req, id).await {
            Ok(reply) | Err(reply) => reply,
        },
        Err((refusal, reply)) => {
            cx.metrics.refused(refusal, &reply);
            reply
        }
    }
}

async fn upload(cx: &Context<'_>, req: &Message, metric: Option<&str>) -> Reply {
    match telemetry(cx, req, metric).await {
        Ok(reply) | Err(reply) => reply,
    }
}

fn route(req: &Message) -> Result<Route<'_>, (Refusal, Reply)> {
    if let Some(o) = req
        .options()
        .iter()
        .find(|o| option::is_critical(o.number) && !UNDERSTOOD.contains(&o.number))
    {
        return Err((
            Refusal::BadOption,
            Reply::error(
                Code::BAD_OPTION,
                format_args!("option {} is not understood", o.number),
            ),
        ));
    }
    // Only the LwM2M registration interface takes a query (its
    // parameters; never a credential).
    let registration = req.uri_path().next() == Some(b"rd".as_slice());
    if let Some(q) = req.option(option::URI_QUERY).filter(|_| !registration) {
        let q = String::from_utf8_lossy(q).to_ascii_lowercase();
        let why = if ["token", "key", "password", "secret", "auth"]
            .iter()
            .any(|w| q.contains(w))
        {
            "credentials are refused in the URI: send the device token in option 65003"
        } else {
            "these resources take no query"
        };
        return Err((Refusal::Query, Reply::error(Code::BAD_REQUEST, why)));
    }
    let mut path = Vec::new();
    for segment in req.uri_path() {
        let Ok(s) = std::str::from_utf8(segment) else {
            return Err((
                Refusal::NotFound,
                Reply::error(Code::BAD_REQUEST, "a Uri-Path segment is not UTF-8"),
            ));
        };
        path.push(s);
    }
    let route = match path.as_slice() {
        [".well-known", "core"] => (Route::Discovery, Code::GET),
        ["t"] => (Route::Telemetry, Code::POST),
        ["t", metric] => (Route::Bare(metric), Code::POST),
        ["c"] => (Route::Commands, Code::GET),
        ["c", id] => (Route::CommandReply(id), Code::POST),
        ["rd"] => (Route::Register, Code::POST),
        ["rd", id] if req.code == Code::DELETE => (Route::Deregister(id), Code::DELETE),
        ["rd", id] => (Route::Update(id), Code::POST),
        _ => {
            return Err((
                Refusal::NotFound,
                Reply::error(Code::NOT_FOUND, "no such resource; POST telemetry to /t"),
            ));
        }
    };
    if req.code != route.1 {
        return Err((
            Refusal::Method,
            Reply::error(
                Code::METHOD_NOT_ALLOWED,
                format_args!("use {}", method_name(route.1)),
            ),
        ));
    }
    Ok(route.0)
}

fn method_name(code: Code) -> &'static str {
    match code {
        Code::GET => "GET",
        Code::DELETE => "DELETE",
        _ => "POST",
    }
}

fn discovery() -> Reply {
    let mut r = Reply::new(Code::CONTENT).with_uint(option::CONTENT_FORMAT, 40);
    r.payload = br#"</t>;rt="tributary.telemetry";ct="50 60 110 112",</t/{metric}>;rt="tributary.value";ct="0 50",</c>;rt="tributary.commands";obs,</rd>;rt="core.rd""#.to_vec();
    r
}

/// Stores a request's points. `Ok` is the success reply: 2.04 Changed, or
/// 2.31 Continue for a block of an upload that is not the last.
async fn telemetry(cx: &Context<'_>, req: &Message, metric: Option<&str>) -> Result<Reply, Reply> {
    let (ingestor, metrics, max_body) = (cx.ingestor, cx.metrics, cx.max_body);
    let refuse = |refusal: Refusal, reply: Reply| {
        metrics.refused(refusal, &reply);
        reply
    };
    let block = req.block1().map_err(|e| {
        refuse(
            Refusal::Invalid,
            Reply::error(Code::BAD_REQUEST, format_args!("{e}")),
        )
    })?;
    let (principal, _) = principal_of(cx, req).await?;
    if !(cx.claim)(principal.tenant()) {
        return Err(refuse(
            Refusal::TenantExchanges,
            Reply::error(
                Code::SERVICE_UNAVAILABLE,
                "this tenant's devices have as many CoAP exchanges in hand as they may; retry later",
            )
            .retry_after(5),
        ));
    }
    let format = req.content_format().map_err(|e| {
        refuse(
            Refusal::Invalid,
            Reply::error(Code::BAD_REQUEST, format_args!("{e}")),
        )
    })?;
    let assembled;
    let body: &[u8] = match block {
        // One block of several: put the body back together first.
        Some(b) if b.num != 0 || b.more => {
            let step = cx.uploads.add(cx.peer, principal.tenant(), b, &req.payload);
            match step {
                Step::Continue => {
                    let mut reply = Reply::new(Code::CONTINUE);
                    reply.options.push((option::BLOCK1, b.encode()));
                    return Ok(reply);
                }
                Step::Complete(body) => {
                    assembled = body;
                    &assembled
                }
                Step::Incomplete => {
                    return Err(refuse(
                        Refusal::Incomplete,
                        Reply::error(
                            Code::REQUEST_ENTITY_INCOMPLETE,
                            "blocks go in order from block 0; start the upload again",
                        ),
                    ));
                }
                Step::TooLarge => {
                    let max = cx.uploads.max_upload_bytes();
                    return Err(refuse(
                        Refusal::TooLarge,
                        Reply::error(
                            Code::REQUEST_ENTITY_TOO_LARGE,
                            format_args!("uploads of at most {max} bytes"),
                        )
                        .with_uint(option::SIZE1, max as u32),
                    ));
                }
                Step::Busy => {
                    return Err(refuse(
                        Refusal::UploadBytes,
                        Reply::error(
                            Code::SERVICE_UNAVAILABLE,
                            "the server holds as many upload bytes as it may; retry later",
                        )
                        .retry_after(5),
                    ));
                }
                Step::BadBlock => {
                    return Err(refuse(
                        Refusal::Invalid,
                        Reply::error(
                            Code::BAD_REQUEST,
                            "a block other than the last must be exactly the block size, and none larger",
                        ),
                    ));
                }
            }
        }
        _ if req.payload.len() > max_body => {
            return Err(refuse(
                Refusal::TooLarge,
                Reply::error(
                    Code::REQUEST_ENTITY_TOO_LARGE,
                    format_args!(
                        "{} bytes; the most in one message is {max_body} (send larger bodies in blocks, Block1)",
                        req.payload.len()
                    ),
                )
                .with_uint(option::SIZE1, max_body as u32),
            ));
        }
        _ => &req.payload,
    };
    ingestor
        .admit(principal.tenant(), body.len())
        .await
        .map_err(|e| ingest_error(e, max_body))?;
    let _permit = ingestor
        .reserve(body.len())
        .map_err(|e| ingest_error(e, max_body))?;
    let now = tributary_core::time::now_ns();
    let limits = ingestor.limits();
    let (parsed, media) = match (metric, format) {
        (None, None | Some(content_format::JSON)) => {
            (formats::json::parse(body, now, limits), "application/json")
        }
        (None, Some(content_format::CBOR)) => {
            (formats::cbor::parse(body, now, limits), "application/cbor")
        }
        (None, Some(content_format::SENML_CBOR)) => (
            formats::cbor::parse_senml(body, now, limits),
            "application/senml+cbor",
        ),
        (None, Some(content_format::SENML_JSON)) => (
            formats::senml::parse(body, now, limits),
            "application/senml+json",
        ),
        (Some(metric), None | Some(content_format::TEXT | content_format::JSON)) => {
            (bare(metric, body, now, limits), "text/plain")
        }
        (None, Some(other)) => {
            return Err(refuse(
                Refusal::ContentFormat,
                Reply::error(
                    Code::UNSUPPORTED_CONTENT_FORMAT,
                    format_args!(
                        "Content-Format {other}; /t takes 50 (JSON), 60 (CBOR), 110 (SenML JSON) or 112 (SenML CBOR)"
                    ),
                ),
            ));
        }
        (_, Some(other)) => {
            return Err(refuse(
                Refusal::ContentFormat,
                Reply::error(
                    Code::UNSUPPORTED_CONTENT_FORMAT,
                    format_args!(
                        "Content-Format {other}; /t/{{metric}} takes 0 (text) or 50 (JSON)"
                    ),
                ),
            ));
        }
    };
    let points = parsed.map_err(|e| {
        ingestor.metrics().rejected(Rejection::Invalid, &e);
        ingest_error(e.into(), max_body)
    })?;
    let ctx = RequestContext {
        content_type: media.to_owned(),
        ..RequestContext::default()
    };
    ingestor
        .ingest_device(&principal, points, &ctx)
        .await
        .map_err(|e| ingest_error(e, max_body))?;
    let mut reply = Reply::new(Code::CHANGED);
    if let Some(b) = block {
        // The last block, acknowledged as such (RFC 7959 section 2.3).
        reply.options.push((option::BLOCK1, b.encode()));
    }
    Ok(reply)
}

/// One value for `/t/{metric}`: a number, `true` or `false`, or a JSON
/// string.
fn bare(
    metric: &str,
    body: &[u8],
    now: i64,
    limits: &tributary_core::Limits,
) -> Result<Vec<Point>, formats::ParseError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| formats::ParseError::new("payload", "not UTF-8"))?
        .trim();
    let value = match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ if text.starts_with('"') => serde_json::from_str::<String>(text)
            .map(Value::Str)
            .map_err(|e| formats::ParseError::new("payload", format!("not a JSON string: {e}")))?,
        _ => text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Value::F64)
            .ok_or_else(|| {
                formats::ParseError::new(
                    "payload",
                    "expected a finite number, true, false or a JSON string",
                )
            })?,
    };
    let point = Point {
        metric: metric.to_owned(),
        ts_ns: now,
        value,
    };
    validate_point(&point, limits)
        .map_err(|e| formats::ParseError::new("metric", e.to_string()))?;
    Ok(vec![point])
}

/// The response for an ingest error. Nothing of the request was
/// acknowledged.
fn ingest_error(e: IngestError, max_body: usize) -> Reply {
    match e {
        IngestError::Unauthenticated => Reply::error(
            Code::UNAUTHORIZED,
            "invalid, revoked or expired device token",
        ),
        IngestError::Forbidden(m) => Reply::error(Code::FORBIDDEN, m),
        IngestError::UnknownDevice(m) => {
            Reply::error(Code::FORBIDDEN, format_args!("unknown device: {m}"))
        }
        IngestError::Invalid(p) => Reply::error(Code::BAD_REQUEST, p),
        IngestError::TooLarge(m) => Reply::error(Code::REQUEST_ENTITY_TOO_LARGE, m)
            .with_uint(option::SIZE1, max_body as u32),
        IngestError::Overloaded { retry_after_secs } => Reply::error(
            Code::SERVICE_UNAVAILABLE,
            format_args!("overloaded; retry in {retry_after_secs} s"),
        )
        .retry_after(retry_after_secs),
        IngestError::Unavailable(m) => {
            Reply::error(Code::SERVICE_UNAVAILABLE, format_args!("unavailable: {m}")).retry_after(1)
        }
        IngestError::Quota(q) => {
            let retry = q.retry_after_secs.unwrap_or(60);
            Reply::error(
                Code::TOO_MANY_REQUESTS,
                format_args!("{q}; nothing was acknowledged; retry in {retry} s"),
            )
            .retry_after(retry)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block2_option_slices_an_answer_and_refuses_past_its_end() {
        use tributary_coap_codec::{Block, MessageType};
        let mut whole = Reply::new(Code::CONTENT);
        whole.payload = (0..40u8).collect();
        let ask = |num: u32| {
            let mut m = Message::new(MessageType::Confirmable, Code::GET, 1);
            m.add_option(option::BLOCK2, Block::new(num, false, 16).unwrap().encode());
            m
        };
        let first = block2(&ask(0), whole.clone());
        assert_eq!(first.payload, (0..16u8).collect::<Vec<_>>());
        let opt = |r: &Reply, n: u16| {
            r.options
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            opt(&first, option::BLOCK2).and_then(|v| Block::decode(&v)),
            Block::new(0, true, 16)
        );
        assert_eq!(opt(&first, option::SIZE2), Some(option::encode_uint(40)));
        let last = block2(&ask(2), whole.clone());
        assert_eq!(last.payload, (32..40u8).collect::<Vec<_>>());
        assert_eq!(
            opt(&last, option::BLOCK2).and_then(|v| Block::decode(&v)),
            Block::new(2, false, 16)
        );
        assert_eq!(block2(&ask(3), whole.clone()).code, Code::BAD_REQUEST);
        // No Block2 asked, or not a 2.05: untouched.
        let plain = Message::new(MessageType::Confirmable, Code::GET, 1);
        assert_eq!(block2(&plain, whole.clone()), whole);
        let changed = Reply::new(Code::CHANGED);
        assert_eq!(block2(&ask(1), changed.clone()), changed);
    }
    use tributary_coap_codec::MessageType;

    fn request(code: Code, path: &[&str]) -> Message {
        let mut m = Message::new(MessageType::Confirmable, code, 1);
        for p in path {
            m.add_option(option::URI_PATH, p.as_bytes().to_vec());
        }
        m
    }

    fn refused(m: &Message) -> Code {
        match route(m) {
            Ok(_) => panic!("routed"),
            Err((_, reply)) => reply.code,
        }
    }

    #[test]
    fn requests_route_or_are_refused_clearly() {
        assert!(matches!(
            route(&request(Code::POST, &["t"])),
            Ok(Route::Telemetry)
        ));
        assert!(matches!(
            route(&request(Code::POST, &["t", "temp"])),
            Ok(Route::Bare("temp"))
        ));
        assert!(matches!(
            route(&request(Code::GET, &[".well-known", "core"])),
            Ok(Route::Discovery)
        ));
        assert_eq!(
            refused(&request(Code::GET, &["t"])),
            Code::METHOD_NOT_ALLOWED
        );
        assert_eq!(refused(&request(Code::POST, &["x"])), Code::NOT_FOUND);
        assert_eq!(
            refused(&request(Code::POST, &["t", "a", "b"])),
            Code::NOT_FOUND
        );
        let mut q = request(Code::POST, &["t"]);
        q.add_option(option::URI_QUERY, b"token=tbd_x".to_vec());
        let Err((_, reply)) = route(&q) else { panic!() };
        assert_eq!(reply.code, Code::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&reply.payload).contains("refused in the URI"));
        let mut odd = request(Code::POST, &["t"]);
        odd.add_option(9, vec![]);
        assert_eq!(refused(&odd), Code::BAD_OPTION);
        // An unknown elective option is ignored.
        let mut even = request(Code::POST, &["t"]);
        even.add_option(65_000, vec![1]);
        assert!(route(&even).is_ok());
    }

    #[test]
    fn bare_values_are_numbers_booleans_or_strings() {
        let limits = tributary_core::Limits::default();
        let v = |body: &str| bare("temp", body.as_bytes(), 5, &limits).map(|p| p[0].value.clone());
        assert_eq!(v("21.5"), Ok(Value::F64(21.5)));
        assert_eq!(v(" -3 "), Ok(Value::F64(-3.0)));
        assert_eq!(v("true"), Ok(Value::Bool(true)));
        assert_eq!(v("\"open\""), Ok(Value::Str("open".into())));
        assert!(v("NaN").is_err() && v("inf").is_err() && v("abc").is_err());
        assert!(bare("bad metric!", b"1", 5, &limits).is_err());
    }

    #[test]
    fn diagnostics_stay_short() {
        let r = Reply::error(Code::BAD_REQUEST, "é".repeat(600));
        assert!(r.payload.len() <= 512);
        assert!(std::str::from_utf8(&r.payload).is_ok());
    }
}
