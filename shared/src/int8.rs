//! Inference kernels for files of 8-bit weights. Integer matrix products: `y = x W^T + b` with W in int8
//! (one scale per output row) and x quantized to int8 per row as it comes,
//! summed exactly in i32. In wasm the inner loop is simd128's
//! `i32x4.dot_i16x8_s` (eight products and four sums in one instruction),
//! about twice the work per instruction of f32 multiply-then-add; elsewhere a
//! plain loop the compiler vectorises (e.g. to `pmaddwd` on x86).

/// A linear layer's weights as int8 values (stored widened to i16, the
/// kernel's input width) with one scale per output row.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    /// `out x inp`, row-major, values in -127..=127.
    weight: Vec<i16>,
    scale: Vec<f32>,
    bias: Vec<f32>,
    inp: usize,
    out: usize,
}

/// Largest int8 magnitude used: symmetric, so -127..=127.
const Q: f32 = 127.0;

/// `row` quantized symmetrically into `dst`; returns the scale (0 for an all-zero row).
fn quantize_row(row: &[f32], dst: &mut [i16]) -> f32 {
    let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if max == 0.0 || !max.is_finite() {
        dst.iter_mut().for_each(|d| *d = 0);
        return if max.is_finite() { 0.0 } else { f32::NAN };
    }
    let inv = Q / max;
    for (d, v) in dst.iter_mut().zip(row) {
        *d = (v * inv).round() as i16;
    }
    max / Q
}

impl Int8Linear {
    /// From an f32 weight matrix (`out x inp`, row-major) and bias.
    pub fn new(weight: &[f32], bias: Vec<f32>, out: usize, inp: usize) -> Int8Linear {
        assert_eq!(weight.len(), out * inp, "weight is not out x inp");
        assert_eq!(bias.len(), out, "one bias per output");
        let mut q = vec![0i16; out * inp];
        let scale = weight.chunks_exact(inp).zip(q.chunks_exact_mut(inp)).map(|(r, d)| quantize_row(r, d)).collect();
        Int8Linear { weight: q, scale, bias, inp, out }
    }

    pub fn out_features(&self) -> usize {
        self.out
    }

    /// `x` (`rows x inp`, row-major) times the weights, plus the bias.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let (inp, out) = (self.inp, self.out);
        assert_eq!(x.len(), rows * inp, "input is not rows x inp");
        // The kernel walks eight values at a time: pad each row with zeros.
        let width = inp.div_ceil(8) * 8;
        let mut xq = vec![0i16; rows * width];
        let xs: Vec<f32> =
            x.chunks_exact(inp).zip(xq.chunks_exact_mut(width)).map(|(r, d)| quantize_row(r, &mut d[..inp])).collect();
        let wq: std::borrow::Cow<[i16]> = if width == inp {
            std::borrow::Cow::Borrowed(&self.weight)
        } else {
            let mut w = vec![0i16; out * width];
            for (d, s) in w.chunks_exact_mut(width).zip(self.weight.chunks_exact(inp)) {
                d[..inp].copy_from_slice(s);
            }
            std::borrow::Cow::Owned(w)
        };
        let mut y = vec![0f32; rows * out];
        // Natively, rows are split over the cores (each value is computed the
        // same way whatever the split); the browser's worker has one thread.
        #[cfg(not(target_arch = "wasm32"))]
        {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
            if threads > 1 && rows >= 8 {
                let per = rows.div_ceil(threads).next_multiple_of(2);
                std::thread::scope(|sc| {
                    for (i, part) in y.chunks_mut(per * out).enumerate() {
                        let (xq, xs, wq) = (&xq, &xs, &wq);
                        sc.spawn(move || self.block(xq, xs, wq, width, i * per, part));
                    }
                });
                return y;
            }
        }
        self.block(&xq, &xs, &wq, width, 0, &mut y);
        y
    }

    /// Output rows `first..` (as many as `y` holds) from quantized inputs.
    fn block(&self, xq: &[i16], xs: &[f32], wq: &[i16], width: usize, first: usize, y: &mut [f32]) {
        let (out, rows) = (self.out, y.len() / self.out);
        let last = first + rows - 1;
        let xrow = |r: usize| &xq[r.min(last) * width..(r.min(last) + 1) * width];
        let wrow = |o: usize| &wq[o.min(out - 1) * width..(o.min(out - 1) + 1) * width];
        // Blocks of 4 outputs x 2 rows: the 4 weight rows stay in L1 while
        // every input row passes (out of range indices repeat the last row
        // and are not stored).
        for o in (0..out).step_by(4) {
            let w4 = [wrow(o), wrow(o + 1), wrow(o + 2), wrow(o + 3)];
            for r in (0..rows).step_by(2) {
                let d = dot2x4([xrow(first + r), xrow(first + r + 1)], w4);
                for (i, dr) in d.iter().enumerate().take(rows - r) {
                    let yr = &mut y[(r + i) * out..(r + i + 1) * out];
                    for (j, dv) in dr.iter().enumerate().take(out - o) {
                        yr[o + j] = *dv as f32 * xs[first + r + i] * self.scale[o + j] + self.bias[o + j];
                    }
                }
            }
        }
    }
}

