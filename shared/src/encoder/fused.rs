//! Fused CPU ops with their own backward: the softmax, the layer norm, GELU
//! and multi-head attention, each one pass over memory forward and one or two
//! backward, where candle's differentiable versions chain a dozen primitive
//! ops (and candle's own fused ones have no backward). Other devices and
//! dtypes take the primitive path, so CUDA training is unchanged. The whole
//! encoder layer as one op is `fused_layer.rs`, built from the pieces here.

use candle_core::cpu::erf::erf_f64;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Tensor, bail};
use std::sync::Mutex;

/// CPU training and inference, natively and in the browser (where the fast
/// exp and erf below are what makes them pay: candle's primitive versions call
/// libm once per value, a third of the encoder's time in the worker).
pub(crate) fn fused(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// e^x for f32, within 2e-7 relative for x in [-87, 88] (clamped there: the
/// softmax's masked scores become ~1e-38, not 0): 2^n from the exponent bits
/// times a degree-6 polynomial on |r| <= ln2 / 2. Branch-free, so loops over
/// slices vectorise (simd128 in the browser).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n: n (an integer in [-126, 127]) sits in the low mantissa bits of
    // n + 1.5 * 2^23; integer ops on those bits vectorise, where `n as i32`
    // (saturating) made every lane a scalar conversion.
    let n_bits = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    p * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

wide_or_not! {
/// Softmax of one row, in place, with [`exp_f32`], the maximum and the sum
/// in eight lanes: it vectorises (2x faster than index-order sums) and gives
/// the same bits natively and in the browser (training's and the int8
/// attention).
pub fn softmax_lanes_in_place(row: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        lanes.iter_mut().zip(c).for_each(|(m, &v)| *m = if v > *m { v } else { *m });
    }
    let max = chunks.remainder().iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    row.iter_mut().for_each(|v| *v = exp_f32(*v - max));
    let inv = 1.0 / sum_lanes(row);
    row.iter_mut().for_each(|v| *v *= inv);
}
}

/// Sum in eight interleaved lanes, then the lanes and the tail in a fixed
/// order: it vectorises, and gives the same bits natively and in the browser.
#[inline]
pub fn sum_lanes(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        lanes.iter_mut().zip(c).for_each(|(s, &v)| *s += v);
    }
    let l = lanes;
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])) + chunks.remainder().iter().sum::<f32>()
}

/// Dot product in eight lanes, like [`sum_lanes`].
#[inline]
pub fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let l = lanes;
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])) + tail
}

/// erf for f32 (Abramowitz and Stegun 7.1.26: within 1.5e-7 absolute, 1e-6 in
/// f32 arithmetic), branch-free.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_72) * t + 0.254_829_6) * t;
    (1.0 - poly * exp_f32(-a * a)).copysign(x)
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !fused(x) {
        return candle_nn::ops::softmax(x, D::Minus1);
    }
    x.contiguous()?.apply_op1(Softmax)
}

/// Layer normalisation over the last dimension, with a scale and a shift.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused(x) {
        return candle_nn::ops::layer_norm_slow(x, weight, bias, eps as f32);
    }
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, LayerNorm { eps })
}

/// GELU with the exact erf, as BERT uses.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if !fused(x) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(Gelu)
}

/// GELU of one value with the exact erf (the fused ops' and the int8
/// layers' arithmetic: one definition, so one set of bits).
#[inline(always)]
pub(crate) fn gelu_f32(v: f32) -> f32 {
    0.5 * v * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2))
}

wide_or_not! {
/// [`gelu_f32`] of each value of `x` into `y`.
pub(crate) fn gelu_into(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = gelu_f32(v);
    }
}
}

wide_or_not! {
/// [`gelu_into`] in place: no second buffer.
pub(crate) fn gelu_in_place(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_f32(*v);
    }
}
}

