//! A first, coarse pass over a neighbour index: each row in 8-bit codes, and
//! for each row how far its coarse similarity to a query can be from the
//! exact one. Only rows that could be among the best get the exact dot
//! product, so a scan reads a quarter of the bytes and finds exactly what a
//! full scan finds (the same rows, the same similarities to the bit).

/// An index's rows (`n x dim`) in 8-bit codes, one scale per row, with what
/// the codes miss of each.
#[derive(Debug, Clone)]
pub(crate) struct Screen {
    dim: usize,
    /// `n x dim`: each row's values over its scale, rounded.
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// Per row, `|row - scale * codes|` (Euclidean), rounded up.
    residuals: Vec<f32>,
    /// Per row, its length, rounded up.
    lengths: Vec<f32>,
}

/// A bound on the relative rounding error of an `n`-term f32 dot product, in
/// any order of additions (Higham's gamma_n), with room to spare.
fn rounding(n: usize) -> f64 {
    let u = f32::EPSILON as f64 / 2.0;
    2.0 * (n as f64 + 2.0) * u / (1.0 - (n as f64 + 2.0) * u)
}

/// `x` as f32, rounded up.
fn up(x: f64) -> f32 {
    let r = x as f32;
    if (r as f64) < x { r.next_up() } else { r }
}

/// A query in 16-bit codes, so that a row's coarse product is an exact
/// integer sum (pairs of 16-bit products: `vpmaddwd` natively,
/// `i32x4.dot_i16x8_s` in wasm).
pub(crate) struct Query {
    codes: Vec<i16>,
    scale: f64,
    /// `|q - scale * codes|` and `|q|`, rounded up.
    residual: f64,
    norm: f64,
}

impl Query {
    /// `None` when `q` is not finite, or too wide for an i32 sum.
    fn new(q: &[f32]) -> Option<Query> {
        if q.iter().any(|v| !v.is_finite()) {
            return None;
        }
        // Each product is at most 127 * limit; `q.len()` of them fit in an i32.
        let limit = (i32::MAX as usize / (127 * q.len().max(1))).min(i16::MAX as usize);
        let top = q.iter().fold(0f32, |m, v| m.max(v.abs()));
        if limit == 0 {
            return None;
        }
        let scale = if top > 0.0 { top / limit as f32 } else { 1.0 };
        let (mut residual, mut norm) = (0f64, 0f64);
        let codes = q
            .iter()
            .map(|&v| {
                let c = (v / scale).round().clamp(-(limit as f32), limit as f32);
                residual += (v as f64 - scale as f64 * c as f64).powi(2);
                norm += (v as f64).powi(2);
                c as i16
            })
            .collect();
        let grown = |x: f64| x.sqrt() * (1.0 + 1e-6);
        Some(Query { codes, scale: scale as f64, residual: grown(residual), norm: grown(norm) })
    }
}

/// The integer dot product of a row's codes and a query's, in 16 lanes (an
/// exact sum: its order is free).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn dot_codes(row: &[i8], q: &[i16]) -> i32 {
    let mut lanes = [0i32; 16];
    let (mut cr, mut cq) = (row.chunks_exact(16), q.chunks_exact(16));
    for (r, q) in (&mut cr).zip(&mut cq) {
        for i in 0..16 {
            lanes[i] += r[i] as i32 * q[i] as i32;
        }
    }
    let tail: i32 = cr.remainder().iter().zip(cq.remainder()).map(|(r, q)| *r as i32 * *q as i32).sum();
    lanes.iter().sum::<i32>() + tail
}

