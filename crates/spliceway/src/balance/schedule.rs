//! Smooth weighted round robin, as nginx does it, precomputed: the order in which a group's
//! upstreams receive new connections while all of them are up. Weights 5, 1, 1 give
//! `a a b a c a a` rather than five `a` in a row. The workers index this fixed order with one
//! shared counter, so choosing costs an atomic add and no lock.

/// The smooth weighted round-robin order of `weights` (indices into it), one period long:
/// each index appears `weight / gcd` times.
///
/// nginx's rule, step by step: every upstream's current weight grows by its weight; the one
/// with the largest current weight (the first on ties) is chosen and loses the total.
pub(crate) fn smooth_schedule(weights: &[u32]) -> Vec<u8> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<i64> = weights.iter().map(|w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let (best, _) =
            current.iter().enumerate().fold(
                (0, i64::MIN),
                |(bi, bc), (i, &c)| if c > bc { (i, c) } else { (bi, bc) },
            );
        current[best] -= total;
        order.push(u8::try_from(best).expect("a group holds at most 64 upstreams"));
    }
    order
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nginx_example_is_smooth() {
        let names: String = smooth_schedule(&[5, 1, 1])
            .into_iter()
            .map(|i| (b'a' + i) as char)
            .collect();
        assert_eq!(names, "aabacaa");
        assert_eq!(smooth_schedule(&[2, 4]), vec![1, 0, 1]);
        assert_eq!(smooth_schedule(&[1]), vec![0]);
    }

    proptest! {
        #[test]
        fn each_upstream_appears_in_proportion_to_its_weight(
            weights in proptest::collection::vec(1u32..=40, 1..12)
        ) {
            let order = smooth_schedule(&weights);
            let divisor = weights.iter().copied().fold(0, gcd);
            for (i, w) in weights.iter().enumerate() {
                let count = order.iter().filter(|&&x| usize::from(x) == i).count();
                prop_assert_eq!(count as u32, w / divisor);
            }
            // Smooth: at every step of the period, an upstream's count stays less than two
            // connections from its exact share (the order itself is pinned by the nginx
            // example above).
            let total: u32 = weights.iter().map(|w| w / divisor).sum();
            for (i, w) in weights.iter().enumerate() {
                let w = f64::from(w / divisor);
                let mut seen = 0.0;
                for (step, &x) in order.iter().enumerate() {
                    if usize::from(x) == i {
                        seen += 1.0;
                    }
                    let ideal = w * (step as f64 + 1.0) / f64::from(total);
                    prop_assert!((seen - ideal).abs() < 2.0, "upstream {} at step {}", i, step);
                }
            }
        }
    }
}
