//! MQTT over TLS: a CA, a server and client certificates made with rcgen,
//! clients over tokio-rustls and Debian's mosquitto_pub.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use common::{Rig, TestAuth, WAIT, connect_packet};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tributary_core::Value;
use tributary_core::directory::{Authenticator, DirectoryError, Principal, TenantPolicy};
use tributary_ingest_mqtt::MqttConfig;
use tributary_ingest_mqtt::{MqttTls, fingerprint};
use tributary_mqtt_codec::{ConnAck, Connect, Packet, ProtocolVersion, ReasonCode, decode, encode};

/// A test PKI: one CA, a server certificate for 127.0.0.1 and localhost,
/// and a client certificate, written as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertificateDer<'static>,
    client_cert: CertificateDer<'static>,
    client_key: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tributary test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params
            .distinguished_name
            .push(DnType::CommonName, "d1");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params.signed_by(&client_key, &ca).unwrap();

        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        write("ca.pem", ca.pem());
        write("server.pem", server.pem());
        write("server.key", server_key.serialize_pem());
        write("client.pem", client.pem());
        write("client.key", client_key.serialize_pem());
        Pki {
            ca: ca.der().clone(),
            client_cert: client.der().clone(),
            client_key: client_key.serialize_der(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server's TLS settings, with or without client authentication.
    fn server_tls(&self, client_auth: bool) -> MqttTls {
        let ca = self.path("ca.pem");
        MqttTls::from_pem_files(
            &self.path("server.pem"),
            &self.path("server.key"),
            client_auth.then_some(ca.as_path()),
        )
        .unwrap()
    }

    /// A client trusting the CA, presenting the client certificate if asked.
    fn connector(&self, with_cert: bool) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if with_cert {
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.client_key.clone()));
            builder
                .with_client_auth_cert(vec![self.client_cert.clone()], key)
                .unwrap()
        } else {
            builder.with_no_client_auth()
        };
        TlsConnector::from(Arc::new(config))
    }
}

/// [`TestAuth`] plus registered certificates: fingerprint → outcome.
#[derive(Debug, Default)]
struct CertAuth {
    certificates:
        std::sync::Mutex<std::collections::HashMap<String, Result<Principal, DirectoryError>>>,
}

impl CertAuth {
    fn register(&self, cert: &[u8], outcome: Result<Principal, DirectoryError>) {
        self.certificates
            .lock()
            .unwrap()
            .insert(fingerprint(cert), outcome);
    }
}

#[async_trait]
impl Authenticator for CertAuth {
    async fn authenticate(&self, token: &str) -> Result<Principal, DirectoryError> {
        TestAuth.authenticate(token).await
    }
    async fn authenticate_certificate(
        &self,
        fingerprint: &str,
    ) -> Result<Principal, DirectoryError> {
        self.certificates
            .lock()
            .unwrap()
            .get(fingerprint)
            .cloned()
            .unwrap_or(Err(DirectoryError::Unauthenticated))
    }
    async fn tenant_policy(&self, tenant: &str) -> Result<TenantPolicy, DirectoryError> {
        TestAuth.tenant_policy(tenant).await
    }
    async fn ensure_device(
        &self,
        tenant: &str,
        device: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), DirectoryError> {
        TestAuth.ensure_device(tenant, device, labels).await
    }
}

fn device(device: &str) -> Principal {
    Principal::Device {
        tenant: "acme".into(),
        device: device.into(),
    }
}

/// A CONNECT with an optional user name and no password.
fn passwordless(client_id: &str, username: Option<&str>) -> Connect {
    let mut c = Connect::new(ProtocolVersion::V5, client_id);
    c.username = username.map(str::to_owned);
    c
}

/// Starts a TLS listener on the rig's server, returns its address.
async fn listen_tls(rig: &Rig, tls: MqttTls) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = rig.server.clone();
    tokio::spawn(async move {
        server
            .serve_tls(listener, tls, std::future::pending())
            .await
            .unwrap();
    });
    addr
}

async fn tls_open(addr: SocketAddr, connector: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake finishes")
        .expect("handshake succeeds")
}

