//! The console as served: the page, its files, their headers, and that
//! every file a page refers to is embedded.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

async fn fetch(path: &str, etag: Option<&str>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::get(path);
    if let Some(tag) = etag {
        req = req.header(header::IF_NONE_MATCH, tag);
    }
    let resp = tributary_console::router()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy_and_revalidates() {
    let (status, headers, body) = fetch("/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("/console/js/app.js")
    );
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    let (status, _, body) = fetch("/", Some(&etag)).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    let (status, headers, _) = fetch("/console/js/app.js", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
}

#[tokio::test]
async fn unknown_and_escaping_paths_are_404() {
    for path in [
        "/console/nope.js",
        "/console/../Cargo.toml",
        "/console/%2e%2e/build.rs",
        "/console/index.html",
        "/console/",
    ] {
        let (status, _, _) = fetch(path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

/// Every `/console/…` path in the page and every module a script imports
/// is embedded: a renamed file cannot leave a broken reference behind.
#[test]
fn every_referenced_file_is_embedded() {
    let paths: Vec<&str> = tributary_console::asset_paths().collect();
    let text =
        |p: &str| String::from_utf8(tributary_console::asset_body(p).unwrap().to_vec()).unwrap();
    let html = text("index.html");
    let mut refs: Vec<String> = html
        .split("\"/console/")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_owned())
        .collect();
    for js in paths.iter().filter(|p| p.starts_with("js/")) {
        for chunk in text(js).split("\"./").skip(1) {
            let name = chunk.split('"').next().unwrap();
            if name.ends_with(".js") {
                refs.push(format!("js/{name}"));
            }
        }
    }
    assert!(refs.len() > 8, "{refs:?}");
    for r in &refs {
        assert!(
            paths.contains(&r.as_str()),
            "{r} is referred to but not embedded"
        );
    }
}

/// The first load stays small: every file the page can load, together.
#[test]
fn the_whole_console_is_under_500_kb() {
    let total: usize = tributary_console::asset_paths()
        .map(|p| tributary_console::asset_body(p).unwrap().len())
        .sum();
    assert!(total < 500 * 1024, "{total} bytes");
}