/// [`dot_codes`] in wasm's 16-bit dot products (the compiler's own
/// vectorisation of the loop above multiplies in 32 bits): each code
/// widened to 16 bits, eight products summed in pairs per instruction.
/// Exact in i32: [`Query::new`] limits the codes so that the magnitudes
/// of all the products add up to an i32, so every partial sum fits.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn dot_codes(row: &[i8], q: &[i16]) -> i32 {
    use core::arch::wasm32::*;
    let n = row.len().min(q.len());
    let mut acc = i32x4_splat(0);
    let mut k = 0;
    while k + 16 <= n {
        // SAFETY: k + 16 <= n, so 16 codes (16 bytes) and 16 query values
        // (32 bytes) lie inside their slices; wasm loads need no alignment.
        unsafe {
            let codes = v128_load(row.as_ptr().add(k) as *const v128);
            let q0 = v128_load(q.as_ptr().add(k) as *const v128);
            let q1 = v128_load(q.as_ptr().add(k + 8) as *const v128);
            acc = i32x4_add(acc, i32x4_dot_i16x8(i16x8_extend_low_i8x16(codes), q0));
            acc = i32x4_add(acc, i32x4_dot_i16x8(i16x8_extend_high_i8x16(codes), q1));
        }
        k += 16;
    }
    let lanes = i32x4_extract_lane::<0>(acc)
        + i32x4_extract_lane::<1>(acc)
        + i32x4_extract_lane::<2>(acc)
        + i32x4_extract_lane::<3>(acc);
    lanes + row[k..n].iter().zip(&q[k..n]).map(|(r, q)| *r as i32 * *q as i32).sum::<i32>()
}

impl Screen {
    /// The codes of `vectors` (rows of `dim`); `None` where a value is not
    /// finite (the full scan then decides).
    pub(crate) fn new(vectors: &[f32], dim: usize) -> Option<Screen> {
        if dim == 0 || vectors.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let n = vectors.len() / dim;
        let mut screen = Screen {
            dim,
            codes: Vec::with_capacity(n * dim),
            scales: Vec::with_capacity(n),
            residuals: Vec::with_capacity(n),
            lengths: Vec::with_capacity(n),
        };
        for row in vectors.chunks_exact(dim) {
            let top = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if top > 0.0 { top / 127.0 } else { 1.0 };
            let (mut error, mut length) = (0f64, 0f64);
            for &v in row {
                let c = (v / scale).round().clamp(-127.0, 127.0);
                screen.codes.push(c as i8);
                error += (v as f64 - scale as f64 * c as f64).powi(2);
                length += (v as f64).powi(2);
            }
            screen.scales.push(scale);
            // Rounded up: f64's sums of squares are far closer than this.
            screen.residuals.push(up(error.sqrt() * (1.0 + 1e-6)));
            screen.lengths.push(up(length.sqrt() * (1.0 + 1e-6)));
        }
        Some(screen)
    }

    /// The coarse similarity of row `i` to `q`: the codes' exact integer
    /// product, scaled in f64.
    fn coarse(&self, i: usize, q: &Query) -> f64 {
        let sum = dot_codes(&self.codes[i * self.dim..(i + 1) * self.dim], &q.codes);
        self.scales[i] as f64 * q.scale * sum as f64
    }

    /// How far row `i`'s coarse similarity may be from the exact one (an f32
    /// dot product of the row `x` and the query `q`). With `x'` and `q'` the
    /// scaled codes: `x.q - x'.q' = (x - x').q + x'.(q - q')`, at most
    /// `r_x |q| + (|x| + r_x) r_q` (Cauchy-Schwarz); the f32 product's
    /// rounding adds at most gamma `|x| |q|`, and the f64 scaling next to
    /// nothing.
    fn bound(&self, i: usize, q: &Query) -> f64 {
        let (r, length) = (self.residuals[i] as f64, self.lengths[i] as f64);
        let codes = r * q.norm + (length + r) * q.residual;
        let float = rounding(self.dim + 1) * length * q.norm + 1e-12 * (length + r) * (q.norm + q.residual);
        (codes + float) * (1.0 + 1e-6)
    }

    /// The query in this screen's terms; `None` when `q` is not finite (or
    /// not as wide as the rows): the full scan then decides.
    pub(crate) fn query(&self, q: &[f32]) -> Option<Query> {
        if q.len() != self.dim { None } else { Query::new(q) }
    }

    /// The lowest and highest exact similarity each row of `among` may have.
    pub(crate) fn ends(&self, q: &Query, among: std::ops::Range<usize>) -> Vec<(f64, f64)> {
        among
            .map(|i| {
                let (c, b) = (self.coarse(i, q), self.bound(i, q));
                (c - b, c + b)
            })
            .collect()
    }