/// Sends CONNECT over `stream` and returns the CONNACK.
async fn tls_connect(stream: &mut TlsStream<TcpStream>, connect: Connect) -> ConnAck {
    let version = connect.protocol;
    let mut out = BytesMut::new();
    encode(&Packet::from(connect), version, &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let read = async {
        loop {
            if let Some(p) = decode(&mut buf, Some(version), usize::MAX).unwrap() {
                return p;
            }
            let n = stream.read_buf(&mut buf).await.unwrap();
            assert!(n > 0, "closed before CONNACK");
        }
    };
    match tokio::time::timeout(WAIT, read).await.expect("CONNACK") {
        Packet::ConnAck(a) => *a,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_connects_over_tls_with_its_token() {
    let pki = Pki::new();
    let rig = Rig::default().await;
    let addr = listen_tls(&rig, pki.server_tls(false)).await;
    let mut stream = tls_open(addr, &pki.connector(false)).await;
    let ack = tls_connect(
        &mut stream,
        connect_packet(ProtocolVersion::V5, "d1", "d1", "tok-d1"),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
    // A wrong token is still refused over TLS.
    let mut stream = tls_open(addr, &pki.connector(false)).await;
    let ack = tls_connect(
        &mut stream,
        connect_packet(ProtocolVersion::V5, "d1", "d1", "tok-d2"),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::BadUserNameOrPassword);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_stalled_handshakes_do_not_affect_other_clients() {
    let pki = Pki::new();
    let rig = Rig::default().await;
    let tls = pki
        .server_tls(false)
        .with_handshake_timeout(Duration::from_millis(300));
    let addr = listen_tls(&rig, tls).await;

    // A client that never starts its handshake is closed after the timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // A client speaking plain MQTT to the TLS port is closed.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    let mut out = BytesMut::new();
    encode(
        &connect_packet(ProtocolVersion::V311, "d1", "d1", "tok-d1").into(),
        ProtocolVersion::V311,
        &mut out,
    )
    .unwrap();
    plain.write_all(&out).await.unwrap();

    // Meanwhile a real TLS client gets through.
    let mut good = tls_open(addr, &pki.connector(false)).await;
    let ack = tls_connect(
        &mut good,
        connect_packet(ProtocolVersion::V311, "d1", "d1", "tok-d1"),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::Success);

    for (what, stream) in [("plain", &mut plain), ("silent", &mut silent)] {
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(WAIT, stream.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "{what} socket closed by the server");
        // No CONNACK ever reaches a client that failed its handshake.
        assert!(
            sink.first() != Some(&0x20),
            "{what} got no MQTT bytes: {sink:?}"
        );
    }
    common::wait_for("handshake failures counted", || {
        rig.metrics_text()
            .contains("reason=\"tls_handshake_timeout\"")
            && rig.metrics_text().contains("reason=\"tls_handshake\"")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_must_chain_to_the_client_ca() {
    let pki = Pki::new();
    let other = Pki::new();
    let rig = Rig::default().await;
    let addr = listen_tls(&rig, pki.server_tls(true)).await;

    // The client certificate of another CA is refused in the handshake.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    // The stranger trusts our server CA but presents its own certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(other.client_key.clone()));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(vec![other.client_cert.clone()], key)
    .unwrap();
    let refused = async {
        // TLS 1.3 reports the client certificate's refusal on the first read.
        let mut s = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let mut out = BytesMut::new();
        encode(
            &connect_packet(ProtocolVersion::V311, "d1", "d1", "tok-d1").into(),
            ProtocolVersion::V311,
            &mut out,
        )
        .map_err(std::io::Error::other)?;
        s.write_all(&out).await?;
        let mut buf = [0u8; 16];
        match s.read(&mut buf).await? {
            0 => Err(std::io::Error::other("closed")),
            _ => Ok(()),
        }
    };
    let outcome = tokio::time::timeout(WAIT, refused).await.expect("finishes");
    assert!(
        outcome.is_err(),
        "a foreign client certificate must be refused"
    );

    // Our client, with and without a certificate, connects with its token.
    for with_cert in [true, false] {
        let mut stream = tls_open(addr, &pki.connector(with_cert)).await;
        let ack = tls_connect(
            &mut stream,
            connect_packet(ProtocolVersion::V5, "d1", "d1", "tok-d1"),
        )
        .await;
        assert_eq!(ack.reason_code, ReasonCode::Success, "cert: {with_cert}");
    }
    assert_eq!(fingerprint(&pki.client_cert).len(), 64);
}

/// Whether mosquitto_pub is installed; panics when it is missing and
/// skipping was not asked for (`TRIBUTARY_SKIP_MOSQUITTO=1`).
fn mosquitto_available() -> bool {
    let found = std::process::Command::new("mosquitto_pub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return true;
    }
    if std::env::var("TRIBUTARY_SKIP_MOSQUITTO").as_deref() == Ok("1") {
        eprintln!("SKIPPED: mosquitto TLS interop (mosquitto_pub not found)");
        return false;
    }
    panic!("mosquitto_pub not found: install mosquitto-clients or set TRIBUTARY_SKIP_MOSQUITTO=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_over_tls_and_mtls() {
    if !mosquitto_available() {
        return;
    }
    let pki = Pki::new();
    let auth = Arc::new(CertAuth::default());
    auth.register(&pki.client_cert, Ok(device("d1")));
    let rig = Rig::start_with_auth(MqttConfig::default(), auth).await;
    let addr = listen_tls(&rig, pki.server_tls(true)).await;
    let port = addr.port().to_string();
    let ca = pki.path("ca.pem");
    let cert = pki.path("client.pem");
    let key = pki.path("client.key");
    // v3.1.1 with the token; v5 with the registered certificate, no password.
    let runs: [(&str, Vec<&std::ffi::OsStr>); 2] = [
        ("mqttv311", vec!["-P".as_ref(), "tok-d1".as_ref()]),
        (
            "mqttv5",
            vec![
                "--cert".as_ref(),
                cert.as_os_str(),
                "--key".as_ref(),
                key.as_os_str(),
            ],
        ),
    ];
    for (i, (version, credentials)) in runs.iter().enumerate() {
        let status = tokio::time::timeout(
            WAIT,
            tokio::process::Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-q", "1"])
                .arg("--cafile")
                .arg(&ca)
                .args(["-i", "d1/pub", "-u", "d1"])
                .args(credentials)
                .args(["-t", "devices/d1/telemetry/temp", "-m", &i.to_string()])
                .status(),
        )
        .await
        .expect("mosquitto_pub finishes")
        .expect("mosquitto_pub runs");
        assert!(
            status.success(),
            "mosquitto_pub {version} over TLS: {status}"
        );
    }
    let envs = rig.envelopes().await;
    let values: Vec<_> = envs.iter().map(|e| e.points[0].value.clone()).collect();
    assert_eq!(values, [Value::I64(0), Value::I64(1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_client_certificate_authenticates_without_a_password() {
    let pki = Pki::new();
    let auth = Arc::new(CertAuth::default());
    auth.register(&pki.client_cert, Ok(device("d1")));
    let rig = Rig::start_with_auth(MqttConfig::default(), auth.clone()).await;
    let addr = listen_tls(&rig, pki.server_tls(true)).await;
    let cases = [
        ("d1", Some("d1"), ReasonCode::Success),
        // No user name: the certificate names the device.
        ("d1/sensor", None, ReasonCode::Success),
        ("", None, ReasonCode::Success),
        // The user name must be the certificate's device.
        ("d2", Some("d2"), ReasonCode::BadUserNameOrPassword),
        // The client id stays bound to the device.
        ("d2", None, ReasonCode::ClientIdentifierNotValid),
    ];
    for (client_id, username, expected) in cases {
        let mut stream = tls_open(addr, &pki.connector(true)).await;
        let ack = tls_connect(&mut stream, passwordless(client_id, username)).await;
        assert_eq!(ack.reason_code, expected, "{client_id:?} {username:?}");
    }
    // Telemetry flows on a certificate-authenticated connection.
    let mut stream = tls_open(addr, &pki.connector(true)).await;
    let ack = tls_connect(&mut stream, passwordless("d1", None)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let mut publish = tributary_mqtt_codec::Publish::new("devices/d1/telemetry/temp", "7");
    publish.qos = tributary_mqtt_codec::QoS::AtLeastOnce;
    publish.packet_id = Some(1);
    let mut out = BytesMut::new();
    encode(&Packet::from(publish), ProtocolVersion::V5, &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    let envs = rig.wait_envelopes(1).await;
    assert_eq!(envs.len(), 1);
    assert_eq!(envs[0].device, "d1");

    // Without a certificate, the token is still required.
    let mut stream = tls_open(addr, &pki.connector(false)).await;
    let ack = tls_connect(&mut stream, passwordless("d1", Some("d1"))).await;
    assert_eq!(ack.reason_code, ReasonCode::BadUserNameOrPassword);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_revoked_or_disabled_certificates_do_not_authenticate() {
    let pki = Pki::new();
    let auth = Arc::new(CertAuth::default());
    let rig = Rig::start_with_auth(MqttConfig::default(), auth.clone()).await;
    let addr = listen_tls(&rig, pki.server_tls(true)).await;
    // Not registered: a CA-signed certificate alone is no credential...
    let mut stream = tls_open(addr, &pki.connector(true)).await;
    let ack = tls_connect(&mut stream, passwordless("d1", Some("d1"))).await;
    assert_eq!(ack.reason_code, ReasonCode::BadUserNameOrPassword);
    // ...but the device's token still works alongside it.
    let mut stream = tls_open(addr, &pki.connector(true)).await;
    let ack = tls_connect(
        &mut stream,
        connect_packet(ProtocolVersion::V5, "d1", "d1", "tok-d1"),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    // Registered for a disabled device: refused as not authorized.
    auth.register(
        &pki.client_cert,
        Err(DirectoryError::Forbidden("device disabled".into())),
    );
    let mut stream = tls_open(addr, &pki.connector(true)).await;
    let ack = tls_connect(&mut stream, passwordless("d1", None)).await;
    assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_tls_with_a_client_certificate() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let pki = Pki::new();
    let auth = Arc::new(CertAuth::default());
    auth.register(&pki.client_cert, Ok(device("d1")));
    let rig = Rig::start_with_auth(MqttConfig::default(), auth).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = rig.server.clone();
    let tls = pki.server_tls(true);
    tokio::spawn(async move {
        server
            .serve_wss(listener, tls, std::future::pending())
            .await
            .unwrap();
    });

    let stream = tls_open(addr, &pki.connector(true)).await;
    let mut request = format!("wss://127.0.0.1:{}/mqtt", addr.port())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("upgrade finishes")
        .expect("upgrade succeeds");
    let mut out = BytesMut::new();
    encode(
        &Packet::from(passwordless("d1", None)),
        ProtocolVersion::V5,
        &mut out,
    )
    .unwrap();
    ws.send(Message::Binary(out.freeze())).await.unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("CONNACK in time")
        .expect("a message")
        .expect("no error");
    let Message::Binary(data) = reply else {
        panic!("expected a binary message, got {reply:?}");
    };
    let mut buf = BytesMut::from(&data[..]);
    match decode(&mut buf, Some(ProtocolVersion::V5), usize::MAX).unwrap() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, ReasonCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_proxy_protocol_the_header_comes_before_the_client_hello() {
    let pki = Pki::new();
    let rig = Rig::start(MqttConfig {
        proxy_protocol: true,
        ..MqttConfig::default()
    })
    .await;
    let addr = listen_tls(&rig, pki.server_tls(false)).await;
    let connector = pki.connector(false);
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 40001 8883\r\n")
        .await
        .unwrap();
    let mut stream = tokio::time::timeout(WAIT, connector.connect(name.clone(), tcp))
        .await
        .expect("handshake finishes")
        .expect("handshake succeeds after the header");
    let ack = tls_connect(
        &mut stream,
        connect_packet(ProtocolVersion::V5, "d1", "d1", "tok-d1"),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
    // A ClientHello where the header should be: closed, no handshake.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let refused = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("closed in time");
    assert!(refused.is_err());
    let line = "tributary_mqtt_connects_refused_total{reason=\"proxy_protocol\"} 1";
    common::wait_for(line, || rig.metrics_text().lines().any(|l| l == line)).await;
}
