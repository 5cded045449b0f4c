//! Fused CPU ops with their own backward: the attention's softmax, the layer
//! norm and GELU, each one pass over memory forward and one or two backward,
//! where candle's differentiable versions chain a dozen primitive ops (and
//! candle's own fused ones have no backward). Other devices and dtypes take
//! the primitive path, so CUDA training is unchanged.

use candle_core::cpu::erf::erf_f64;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Tensor, bail};

/// CPU training and inference, natively and in the browser (where the fast
/// exp and erf below are what makes them pay: candle's primitive versions call
/// libm once per value, a third of the encoder's time in the worker).
fn fused(t: &Tensor) -> bool {
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
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Softmax of one row, in place, with [`exp_f32`] and sums in a fixed order
/// (the fused op and the int8 attention both call it).
pub fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter_mut().for_each(|v| *v = exp_f32(*v - max));
    let inv = 1.0 / row.iter().sum::<f32>();
    row.iter_mut().for_each(|v| *v *= inv);
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

/// Fills `out` by calling `f(offset, part)` on parts of whole rows of `row`
/// values: natively one part per core for large tensors (candle's own ops
/// are threaded too), in one part in the browser's single thread.
#[cfg_attr(target_arch = "wasm32", allow(unused_variables))]
fn for_parts(out: &mut [f32], row: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
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
fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
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
                softmax_in_place(yr);
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
                let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
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
        for_parts(&mut y, 1, |at, part| {
            for (o, &v) in part.iter_mut().zip(&x[at..]) {
                *o = 0.5 * v * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2));
            }
        });
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

/// Mean and 1 / standard deviation of one row (accumulated in f64).
fn moments(row: &[f32], eps: f64) -> (f32, f32) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
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
        for_parts(&mut y, n, |at, part| {
            for (xr, yr) in x[at..at + part.len()].chunks_exact(n).zip(part.chunks_exact_mut(n)) {
                let (mean, rstd) = moments(xr, self.eps);
                for i in 0..n {
                    yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
                }
            }
        });
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
        let (mut dx, mut dw, mut db) = (vec![0f32; xs.len()], vec![0f32; n], vec![0f32; n]);
        let mut xhat = vec![0f32; n];
        for ((xr, gr), dr) in xs.chunks_exact(n).zip(gs.chunks_exact(n)).zip(dx.chunks_exact_mut(n)) {
            let (mean, rstd) = moments(xr, self.eps);
            let (mut sum_d, mut sum_dx) = (0f32, 0f32);
            for i in 0..n {
                xhat[i] = (xr[i] - mean) * rstd;
                let d = gr[i] * ws[i];
                sum_d += d;
                sum_dx += d * xhat[i];
                dw[i] += gr[i] * xhat[i];
                db[i] += gr[i];
            }
            let (mean_d, mean_dx) = (sum_d / n as f32, sum_dx / n as f32);
            for i in 0..n {
                dr[i] = rstd * (gr[i] * ws[i] - mean_d - xhat[i] * mean_dx);
            }
        }
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, n, dev)?),
            Some(Tensor::from_vec(db, n, dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let m = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-6);
        d / m
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
            let go = (ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let gt = (theirs * &g).unwrap().sum_all().unwrap().backward().unwrap();
            assert!(rel_diff(go.get(&x).unwrap(), gt.get(&x).unwrap()) < 1e-4);
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
        let go = (ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let gt = (theirs * &g).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w, &b] {
            let d = rel_diff(go.get(v).unwrap(), gt.get(v).unwrap());
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
        let go = (ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let gt = (theirs * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let d = rel_diff(go.get(&x).unwrap(), gt.get(&x).unwrap());
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
            let go = (ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let gt = (theirs * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let d = rel_diff(go.get(&x).unwrap(), gt.get(&x).unwrap());
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
}
