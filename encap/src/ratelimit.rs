//! A token bucket, driven by a caller-supplied clock (milliseconds from any fixed origin).
//!
//! weft uses one per worker to bound the ICMP errors it generates (RFC 1812 4.3.2.8 and
//! RFC 4443 2.4(f) require a limit). Tokens are kept in thousandths so that rates below
//! one per millisecond refill smoothly without floating point.

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_sec: u64,
    burst_milli: u64,
    tokens_milli: u64,
    last_ms: Option<u64>,
}

impl TokenBucket {
    /// A full bucket. A `rate` of 0 never refills (after the burst, nothing passes); a
    /// `burst` of 0 lets nothing through.
    pub fn new(rate_per_sec: u32, burst: u32) -> TokenBucket {
        let burst_milli = u64::from(burst) * 1000;
        TokenBucket {
            rate_per_sec: u64::from(rate_per_sec),
            burst_milli,
            tokens_milli: burst_milli,
            last_ms: None,
        }
    }

    /// Takes one token if there is one at time `now_ms`. Time going backwards is treated as
    /// no time passing.
    pub fn allow(&mut self, now_ms: u64) -> bool {
        let elapsed = match self.last_ms {
            Some(last) => now_ms.saturating_sub(last),
            None => 0,
        };
        if self.last_ms.is_none_or(|last| now_ms > last) {
            self.last_ms = Some(now_ms);
        }
        // rate tokens/s = rate milli-tokens/ms.
        let refill = elapsed.saturating_mul(self.rate_per_sec);
        self.tokens_milli = self
            .tokens_milli
            .saturating_add(refill)
            .min(self.burst_milli);
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut b = TokenBucket::new(10, 5);
        let passed = (0..20).filter(|_| b.allow(1000)).count();
        assert_eq!(passed, 5, "the burst passes at once");
        assert!(!b.allow(1050), "50 ms at 10/s is half a token");
        assert!(b.allow(1100), "100 ms at 10/s is one token");
        assert!(!b.allow(1100));
        // A long pause refills only up to the burst.
        let passed = (0..20).filter(|_| b.allow(100_000)).count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn clock_going_backwards_gives_nothing() {
        let mut b = TokenBucket::new(1000, 1);
        assert!(b.allow(5000));
        assert!(!b.allow(4000));
        assert!(!b.allow(5000));
        assert!(b.allow(5001));
    }

    #[test]
    fn zero_rate_and_zero_burst() {
        let mut b = TokenBucket::new(0, 2);
        assert!(b.allow(0) && b.allow(0));
        assert!(!b.allow(u64::MAX));
        let mut b = TokenBucket::new(100, 0);
        assert!(!b.allow(0) && !b.allow(10_000));
    }
}
