//! One BERT encoder layer as a single CPU op with its own backward, the way
//! llm.c writes GPT-2: the projections, attention, dropout, residuals, layer
//! norms and GELU over plain buffers, with nothing allocated per primitive op.
//! Through candle's primitive ops a layer is some 40 graph nodes, and the
//! backward of each allocates a zeroed gradient and adds into it; here the
//! layer is one node whose backward writes every gradient once. Used for CPU
//! training and f32 inference; checked against candle's primitive ops in the
//! tests below (values and gradients).

use crate::fused::{Attention, Mat, erf_f32, exp_f32, for_parts, matmul_threads, moments_lanes, norm_backward, slice};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Storage, Tensor, bail};
use std::sync::Mutex;

/// The layer's parameters in the order they are packed into one vector.
pub const PARAMS: [&str; 16] = [
    "query.weight",
    "query.bias",
    "key.weight",
    "key.bias",
    "value.weight",
    "value.bias",
    "attn_out.weight",
    "attn_out.bias",
    "attn_norm.weight",
    "attn_norm.bias",
    "intermediate.weight",
    "intermediate.bias",
    "output.weight",
    "output.bias",
    "out_norm.weight",
    "out_norm.bias",
];

/// Sizes of the packed parameters for hidden size `h` and feed-forward size `f`.
fn sizes(h: usize, f: usize) -> [usize; 16] {
    [h * h, h, h * h, h, h * h, h, h * h, h, h, h, f * h, f, h * f, h, h, h]
}

/// One encoder layer: `x` `[b, t, h]`, the parameters in [`PARAMS`] order
/// (weights `[out, in]`), the additive key mask `[b, 1, 1, t]`, and dropout
/// masks (0 or 1 / (1 - p) per value of `[b, t, h]`) after the attention's
/// output projection and after the feed-forward block.
pub fn layer(
    x: &Tensor,
    params: [&Tensor; 16],
    mask_bias: &Tensor,
    heads: usize,
    eps: f64,
    dropout: [Option<Vec<f32>>; 2],
) -> Result<Tensor> {
    let (b, t, h) = x.dims3()?;
    if b == 0 || t == 0 || h == 0 {
        bail!("fused layer: empty input of shape ({b}, {t}, {h})");
    }
    let f = params[11].elem_count();
    let want = sizes(h, f);
    for ((p, &n), name) in params.iter().zip(&want).zip(PARAMS) {
        if p.elem_count() != n {
            bail!("fused layer: {name} has {} values, expected {n} (hidden {h}, feed-forward {f})", p.elem_count());
        }
    }
    if heads == 0 || h % heads != 0 {
        bail!("fused layer: hidden size {h} does not split into {heads} heads");
    }
    if dropout.iter().flatten().any(|m| m.len() != b * t * h) {
        bail!("fused layer: dropout masks must have {} values", b * t * h);
    }
    let mask = mask_bias.flatten_all()?.to_vec1::<f32>()?;
    if mask.len() != b * t {
        bail!("fused layer: mask of {} values for {b} texts of {t} tokens", mask.len());
    }
    let flat = params.iter().map(|p| p.flatten_all()).collect::<Result<Vec<_>>>()?;
    let packed = Tensor::cat(&flat, 0)?;
    let op = FusedLayer { attention: Attention { heads, mask }, f, eps, dropout, saved: Mutex::new(None) };
    x.contiguous()?.apply_op2(&packed, op)
}

struct FusedLayer {
    attention: Attention,
    f: usize,
    eps: f64,
    dropout: [Option<Vec<f32>>; 2],
    /// The forward's intermediate values, taken by the backward.
    saved: Mutex<Option<Saved>>,
}

/// What the backward needs from the forward (rows are tokens).
struct Saved {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    ctx: Vec<f32>,
    /// Input of the attention's layer norm (attention output + x).
    r1: Vec<f32>,
    /// Its output, the feed-forward block's input.
    y1: Vec<f32>,
    /// The feed-forward block before and after GELU.
    u: Vec<f32>,
    g: Vec<f32>,
    /// Input of the output layer norm.
    r2: Vec<f32>,
}

