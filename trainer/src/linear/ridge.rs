//! Fitting the linear baselines: ridge regression with an intercept, solved
//! by conjugate gradients on sparse rows.
//!
//! Why hand-written: the TF-IDF design matrix is sparse and wide (tens of
//! thousands of word pairs), where dense solvers (nalgebra, linfa) would
//! materialise it; CG needs only two sparse products per step, as
//! scikit-learn's `sparse_cg` solver does. The intercept is fitted by
//! centring implicitly, never densifying the matrix.

use pricer::baselines::Sparse;

/// Ridge fit: weights and intercept minimising
/// `|X w + b - y|^2 + alpha |w|^2`.
pub fn ridge(rows: &[Sparse], dim: usize, y: &[f64], alpha: f64) -> (Vec<f64>, f64) {
    let n = rows.len().max(1) as f64;
    let y_mean = y.iter().sum::<f64>() / n;
    let mut mu = vec![0.0; dim];
    for row in rows {
        for &(i, v) in row {
            mu[i as usize] += v as f64 / n;
        }
    }
    // Centred products: Xc v = X v - (mu . v) 1 ; Xc^T r = X^T r - mu sum(r).
    let xc = |v: &[f64]| -> Vec<f64> {
        let shift: f64 = mu.iter().zip(v).map(|(a, b)| a * b).sum();
        rows.iter().map(|row| row.iter().map(|&(i, x)| x as f64 * v[i as usize]).sum::<f64>() - shift).collect()
    };
    let xct = |r: &[f64]| -> Vec<f64> {
        let mut out = vec![0.0; dim];
        for (row, ri) in rows.iter().zip(r) {
            for &(i, x) in row {
                out[i as usize] += x as f64 * ri;
            }
        }
        let s: f64 = r.iter().sum();
        out.iter_mut().zip(&mu).for_each(|(o, m)| *o -= m * s);
        out
    };
    let apply = |v: &[f64]| -> Vec<f64> {
        let mut out = xct(&xc(v));
        out.iter_mut().zip(v).for_each(|(o, vi)| *o += alpha * vi);
        out
    };
    let yc: Vec<f64> = y.iter().map(|v| v - y_mean).collect();
    let rhs = xct(&yc);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut w = vec![0.0; dim];
    let mut r = rhs.clone();
    let mut p = r.clone();
    let mut rr = dot(&r, &r);
    let stop = 1e-20 * dot(&rhs, &rhs).max(1e-300);
    for _ in 0..(10 * dim).max(100) {
        if rr <= stop {
            break;
        }
        let ap = apply(&p);
        let step = rr / dot(&p, &ap);
        w.iter_mut().zip(&p).for_each(|(wi, pi)| *wi += step * pi);
        r.iter_mut().zip(&ap).for_each(|(ri, a)| *ri -= step * a);
        let rr_new = dot(&r, &r);
        let beta = rr_new / rr;
        rr = rr_new;
        p.iter_mut().zip(&r).for_each(|(pi, ri)| *pi = ri + beta * *pi);
    }
    let b = y_mean - dot(&mu, &w);
    (w, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_an_exact_linear_relation() {
        // y = 3 x0 - 2 x1 + 5, no noise, tiny alpha.
        let xs = [(1.0, 0.0), (0.0, 1.0), (2.0, 1.0), (3.0, 5.0), (1.5, 2.5)];
        let rows: Vec<Sparse> = xs.iter().map(|&(a, b)| vec![(0, a as f32), (1, b as f32)]).collect();
        let y: Vec<f64> = xs.iter().map(|(a, b)| 3.0 * a - 2.0 * b + 5.0).collect();
        let (w, b) = ridge(&rows, 2, &y, 1e-9);
        assert!((w[0] - 3.0).abs() < 1e-6 && (w[1] + 2.0).abs() < 1e-6 && (b - 5.0).abs() < 1e-6, "{w:?} {b}");
    }

    #[test]
    fn matches_closed_form_ridge_in_one_dimension() {
        // Centred 1-D ridge: w = sum(xc yc) / (sum(xc^2) + alpha).
        let x = [1.0, 2.0, 4.0];
        let y = [2.0, 3.0, 7.0];
        let rows: Vec<Sparse> = x.iter().map(|&v| vec![(0, v as f32)]).collect();
        let (w, b) = ridge(&rows, 1, &y, 2.0);
        let (mx, my) = (7.0 / 3.0, 4.0);
        let sxy: f64 = x.iter().zip(&y).map(|(a, c)| (a - mx) * (c - my)).sum();
        let sxx: f64 = x.iter().map(|a| (a - mx) * (a - mx)).sum();
        let want = sxy / (sxx + 2.0);
        assert!((w[0] - want).abs() < 1e-9 && (b - (my - want * mx)).abs() < 1e-9);
    }
}
