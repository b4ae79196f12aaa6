//! The Internet checksum's bulk on the widest vectors the CPU has.
//!
//! `weft-encap` sums 16-bit words into 16 32-bit lanes (`checksum::lane_sum`), which the
//! compiler vectorizes for x86-64's baseline (SSE2). Every byte weft carries with offloads is summed twice (each
//! segment's TCP or UDP checksum is computed when a super-packet is split and verified before
//! datagrams are coalesced), so the summer is one of the hottest loops of the data path. Here
//! the same loop is compiled a second and third time with AVX2 and with AVX-512 enabled and
//! more lanes (64 and 128, four registers of lanes each way, so the additions of consecutive
//! blocks do not wait on each other), and [`install`] hands the widest one the CPU runs to
//! `weft-encap` (`checksum::install_bulk_sum`), once per process.
//!
//! The `unsafe` here is only the call of a function compiled for instructions the CPU was
//! checked to have.

use weft_encap::wire::checksum::{self, BulkSum};

/// Installs the widest bulk summer this CPU runs (once per process) and returns its vector
/// width in bits: 512 (AVX-512), 256 (AVX2) or 128 (the portable one, SSE2 on x86-64).
pub fn install() -> u16 {
    let (name, bulk) = best();
    // Another engine of this process may have installed it first: the same choice.
    let _ = checksum::install_bulk_sum(bulk);
    match name {
        "avx512" => 512,
        "avx2" => 256,
        _ => 128,
    }
}

/// The widest summer this CPU runs, and its name.
fn best() -> (&'static str, BulkSum) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            return ("avx512", x86::sum_avx512_checked);
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return ("avx2", x86::sum_avx2_checked);
        }
    }
    ("portable", checksum::portable_bulk_sum)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use weft_encap::wire::checksum::lane_sum;

    #[target_feature(enable = "avx2")]
    fn sum_avx2(span: &[u8]) -> u64 {
        lane_sum::<64>(span)
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    fn sum_avx512(span: &[u8]) -> u64 {
        lane_sum::<128>(span)
    }

    /// [`sum_avx2`], for CPUs with AVX2.
    pub(super) fn sum_avx2_checked(span: &[u8]) -> u64 {
        // SAFETY: `best` hands this function out only after `is_x86_feature_detected!`
        // found AVX2 on this CPU; the function itself is safe Rust compiled for AVX2.
        unsafe { sum_avx2(span) }
    }

    /// [`sum_avx512`], for CPUs with AVX-512 F and BW.
    pub(super) fn sum_avx512_checked(span: &[u8]) -> u64 {
        // SAFETY: `best` hands this function out only after `is_x86_feature_detected!`
        // found AVX-512 F and BW on this CPU; the function itself is safe Rust compiled for
        // them.
        unsafe { sum_avx512(span) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_encap::wire::checksum::portable_bulk_sum;

    /// `n` bytes that look random (a multiplicative hash of the index and `seed`).
    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        (0..n as u64)
            .map(|i| ((i ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect()
    }

    /// Every summer this CPU runs, with its name.
    fn summers() -> Vec<(&'static str, BulkSum)> {
        let mut all: Vec<(&'static str, BulkSum)> = vec![("portable", portable_bulk_sum)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                all.push(("avx2", x86::sum_avx2_checked));
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                all.push(("avx512", x86::sum_avx512_checked));
            }
        }
        all
    }

    #[test]
    fn every_summer_agrees_with_the_portable_one() {
        let fold = |s: u64| checksum::fold(s);
        // Every length the bulk can get up to 1 KiB, 64 KiB, and the 2 MiB maximum, with
        // random bytes and with all-ones words (the lanes fill fastest).
        let mut lengths: Vec<usize> = (0..=1024).step_by(32).collect();
        lengths.extend([65_504, 65_536, 2 << 20]);
        for (name, sum) in summers() {
            for &n in &lengths {
                for data in [bytes(n as u64 + 3, n), vec![0xff; n]] {
                    assert_eq!(
                        fold(sum(&data)),
                        fold(portable_bulk_sum(&data)),
                        "{name}, {n} bytes"
                    );
                }
            }
            // Unaligned starts.
            let data = bytes(77, 4096 + 64);
            for start in 0..64 {
                let span = &data[start..start + 4096];
                assert_eq!(
                    fold(sum(span)),
                    fold(portable_bulk_sum(span)),
                    "{name}, offset {start}"
                );
            }
        }
    }

    #[test]
    fn install_picks_the_widest_the_cpu_runs() {
        let bits = install();
        let name = best().0;
        assert_eq!(
            bits,
            match name {
                "avx512" => 512,
                "avx2" => 256,
                _ => 128,
            }
        );
        assert!(summers().iter().any(|(n, _)| *n == name), "{name}");
        // The checksum through the installed summer still matches a word-by-word reference.
        let data = bytes(5, 9001);
        let mut acc = 0u64;
        for pair in data.chunks(2) {
            acc += u64::from(pair[0]) << 8 | pair.get(1).map_or(0, |&b| u64::from(b));
        }
        while acc > 0xffff {
            acc = (acc >> 16) + (acc & 0xffff);
        }
        assert_eq!(checksum::checksum(&data), !(acc as u16));
    }
}
