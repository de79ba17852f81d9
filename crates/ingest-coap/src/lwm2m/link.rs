//! The registration payload: the client's objects and instances in CoRE
//! Link Format (RFC 6690), as LwM2M 1.1 Core 6.2.1 uses it:
//! `</>;rt="oma.lwm2m";ct=11543,</1/0>,</3/0>,</3303/0>,</3303/1>`.

/// An object the client has, with an instance or without (an object it
/// supports with no instance yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ObjectLink {
    pub object: u16,
    pub instance: Option<u16>,
}

/// The most links taken from one registration.
pub(crate) const MAX_LINKS: usize = 256;

/// The object links of a registration payload. Links that are not object
/// paths (the root `</>` with its attributes, an alternate path) are
/// skipped; more than [`MAX_LINKS`] object links, or a link that does not
/// close, is an error.
pub(crate) fn parse(payload: &str) -> Result<Vec<ObjectLink>, String> {
    let mut out = Vec::new();
    let mut rest = payload.trim();
    while !rest.is_empty() {
        let start = rest
            .strip_prefix('<')
            .ok_or_else(|| format!("expected '<' at {:?}", truncate(rest)))?;
        let end = start.find('>').ok_or("a link without its closing '>'")?;
        let target = &start[..end];
        // Skip the attributes up to the next link (quoted strings may
        // hold commas).
        let mut after = &start[end + 1..];
        let mut quoted = false;
        let mut cut = after.len();
        for (i, c) in after.char_indices() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    cut = i;
                    break;
                }
                _ => {}
            }
        }
        let next = after.get(cut + 1..).unwrap_or("");
        after = next;
        rest = after.trim_start();
        let mut parts = target.trim_start_matches('/').split('/');
        let object = parts.next().and_then(|p| p.parse::<u16>().ok());
        let instance = parts.next().map(str::parse::<u16>);
        let Some(object) = object else { continue };
        let instance = match instance {
            None => None,
            Some(Ok(i)) => Some(i),
            Some(Err(_)) => continue,
        };
        if parts.next().is_some() {
            continue;
        }
        if out.len() >= MAX_LINKS {
            return Err(format!("more than {MAX_LINKS} object links"));
        }
        out.push(ObjectLink { object, instance });
    }
    Ok(out)
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(24).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(object: u16, instance: Option<u16>) -> ObjectLink {
        ObjectLink { object, instance }
    }

    #[test]
    fn objects_and_instances_are_read_and_the_rest_skipped() {
        let links =
            parse(r#"</>;rt="oma.lwm2m,x";ct=11543,</1/0>,</3/0>,</3303/0>,</3303/1>,</3304>"#)
                .unwrap();
        assert_eq!(
            links,
            vec![
                link(1, Some(0)),
                link(3, Some(0)),
                link(3303, Some(0)),
                link(3303, Some(1)),
                link(3304, None)
            ]
        );
        assert_eq!(parse(" ").unwrap(), vec![]);
        assert_eq!(parse("</3/0/1>,</a/b>").unwrap(), vec![]);
    }

    #[test]
    fn malformed_or_oversized_payloads_are_refused() {
        assert!(parse("</3/0").is_err());
        assert!(parse("3/0>").is_err());
        let many: Vec<String> = (0..=MAX_LINKS).map(|i| format!("</{i}/0>")).collect();
        assert!(parse(&many.join(",")).is_err());
    }
}
