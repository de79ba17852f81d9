//! A minimal MQTT client over the project's codec, for tests that must send
//! exactly the packets an attacker would, and read every answer.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tributary_mqtt_codec::{
    ConnAck, Connect, Packet, ProtocolVersion, PubAck, Publish, QoS, ReasonCode, decode, encode,
};

/// One MQTT connection, packet by packet.
pub struct RawMqtt {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    rbuf: BytesMut,
}

impl RawMqtt {
    /// Connects `client_id` with `user`/`password`; returns the client and
    /// the CONNACK.
    pub async fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        user: &str,
        password: &str,
    ) -> (RawMqtt, ConnAck) {
        let mut c = Connect::new(version, client_id);
        c.username = Some(user.into());
        c.password = Some(password.as_bytes().to_vec().into());
        c.keep_alive = 60;
        Self::connect_with(addr, c).await
    }

    /// Sends `connect` and reads the CONNACK.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (RawMqtt, ConnAck) {
        let stream = TcpStream::connect(addr).await.expect("TCP connect");
        Self::handshake(stream, connect).await
    }

    /// Sends `connect` over `stream` and reads the CONNACK.
    pub async fn handshake(stream: TcpStream, connect: Connect) -> (RawMqtt, ConnAck) {
        let mut m = RawMqtt {
            stream,
            version: connect.protocol,
            rbuf: BytesMut::new(),
        };
        m.send(&connect.into()).await;
        match m.recv(Duration::from_secs(10)).await {
            Some(Packet::ConnAck(ack)) => (m, *ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode(packet, self.version, &mut out).expect("encode");
        self.stream.write_all(&out).await.expect("write");
    }

    /// The next packet; `None` when the server closed the connection or
    /// nothing came within `within`.
    pub async fn recv(&mut self, within: Duration) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match decode(&mut self.rbuf, Some(self.version), 16 << 20) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(e) => panic!("server sent a malformed packet: {e}"),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Whether the server closes the connection within `within` (packets
    /// before the close, a DISCONNECT for instance, are skipped).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// Publishes at QoS 1 and returns the PUBACK's reason code (`None`: no
    /// PUBACK, the connection closed).
    pub async fn publish_qos1(
        &mut self,
        topic: &str,
        payload: &[u8],
        id: u16,
    ) -> Option<ReasonCode> {
        let mut p = Publish::new(topic, payload.to_vec());
        p.qos = QoS::AtLeastOnce;
        p.packet_id = Some(id);
        self.send(&p.into()).await;
        loop {
            match self.recv(Duration::from_secs(10)).await? {
                Packet::PubAck(PubAck {
                    packet_id,
                    reason_code,
                    ..
                }) if packet_id == id => return Some(reason_code),
                _ => {}
            }
        }
    }
}