fn threads() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    return candle_core::utils::get_num_threads();
    #[cfg(target_arch = "wasm32")]
    1
}

/// A row-major `[rows, cols]` matrix.
fn mat(data: &[f32], rows: usize, cols: usize) -> Mat<'_> {
    Mat { data, at: 0, rs: cols, cs: 1, rows, cols }
}

/// `x w^T + bias` for `x` `[n, d_in]`, `w` `[d_out, d_in]`.
fn linear(x: &[f32], w: &[f32], bias: &[f32], n: usize, d_in: usize) -> Vec<f32> {
    let d_out = bias.len();
    let mut y = vec![0f32; n * d_out];
    y.chunks_exact_mut(d_out).for_each(|row| row.copy_from_slice(bias));
    matmul_threads(&mut y, d_out, mat(x, n, d_in), mat(w, d_out, d_in).t(), 1.0, true, threads());
    y
}

/// Gradients of `y = x w^T + bias` from `dy` `[n, d_out]`: `dw`, `dbias`
/// written into their slices, `dx` added into `dx` (or written when
/// `!accumulate`).
#[allow(clippy::too_many_arguments)]
fn linear_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    (n, d_in, d_out): (usize, usize, usize),
    dw: &mut [f32],
    dbias: &mut [f32],
    dx: &mut [f32],
    accumulate: bool,
) {
    let th = threads();
    matmul_threads(dw, d_in, mat(dy, n, d_out).t(), mat(x, n, d_in), 1.0, false, th);
    column_sums(dy, dbias);
    matmul_threads(dx, d_in, mat(dy, n, d_out), mat(w, d_out, d_in), 1.0, accumulate, th);
}

/// `out[j] = sum over rows of m[row][j]`, `m` row-major with `out.len()` columns.
fn column_sums(m: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for row in m.chunks_exact(out.len()) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
}

/// Layer norm of each row of `x` with scale `w` and shift `b`.
fn norm_forward(x: &[f32], w: &[f32], b: &[f32], eps: f64) -> Vec<f32> {
    let n = w.len();
    let mut y = vec![0f32; x.len()];
    for_parts(&mut y, n, |at, part| {
        for (xr, yr) in x[at..at + part.len()].chunks_exact(n).zip(part.chunks_exact_mut(n)) {
            let (mean, rstd) = moments_lanes(xr, eps);
            for i in 0..n {
                yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
            }
        }
    });
    y
}

/// `a * mask + x` (the mask absent without dropout), in place in `a`.
fn dropout_add(a: &mut [f32], mask: Option<&Vec<f32>>, x: &[f32]) {
    for_parts(a, 1, |at, part| match mask {
        Some(m) => part.iter_mut().zip(&m[at..]).zip(&x[at..]).for_each(|((a, m), x)| *a = *a * m + x),
        None => part.iter_mut().zip(&x[at..]).for_each(|(a, x)| *a += x),
    });
}

impl FusedLayer {
    fn forward(&self, x: &[f32], p: &[&[f32]], (b, t, h): (usize, usize, usize)) -> (Vec<f32>, Saved) {
        let (n, f) = (b * t, self.f);
        let q = linear(x, p[0], p[1], n, h);
        let k = linear(x, p[2], p[3], n, h);
        let v = linear(x, p[4], p[5], n, h);
        let ctx = self.attention.forward(&q, &k, &v, (b, t, h));
        let mut r1 = linear(&ctx, p[6], p[7], n, h);
        dropout_add(&mut r1, self.dropout[0].as_ref(), x);
        let y1 = norm_forward(&r1, p[8], p[9], self.eps);
        let u = linear(&y1, p[10], p[11], n, h);
        let mut g = vec![0f32; u.len()];
        for_parts(&mut g, 1, |at, part| crate::fused::gelu_into(&u[at..at + part.len()], part));
        let mut r2 = linear(&g, p[12], p[13], n, f);
        dropout_add(&mut r2, self.dropout[1].as_ref(), &y1);
        let y2 = norm_forward(&r2, p[14], p[15], self.eps);
        (y2, Saved { q, k, v, ctx, r1, y1, u, g, r2 })
    }