/// Layer normalisation of each row of `x` (rows of `w.len()` values) into
/// `y` (the fused op's arithmetic, also the int8 layers').
pub(crate) fn layer_norm_into(x: &[f32], w: &[f32], b: &[f32], eps: f64, y: &mut [f32]) {
    let n = w.len();
    if n == 0 {
        return;
    }
    // Eight rows' sums at once, each still in its own index order (the
    // same bits): eight independent chains of f64 additions keep the
    // adder busy where one chain waits on each addition's latency.
    const ROWS: usize = 8;
    let mut xs = x.chunks_exact(ROWS * n);
    let mut ys = y.chunks_exact_mut(ROWS * n);
    for (x8, y8) in (&mut xs).zip(&mut ys) {
        let moments = moments8(x8, n, eps);
        for ((xr, yr), (mean, rstd)) in x8.chunks_exact(n).zip(y8.chunks_exact_mut(n)).zip(moments) {
            normalize(xr, yr, mean, rstd, w, b);
        }
    }
    for (xr, yr) in xs.remainder().chunks_exact(n).zip(ys.into_remainder().chunks_exact_mut(n)) {
        let (mean, rstd) = moments(xr, eps);
        normalize(xr, yr, mean, rstd, w, b);
    }
}

wide_or_not! {
fn normalize(xr: &[f32], yr: &mut [f32], mean: f32, rstd: f32, w: &[f32], b: &[f32]) {
    for i in 0..xr.len() {
        yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
    }
}
}

/// [`moments`] of eight rows of `n` values (`x` holds them one after
/// another), each summed in index order as [`moments`] sums it.
fn moments8(x: &[f32], n: usize, eps: f64) -> [(f32, f32); 8] {
    let rows: [&[f32]; 8] = std::array::from_fn(|r| &x[r * n..(r + 1) * n]);
    let mut sum = [0f64; 8];
    for i in 0..n {
        sum.iter_mut().zip(&rows).for_each(|(s, row)| *s += row[i] as f64);
    }
    let mean = sum.map(|s| s / n as f64);
    let mut var = [0f64; 8];
    for i in 0..n {
        var.iter_mut().zip(&rows).zip(&mean).for_each(|((v, row), m)| *v += (row[i] as f64 - m).powi(2));
    }
    std::array::from_fn(|r| (mean[r] as f32, (1.0 / (var[r] / n as f64 + eps).sqrt()) as f32))
}

/// Fills `out` by calling `f(offset, part)` on parts of whole rows of `row`
/// values: natively one part per core for large tensors (candle's own ops
/// are threaded too), in one part in the browser's single thread.
#[cfg_attr(target_arch = "wasm32", allow(unused_variables))]
pub fn for_parts(out: &mut [f32], row: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
        let rows = out.len() / row.max(1);
        if threads > 1 && out.len() >= 1 << 15 && rows >= threads {
            let per = rows.div_ceil(threads) * row;
            std::thread::scope(|s| {
                for (i, part) in out.chunks_mut(per).enumerate() {
                    let f = &f;
                    s.spawn(move || f(i * per, part));
                }
            });
            return;
        }
    }
    f(0, out)
}

/// The f32 values of a contiguous CPU tensor's storage.
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else { bail!("fused ops take f32") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("fused ops take contiguous tensors"),
    }
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let mut y = vec![0f32; x.len()];
        for_parts(&mut y, n, |at, part| {
            for (xr, yr) in x[at..at + part.len()].chunks_exact(n).zip(part.chunks_exact_mut(n)) {
                yr.copy_from_slice(xr);
                softmax_lanes_in_place(yr);
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwd)?))
    }
}

