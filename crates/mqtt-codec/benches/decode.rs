//! PUBLISH decoding and encoding throughput, in packets per second.
//!
//! Run: `cargo bench -p tributary-mqtt-codec --bench decode`
//! (add `-- --warm-up-time 1 --measurement-time 3` for a quick run).
//! Each iteration handles a buffer of 1,000 QoS 1 PUBLISH packets of a
//! 120-byte JSON payload on a five-level topic; criterion reports `elem/s`
//! = packets/s.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tributary_mqtt_codec::{
    Packet, ProtocolVersion, Publish, PublishProperties, QoS, decode, encode,
};

const PACKETS: usize = 1_000;

fn publishes(version: ProtocolVersion) -> (Vec<Packet>, BytesMut) {
    let payload = Bytes::from(format!(
        r#"{{"temperature":21.5,"humidity":40.25,"pressure":1013.2,"ts":1700000000000,"pad":"{}"}}"#,
        "x".repeat(40)
    ));
    let mut packets = Vec::with_capacity(PACKETS);
    let mut wire = BytesMut::new();
    for i in 0..PACKETS {
        let packet = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: format!("tenants/acme/devices/sensor-{}/telemetry", i % 100),
            packet_id: Some(u16::try_from(i % 65_535 + 1).expect("fits")),
            payload: payload.clone(),
            properties: match version {
                ProtocolVersion::V5 => PublishProperties {
                    message_expiry_interval: Some(3_600),
                    user_properties: vec![("schema".into(), "v2".into())],
                    ..PublishProperties::default()
                },
                ProtocolVersion::V311 => PublishProperties::default(),
            },
        });
        encode(&packet, version, &mut wire).expect("valid packet");
        packets.push(packet);
    }
    (packets, wire)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(PACKETS as u64));
    for (name, version) in [("v311", ProtocolVersion::V311), ("v5", ProtocolVersion::V5)] {
        let (packets, wire) = publishes(version);
        group.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| {
                let mut buf = wire.clone();
                let mut n = 0;
                while let Some(packet) =
                    decode(&mut buf, Some(version), 1 << 20).expect("valid stream")
                {
                    black_box(packet);
                    n += 1;
                }
                assert_eq!(n, PACKETS);
            });
        });
        group.bench_function(format!("encode_{name}"), |b| {
            let mut buf = BytesMut::with_capacity(wire.len());
            b.iter(|| {
                buf.clear();
                for packet in &packets {
                    encode(black_box(packet), version, &mut buf).expect("valid packet");
                }
                assert_eq!(buf.len(), wire.len());
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
