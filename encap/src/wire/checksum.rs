//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! The checksum is the one's complement of the one's complement sum of the data taken as
//! big-endian 16-bit words. Sums are accumulated in a [`Sum`] (a `u64` with end-around carry),
//! so they can be chained over several slices (pseudo header, header, payload) and folded to
//! 16 bits once at the end:
//!
//! ```
//! use weft_encap::wire::checksum;
//! let header = [0x45, 0x00, 0x00, 0x1c];
//! let payload = [0x08, 0x00, 0x00, 0x00];
//! let partial = checksum::sum(&header, 0);
//! let total = checksum::sum(&payload, partial);
//! assert_eq!(!checksum::fold(total), checksum::checksum(&[header, payload].concat()));
//! ```
//!
//! Chaining rule: every slice except the last must have an even length (an odd slice is
//! padded with a zero byte, exactly as if it were the end of the data).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

/// A partial one's complement sum, not yet folded. Start a fresh sum with `0`.
pub type Sum = u64;

/// Adds `b` to `a` with end-around carry (one's complement addition on 64 bits).
#[inline]
fn add_carry(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s + u64::from(carry)
}

/// Adds the bytes of `data` (big-endian 16-bit words, an odd last byte padded with zero) to
/// the partial sum `initial`.
///
/// The bulk is summed as native-endian 16-bit words into 16 independent 32-bit lanes, one
/// word per lane per 32-byte block: no carries to chase (a lane cannot overflow within
/// 65,536 blocks), and the compiler turns the loop into vector widen-and-add
/// instructions (four SSE2 registers of lanes on x86-64's baseline; 32 lanes spilled some to
/// scalar code), which measured 1.6x faster than the earlier 32-bit words in 64-bit lanes
/// (`cargo bench -p weft-bench --bench offload -- checksum`: 64 KB in 2.9 us, from 4.9). The lanes are folded and byte-swapped into big-endian order: the
/// one's complement sum does not depend on byte order except for that final swap (RFC 1071
/// section 2(B)). The tail (under 32 bytes) is added as 32-bit words, whose fold to 16 bits is
/// the sum of their halves since 2^16 = 1 (mod 2^16 - 1), and the last 0-3 bytes as a
/// zero-padded big-endian word.
pub fn sum(data: &[u8], initial: Sum) -> Sum {
    let bulk = data.len() - data.len() % 32;
    let mut native = 0u64;
    let blocks = BULK_SUM.get().copied().unwrap_or(sum_blocks);
    for span in data[..bulk].chunks(32 * LANE_BLOCKS) {
        native = add_carry(native, blocks(span));
    }
    let mut words = data[bulk..].chunks_exact(4);
    for word in &mut words {
        let w = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]);
        native = add_carry(native, u64::from(w));
    }
    let mut acc = add_carry(initial, u64::from(u16::from_be(fold(native))));
    // At most 3 bytes, at an offset that is a multiple of 4: at the top of a zero-padded
    // big-endian u64, each byte stays in its 16-bit word lane.
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        acc = add_carry(acc, u64::from_be_bytes(word));
    }
    acc
}

/// A bulk summer: the native-endian sum of the 16-bit words of a span whose length is a
/// multiple of 32 bytes and at most 2 MiB (32 x 65,536 bytes), unfolded, as a `u64` that
/// must not have wrapped. Its fold is all that counts: any value with the same one's
/// complement sum is right.
pub type BulkSum = fn(&[u8]) -> u64;

/// The bulk summer [`sum`] uses, once [`install_bulk_sum`] has set one.
static BULK_SUM: OnceLock<BulkSum> = OnceLock::new();

/// Makes [`sum`] (and so every checksum in this crate) use `bulk` for its bulk, in this
/// process, from now on; the first call wins and later ones return `false`.
///
/// This is how a caller that may use CPU-specific instructions, which this crate does not
/// (it forbids `unsafe`), speeds up the checksums of the offload paths: weft's engine
/// installs an AVX2 or AVX-512 summer on CPUs that have them when the first engine is built.
/// `bulk` must compute what [`BulkSum`] says, for every span; a wrong one makes every
/// checksum wrong. Without a call, a portable summer that the compiler vectorizes for the
/// target's baseline instructions (SSE2 on x86-64) is used.
pub fn install_bulk_sum(bulk: BulkSum) -> bool {
    BULK_SUM.set(bulk).is_ok()
}