    /// Gradients of `x` and of the packed parameters from the output's gradient.
    fn backward(
        &self,
        x: &[f32],
        s: &Saved,
        p: &[&[f32]],
        dy2: &[f32],
        (b, t, h): (usize, usize, usize),
    ) -> (Vec<f32>, Vec<f32>) {
        let (n, f) = (b * t, self.f);
        let sizes = sizes(h, f);
        let mut dp = vec![0f32; sizes.iter().sum()];
        let mut parts: Vec<&mut [f32]> = Vec::with_capacity(16);
        let mut rest = dp.as_mut_slice();
        for &len in &sizes {
            let (head, tail) = rest.split_at_mut(len);
            parts.push(head);
            rest = tail;
        }
        let [dwq, dbq, dwk, dbk, dwv, dbv, dwo, dbo, dn1w, dn1b, dwi, dbi, dwo2, dbo2, dn2w, dn2b] =
            <[&mut [f32]; 16]>::try_from(parts).unwrap_or_else(|_| unreachable!("16 sizes"));
        let masked = |d: &mut Vec<f32>, m: Option<&Vec<f32>>| {
            if let Some(m) = m {
                for_parts(d, 1, |at, part| part.iter_mut().zip(&m[at..]).for_each(|(d, m)| *d *= m));
            }
        };
        // Output norm, then the feed-forward block (its residual feeds dy1).
        let dr2 = norm_backward(&s.r2, p[14], dy2, self.eps, dn2w, dn2b);
        let mut dy1 = dr2.clone();
        let mut dout = dr2;
        masked(&mut dout, self.dropout[1].as_ref());
        let mut dg = vec![0f32; n * f];
        linear_backward(&dout, &s.g, p[12], (n, f, h), dwo2, dbo2, &mut dg, false);
        let inv_sqrt_2pi = 0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
        for_parts(&mut dg, 1, |at, part| {
            for (d, &v) in part.iter_mut().zip(&s.u[at..]) {
                let cdf = 0.5 * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2));
                *d *= cdf + v * inv_sqrt_2pi * exp_f32(-0.5 * v * v);
            }
        });
        linear_backward(&dg, &s.y1, p[10], (n, h, f), dwi, dbi, &mut dy1, true);
        // Attention norm, then the attention (its residual feeds dx).
        let dr1 = norm_backward(&s.r1, p[8], &dy1, self.eps, dn1w, dn1b);
        let mut dx = dr1.clone();
        let mut da = dr1;
        masked(&mut da, self.dropout[0].as_ref());
        let mut dctx = vec![0f32; n * h];
        linear_backward(&da, &s.ctx, p[6], (n, h, h), dwo, dbo, &mut dctx, false);
        let (dq, dk, dv) = self.attention.backward(&s.q, &s.k, &s.v, &dctx, (b, t, h));
        linear_backward(&dq, x, p[0], (n, h, h), dwq, dbq, &mut dx, true);
        linear_backward(&dk, x, p[2], (n, h, h), dwk, dbk, &mut dx, true);
        linear_backward(&dv, x, p[4], (n, h, h), dwv, dbv, &mut dx, true);
        (dx, dp)
    }

    /// The packed parameters split into their 16 slices.
    fn split<'a>(&self, packed: &'a [f32], h: usize) -> Result<Vec<&'a [f32]>> {
        let sizes = sizes(h, self.f);
        if packed.len() != sizes.iter().sum::<usize>() {
            bail!("fused layer: {} packed parameters, expected {}", packed.len(), sizes.iter().sum::<usize>());
        }
        let mut out = Vec::with_capacity(16);
        let mut rest = packed;
        for len in sizes {
            let (head, tail) = rest.split_at(len);
            out.push(head);
            rest = tail;
        }
        Ok(out)
    }
}

