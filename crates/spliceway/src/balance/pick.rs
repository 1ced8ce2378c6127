//! Choosing an upstream of a group for a new connection, without I/O: which upstreams are
//! candidates (up, not yet tried by this connection, primaries before backups) and which of
//! them the balance picks. The inputs are plain values so that the rules are tested on their
//! own; `GroupState` feeds them from the shared atomics.

use std::net::IpAddr;

use crate::route::Balance;

/// A set of upstream indices (a group holds at most 64).
pub(crate) type Mask = u64;

/// The bit of upstream `i`.
pub(crate) fn bit(i: usize) -> Mask {
    1u64 << i
}

/// Which upstreams a connection may try next: those up, among the primaries if any primary is
/// up and untried, else among the backups; when nothing untried is up, every untried primary
/// then every untried backup (marks may be stale, and trying beats refusing). Empty when every
/// upstream has been tried.
pub(crate) fn candidates(up: Mask, backups: Mask, all: Mask, tried: Mask) -> Mask {
    let untried = all & !tried;
    let primaries = untried & !backups;
    for set in [
        up & primaries,
        up & backups & untried,
        primaries,
        untried & backups,
    ] {
        if set != 0 {
            return set;
        }
    }
    0
}

/// What the balance needs to know about the upstreams.
pub(crate) struct View<'a> {
    /// Weights, by index.
    pub(crate) weights: &'a [u32],
    /// Open connections, by index (read only for least-connections).
    pub(crate) open: &'a dyn Fn(usize) -> usize,
    /// Rendezvous keys, by index (a hash of each upstream's address).
    pub(crate) keys: &'a [u64],
}

/// Picks among `candidates` (not empty) for a connection from `client`. `turn` is a shared
/// counter's value, fresh for each call: round robin walks the weights with it; the others
/// break ties with it.
pub(crate) fn pick(
    balance: Balance,
    view: &View<'_>,
    candidates: Mask,
    client: IpAddr,
    turn: usize,
) -> usize {
    debug_assert!(candidates != 0);
    match balance {
        Balance::LeastConnections => least_connections(view, candidates, turn),
        Balance::ClientHash => rendezvous(view, candidates, client),
        // Round robin (and any balance added later).
        _ => weighted_turn(view.weights, candidates, turn),
    }
}

fn members(candidates: Mask) -> impl Iterator<Item = usize> + Clone {
    (0..64).filter(move |&i| candidates & bit(i) != 0)
}

/// Weighted round robin over a subset: `turn` modulo the candidates' total weight, walked
/// through their weights. Over any run of `total` consecutive turns each candidate is picked
/// exactly its weight's times. (The full set uses the smooth schedule instead.)
pub(crate) fn weighted_turn(weights: &[u32], candidates: Mask, turn: usize) -> usize {
    let total: u64 = members(candidates).map(|i| u64::from(weights[i])).sum();
    let mut point = (turn as u64) % total.max(1);
    for i in members(candidates) {
        let w = u64::from(weights[i]);
        if point < w {
            return i;
        }
        point -= w;
    }
    members(candidates).next().unwrap_or(0)
}

/// The candidate with the fewest open connections for its weight (`open / weight`, compared
/// cross-multiplied); ties go to the first at or after `turn`, so equal upstreams share.
fn least_connections(view: &View<'_>, candidates: Mask, turn: usize) -> usize {
    let count = members(candidates).count();
    let start = turn % count.max(1);
    let mut best: Option<(usize, u128, u128)> = None;
    for i in members(candidates).cycle().skip(start).take(count) {
        let open = (view.open)(i) as u128;
        let weight = u128::from(view.weights[i]);
        match best {
            Some((_, bo, bw)) if open * bw >= bo * weight => {}
            _ => best = Some((i, open, weight)),
        }
    }
    best.map_or(0, |(i, _, _)| i)
}