/// The portable bulk summer, what [`sum`] uses when none was installed: for a summer to be
/// installed to be tested against.
pub fn portable_bulk_sum(span: &[u8]) -> u64 {
    span.chunks(32 * LANE_BLOCKS).map(sum_blocks).sum()
}

/// Blocks of 32 bytes a 32-bit lane of [`sum`] takes before it must be drained: each adds at
/// most 0xffff, and 65,536 x 0xffff < 2^32.
const LANE_BLOCKS: usize = 65_536;

/// The native-endian sum of `span`'s 16-bit words: a multiple of 32 bytes, at most
/// [`LANE_BLOCKS`] blocks. A loop of its own, with nothing else in it, so that it vectorizes.
#[inline]
fn sum_blocks(span: &[u8]) -> u64 {
    lane_sum::<16>(span)
}

/// The loop of every bulk summer: the native-endian sum of `span`'s 16-bit words, in blocks
/// of `2 * N` bytes into `N` 32-bit lanes (one word per lane per block), then what is left
/// (a multiple of 32 bytes, under `2 * N`) in blocks of 32 bytes into 16 lanes; bytes after
/// the last multiple of 32 are not summed. A lane takes at most 0xffff per block, so no lane
/// wraps for a span of at most 2 MiB (32 x 65,536 bytes) and `N` >= 16.
///
/// Always inlined, so that a caller compiled for wider vectors (weft's engine builds it into
/// functions with AVX2 and AVX-512 enabled, with 64 and 128 lanes) gets it vectorized for
/// those: see [`install_bulk_sum`].
#[inline(always)]
pub fn lane_sum<const N: usize>(span: &[u8]) -> u64 {
    let (wide, rest) = lane_blocks::<N>(span);
    if N == 16 {
        return wide;
    }
    wide + lane_blocks::<16>(rest).0
}

/// The sum of `span`'s whole blocks of `2 * N` bytes in `N` lanes, and the rest of `span`.
#[inline(always)]
fn lane_blocks<const N: usize>(span: &[u8]) -> (u64, &[u8]) {
    let mut lanes = [0u32; N];
    let mut blocks = span.chunks_exact(2 * N);
    for block in &mut blocks {
        for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(2)) {
            *lane += u32::from(u16::from_ne_bytes([word[0], word[1]]));
        }
    }
    let sum = lanes.iter().map(|&lane| u64::from(lane)).sum();
    (sum, blocks.remainder())
}

/// Folds a partial sum to 16 bits (one's complement), without complementing it.
pub fn fold(sum: Sum) -> u16 {
    let mut s = (sum >> 32) + (sum & 0xffff_ffff); // <= 2^33
    s = (s >> 32) + (s & 0xffff_ffff); // <= 2^32
    s = (s >> 16) + (s & 0xffff); // <= 0x1_fffe
    s = (s >> 16) + (s & 0xffff); // <= 0xffff
    s as u16
}

/// The Internet checksum of `data`: the complement of its folded one's complement sum.
///
/// Over data that contains a correct checksum field, the result is `0`.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// Partial sum of the IPv4 pseudo header (RFC 768 / RFC 793): source, destination, zero,
/// protocol, and the upper-layer length `len`.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u32) -> Sum {
    let s = u64::from(u32::from(src)) + u64::from(u32::from(dst));
    s + u64::from(protocol) + u64::from(len)
}

/// Partial sum of the IPv6 pseudo header (RFC 8200 8.1): source, destination, the 32-bit
/// upper-layer length `len`, three zero bytes and the next header value.
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> Sum {
    let s = sum(&src.octets(), 0);
    let s = sum(&dst.octets(), s);
    add_carry(s, u64::from(len) + u64::from(next_header))
}