/// Multi-head scaled dot-product attention over `q`, `k`, `v` laid out
/// `[b, t, heads * hd]` (as the projections give them), `bias` `[b, t]` added
/// to every query's scores (0 for tokens, a large negative for padding):
/// `[b, t, heads * hd]`. Every sum runs in one fixed order, so the browser
/// and the command line give the same bits (a matmul library's blocking
/// differs by CPU, and int8 rounding downstream would magnify it).
pub fn attention(q: &[f32], k: &[f32], v: &[f32], bias: &[f32], b: usize, t: usize, heads: usize) -> Vec<f32> {
    let width = q.len() / (b * t).max(1);
    let hd = width / heads.max(1);
    assert!(q.len() == b * t * width && k.len() == q.len() && v.len() == q.len() && bias.len() == b * t);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; q.len()];
    let mut s = vec![0f32; t];
    // One head's keys transposed (`hd x t`): a query's scores then grow one
    // dimension at a time across all keys, a loop over keys that vectorises
    // while each score's sum keeps its order.
    let mut kt = vec![0f32; hd * t];
    for bi in 0..b {
        let at = |i: usize, h: usize| (bi * t + i) * width + h * hd;
        for h in 0..heads {
            for j in 0..t {
                for d in 0..hd {
                    kt[d * t + j] = k[at(j, h) + d];
                }
            }
            for i in 0..t {
                s.copy_from_slice(&bias[bi * t..(bi + 1) * t]);
                let qi = &q[at(i, h)..at(i, h) + hd];
                for (d, &qd) in qi.iter().enumerate() {
                    let qd = qd * scale;
                    for (sj, kj) in s.iter_mut().zip(&kt[d * t..(d + 1) * t]) {
                        *sj += qd * kj;
                    }
                }
                crate::fused::softmax_in_place(&mut s);
                let o = &mut out[at(i, h)..at(i, h) + hd];
                for (j, &w) in s.iter().enumerate() {
                    for (od, vd) in o.iter_mut().zip(&v[at(j, h)..at(j, h) + hd]) {
                        *od += w * vd;
                    }
                }
            }
        }
    }
    out
}

/// Exact dot products of two rows `x` with four rows `w` (all of one
/// length, a multiple of 8): eight accumulators and six loads per step fit
/// the 16 SIMD registers engines map wasm to.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn dot2x4(x: [&[i16]; 2], w: [&[i16]; 4]) -> [[i32; 4]; 2] {
    use core::arch::wasm32::*;
    let n = x[0].len();
    assert!(n.is_multiple_of(8) && x.iter().chain(&w).all(|r| r.len() == n), "rows of one length, a multiple of 8");
    let z = i32x4_splat(0);
    let mut acc = [[z; 4]; 2];
    let mut k = 0;
    while k < n {
        // SAFETY: every row has n values (asserted above) and k + 8 <= n, so
        // each v128_load reads 16 bytes (8 i16) inside its row; wasm loads
        // need no alignment.
        unsafe {
            let x0 = v128_load(x[0].as_ptr().add(k) as *const v128);
            let x1 = v128_load(x[1].as_ptr().add(k) as *const v128);
            for (j, row) in w.iter().enumerate() {
                let wv = v128_load(row.as_ptr().add(k) as *const v128);
                acc[0][j] = i32x4_add(acc[0][j], i32x4_dot_i16x8(x0, wv));
                acc[1][j] = i32x4_add(acc[1][j], i32x4_dot_i16x8(x1, wv));
            }
        }
        k += 8;
    }
    let sum = |v: v128| {
        i32x4_extract_lane::<0>(v)
            + i32x4_extract_lane::<1>(v)
            + i32x4_extract_lane::<2>(v)
            + i32x4_extract_lane::<3>(v)
    };
    acc.map(|r| r.map(sum))
}

