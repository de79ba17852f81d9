//! The bytes a series' rule state is checkpointed as (version 1):
//!
//! ```text
//! version u8 = 1
//! phase   u8 (0 ok, 1 pending, 2 firing), then since_ns i64 unless ok
//! last_ts i64
//! memory  u8 (0 nothing, 1 window, 2 ewma, 3 seen), then
//!         window: count u8, (ts i64, x f64) × count
//!         ewma:   n u64, mean f64, var f64
//!         seen:   last_ns i64
//! ```
//!
//! Little-endian throughout. Decoding checks every length and tag, and a
//! window's bound, so a corrupt checkpoint is an error, never a panic.

use std::collections::VecDeque;

use crate::eval::{Memory, Phase, SeriesState, WINDOW_POINTS};

/// Encodes a state.
pub fn encode(s: &SeriesState) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.push(1);
    match s.phase {
        Phase::Ok => out.push(0),
        Phase::Pending { since_ns } => {
            out.push(1);
            out.extend_from_slice(&since_ns.to_le_bytes());
        }
        Phase::Firing { since_ns } => {
            out.push(2);
            out.extend_from_slice(&since_ns.to_le_bytes());
        }
    }
    out.extend_from_slice(&s.last_ts.to_le_bytes());
    match &s.memory {
        Memory::Nothing => out.push(0),
        Memory::Window(points) => {
            out.push(1);
            out.push(points.len() as u8);
            for (t, x) in points {
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(&x.to_bits().to_le_bytes());
            }
        }
        Memory::Ewma { n, mean, var } => {
            out.push(2);
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&mean.to_bits().to_le_bytes());
            out.extend_from_slice(&var.to_bits().to_le_bytes());
        }
        Memory::Seen { last_ns } => {
            out.push(3);
            out.extend_from_slice(&last_ns.to_le_bytes());
        }
        Memory::Presence { offline_since } => {
            out.push(4);
            match offline_since {
                None => out.push(0),
                Some(t) => {
                    out.push(1);
                    out.extend_from_slice(&t.to_le_bytes());
                }
            }
        }
    }
    out
}

/// Decodes [`encode`]; `None` for bytes it did not write.
pub fn decode(bytes: &[u8]) -> Option<SeriesState> {
    let mut r = Reader(bytes);
    if r.u8()? != 1 {
        return None;
    }
    let phase = match r.u8()? {
        0 => Phase::Ok,
        1 => Phase::Pending { since_ns: r.i64()? },
        2 => Phase::Firing { since_ns: r.i64()? },
        _ => return None,
    };
    let last_ts = r.i64()?;
    let memory = match r.u8()? {
        0 => Memory::Nothing,
        1 => {
            let count = usize::from(r.u8()?);
            if count > WINDOW_POINTS {
                return None;
            }
            let mut points = VecDeque::with_capacity(count);
            for _ in 0..count {
                points.push_back((r.i64()?, f64::from_bits(r.u64()?)));
            }
            Memory::Window(points)
        }
        2 => Memory::Ewma {
            n: r.u64()?,
            mean: f64::from_bits(r.u64()?),
            var: f64::from_bits(r.u64()?),
        },
        3 => Memory::Seen { last_ns: r.i64()? },
        4 => Memory::Presence {
            offline_since: match r.u8()? {
                0 => None,
                1 => Some(r.i64()?),
                _ => return None,
            },
        },
        _ => return None,
    };
    r.0.is_empty().then_some(SeriesState {
        phase,
        last_ts,
        memory,
    })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*head))
    }
    fn i64(&mut self) -> Option<i64> {
        self.u64().map(|v| v as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states() -> Vec<SeriesState> {
        vec![
            SeriesState {
                phase: Phase::Ok,
                last_ts: i64::MIN,
                memory: Memory::Nothing,
            },
            SeriesState {
                phase: Phase::Pending { since_ns: -5 },
                last_ts: 7,
                memory: Memory::Window(
                    (0..WINDOW_POINTS as i64)
                        .map(|i| (i, i as f64 / 3.0))
                        .collect(),
                ),
            },
            SeriesState {
                phase: Phase::Firing { since_ns: 9 },
                last_ts: 10,
                memory: Memory::Ewma {
                    n: 3,
                    mean: 1.5,
                    var: 0.25,
                },
            },
            SeriesState {
                phase: Phase::Ok,
                last_ts: 1,
                memory: Memory::Seen { last_ns: 99 },
            },
            SeriesState {
                phase: Phase::Ok,
                last_ts: 3,
                memory: Memory::Presence {
                    offline_since: Some(-7),
                },
            },
            SeriesState {
                phase: Phase::Ok,
                last_ts: 3,
                memory: Memory::Presence {
                    offline_since: None,
                },
            },
        ]
    }

    #[test]
    fn states_round_trip_and_garbage_is_refused() {
        for s in states() {
            let bytes = encode(&s);
            assert_eq!(decode(&bytes), Some(s.clone()));
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut]), None, "{s:?} cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(decode(&longer), None, "trailing bytes");
        }
        assert_eq!(decode(&[2]), None, "another version");
        // A window longer than any state keeps.
        let mut big = vec![1, 0];
        big.extend_from_slice(&0i64.to_le_bytes());
        big.extend_from_slice(&[1, (WINDOW_POINTS + 1) as u8]);
        big.extend(std::iter::repeat_n(0u8, 16 * (WINDOW_POINTS + 1)));
        assert_eq!(decode(&big), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
