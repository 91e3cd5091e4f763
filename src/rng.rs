//! A tiny seeded generator (SplitMix64) shared, bit for bit, with the Python training and
//! evaluation scripts, so both sides draw the same FITB candidates from the same seed.
//!
//! Not for anything secret. `below` uses a plain modulo: its bias (n / 2^64) is irrelevant
//! here and it keeps the Python twin a one-liner.

#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A float in `[-1, 1)`, for test data.
    pub fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `k` distinct indices of `0..n` (a partial Fisher-Yates shuffle), in draw order.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        for j in 0..k.min(n) {
            let r = j + self.below(n - j);
            idx.swap(j, r);
        }
        idx.truncate(k.min(n));
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_splitmix64_sequence() {
        // First outputs for seed 0 (the reference C implementation); the Python twin asserts the same.
        let mut r = SplitMix64::new(0);
        assert_eq!([r.next_u64(), r.next_u64()], [0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4]);
    }

    #[test]
    fn sample_is_distinct_and_in_range() {
        let mut r = SplitMix64::new(7);
        let s = r.sample(10, 4);
        let mut sorted = s.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!((s.len(), sorted.len()), (4, 4));
        assert!(s.iter().all(|&i| i < 10));
    }
}
