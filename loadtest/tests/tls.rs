//! MQTT over TLS: devices connect through a TLS-terminating relay (rustls,
//! the test's own CA in `tests/fixtures`) to a real standalone, and every
//! message is acknowledged and stored. A client given the wrong server name
//! fails every connection, and says why.
//!
//! The fixtures are a P-256 CA and a server certificate for `localhost` and
//! 127.0.0.1, valid for 100 years, made with:
//!
//! ```sh
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
//!   -out ca.pem -days 36500 -subj "/CN=tributary-loadtest test CA" \
//!   -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign"
//! openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
//!   -out server.csr -subj "/CN=localhost"
//! openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -days 36500 -out server.pem \
//!   -extfile <(printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
//! openssl pkcs8 -topk8 -nocrypt -in server.key -out server.key   # PKCS#8
//! ```

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Standalone, describe, loadtest, read_report};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Terminates TLS on a loopback port and relays the plain bytes to `upstream`.
fn tls_relay(rt: &tokio::runtime::Runtime, upstream: SocketAddr) -> SocketAddr {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(fixture("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

fn scenario(server_name: &str) -> String {
    format!(
        r#"
        name = "tls"
        [devices]
        count = 5
        [transport]
        protocol = "mqtt"
        qos = 1
        tls = true
        ca_file = "{}"
        server_name = "{server_name}"
        connect_timeout = "5s"
        [load]
        in_flight = 2
        messages = 100
        duration = "60s"
        ramp = 0
        [payload]
        metrics = 2
        [measure]
        verify = true
        verify_timeout = "30s"
        "#,
        fixture("ca.pem").display()
    )
}

fn run(
    server: &Standalone,
    relay: SocketAddr,
    toml: &str,
) -> (std::process::Output, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tls.toml");
    std::fs::write(&file, toml).unwrap();
    let json = dir.path().join("tls.json");
    let mut args = vec![
        "run".to_string(),
        file.display().to_string(),
        "-q".into(),
        "--json".into(),
        json.display().to_string(),
    ];
    args.extend(server.target_flags());
    let at = args.iter().position(|a| a == "--mqtt-addr").unwrap();
    args[at + 1] = relay.to_string();
    let out = loadtest(&args, Duration::from_secs(120));
    let report = if json.exists() {
        read_report(&json)
    } else {
        serde_json::Value::Null
    };
    (out, report)
}

#[test]
fn mqtt_over_tls_is_acknowledged_and_stored() {
    let server = Standalone::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let relay = tls_relay(&rt, server.mqtt);

    let (out, r) = run(&server, relay, &scenario("localhost"));
    let ctx = describe(&out);
    assert!(out.status.success(), "{ctx}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("MQTT 5 QoS 1 TLS"),
        "{ctx}"
    );
    assert_eq!(r["counters"]["msgs_acked"], 100, "{ctx}");
    assert_eq!(r["verify"]["points_stored"], 200, "{ctx}");
    assert_eq!(r["verify"]["acked_not_stored"], 0, "{ctx}");

    // A certificate that does not name the server is refused, every time.
    let (out, r) = run(&server, relay, &scenario("not-the-server.example"));
    let ctx = describe(&out);
    assert!(
        out.status.success(),
        "a run with failed connections still reports: {ctx}"
    );
    assert_eq!(r["counters"]["conn_established"], 0, "{ctx}");
    assert_eq!(r["counters"]["msgs_sent"], 0, "{ctx}");
    let errors = r["errors"].as_object().unwrap();
    assert!(
        errors.keys().any(|k| k.starts_with("TLS handshake")),
        "the reason is named: {ctx}"
    );
}
