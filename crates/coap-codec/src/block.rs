//! The Block1 and Block2 option value (RFC 7959 section 2.2): a block
//! number, whether more follow, and the block size as an exponent.

use crate::option::{decode_uint, encode_uint};

/// One block of a block-wise transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// The block's number, from 0; below 2^20.
    pub num: u32,
    /// Whether more blocks follow.
    pub more: bool,
    /// The size exponent: the block holds `2^(szx + 4)` bytes, 16 to 1024.
    pub szx: u8,
}

impl Block {
    /// The largest block number the option can carry.
    pub const MAX_NUM: u32 = (1 << 20) - 1;

    /// A block of `size` bytes (a power of two from 16 to 1024).
    pub fn new(num: u32, more: bool, size: usize) -> Option<Self> {
        if !(16..=1024).contains(&size) || !size.is_power_of_two() || num > Self::MAX_NUM {
            return None;
        }
        let szx = u8::try_from(size.trailing_zeros() - 4).ok()?;
        Some(Block { num, more, szx })
    }

    /// The block size in bytes.
    pub fn size(self) -> usize {
        1 << (self.szx + 4)
    }

    /// Where the block starts in the whole body.
    pub fn offset(self) -> usize {
        self.num as usize * self.size()
    }

    /// Reads an option value. `None` for a value longer than 3 bytes or
    /// SZX 7 (reserved over UDP; BERT is for reliable transports).
    pub fn decode(value: &[u8]) -> Option<Self> {
        if value.len() > 3 {
            return None;
        }
        let n = decode_uint(value)?;
        let szx = u8::try_from(n & 0x7).ok()?;
        if szx == 7 {
            return None;
        }
        Some(Block {
            num: n >> 4,
            more: n & 0x8 != 0,
            szx,
        })
    }

    /// The option value, in the fewest bytes.
    pub fn encode(self) -> Vec<u8> {
        encode_uint((self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx & 0x7))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_reserved_values_are_refused() {
        let b = Block::new(5, true, 64).unwrap();
        assert_eq!((b.szx, b.size(), b.offset()), (2, 64, 320));
        assert_eq!(Block::decode(&b.encode()), Some(b));
        // RFC 7959 figure 2: the first block of 128 bytes with more is 0x0b.
        assert_eq!(Block::new(0, true, 128).unwrap().encode(), [0x0b]);
        assert_eq!(
            Block::decode(&[]),
            Some(Block {
                num: 0,
                more: false,
                szx: 0
            })
        );
        assert_eq!(Block::decode(&[0x07]), None, "SZX 7 is reserved");
        assert_eq!(Block::decode(&[1, 2, 3, 4]), None);
        assert_eq!(Block::new(0, false, 2048), None);
        assert_eq!(Block::new(0, false, 100), None);
        assert_eq!(Block::new(Block::MAX_NUM + 1, false, 16), None);
        let last = Block::new(Block::MAX_NUM, false, 1024).unwrap();
        assert_eq!(Block::decode(&last.encode()), Some(last));
    }
}
