//! Order statistics of a set of timings, and the named series they are collected in.

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
            median_us: percentile(&us, 0.5),
            p10_us: percentile(&us, 0.1),
            p90_us: percentile(&us, 0.9),
            min_us,
            max_us,
        })
    }
}

/// The `p` quantile of sorted, non-empty values, interpolating linearly between the two
/// nearest ranks (numpy's default), so a median of an even count is the mean of the middle two.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let last = sorted.len().saturating_sub(1);
    let rank = p.clamp(0.0, 1.0) * last as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    match (sorted.get(lo), sorted.get(hi)) {
        (Some(&a), Some(&b)) => a + (b - a) * (rank - lo as f64),
        _ => f64::NAN,
    }
}

/// Timings under names, kept in the order the names were first seen (the order a table
/// should print them in).
#[derive(Debug, Default, Clone)]
pub struct Series {
    entries: Vec<(String, Vec<Duration>)>,
}

impl Series {
    pub fn push(&mut self, name: &str, d: Duration) {
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => v.push(d),
            None => self.entries.push((name.to_owned(), vec![d])),
        }
    }

    pub fn extend(&mut self, sample: &[(String, Duration)]) {
        for (name, d) in sample {
            self.push(name, *d);
        }
    }

    /// Each name with the summary of its timings.
    pub fn summaries(&self) -> Vec<(String, Summary)> {
        self.entries
            .iter()
            .filter_map(|(n, v)| Summary::of(v).map(|s| (n.clone(), s)))
            .collect()
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
        v.iter().map(|&x| Duration::from_micros(x)).collect()
    }

    #[test]
    fn summary_of_eleven_ranks() {
        // Shuffled 1..=11: the quantiles fall exactly on ranks 2, 6 and 10.
        let s = Summary::of(&us(&[7, 1, 11, 3, 9, 5, 2, 10, 4, 8, 6])).unwrap();
        assert_eq!(s.n, 11);
        assert_eq!(s.median_us, 6.0);
        assert_eq!(s.p10_us, 2.0);
        assert_eq!(s.p90_us, 10.0);
        assert_eq!(s.min_us, 1.0);
        assert_eq!(s.max_us, 11.0);
    }

    #[test]
    fn even_count_median_interpolates() {
        let s = Summary::of(&us(&[40, 10, 30, 20])).unwrap();
        assert_eq!(s.median_us, 25.0);
        // rank 0.3 of [10, 20, 30, 40] → 13.
        assert!((s.p10_us - 13.0).abs() < 1e-9, "{}", s.p10_us);
    }

    #[test]
    fn single_and_empty() {
        let s = Summary::of(&us(&[5])).unwrap();
        assert_eq!((s.median_us, s.p10_us, s.p90_us), (5.0, 5.0, 5.0));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn series_keeps_first_seen_order_and_groups() {
        let mut series = Series::default();
        series.push("b", Duration::from_micros(1));
        series.push("a", Duration::from_micros(2));
        series.push("b", Duration::from_micros(3));
        let got: Vec<(String, usize, f64)> = series
            .summaries()
            .into_iter()
            .map(|(n, s)| (n, s.n, s.median_us))
            .collect();
        assert_eq!(
            got,
            vec![("b".to_owned(), 2, 2.0), ("a".to_owned(), 1, 2.0)]
        );
    }

    #[test]
    fn ratio_needs_both_and_a_positive_divisor() {
        assert_eq!(ratio(Some(10.0), Some(4.0)), Some(2.5));
        assert_eq!(ratio(Some(10.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }
}
