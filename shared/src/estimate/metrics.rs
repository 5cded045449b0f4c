//! The Tester's definitions: how far off estimates are, in ways a person reads.

use serde::{Deserialize, Serialize};

/// How good one estimate is, as the Tester colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grade {
    /// Off by less than $40 or less than 20% of the true price: a hit.
    Green,
    /// Off by less than $80 or less than 40%.
    Orange,
    Red,
}

impl Grade {
    pub fn of(estimate: f64, truth: f64) -> Grade {
        let err = (estimate - truth).abs();
        let rel = if truth > 0.0 { err / truth } else { f64::INFINITY };
        if err < 40.0 || rel < 0.2 {
            Grade::Green
        } else if err < 80.0 || rel < 0.4 {
            Grade::Orange
        } else {
            Grade::Red
        }
    }

    /// A CSS/SVG colour for charts.
    pub fn color(self) -> &'static str {
        match self {
            Grade::Green => "#2a9d4b",
            Grade::Orange => "#f08c00",
            Grade::Red => "#d62828",
        }
    }
}

/// Summary of a model's estimates against true prices.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    /// Mean absolute error in dollars.
    pub mae: f64,
    /// Root mean squared error of log(1 + price).
    pub rmsle: f64,
    /// Share of green estimates, in percent.
    pub hits_pct: f64,
    /// Median absolute error in dollars.
    pub median_abs_error: f64,
}

impl Summary {
    /// Summarises pairs of (estimate, truth). `None` when there are none.
    pub fn of(pairs: &[(f64, f64)]) -> Option<Summary> {
        if pairs.is_empty() {
            return None;
        }
        let n = pairs.len() as f64;
        let mut errs: Vec<f64> = pairs.iter().map(|(e, t)| (e - t).abs()).collect();
        let mae = errs.iter().sum::<f64>() / n;
        let msle = pairs.iter().map(|(e, t)| ((e.max(0.0)).ln_1p() - t.max(0.0).ln_1p()).powi(2)).sum::<f64>() / n;
        let hits = pairs.iter().filter(|(e, t)| Grade::of(*e, *t) == Grade::Green).count();
        Some(Summary {
            n: pairs.len(),
            mae,
            rmsle: msle.sqrt(),
            hits_pct: 100.0 * hits as f64 / n,
            median_abs_error: median(&mut errs),
        })
    }
}

/// Median of a non-empty slice (mean of the middle two for even lengths); NaN when empty.
pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 { xs[m] } else { (xs[m - 1] + xs[m]) / 2.0 }
}

/// Share of truths inside their [low, high] range, in percent.
pub fn coverage_pct(ranges: &[(f64, f64, f64)]) -> f64 {
    if ranges.is_empty() {
        return f64::NAN;
    }
    let inside = ranges.iter().filter(|(lo, hi, t)| lo <= t && t <= hi).count();
    100.0 * inside as f64 / ranges.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn grades_follow_the_dollar_and_percent_thresholds() {
        assert_eq!(Grade::of(139.0, 100.0), Grade::Green); // $39 off
        assert_eq!(Grade::of(1150.0, 1000.0), Grade::Green); // $150 but 15%
        assert_eq!(Grade::of(170.0, 100.0), Grade::Orange); // $70 off
        assert_eq!(Grade::of(1300.0, 1000.0), Grade::Orange); // 30%
        assert_eq!(Grade::of(300.0, 100.0), Grade::Red);
        assert_eq!(Grade::of(0.0, 200.0), Grade::Red);
    }

    #[test]
    fn summary_matches_hand_computation() {
        // errors: 10, 50, 100, 2 ; truths 100, 100, 50, 10
        let pairs = [(110.0, 100.0), (150.0, 100.0), (150.0, 50.0), (8.0, 10.0)];
        let s = Summary::of(&pairs).unwrap();
        assert_eq!(s.n, 4);
        assert!(close(s.mae, 40.5));
        assert!(close(s.median_abs_error, 30.0));
        // green: (110,100) and (8,10); (150,100) is orange ($50, 50%); (150,50) red.
        assert!(close(s.hits_pct, 50.0));
        let sq = |e: f64, t: f64| (e.ln_1p() - t.ln_1p()).powi(2);
        let want = ((sq(110.0, 100.0) + sq(150.0, 100.0) + sq(150.0, 50.0) + sq(8.0, 10.0)) / 4.0).sqrt();
        assert!(close(s.rmsle, want));
        // ln(111/101), ln(151/101), ln(151/51), ln(9/11): squared, averaged, rooted = 0.5893
        assert!((s.rmsle - 0.5893).abs() < 1e-4, "{}", s.rmsle);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn median_and_coverage() {
        assert!(close(median(&mut [3.0, 1.0, 2.0]), 2.0));
        assert!(close(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5));
        assert!(close(coverage_pct(&[(1.0, 2.0, 1.5), (1.0, 2.0, 3.0)]), 50.0));
    }
}
