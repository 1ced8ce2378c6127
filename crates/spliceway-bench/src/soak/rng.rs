//! The load's choices (sizes, offsets, routes, pauses): splitmix64, seeded per loop so that a
//! loop's sequence is its own, without a dependency.

/// A splitmix64 generator.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A multiple of `step` in `0..end` (`0` when `end` is 0).
    pub(crate) fn step_below(&mut self, end: u64, step: u64) -> u64 {
        let steps = end.div_ceil(step);
        if steps == 0 {
            0
        } else {
            (self.next_u64() % steps) * step
        }
    }

    /// A number in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `[lo, hi)`.
    pub(crate) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// One of `items` (not empty).
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_their_ranges() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            assert!((3..=5).contains(&rng.between(3, 5)));
            assert_eq!(rng.step_below(10, 4) % 4, 0);
            assert!(rng.step_below(10, 4) < 10);
            let u = rng.uniform(0.5, 1.5);
            assert!((0.5..1.5).contains(&u));
        }
        assert_eq!(rng.step_below(0, 4), 0);
    }
}