/// Incrementally updates the checksum `checksum` after a 16-bit word of the covered data
/// changed from `old` to `new` (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`).
///
/// Unlike eqn. 2 this never produces the `0x0000` vs. `0xffff` discrepancy of RFC 1141:
/// the result equals a full recomputation over the changed data, unless the data becomes
/// all zeros (then `0xffff` against a recomputed `0x0000`; never for an IP header, whose
/// version field is not zero).
pub fn update16(checksum: u16, old: u16, new: u16) -> u16 {
    let s = u64::from(!checksum) + u64::from(!old) + u64::from(new);
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward reference: 16-bit words, u32 accumulator folded at the end.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        for pair in data.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u64::from(b));
            acc += hi | lo;
        }
        while acc > 0xffff {
            acc = (acc >> 16) + (acc & 0xffff);
        }
        !(acc as u16)
    }

    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn matches_reference_for_all_small_lengths_and_64k() {
        for n in 0..=67 {
            let d = bytes(n as u64 + 7, n);
            assert_eq!(checksum(&d), reference(&d), "len {n}");
        }
        let all_ff = vec![0xffu8; 65535];
        assert_eq!(checksum(&all_ff), reference(&all_ff));
        let big = bytes(99, 65536);
        assert_eq!(checksum(&big), reference(&big));
        for n in [128, 129, 130, 131, 190, 1500, 9001] {
            let d = bytes(n as u64, n);
            assert_eq!(checksum(&d), reference(&d), "len {n}");
        }
    }

    #[test]
    fn lanes_are_drained_before_they_can_overflow() {
        // All-ones words fill every lane fastest: past LANE_BLOCKS blocks, an undrained
        // 32-bit lane would wrap.
        let n = 32 * LANE_BLOCKS * 2 + 70;
        let all_ff = vec![0xffu8; n];
        assert_eq!(checksum(&all_ff), reference(&all_ff));
        let mixed = bytes(5, n);
        assert_eq!(checksum(&mixed), reference(&mixed));
    }

    #[test]
    fn chaining_equals_one_pass() {
        let d = bytes(3, 1001);
        for split in (0..1000).step_by(2) {
            let s = sum(&d[split..], sum(&d[..split], 0));
            assert_eq!(!fold(s), checksum(&d), "split {split}");
        }
    }

    #[test]
    fn fold_handles_extremes() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(fold(0xffff), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
    }

    #[test]
    fn pseudo_headers_match_byte_layout() {
        let src = Ipv4Addr::new(198, 18, 0, 1);
        let dst = Ipv4Addr::new(198, 18, 0, 2);
        let mut ph = Vec::new();
        ph.extend_from_slice(&src.octets());
        ph.extend_from_slice(&dst.octets());
        ph.extend_from_slice(&[0, 17, 0x12, 0x34]);
        assert_eq!(
            fold(pseudo_header_v4(src, dst, 17, 0x1234)),
            fold(sum(&ph, 0))
        );

        let s6: Ipv6Addr = "fd00:198:18::1".parse().unwrap();
        let d6: Ipv6Addr = "fd00:198:18::2".parse().unwrap();
        let mut ph = Vec::new();
        ph.extend_from_slice(&s6.octets());
        ph.extend_from_slice(&d6.octets());
        ph.extend_from_slice(&0x0001_0203u32.to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(
            fold(pseudo_header_v6(&s6, &d6, 58, 0x0001_0203)),
            fold(sum(&ph, 0))
        );
    }

    #[test]
    fn update16_matches_recomputation() {
        let mut d = bytes(5, 20);
        for i in 0..2000u32 {
            d[10] = 0;
            d[11] = 0;
            let word = (i as usize % 9) * 2;
            let word = if word == 10 { 12 } else { word };
            let c = checksum(&d);
            d[10..12].copy_from_slice(&c.to_be_bytes());
            let old = u16::from_be_bytes([d[word], d[word + 1]]);
            let new = old.wrapping_mul(31).wrapping_add(i as u16);
            d[word..word + 2].copy_from_slice(&new.to_be_bytes());
            let updated = update16(c, old, new);
            d[10] = 0;
            d[11] = 0;
            assert_eq!(updated, checksum(&d), "iteration {i}");
        }
    }
}
