//! How a budget is divided: max-min fair shares by demand, with a floor
//! for every member. Pure arithmetic, used for the fleet's instances (each
//! one's lease) and for an instance's pools (each one's ceiling).

/// Shares of `budget` for members asking for `demands`, in the same order.
///
/// - Every member gets `floor` first (members later in the order go
///   without when the budget cannot give everyone their floor).
/// - The rest is water-filled: the smallest demands are met in full, and
///   what is left is split evenly among the larger ones (the remainder of
///   an uneven split goes to the earliest of them).
/// - Nobody gets more than its demand (or its floor): budget nobody asks
///   for stays unallocated, free for whoever asks next.
///
/// The shares never add up to more than `budget`.
pub fn fair_shares(budget: usize, demands: &[usize], floor: usize) -> Vec<usize> {
    let n = demands.len();
    let mut shares = vec![0; n];
    let mut left = budget;
    for s in shares.iter_mut() {
        let f = floor.min(left);
        *s = f;
        left -= f;
    }
    // Members still wanting more, smallest remaining want first.
    let mut want: Vec<(usize, usize)> = demands
        .iter()
        .enumerate()
        .filter(|(i, d)| **d > shares[*i])
        .map(|(i, d)| (d - shares[i], i))
        .collect();
    want.sort_unstable();
    let mut k = want.len();
    let mut idx = 0;
    while k > 0 && left > 0 {
        let level = left / k;
        let (need, _) = want[idx];
        if need <= level {
            // The smallest want is met in full.
            let (need, i) = want[idx];
            shares[i] += need;
            left -= need;
            idx += 1;
            k -= 1;
            continue;
        }
        // Everyone left wants more than an even split: split evenly, and
        // the remainder one each in member order.
        let mut rest: Vec<usize> = want[idx..].iter().map(|&(_, i)| i).collect();
        rest.sort_unstable();
        let extra = left - level * k;
        for (j, i) in rest.into_iter().enumerate() {
            let add = level + usize::from(j < extra);
            shares[i] += add;
        }
        left = 0;
    }
    shares
}

/// Shares of `budget` as [`fair_shares`] gives them for `demands`, then
/// what is left split the same way among members asking for headroom:
/// `headroom_pct` percent of their demand (rounded up) above it. Headroom
/// comes second to every member's demand: a member with room to absorb
/// its bursts never keeps another from what it uses.
pub fn fair_shares_with_headroom(
    budget: usize,
    demands: &[usize],
    floor: usize,
    headroom_pct: usize,
) -> Vec<usize> {
    let mut shares = fair_shares(budget, demands, floor);
    let left = budget.saturating_sub(shares.iter().sum());
    if left == 0 || headroom_pct == 0 {
        return shares;
    }
    let more: Vec<usize> = demands
        .iter()
        .zip(&shares)
        .map(|(d, s)| (d + (d * headroom_pct).div_ceil(100)).saturating_sub(*s))
        .collect();
    for (s, e) in shares.iter_mut().zip(fair_shares(left, &more, 0)) {
        *s += e;
    }
    shares
}

/// Jain's fairness index of `xs` (1 when all equal, 1/n when one has all).
pub fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    if xs.is_empty() || sq == 0.0 {
        return 1.0;
    }
    sum * sum / (xs.len() as f64 * sq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_comes_from_what_demands_leave() {
        // One instance asking for 12 of 16, three idle: 12 + 6 headroom,
        // of which 3 are left after the others' floors.
        assert_eq!(
            fair_shares_with_headroom(16, &[12, 0, 0, 0], 1, 50),
            [13, 1, 1, 1]
        );
        // Alone: its demand and half again.
        assert_eq!(fair_shares_with_headroom(16, &[8], 1, 50), [12]);
        assert_eq!(fair_shares_with_headroom(16, &[12], 1, 50), [16]);
        // Headroom never takes from another's demand: 10 + 2 of 16 are
        // met first, the 4 left go to headroom (5 and 1 asked).
        assert_eq!(fair_shares_with_headroom(16, &[10, 2], 1, 50), [13, 3]);
        // Demand above the budget: plain fair shares.
        assert_eq!(
            fair_shares_with_headroom(8, &[10, 10], 1, 50),
            fair_shares(8, &[10, 10], 1)
        );
        // No headroom asked: plain fair shares.
        assert_eq!(fair_shares_with_headroom(16, &[8], 1, 0), [8]);
    }

    #[test]
    fn small_demands_are_met_and_the_rest_is_split_evenly() {
        assert_eq!(fair_shares(8, &[1, 10, 10, 1], 1), [1, 3, 3, 1]);
        assert_eq!(fair_shares(8, &[2, 10, 1, 1], 1), [2, 4, 1, 1]);
        assert_eq!(fair_shares(9, &[10, 10], 1), [5, 4]);
        // Budget nobody asks for stays free.
        assert_eq!(fair_shares(8, &[2, 1], 1), [2, 1]);
    }

    #[test]
    fn floors_come_first_even_without_demand() {
        assert_eq!(fair_shares(8, &[0, 0, 12], 1), [1, 1, 6]);
        // Too small a budget: the first members get their floors.
        assert_eq!(fair_shares(2, &[5, 5, 5], 1), [1, 1, 0]);
        assert_eq!(fair_shares(0, &[5], 1), [0]);
    }

    #[test]
    fn shares_never_exceed_the_budget_nor_any_demand_above_the_floor() {
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (x % 7) as usize;
            let budget = (x >> 8) as usize % 40;
            let floor = (x >> 16) as usize % 3;
            let demands: Vec<usize> = (0..n)
                .map(|i| ((x >> (20 + 4 * i)) % 16) as usize)
                .collect();
            let s = fair_shares(budget, &demands, floor);
            let total: usize = s.iter().sum();
            assert!(total <= budget, "{budget} {demands:?} {s:?}");
            for (share, d) in s.iter().zip(&demands) {
                assert!(*share <= (*d).max(floor), "{budget} {demands:?} {s:?}");
            }
            // Work-conserving: if anyone is short of its demand, nothing is left.
            let short = s.iter().zip(&demands).any(|(s, d)| s < d);
            if short {
                assert_eq!(total, budget, "{budget} {demands:?} {s:?}");
            }
            // Max-min: a member short of its demand has at least what any
            // other member has, less one (the rounding).
            for (i, (si, di)) in s.iter().zip(&demands).enumerate() {
                if si < di {
                    for (j, sj) in s.iter().enumerate() {
                        assert!(
                            *sj <= si + 1 || *sj <= floor,
                            "{i} vs {j}: {demands:?} {s:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn jain_index() {
        assert!((jain(&[2.0, 2.0, 2.0]) - 1.0).abs() < 1e-12);
        assert!((jain(&[4.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
    }
}