    /// The rows among `among` that may be among the `k` most similar to
    /// `q` by the exact product, in index order (see [`survivors`]).
    #[cfg(test)]
    pub(crate) fn candidates(&self, q: &[f32], among: std::ops::Range<usize>, k: usize) -> Option<Vec<usize>> {
        let ends = self.ends(&self.query(q)?, among.clone());
        Some(survivors(&ends, k).into_iter().map(|i| among.start + i).collect())
    }
}

/// The positions in `ends` (each row's lowest and highest possible exact
/// similarity) of every row whose highest reaches the k-th largest lowest:
/// at least k rows are exactly that similar or more, so a row that falls
/// short is not among the k best. In order.
pub(crate) fn survivors(ends: &[(f64, f64)], k: usize) -> Vec<usize> {
    let floor = if k == 0 || k > ends.len() {
        f64::NEG_INFINITY
    } else {
        let mut lows: Vec<f64> = ends.iter().map(|(low, _)| *low).collect();
        *lows.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a)).1
    };
    ends.iter().enumerate().filter(|(_, (_, high))| *high >= floor).map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_similarity_is_within_its_bound_of_the_exact_one() {
        let dim = 96;
        let mut seed = 3u32;
        let mut uniform = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        // Spread rows, rows with one large value, tiny rows, and rows longer than 1.
        let rows: Vec<Vec<f32>> = (0..400)
            .map(|i| match i % 4 {
                0 => (0..dim).map(|_| uniform()).collect(),
                1 => (0..dim).map(|j| if j == i % dim { 1.0 } else { 0.01 * uniform() }).collect(),
                2 => (0..dim).map(|_| 1e-20 * uniform()).collect(),
                _ => (0..dim).map(|_| 30.0 * uniform()).collect(),
            })
            .collect();
        let screen = Screen::new(&rows.concat(), dim).unwrap();
        for _ in 0..50 {
            let q: Vec<f32> = (0..dim).map(|_| uniform()).collect();
            let query = Query::new(&q).unwrap();
            let q_norm = query.norm;
            for (i, row) in rows.iter().enumerate() {
                let exact: f64 = row.iter().zip(&q).map(|(a, b)| *a as f64 * *b as f64).sum();
                let off = (screen.coarse(i, &query) - exact).abs();
                let bound = screen.bound(i, &query);
                assert!(off <= bound, "row {i}: {off} off, bound {bound}");
                // Not vacuous: the bound is the codes' resolution, not the row's length.
                assert!(bound < 0.05 * screen.lengths[i] as f64 * q_norm + 1e-30, "row {i}: bound {bound}");
            }
        }
    }

    #[test]
    fn a_wide_query_keeps_the_integer_sum_within_i32() {
        // The largest codes on both sides: the sum is as large as it gets.
        let dim = 2000;
        let screen = Screen::new(&vec![-1.0; dim], dim).unwrap();
        let q = Query::new(&vec![1.0; dim]).unwrap();
        let off = (screen.coarse(0, &q) + dim as f64).abs();
        assert!(off <= screen.bound(0, &q), "{off} off");
        assert!(Query::new(&[0.5, f32::NAN]).is_none());
    }

    #[test]
    fn every_row_is_a_candidate_when_k_reaches_the_rows() {
        let v = [1.0, 0.0, 0.0, 1.0, 0.6, 0.8];
        let screen = Screen::new(&v, 2).unwrap();
        assert_eq!(screen.candidates(&[1.0, 0.0], 0..3, 3), Some(vec![0, 1, 2]));
        assert_eq!(screen.candidates(&[1.0, 0.0], 0..3, 9), Some(vec![0, 1, 2]));
        // Far apart, one row is enough.
        assert_eq!(screen.candidates(&[1.0, 0.0], 0..3, 1), Some(vec![0]));
        assert_eq!(screen.candidates(&[f32::INFINITY, 0.0], 0..3, 1), None);
        assert!(Screen::new(&[f32::NAN, 0.0], 2).is_none());
    }
}
