//! The MQTT-over-WebSocket adapter (`src/ws.rs`) on the server side of an
//! already upgraded connection, shared by the fuzz target `ws_frames` and
//! `tests/fuzz_regressions.rs`.
//!
//! The first byte picks the pipe capacity, the server's read size and the
//! mode; the next byte how many of the following bytes the server writes
//! first. Then, in raw mode, the rest is what the client sends. In framed
//! mode the rest is a script of WebSocket messages, encoded as a client
//! must (masked, fragmented), followed by any bytes left.
//!
//! Properties:
//! - the exchange ends (no hang), and the server reads no more bytes than
//!   the client sent;
//! - framed mode: the server reads exactly the concatenated binary payloads
//!   (plus whatever the trailing bytes add); a text message ends the reads
//!   with `InvalidData`, a close frame with end of stream;
//! - what the server sends parses as frames: first the binary message it
//!   wrote, then only control frames (pong, close).

use std::io::ErrorKind;

use tributary_ingest_mqtt::fuzzing::{WsEnd, ws_exchange};

/// The server's largest MQTT packet: small, so that the message and frame
/// limits (this plus 64 KiB) are in reach of a frame header's length field.
const MAX_PACKET: usize = 1024;
const MAX_WRITE_BUFFER: usize = 64 * 1024;

pub(crate) fn check(data: &[u8]) {
    let [mode, write_len, rest @ ..] = data else {
        return;
    };
    let capacity = [1, 7, 64, 4096][usize::from(mode & 3)];
    let read_size = [1, 3, 100, 8192][usize::from(mode >> 2 & 3)];
    let framed = mode & 0x10 != 0;
    let (server_writes, rest) = rest.split_at(usize::from(*write_len).min(rest.len()) / 4);

    let (client, expected) = if framed {
        let script = encode_script(rest);
        (script.wire, Some((script.binary, script.ending)))
    } else {
        (rest.to_vec(), None)
    };
    let out = ws_exchange(
        &client,
        server_writes,
        MAX_PACKET,
        MAX_WRITE_BUFFER,
        capacity,
        read_size,
    );
    assert!(
        out.read.len() <= client.len(),
        "payloads come from the client's bytes"
    );
    if let Some((binary, ending)) = expected {
        match ending {
            Ending::Text => {
                assert_eq!(out.read, binary);
                assert_eq!(out.end, WsEnd::Error(ErrorKind::InvalidData));
            }
            Ending::Close => {
                assert_eq!(out.read, binary);
                assert_eq!(out.end, WsEnd::Eof);
            }
            Ending::Trailing => assert!(out.read.starts_with(&binary)),
            Ending::None => assert_eq!(out.read, binary),
        }
    }
    assert!(out.wrote, "the server's write goes out");
    check_sent(&out.sent, server_writes);
}

/// Parses the server's frames: unmasked, the written message first (when
/// one was written), then only pongs and a close.
fn check_sent(mut sent: &[u8], written: &[u8]) {
    let mut first = !written.is_empty();
    while !sent.is_empty() {
        let (opcode, fin, payload, len) = parse_frame(sent).expect("whole, unmasked frames");
        sent = &sent[len..];
        assert!(fin, "the server does not fragment");
        if first {
            assert_eq!(
                (opcode, payload),
                (2, written),
                "the written message comes first"
            );
            first = false;
        } else {
            assert!(
                matches!(opcode, 0x8 | 0xA),
                "only pongs and a close follow: {opcode:#x}"
            );
            assert!(payload.len() <= 125);
        }
    }
    assert!(!first, "the written message was sent");
}

/// One server frame: `(opcode, fin, payload, frame length)`.
fn parse_frame(b: &[u8]) -> Option<(u8, bool, &[u8], usize)> {
    let (&b0, rest) = b.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    assert_eq!(b0 & 0x70, 0, "no reserved bits");
    assert_eq!(b1 & 0x80, 0, "server frames are not masked");
    let (len, head): (usize, usize) = match b1 & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
            4,
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?)).ok()?,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let payload = b.get(head..head.checked_add(len)?)?;
    Some((b0 & 0x0f, b0 & 0x80 != 0, payload, head + len))
}

enum Ending {
    /// The script ended with a text message.
    Text,
    /// The script ended with a close frame.
    Close,
    /// Raw bytes follow the script.
    Trailing,
    /// The connection just ends.
    None,
}

struct Script {
    wire: Vec<u8>,
    binary: Vec<u8>,
    ending: Ending,
}

/// Reads a script of messages from `input`: per message an op byte (kind,
/// fragment count), a length byte and the payload.
fn encode_script(mut input: &[u8]) -> Script {
    let mut wire = Vec::new();
    let mut binary = Vec::new();
    let mut key = [0x37, 0xfa, 0x21, 0x3d];
    loop {
        let [op, len, rest @ ..] = input else {
            let ending = if input.is_empty() {
                Ending::None
            } else {
                wire.extend_from_slice(input);
                Ending::Trailing
            };
            return Script {
                wire,
                binary,
                ending,
            };
        };
        let (payload, rest) = rest.split_at(usize::from(*len).min(rest.len()));
        input = rest;
        key = [key[1], key[2], key[3], key[0] ^ op];
        match op % 8 {
            // Binary, in 1 to 4 fragments; a ping may sit between them.
            0..=3 => {
                let fragments = usize::from(op >> 3 & 3) + 1;
                let size = payload.len().div_ceil(fragments).max(1);
                let mut chunks: Vec<&[u8]> = payload.chunks(size).collect();
                if chunks.is_empty() {
                    chunks.push(&[]);
                }
                for (i, chunk) in chunks.iter().enumerate() {
                    let opcode = if i == 0 { 2 } else { 0 };
                    frame(
                        &mut wire,
                        i + 1 == chunks.len(),
                        opcode,
                        chunk,
                        key,
                        op & 0x20 != 0,
                    );
                    if op & 0x40 != 0 && i + 1 < chunks.len() {
                        frame(&mut wire, true, 0x9, b"mid", key, false);
                    }
                }
                binary.extend_from_slice(payload);
            }
            4 => frame(
                &mut wire,
                true,
                0x9,
                &payload[..payload.len().min(125)],
                key,
                false,
            ),
            5 => frame(
                &mut wire,
                true,
                0xA,
                &payload[..payload.len().min(125)],
                key,
                false,
            ),
            6 => {
                let text = String::from_utf8_lossy(payload);
                frame(&mut wire, true, 0x1, text.as_bytes(), key, false);
                return Script {
                    wire,
                    binary,
                    ending: Ending::Text,
                };
            }
            _ => {
                // A close frame: a code and a reason, or nothing.
                let body: &[u8] = if op & 0x08 != 0 {
                    &[0x03, 0xe8, b'b', b'y', b'e']
                } else {
                    &[]
                };
                frame(&mut wire, true, 0x8, body, key, false);
                return Script {
                    wire,
                    binary,
                    ending: Ending::Close,
                };
            }
        }
    }
}

/// A masked client frame; `long` uses a longer length encoding than needed.
fn frame(wire: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], key: [u8; 4], long: bool) {
    wire.push(u8::from(fin) << 7 | opcode);
    let len = payload.len();
    if len < 126 && !long {
        wire.push(0x80 | u8::try_from(len).unwrap());
    } else if len <= 0xffff {
        wire.push(0x80 | 126);
        wire.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    } else {
        wire.push(0x80 | 127);
        wire.extend_from_slice(&u64::try_from(len).unwrap().to_be_bytes());
    }
    wire.extend_from_slice(&key);
    wire.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
}