impl CustomOp2 for FusedLayer {
    fn name(&self) -> &'static str {
        "fused-bert-layer"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, packed) = (slice(s1, l1)?, slice(s2, l2)?);
        let dims = l1.shape().dims3()?;
        let p = self.split(packed, dims.2)?;
        let (y, saved) = self.forward(x, &p, dims);
        if let Ok(mut slot) = self.saved.lock() {
            *slot = Some(saved);
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, packed: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dims = x.dims3()?;
        let grad = grad.contiguous()?;
        // Borrowed in place: these are the forward's own (contiguous) inputs.
        let (xs, xl) = x.storage_and_layout();
        let (ps, pl) = packed.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (Storage::Cpu(xs), Storage::Cpu(ps), Storage::Cpu(gs)) = (&*xs, &*ps, &*gs) else {
            bail!("fused layer: CPU tensors only")
        };
        let (xs, ps, gs) = (slice(xs, xl)?, slice(ps, pl)?, slice(gs, gl)?);
        let p = self.split(ps, dims.2)?;
        // The forward's values, or the forward again if they were taken.
        let saved = self.saved.lock().ok().and_then(|mut s| s.take());
        let saved = match saved {
            Some(s) => s,
            None => self.forward(xs, &p, dims).1,
        };
        let (dx, dp) = self.backward(xs, &saved, &p, gs, dims);
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dp, packed.shape(), x.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::tests::rel_diff;
    use candle_core::{D, Device, Var};

    fn values(shape: &[usize], seed: u32, scale: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| (((i as u32 * 2654435761u32) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap().affine(scale, 0.0).unwrap()
    }

    /// The same layer from candle's primitive ops.
    fn reference(x: &Tensor, p: &[Tensor], mask: &Tensor, heads: usize, drop: &[Option<Tensor>; 2]) -> Tensor {
        let (b, t, h) = x.dims3().unwrap();
        let lin = |x: &Tensor, w: &Tensor, bias: &Tensor| {
            x.broadcast_matmul(&w.t().unwrap()).unwrap().broadcast_add(bias).unwrap()
        };
        let norm = |x: &Tensor, w: &Tensor, bias: &Tensor| candle_nn::ops::layer_norm_slow(x, w, bias, 1e-12).unwrap();
        let hd = h / heads;
        let split = |y: Tensor| y.reshape((b, t, heads, hd)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let (q, k, v) = (split(lin(x, &p[0], &p[1])), split(lin(x, &p[2], &p[3])), split(lin(x, &p[4], &p[5])));
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap().broadcast_add(mask).unwrap();
        let probs = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        let ctx = probs.matmul(&v).unwrap().transpose(1, 2).unwrap().contiguous().unwrap().reshape((b, t, h)).unwrap();
        let apply = |a: Tensor, m: &Option<Tensor>| match m {
            Some(m) => (a * m).unwrap(),
            None => a,
        };
        let a = apply(lin(&ctx, &p[6], &p[7]), &drop[0]);
        let y1 = norm(&(a + x).unwrap(), &p[8], &p[9]);
        let g = lin(&y1, &p[10], &p[11]).gelu_erf().unwrap();
        let o = apply(lin(&g, &p[12], &p[13]), &drop[1]);
        norm(&(o + &y1).unwrap(), &p[14], &p[15])
    }

    #[test]
    fn the_fused_layer_matches_candle_in_values_and_gradients() {
        for (b, t, h, f, heads, with_dropout) in
            [(3, 7, 8, 16, 2, true), (2, 5, 12, 20, 3, false), (1, 4, 6, 10, 1, true)]
        {
            let x = Var::from_tensor(&values(&[b, t, h], 1, 1.0)).unwrap();
            let shapes: Vec<Vec<usize>> = sizes(h, f)
                .iter()
                .enumerate()
                .map(|(i, _)| match i {
                    0 | 2 | 4 | 6 => vec![h, h],
                    10 => vec![f, h],
                    12 => vec![h, f],
                    11 => vec![f],
                    _ => vec![h],
                })
                .collect();
            let params: Vec<Var> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let v = values(s, 10 + i as u32, 0.5);
                    // Norm scales near one, as in a trained model.
                    let v = if i == 8 || i == 14 { (v + 1.0).unwrap() } else { v };
                    Var::from_tensor(&v).unwrap()
                })
                .collect();
            let mask: Vec<f32> = (0..b * t).map(|i| if i % t >= t - (i / t) % 3 { -1e4 } else { 0.0 }).collect();
            let mask = Tensor::from_vec(mask, (b, 1, 1, t), &Device::Cpu).unwrap();
            let drops: [Option<Vec<f32>>; 2] = std::array::from_fn(|j| {
                with_dropout
                    .then(|| (0..b * t * h).map(|i| if (i * 7 + j * 3) % 10 == 0 { 0.0 } else { 1.0 / 0.9 }).collect())
            });
            let drop_t: [Option<Tensor>; 2] = std::array::from_fn(|j| {
                drops[j].clone().map(|m| Tensor::from_vec(m, (b, t, h), &Device::Cpu).unwrap())
            });
            let p: Vec<Tensor> = params.iter().map(|v| v.as_tensor().clone()).collect();
            let refs: [&Tensor; 16] = std::array::from_fn(|i| &p[i]);
            let ours = layer(x.as_tensor(), refs, &mask, heads, 1e-12, drops).unwrap();
            let theirs = reference(x.as_tensor(), &p, &mask, heads, &drop_t);
            assert!(rel_diff(&ours, &theirs) < 1e-5, "values: {}", rel_diff(&ours, &theirs));
            let g = values(&[b, t, h], 99, 1.0);
            let go = (ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let gt = (theirs * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let d = rel_diff(go.get(&x).unwrap(), gt.get(&x).unwrap());
            assert!(d < 1e-4, "({b}, {t}, {h}) x: {d}");
            for (v, name) in params.iter().zip(PARAMS) {
                let (a, want) = (go.get(v).unwrap(), gt.get(v).unwrap());
                let d = if name == "key.bias" {
                    // Softmax ignores a shift shared by all keys: this gradient is
                    // zero up to rounding, so compare it on the query bias's scale.
                    let scale = gt.get(&params[1]).unwrap().abs().unwrap().max_all().unwrap();
                    let diff = (a - want).unwrap().abs().unwrap().max_all().unwrap();
                    diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap()
                } else {
                    rel_diff(a, want)
                };
                assert!(d < 1e-4, "({b}, {t}, {h}) {name}: {d}");
            }
        }
    }

    #[test]
    fn wrong_shapes_are_refused_with_the_parameter_named() {
        let x = values(&[1, 3, 4], 1, 1.0);
        let mask = Tensor::zeros((1, 1, 1, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let w = values(&[4, 4], 2, 1.0);
        let v4 = values(&[4], 3, 1.0);
        let v8 = values(&[8], 4, 1.0);
        let w48 = values(&[8, 4], 5, 1.0);
        let mut p: [&Tensor; 16] = [&w, &v4, &w, &v4, &w, &v4, &w, &v4, &v4, &v4, &w48, &v8, &w48, &v4, &v4, &v4];
        assert!(layer(&x, p, &mask, 2, 1e-12, [None, None]).is_ok());
        p[3] = &v8;
        let err = layer(&x, p, &mask, 2, 1e-12, [None, None]).unwrap_err().to_string();
        assert!(err.contains("key.bias has 8 values"), "{err}");
        p[3] = &v4;
        let err = layer(&x, p, &mask, 3, 1e-12, [None, None]).unwrap_err().to_string();
        assert!(err.contains("does not split into 3 heads"), "{err}");
        let err = layer(&x, p, &mask, 2, 1e-12, [Some(vec![1.0; 5]), None]).unwrap_err().to_string();
        assert!(err.contains("dropout masks"), "{err}");
        let empty = Tensor::zeros((1, 0, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = layer(&empty, p, &mask, 2, 1e-12, [None, None]).unwrap_err().to_string();
        assert!(err.contains("empty input"), "{err}");
    }
}