/// Weighted rendezvous hashing: each candidate scores `weight / -ln(u)` with `u` a uniform
/// hash of (client, upstream) in (0, 1); the highest score wins. A client's winner changes
/// only when the winner leaves the candidates (or one with a higher score joins).
fn rendezvous(view: &View<'_>, candidates: Mask, client: IpAddr) -> usize {
    let client_hash = hash_client(client);
    let mut best = (0usize, f64::NEG_INFINITY);
    for i in members(candidates) {
        let h = mix(client_hash ^ view.keys[i]);
        // 53 random bits mapped into (0, 1): never 0, never 1.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = f64::from(view.weights[i]) / -u.ln();
        if score > best.1 {
            best = (i, score);
        }
    }
    best.0
}

/// A stable 64-bit hash of `bytes` (FNV-1a, then mixed): the same in every process and
/// release, so that a restarted relay sends a client where the old one did.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn hash_client(client: IpAddr) -> u64 {
    match client {
        IpAddr::V4(v4) => stable_hash(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => stable_hash(&v4.octets()),
            None => stable_hash(&v6.octets()),
        },
    }
}

/// splitmix64's finalizer: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn keys(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| stable_hash(format!("10.0.0.{i}:5432").as_bytes()))
            .collect()
    }

    fn all(n: usize) -> Mask {
        if n == 64 { u64::MAX } else { bit(n) - 1 }
    }

    fn client(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(
            0x0a00_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761)),
        ))
    }

    #[test]
    fn primaries_first_then_backups_then_anyone_untried() {
        // 0, 1 primaries; 2 backup.
        let (backups, every) = (0b100, 0b111);
        assert_eq!(candidates(0b111, backups, every, 0), 0b011);
        assert_eq!(candidates(0b101, backups, every, 0), 0b001);
        assert_eq!(
            candidates(0b100, backups, every, 0),
            0b100,
            "backup while no primary is up"
        );
        assert_eq!(
            candidates(0b101, backups, every, 0b001),
            0b100,
            "the up primary was tried"
        );
        assert_eq!(
            candidates(0b001, backups, every, 0b001),
            0b010,
            "nothing untried is up"
        );
        assert_eq!(
            candidates(0, backups, every, 0),
            0b011,
            "nothing up: the primaries anyway"
        );
        assert_eq!(candidates(0, backups, every, 0b011), 0b100);
        assert_eq!(candidates(0b111, backups, every, 0b111), 0);
    }

    /// Issue 29: weighted round robin within ±5 % of the weights over 10,000 connections.
    #[test]
    fn weighted_turns_are_within_five_percent_over_ten_thousand() {
        let weights = [5, 3, 1, 1];
        for subset in [0b1111u64, 0b1011, 0b0110] {
            let mut counts = [0u32; 4];
            for turn in 0..10_000 {
                counts[weighted_turn(&weights, subset, turn)] += 1;
            }
            let total: u32 = members(subset).map(|i| weights[i]).sum();
            for i in 0..4 {
                let expected = if subset & bit(i) != 0 {
                    10_000.0 * f64::from(weights[i]) / f64::from(total)
                } else {
                    0.0
                };
                let got = f64::from(counts[i]);
                assert!(
                    (got - expected).abs() <= expected * 0.05,
                    "{subset:b} {i}: {got} vs {expected}"
                );
            }
        }
    }

    /// Issue 29: least-connections with long and short connections: the long ones pile up on
    /// nobody; each upstream holds its weight's share of what is open.
    #[test]
    fn least_connections_balances_what_is_open() {
        let weights = [1u32, 1, 2];
        let mut open = [0usize; 3];
        let mut long = Vec::new();
        for turn in 0..3_000 {
            let snapshot = open;
            let get = |i: usize| snapshot[i];
            let view = View {
                weights: &weights,
                open: &get,
                keys: &keys(3),
            };
            let i = pick(Balance::LeastConnections, &view, 0b111, client(0), turn);
            open[i] += 1;
            if turn % 10 == 0 {
                long.push(i); // a long connection: stays open
            } else {
                open[i] -= 1; // a short one: closes before the next arrives
            }
        }
        let per_weight: Vec<f64> = (0..3)
            .map(|i| open[i] as f64 / f64::from(weights[i]))
            .collect();
        let (lo, hi) = per_weight
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert!(hi - lo <= 1.0, "open per weight {per_weight:?}");
        assert_eq!(long.len(), 300);
        // And an upstream holding many long connections gets the short ones elsewhere.
        let loaded = [50usize, 0, 0];
        let get = |i: usize| loaded[i];
        let view = View {
            weights: &[1, 1, 1],
            open: &get,
            keys: &keys(3),
        };
        for turn in 0..10 {
            assert_ne!(
                pick(Balance::LeastConnections, &view, 0b111, client(0), turn),
                0
            );
        }
    }

    /// Issue 29: the same client keeps its upstream, and when one of five leaves about 1/5 of
    /// the clients move: exactly those that were on it.
    #[test]
    fn client_hash_is_stable_and_moves_only_the_leavers_clients() {
        let weights = [1u32; 5];
        let k = keys(5);
        let zero = |_: usize| 0;
        let view = View {
            weights: &weights,
            open: &zero,
            keys: &k,
        };
        let clients = 10_000u32;
        let before: Vec<usize> = (0..clients)
            .map(|c| pick(Balance::ClientHash, &view, all(5), client(c), c as usize))
            .collect();
        // Stable: asked again (other turns) the answer is the same.
        for c in 0..clients {
            assert_eq!(
                pick(Balance::ClientHash, &view, all(5), client(c), 7),
                before[c as usize]
            );
        }
        let gone = 2;
        let after: Vec<usize> = (0..clients)
            .map(|c| {
                pick(
                    Balance::ClientHash,
                    &view,
                    all(5) & !bit(gone),
                    client(c),
                    0,
                )
            })
            .collect();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let share = moved as f64 / f64::from(clients);
        assert!((share - 0.2).abs() < 0.02, "moved {share}");
        for (b, a) in before.iter().zip(&after) {
            if *b != gone {
                assert_eq!(a, b, "only the leaver's clients move");
            }
        }
        // Roughly even while all five are there.
        for i in 0..5 {
            let n = before.iter().filter(|&&x| x == i).count() as f64;
            assert!(
                (n / f64::from(clients) - 0.2).abs() < 0.02,
                "upstream {i}: {n}"
            );
        }
    }

    #[test]
    fn client_hash_follows_weights() {
        let weights = [3u32, 1];
        let k = keys(2);
        let zero = |_: usize| 0;
        let view = View {
            weights: &weights,
            open: &zero,
            keys: &k,
        };
        let on_first = (0..20_000u32)
            .filter(|&c| pick(Balance::ClientHash, &view, 0b11, client(c), 0) == 0)
            .count() as f64
            / 20_000.0;
        assert!((on_first - 0.75).abs() < 0.02, "{on_first}");
    }

    proptest! {
        /// Whatever the balance and the state, the pick is one of the candidates.
        #[test]
        fn the_pick_is_always_a_candidate(
            weights in proptest::collection::vec(1u32..=1000, 1..64),
            open in proptest::collection::vec(0usize..1000, 64),
            chosen in any::<u64>(),
            turn in any::<usize>(),
            ip in any::<u32>(),
            balance in prop_oneof![Just(Balance::RoundRobin), Just(Balance::LeastConnections), Just(Balance::ClientHash)],
        ) {
            let n = weights.len();
            let set = chosen & all(n);
            prop_assume!(set != 0);
            let k = keys(n);
            let get = |i: usize| open[i];
            let view = View { weights: &weights, open: &get, keys: &k };
            let i = pick(balance, &view, set, IpAddr::V4(Ipv4Addr::from(ip)), turn);
            prop_assert!(set & bit(i) != 0);
        }

        /// Candidates are never empty while something is untried, never hold a tried one, and
        /// hold a backup only when no untried primary is up.
        #[test]
        fn candidates_rules(up in any::<u8>(), backups in any::<u8>(), tried in any::<u8>()) {
            let (up, backups, tried, every) = (u64::from(up), u64::from(backups), u64::from(tried), 0xffu64);
            let c = candidates(up, backups, every, tried);
            prop_assert_eq!(c == 0, tried == every);
            prop_assert_eq!(c & tried, 0);
            if up & !backups & !tried != 0 {
                prop_assert_eq!(c, up & !backups & !tried);
            }
        }
    }
}
