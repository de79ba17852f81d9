//! The LwM2M registration interface's resources: register (`POST /rd`),
//! update (`POST /rd/{id}`) and deregister (`DELETE /rd/{id}`).

use std::time::Instant;

use tributary_coap_codec::{Code, Message, content_format, option};

use super::{link, params};
use crate::metrics::Refusal;
use crate::resource::{Context, Reply, device_of};

/// `POST /rd?ep=…`: 2.01 Created with Location-Path `rd/{id}`. The device
/// is online from now until it deregisters or its lifetime passes.
pub(crate) async fn register(cx: &Context<'_>, req: &Message) -> Result<Reply, Reply> {
    let (tenant, device, credential) = device_of(cx, req).await?;
    let invalid = |why: String| {
        let reply = Reply::error(Code::BAD_REQUEST, why);
        cx.metrics.refused(Refusal::Invalid, &reply);
        reply
    };
    let (params, _) = params(
        req.options_of(option::URI_QUERY),
        false,
        cx.lwm2m.max_lifetime(),
    )
    .map_err(invalid)?;
    let params = params.unwrap_or_else(|| unreachable!("a register's parameters"));
    match req.content_format() {
        Ok(None | Some(content_format::LINK_FORMAT)) => {}
        _ => {
            let reply = Reply::error(
                Code::UNSUPPORTED_CONTENT_FORMAT,
                "the objects go in link format (40)",
            );
            cx.metrics.refused(Refusal::ContentFormat, &reply);
            return Err(reply);
        }
    }
    if req.payload.len() > cx.max_body {
        let reply = Reply::error(
            Code::REQUEST_ENTITY_TOO_LARGE,
            format_args!("object links of at most {} bytes", cx.max_body),
        )
        .with_uint(option::SIZE1, cx.max_body as u32);
        cx.metrics.refused(Refusal::TooLarge, &reply);
        return Err(reply);
    }
    let text = std::str::from_utf8(&req.payload)
        .map_err(|_| invalid("the object links are not UTF-8".into()))?;
    let objects = link::parse(text).map_err(invalid)?;
    let reg = cx
        .lwm2m
        .register(
            &tenant,
            &device,
            &credential,
            cx.peer,
            params,
            objects,
            Instant::now(),
        )
        .map_err(|bound| {
            let reply = Reply::error(
                Code::SERVICE_UNAVAILABLE,
                format_args!(
                    "the server holds as many LwM2M registrations as it may ({bound}); retry later"
                ),
            )
            .retry_after(60);
            cx.metrics.refused(Refusal::Registrations, &reply);
            reply
        })?;
    tracing::info!(
        tenant,
        device,
        endpoint = %reg.endpoint,
        version = %reg.version,
        binding = %reg.binding,
        queue = reg.queue,
        lifetime_secs = reg.lifetime.as_secs(),
        objects = reg.objects.len(),
        "LwM2M client registered"
    );
    cx.commands.report(&tenant, &device, true).await;
    let (registrations, observations) = cx.lwm2m.len();
    cx.metrics.lwm2m(registrations, observations);
    let mut reply = Reply::new(Code::CREATED);
    reply.options.push((option::LOCATION_PATH, b"rd".to_vec()));
    reply
        .options
        .push((option::LOCATION_PATH, reg.id.into_bytes()));
    Ok(reply)
}

/// `POST /rd/{id}`: 2.04 Changed; a new lifetime if `lt` is given, and the
/// device's current address either way. 4.04 for a registration that is
/// not this device's (or is gone: the device registers again).
pub(crate) async fn update(cx: &Context<'_>, req: &Message, id: &str) -> Result<Reply, Reply> {
    let (tenant, device, _) = device_of(cx, req).await?;
    let (_, lifetime) = params(
        req.options_of(option::URI_QUERY),
        true,
        cx.lwm2m.max_lifetime(),
    )
    .map_err(|why| {
        let reply = Reply::error(Code::BAD_REQUEST, why);
        cx.metrics.refused(Refusal::Invalid, &reply);
        reply
    })?;
    match cx
        .lwm2m
        .update(id, &tenant, &device, cx.peer, lifetime, Instant::now())
    {
        Some(_) => Ok(Reply::new(Code::CHANGED)),
        None => Err(not_registered(cx, id)),
    }
}

/// `DELETE /rd/{id}`: 2.02 Deleted, and the device is offline.
pub(crate) async fn deregister(cx: &Context<'_>, req: &Message, id: &str) -> Result<Reply, Reply> {
    let (tenant, device, _) = device_of(cx, req).await?;
    match cx.lwm2m.deregister(id, &tenant, &device) {
        Some(_) => {
            cx.commands.report(&tenant, &device, false).await;
            let (registrations, observations) = cx.lwm2m.len();
            cx.metrics.lwm2m(registrations, observations);
            Ok(Reply::new(Code::DELETED))
        }
        None => Err(not_registered(cx, id)),
    }
}

fn not_registered(cx: &Context<'_>, id: &str) -> Reply {
    let reply = Reply::error(
        Code::NOT_FOUND,
        format_args!("no registration {id:?} of this device: register again"),
    );
    cx.metrics.refused(Refusal::NotFound, &reply);
    reply
}
