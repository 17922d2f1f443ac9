//! Order statistics of a set of timings.

use std::time::Duration;

use serde::Serialize;

/// Median and spread of one measured quantity, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median_us: f64,
    pub p10_us: f64,
    pub p90_us: f64,
    pub min_us: f64,
    pub max_us: f64,
}

impl Summary {
    /// `None` for an empty set.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let (&min_us, &max_us) = (us.first()?, us.last()?);
        Some(Summary {
            n: us.len(),
            median_us: quantile(&us, 0.5),
            p10_us: quantile(&us, 0.1),
            p90_us: quantile(&us, 0.9),
            min_us,
            max_us,
        })
    }
}

/// The `p` quantile of sorted, non-empty values, interpolated linearly between the two
/// nearest ranks: the median of an even count is the mean of the middle two.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let last = sorted.len().saturating_sub(1);
    let rank = p.clamp(0.0, 1.0) * last as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    match (sorted.get(lo), sorted.get(hi)) {
        (Some(&a), Some(&b)) => a + (b - a) * (rank - lo as f64),
        _ => f64::NAN,
    }
}

/// `a / b`, or `None` when either is missing or `b` is not positive.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&u| Duration::from_micros(u)).collect()
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Summary::of(&us(&[30, 10, 20])).expect("summary");
        assert_eq!(
            (s.n, s.median_us, s.min_us, s.max_us),
            (3, 20.0, 10.0, 30.0)
        );
        let s = Summary::of(&us(&[40, 10, 20, 30])).expect("summary");
        assert_eq!(s.median_us, 25.0);
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let s = Summary::of(&us(&[0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100])).expect("s");
        assert_eq!((s.p10_us, s.p90_us), (10.0, 90.0));
        let s = Summary::of(&us(&[0, 100])).expect("s");
        assert_eq!((s.p10_us, s.p90_us), (10.0, 90.0));
    }

    #[test]
    fn empty_has_no_summary_and_ratio_needs_both() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(ratio(Some(10.0), Some(4.0)), Some(2.5));
        assert_eq!(ratio(Some(10.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }
}