/// Exact dot products of two rows `x` with four rows `w`.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn dot2x4(x: [&[i16]; 2], w: [&[i16]; 4]) -> [[i32; 4]; 2] {
    x.map(|xr| w.map(|wr| xr.iter().zip(wr).map(|(p, q)| *p as i32 * *q as i32).sum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn matches_f32_within_int8_rounding() {
        // Row counts past 8 take the threaded path natively.
        for (rows, inp, out) in [(3, 384, 10), (1, 20, 7), (5, 1536, 384), (2, 8, 4), (37, 64, 9)] {
            let (w, x, b) = (data(out * inp, 1), data(rows * inp, 2), data(out, 3));
            let got = Int8Linear::new(&w, b.clone(), out, inp).forward(&x, rows);
            for r in 0..rows {
                for o in 0..out {
                    let want: f32 = (0..inp).map(|k| x[r * inp + k] * w[o * inp + k]).sum::<f32>() + b[o];
                    // Each factor is off by at most half a step of 1/127 of its row's largest value.
                    let bound = 1.5 * (inp as f32).sqrt() / 127.0;
                    let g = got[r * out + o];
                    assert!((g - want).abs() < bound, "{rows}x{inp}x{out} [{r},{o}]: {g} vs {want}");
                }
            }
        }
    }

    #[test]
    fn every_row_gets_the_same_bits_alone_or_in_a_threaded_batch() {
        let (rows, inp, out) = (37, 64, 9);
        let (w, x) = (data(out * inp, 7), data(rows * inp, 8));
        let lin = Int8Linear::new(&w, data(out, 9), out, inp);
        let all = lin.forward(&x, rows);
        for r in 0..rows {
            assert_eq!(lin.forward(&x[r * inp..(r + 1) * inp], 1), all[r * out..(r + 1) * out]);
        }
    }

    #[test]
    fn zero_and_exactly_representable_rows() {
        let w = vec![1.0, -1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0];
        let lin = Int8Linear::new(&w, vec![0.25, 0.0], 2, 4);
        let y = lin.forward(&[2.0, 1.0, 0.0, -2.0, 0.0, 0.0, 0.0, 0.0], 2);
        assert_eq!(y[1], 0.0);
        assert_eq!(y[3], 0.0);
        assert!((y[0] - (2.0 - 1.0 + 0.25)).abs() < 0.03, "{y:?}");
        assert_eq!(y[2], 0.25, "a zero row gives the bias");
    }

    #[test]
    fn attention_matches_a_direct_softmax_attention() {
        let (b, t, heads, hd) = (2, 5, 3, 8);
        let width = heads * hd;
        let (q, k, v) = (data(b * t * width, 4), data(b * t * width, 5), data(b * t * width, 6));
        // The second sequence has two padding tokens at the end.
        let mut bias = vec![0f32; b * t];
        bias[2 * t - 2..].iter_mut().for_each(|x| *x = -1e4);
        let got = attention(&q, &k, &v, &bias, b, t, heads);
        for bi in 0..b {
            for h in 0..heads {
                for i in 0..t {
                    let at = |j: usize| (bi * t + j) * width + h * hd;
                    let scores: Vec<f64> = (0..t)
                        .map(|j| {
                            let dot: f64 = (0..hd).map(|d| q[at(i) + d] as f64 * k[at(j) + d] as f64).sum();
                            dot / (hd as f64).sqrt() + bias[bi * t + j] as f64
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for d in 0..hd {
                        let want: f64 = (0..t).map(|j| e[j] / total * v[at(j) + d] as f64).sum();
                        let g = got[at(i) + d] as f64;
                        assert!((g - want).abs() < 1e-5, "[{bi},{h},{i},{d}] {g} vs {want}");
                    }
                }
            }
        }
    }
}