/// dx = y * (g - sum(g * y)) per row.
struct SoftmaxBwd;

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "fused-softmax-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (slice(s1, l1)?, slice(s2, l2)?);
        let n = l1.dims().last().copied().unwrap_or(1).max(1);
        let mut dx = vec![0f32; y.len()];
        for_parts(&mut dx, n, |at, part| {
            let (y, g) = (&y[at..at + part.len()], &g[at..at + part.len()]);
            for ((yr, gr), dr) in y.chunks_exact(n).zip(g.chunks_exact(n)).zip(part.chunks_exact_mut(n)) {
                let dot = dot_lanes(yr, gr);
                for ((d, &yv), &gv) in dr.iter_mut().zip(yr).zip(gr) {
                    *d = yv * (gv - dot);
                }
            }
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let mut y = vec![0f32; x.len()];
        for_parts(&mut y, 1, |at, part| gelu_into(&x[at..at + part.len()], part));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &GeluBwd)?))
    }
}

/// dx = g * (Phi(x) + x * phi(x)), Phi and phi the normal cdf and density.
struct GeluBwd;

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "fused-gelu-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(s1, l1)?, slice(s2, l2)?);
        let inv_sqrt_2pi = 0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2;
        let mut dx = vec![0f32; x.len()];
        for_parts(&mut dx, 1, |at, part| {
            for ((o, &v), &gv) in part.iter_mut().zip(&x[at..]).zip(&g[at..]) {
                let v = v as f64;
                let cdf = 0.5 * (1.0 + erf_f64(v * std::f64::consts::FRAC_1_SQRT_2));
                let pdf = inv_sqrt_2pi * (-0.5 * v * v).exp();
                *o = (gv as f64 * (cdf + v * pdf)) as f32;
            }
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

struct LayerNorm {
    eps: f64,
}

/// Mean and 1 / standard deviation of one row, accumulated in f64 in index
/// order (the layer norm op: inference, and the shipped model's figures).
pub(crate) fn moments(row: &[f32], eps: f64) -> (f32, f32) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

/// [`moments`] in f32, two passes in eight lanes: it vectorises (training's
/// fused layer and every layer norm's backward).
pub(crate) fn moments_lanes(row: &[f32], eps: f64) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = sum_lanes(row) / n;
    let mut lanes = [0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        lanes.iter_mut().zip(c).for_each(|(s, &v)| *s += (v - mean) * (v - mean));
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| (v - mean) * (v - mean)).sum();
    let var = (sum_lanes(&lanes) + tail) / n;
    (mean, (1.0 / (var as f64 + eps).sqrt()) as f32)
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let n = w.len();
        if n == 0 || l1.dims().last() != Some(&n) || b.len() != n {
            bail!("layer norm: input {:?}, weight {}, bias {}", l1.dims(), n, b.len());
        }
        let mut y = vec![0f32; x.len()];
        for_parts(&mut y, n, |at, part| layer_norm_into(&x[at..at + part.len()], w, b, self.eps, part));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = w.dim(0)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ws = w.to_vec1::<f32>()?;
        let gs = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let (mut dw, mut db) = (vec![0f32; n], vec![0f32; n]);
        let dx = norm_backward(&xs, &ws, &gs, self.eps, &mut dw, &mut db);
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, n, dev)?),
            Some(Tensor::from_vec(db, n, dev)?),
        ))
    }
}

/// Multi-head scaled dot-product attention of `[b, t, h]` projections with an
/// additive key mask `[b, 1, 1, t]`: the context `[b, t, h]`. Fused on the CPU:
/// every (batch, head) pair is two small products and a softmax on one core,
/// read in place from the projections (no head split, no copies), where
/// candle's batched matmul runs the 192 pairs of a 16-text batch one after the
/// other, each spread over the cores with a barrier between. The backward
/// recomputes the probabilities rather than keeping them.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask_bias: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, h) = q.dims3()?;
    if heads == 0 || h % heads != 0 {
        bail!("attention: hidden size {h} does not split into {heads} heads");
    }
    if b == 0 || t == 0 {
        bail!("attention: empty input of shape ({b}, {t}, {h})");
    }
    if !fused(q) {
        let hd = h / heads;
        let split = |y: &Tensor| -> Result<Tensor> { y.reshape((b, t, heads, hd))?.transpose(1, 2)?.contiguous() };
        let scores = (split(q)?.matmul(&split(k)?.t()?)? / (hd as f64).sqrt())?.broadcast_add(mask_bias)?;
        let probs = softmax_last_dim(&scores)?;
        return probs.matmul(&split(v)?)?.transpose(1, 2)?.contiguous()?.reshape((b, t, h));
    }
    let mask = mask_bias.flatten_all()?.to_vec1::<f32>()?;
    if mask.len() != b * t {
        bail!("attention: mask of {} values for {b} texts of {t} tokens", mask.len());
    }
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, Attention { heads, mask })
}

/// A strided f32 matrix inside a slice: element (r, c) at `at + r * rs + c * cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) at: usize,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

impl<'a> Mat<'a> {
    pub(crate) fn t(self) -> Self {
        Mat { rs: self.cs, cs: self.rs, rows: self.cols, cols: self.rows, ..self }
    }

    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.at + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst[r * dst_rs + c] = scale * (a b)[r][c]` (plus the old value when
/// `accumulate`), single-threaded, with gemm's SIMD kernels.
pub(crate) fn matmul(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, scale: f32, accumulate: bool) {
    matmul_threads(dst, dst_rs, a, b, scale, accumulate, 1)
}

/// [`matmul`] spread over `threads` cores (natively; one in the browser).
pub(crate) fn matmul_threads(
    dst: &mut [f32],
    dst_rs: usize,
    a: Mat,
    b: Mat,
    scale: f32,
    accumulate: bool,
    threads: usize,
) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(a.cols == b.rows && a.in_bounds() && b.in_bounds(), "matmul: operands out of shape");
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len() && dst_rs >= n, "matmul: destination too small");
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(dst_rs).take(m).for_each(|r| r[..n].fill(0.0));
        }
        return;
    }
    // SAFETY: gemm reads lhs at a.at + i * a.rs + l * a.cs for i < m, l < k,
    // rhs at b.at + l * b.rs + j * b.cs for l < k, j < n, and writes dst at
    // i * dst_rs + j: `in_bounds` and the destination assert above put every
    // such index inside its slice (strides are non-negative), the destination
    // rows do not overlap (dst_rs >= n), and the `&mut` excludes aliasing
    // with the inputs. With several threads gemm splits the destination into
    // disjoint blocks and joins them before returning.
    #[cfg(not(target_arch = "wasm32"))]
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    #[cfg(target_arch = "wasm32")]
    let parallelism = {
        let _ = threads;
        gemm::Parallelism::None
    };
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr().add(a.at),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.at),
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Runs `f(first batch, [parts])` on whole batches of `t * h` values, each
/// output split the same way: natively one slice of batches per core.
#[cfg_attr(target_arch = "wasm32", allow(unused_variables))]
fn for_batches<const N: usize>(outs: [&mut [f32]; N], per_batch: usize, f: impl Fn(usize, [&mut [f32]; N]) + Sync) {
    let batches = outs[0].len() / per_batch.max(1);
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16).min(batches);
        if threads > 1 {
            let per = batches.div_ceil(threads);
            let mut parts: Vec<[&mut [f32]; N]> = (0..threads).map(|_| std::array::from_fn(|_| &mut [][..])).collect();
            for (i, out) in outs.into_iter().enumerate() {
                for (j, chunk) in out.chunks_mut(per * per_batch).enumerate() {
                    parts[j][i] = chunk;
                }
            }
            std::thread::scope(|s| {
                for (j, part) in parts.into_iter().enumerate() {
                    let f = &f;
                    s.spawn(move || f(j * per, part));
                }
            });
            return;
        }
    }
    f(0, outs)
}

pub(crate) struct Attention {
    pub(crate) heads: usize,
    /// Additive key mask, `[b * t]`.
    pub(crate) mask: Vec<f32>,
}

impl Attention {
    /// The attention probabilities of text `bi`, head `hi` into `p` (`t * t`).
    fn probs(&self, q: &[f32], k: &[f32], (bi, hi): (usize, usize), (t, h): (usize, usize), p: &mut [f32]) {
        let d = h / self.heads;
        let at = bi * t * h + hi * d;
        let qm = Mat { data: q, at, rs: h, cs: 1, rows: t, cols: d };
        let km = Mat { data: k, at, rs: h, cs: 1, rows: t, cols: d };
        matmul(p, t, qm, km.t(), 1.0 / (d as f32).sqrt(), false);
        let mask = &self.mask[bi * t..(bi + 1) * t];
        for row in p.chunks_exact_mut(t) {
            row.iter_mut().zip(mask).for_each(|(s, m)| *s += m);
            softmax_lanes_in_place(row);
        }
    }

    /// The context `[b, t, h]` of projections `q`, `k`, `v` (each `[b, t, h]`).
    pub(crate) fn forward(&self, q: &[f32], k: &[f32], v: &[f32], (b, t, h): (usize, usize, usize)) -> Vec<f32> {
        let d = h / self.heads;
        let mut ctx = vec![0f32; b * t * h];
        for_batches([&mut ctx], t * h, |first, [out]| {
            let mut p = vec![0f32; t * t];
            for (i, out) in out.chunks_mut(t * h).enumerate() {
                for hi in 0..self.heads {
                    self.probs(q, k, (first + i, hi), (t, h), &mut p);
                    let vm = Mat { data: v, at: (first + i) * t * h + hi * d, rs: h, cs: 1, rows: t, cols: d };
                    let pm = Mat { data: &p, at: 0, rs: t, cs: 1, rows: t, cols: t };
                    matmul(&mut out[hi * d..], h, pm, vm, 1.0, false);
                }
            }
        });
        ctx
    }

    /// Gradients of `q`, `k` and `v` from the context's gradient `g`.
    pub(crate) fn backward(
        &self,
        qs: &[f32],
        ks: &[f32],
        vs: &[f32],
        gs: &[f32],
        (b, t, h): (usize, usize, usize),
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let d = h / self.heads;
        let n = b * t * h;
        let (mut dq, mut dk, mut dv) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        let scale = 1.0 / (d as f32).sqrt();
        for_batches([&mut dq, &mut dk, &mut dv], t * h, |first, [dq, dk, dv]| {
            let (mut p, mut dp) = (vec![0f32; t * t], vec![0f32; t * t]);
            for i in 0..dq.len() / (t * h) {
                let bi = first + i;
                for hi in 0..self.heads {
                    let (at, local) = (bi * t * h + hi * d, i * t * h + hi * d);
                    let view = |data| Mat { data, at, rs: h, cs: 1, rows: t, cols: d };
                    self.probs(qs, ks, (bi, hi), (t, h), &mut p);
                    let pm = Mat { data: &p, at: 0, rs: t, cs: 1, rows: t, cols: t };
                    // dV = P^T dC; dP = dC V^T; dS = P (dP - rowsum(dP P)) / sqrt(d).
                    matmul(&mut dv[local..], h, pm.t(), view(gs), 1.0, false);
                    matmul(&mut dp, t, view(gs), view(vs).t(), 1.0, false);
                    for (pr, dr) in p.chunks_exact(t).zip(dp.chunks_exact_mut(t)) {
                        let dot = dot_lanes(pr, dr);
                        dr.iter_mut().zip(pr).for_each(|(g, &pv)| *g = pv * (*g - dot) * scale);
                    }
                    // dQ = dS K; dK = dS^T Q.
                    let ds = Mat { data: &dp, at: 0, rs: t, cs: 1, rows: t, cols: t };
                    matmul(&mut dq[local..], h, ds, view(ks), 1.0, false);
                    matmul(&mut dk[local..], h, ds.t(), view(qs), 1.0, false);
                }
            }
        });
        (dq, dk, dv)
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (b, t, h) = l1.shape().dims3()?;
        if l2.dims() != l1.dims() || l3.dims() != l1.dims() || self.mask.len() != b * t {
            bail!("attention: q {:?}, k {:?}, v {:?}, mask {}", l1.dims(), l2.dims(), l3.dims(), self.mask.len());
        }
        let ctx = self.forward(q, k, v, (b, t, h));
        Ok((CpuStorage::F32(ctx), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _ctx: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, t, h) = q.dims3()?;
        let cpu = |x: &Tensor| -> Result<Vec<f32>> { x.contiguous()?.flatten_all()?.to_vec1::<f32>() };
        let (dq, dk, dv) = self.backward(&cpu(q)?, &cpu(k)?, &cpu(v)?, &cpu(grad)?, (b, t, h));
        let dev = q.device();
        let shape = (b, t, h);
        Ok((
            Some(Tensor::from_vec(dq, shape, dev)?),
            Some(Tensor::from_vec(dk, shape, dev)?),
            Some(Tensor::from_vec(dv, shape, dev)?),
        ))
    }
}

/// Gradients of the layer norm from `dy`: `dx` returned, `dw` and `db` written.
pub(crate) fn norm_backward(x: &[f32], w: &[f32], dy: &[f32], eps: f64, dw: &mut [f32], db: &mut [f32]) -> Vec<f32> {
    let n = w.len();
    let mut dx = vec![0f32; x.len()];
    let sums = Mutex::new((vec![0f32; n], vec![0f32; n]));
    for_parts(&mut dx, n, |at, part| {
        let (mut pw, mut pb, mut xhat, mut d) = (vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        let rows = x[at..at + part.len()].chunks_exact(n).zip(dy[at..].chunks_exact(n));
        for ((xr, gr), dr) in rows.zip(part.chunks_exact_mut(n)) {
            let (mean, rstd) = moments_lanes(xr, eps);
            for i in 0..n {
                xhat[i] = (xr[i] - mean) * rstd;
                d[i] = gr[i] * w[i];
                pw[i] += gr[i] * xhat[i];
                pb[i] += gr[i];
            }
            let (mean_d, mean_dx) = (sum_lanes(&d) / n as f32, dot_lanes(&d, &xhat) / n as f32);
            for i in 0..n {
                dr[i] = rstd * (gr[i] * w[i] - mean_d - xhat[i] * mean_dx);
            }
        }
        if let Ok(mut s) = sums.lock() {
            s.0.iter_mut().zip(&pw).for_each(|(a, b)| *a += b);
            s.1.iter_mut().zip(&pb).for_each(|(a, b)| *a += b);
        }
    });
    let (sw, sb) = sums.into_inner().unwrap_or_else(|e| e.into_inner());
    dw.copy_from_slice(&sw);
    db.copy_from_slice(&sb);
    dx
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn layer_norm_rows_by_eight_give_each_row_s_own_bits() {
        // 19 rows (two groups of eight and a remainder), magnitudes far
        // apart, so any change in a row's order of sums would show.
        let n = 384;
        let x: Vec<f32> = (0..19 * n)
            .map(|i| ((i as u32).wrapping_mul(2654435761) >> 9) as f32 / 8e6 * if i % 5 == 0 { 1e4 } else { 1.0 } - 2.0)
            .collect();
        let (w, b): (Vec<f32>, Vec<f32>) = (0..n).map(|i| (1.0 + i as f32 / 500.0, i as f32 / 1000.0 - 0.2)).unzip();
        let mut y = vec![0f32; x.len()];
        layer_norm_into(&x, &w, &b, 1e-12, &mut y);
        for (r, (xr, yr)) in x.chunks_exact(n).zip(y.chunks_exact(n)).enumerate() {
            let (mean, rstd) = moments(xr, 1e-12);
            let want: Vec<u32> = (0..n).map(|i| ((xr[i] - mean) * rstd * w[i] + b[i]).to_bits()).collect();
            assert_eq!(yr.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "row {r}");
        }
    }

    /// Largest |a - b| over largest |b|.
    pub(crate) fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let m = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-6);
        d / m
    }

    /// For each of `vars`, the relative difference between the gradients of
    /// sum(ours * g) and of sum(theirs * g).
    fn grad_diffs(ours: Tensor, theirs: Tensor, g: &Tensor, vars: &[&Var]) -> Vec<f32> {
        let go = (ours * g).unwrap().sum_all().unwrap().backward().unwrap();
        let gt = (theirs * g).unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter().map(|v| rel_diff(go.get(v).unwrap(), gt.get(v).unwrap())).collect()
    }

    fn values(shape: &[usize], seed: u32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| (((i as u32 * 2654435761u32) ^ seed) % 1000) as f32 / 125.0 - 4.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn softmax_matches_candle_in_values_and_gradients() {
        let x = Var::from_tensor(&values(&[2, 3, 5, 7], 1)).unwrap();
        // Padding-like entries: a large negative bias.
        let x2 = Var::from_tensor(&x.as_tensor().broadcast_add(&values(&[7], 9).affine(1e3, 0.0).unwrap()).unwrap())
            .unwrap();
        let g = values(&[2, 3, 5, 7], 3);
        for x in [x, x2] {
            let ours = softmax_last_dim(x.as_tensor()).unwrap();
            let theirs = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap();
            assert!(rel_diff(&ours, &theirs) < 1e-5);
            assert!(grad_diffs(ours, theirs, &g, &[&x])[0] < 1e-4);
        }
    }

    #[test]
    fn layer_norm_matches_candle_in_values_and_gradients() {
        let x = Var::from_tensor(&values(&[3, 4, 16], 5)).unwrap();
        let w = Var::from_tensor(&values(&[16], 6)).unwrap();
        let b = Var::from_tensor(&values(&[16], 7)).unwrap();
        let g = values(&[3, 4, 16], 8);
        let ours = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12).unwrap();
        let theirs = candle_nn::ops::layer_norm_slow(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12).unwrap();
        assert!(rel_diff(&ours, &theirs) < 1e-5, "{}", rel_diff(&ours, &theirs));
        for d in grad_diffs(ours, theirs, &g, &[&x, &w, &b]) {
            assert!(d < 1e-4, "{d}");
        }
    }

    #[test]
    fn gelu_matches_candle_in_values_and_gradients() {
        let x = Var::from_tensor(&values(&[3, 5, 16], 4)).unwrap();
        let g = values(&[3, 5, 16], 10);
        let ours = gelu(x.as_tensor()).unwrap();
        let theirs = x.as_tensor().gelu_erf().unwrap();
        assert!(rel_diff(&ours, &theirs) < 1e-5, "{}", rel_diff(&ours, &theirs));
        let d = grad_diffs(ours, theirs, &g, &[&x])[0];
        assert!(d < 1e-4, "{d}");
    }

    #[test]
    fn large_tensors_split_across_threads_give_the_same_values() {
        // Above the size where native runs split the rows over the cores.
        let x = Var::from_tensor(&values(&[4, 64, 257], 11)).unwrap();
        let g = values(&[4, 64, 257], 12);
        let w = values(&[257], 13);
        let b = values(&[257], 14);
        let pairs = [
            (softmax_last_dim(x.as_tensor()).unwrap(), candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap()),
            (gelu(x.as_tensor()).unwrap(), x.as_tensor().gelu_erf().unwrap()),
            (
                layer_norm(x.as_tensor(), &w, &b, 1e-12).unwrap(),
                candle_nn::ops::layer_norm_slow(x.as_tensor(), &w, &b, 1e-12).unwrap(),
            ),
        ];
        for (ours, theirs) in pairs {
            assert!(rel_diff(&ours, &theirs) < 1e-5, "{}", rel_diff(&ours, &theirs));
            let d = grad_diffs(ours, theirs, &g, &[&x])[0];
            assert!(d < 1e-4, "{d}");
        }
    }

    #[test]
    fn a_transposed_input_is_made_contiguous_first() {
        let x = values(&[4, 6], 2);
        let t = x.t().unwrap();
        let ours = softmax_last_dim(&t).unwrap();
        let theirs = candle_nn::ops::softmax(&t.contiguous().unwrap(), D::Minus1).unwrap();
        assert!(rel_diff(&ours, &theirs) < 1e-5);
    }

    #[test]
    fn fast_exp_and_erf_match_the_exact_ones() {
        let mut worst = (0.0f64, 0.0f64);
        for i in 0..=200_000 {
            // Against the exact function of the same f32 input.
            let x = (-87.0 + 175.0 * i as f64 / 200_000.0) as f32;
            let rel = (exp_f32(x) as f64 / (x as f64).exp() - 1.0).abs();
            worst.0 = worst.0.max(rel);
            let e = x / 20.0;
            worst.1 = worst.1.max((erf_f32(e) as f64 - erf_f64(e as f64)).abs());
        }
        assert!(worst.0 < 5e-7, "exp relative error {}", worst.0);
        assert!(worst.1 < 1e-6, "erf absolute error {}", worst.1);
        assert_eq!(exp_f32(-1e4), exp_f32(-87.0), "clamped, never NaN or negative");
        assert!(erf_f32(0.0).abs() < 1e-6);
        assert!((erf_f32(-10.0) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn attention_matches_candle_in_values_and_gradients() {
        // Ragged masks (padding at the end of some texts), two and three heads,
        // sizes above and below the threaded split.
        for (b, t, h, heads) in [(3, 5, 8, 2), (5, 17, 24, 3), (1, 4, 6, 3)] {
            let q = Var::from_tensor(&values(&[b, t, h], 21).affine(0.3, 0.0).unwrap()).unwrap();
            let k = Var::from_tensor(&values(&[b, t, h], 22).affine(0.3, 0.0).unwrap()).unwrap();
            let v = Var::from_tensor(&values(&[b, t, h], 23)).unwrap();
            let mask: Vec<f32> = (0..b * t).map(|i| if i % t >= t - (i / t) % 3 { -1e4 } else { 0.0 }).collect();
            let mask = Tensor::from_vec(mask, (b, 1, 1, t), &Device::Cpu).unwrap();
            let g = values(&[b, t, h], 24);
            let ours = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), &mask, heads).unwrap();
            let hd = h / heads;
            let split =
                |y: &Tensor| y.reshape((b, t, heads, hd)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
            let scores = (split(q.as_tensor()).matmul(&split(k.as_tensor()).t().unwrap()).unwrap()
                / (hd as f64).sqrt())
            .unwrap()
            .broadcast_add(&mask)
            .unwrap();
            let probs = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
            let theirs = probs
                .matmul(&split(v.as_tensor()))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((b, t, h))
                .unwrap();
            assert!(rel_diff(&ours, &theirs) < 1e-5, "{}", rel_diff(&ours, &theirs));
            for d in grad_diffs(ours, theirs, &g, &[&q, &k, &v]) {
                assert!(d < 1e-4, "({b}, {t}, {h}, {heads}): {d}");
            }
        }
    }

    #[test]
    fn attention_refuses_heads_that_do_not_divide_the_width() {
        let x = values(&[1, 3, 8], 1);
        let mask = Tensor::zeros((1, 1, 1, 3), DType::F32, &Device::Cpu).unwrap();
        let err = attention(&x, &x, &x, &mask, 3).unwrap_err().to_string();
        assert!(err.contains("does not split into 3 heads"), "{err}");
    }
}
