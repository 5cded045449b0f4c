//! AdamW with its state in the open, so a checkpoint can save and restore it
//! (candle-nn's keeps its moments private), and the schedule and clipping
//! that fine-tuning uses.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor, Var};
use std::collections::HashMap;

/// AdamW over named variables (decoupled weight decay, bias-corrected moments).
pub struct AdamW {
    pub vars: Vec<(String, Var)>,
    pub m: HashMap<String, Tensor>,
    pub v: HashMap<String, Tensor>,
    pub t: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Per-parameter learning-rate factors (layer-wise decay); 1 when absent.
    pub lr_scale: HashMap<String, f64>,
}

impl AdamW {
    pub fn new(mut vars: Vec<(String, Var)>, weight_decay: f64) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut m = HashMap::new();
        let mut v = HashMap::new();
        for (name, var) in &vars {
            m.insert(name.clone(), var.as_tensor().zeros_like()?);
            v.insert(name.clone(), var.as_tensor().zeros_like()?);
        }
        Ok(Self { vars, m, v, t: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, lr_scale: HashMap::new() })
    }

    /// One update with learning rate `lr`; gradients are scaled by `grad_scale`
    /// (clipping). Norm scales and biases get no weight decay. On the CPU the
    /// moments and parameters are updated in place (three passes, nothing
    /// allocated); elsewhere with tensor ops.
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        for (name, var) in &self.vars {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let lr = lr * self.lr_scale.get(name).copied().unwrap_or(1.0);
            let decay = if name.ends_with(".bias") || name.contains("LayerNorm") { 0.0 } else { self.weight_decay };
            let (m, v) = (&self.m[name], &self.v[name]);
            if var.device().is_cpu() && var.dtype() == DType::F32 {
                let g = g.contiguous()?;
                m.inplace_op2(&g, &Moment { beta: self.beta1 as f32, scale: grad_scale as f32, square: false })?;
                v.inplace_op2(&g, &Moment { beta: self.beta2 as f32, scale: grad_scale as f32, square: true })?;
                let update = Update {
                    lr: lr as f32,
                    keep: (1.0 - lr * decay) as f32,
                    bc1: bc1 as f32,
                    sqrt_bc2: bc2.sqrt() as f32,
                    eps: self.eps as f32,
                };
                var.as_tensor().inplace_op3(m, v, &update)?;
                continue;
            }
            let g = (g * grad_scale)?;
            let m = ((m * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
            let v = ((v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + self.eps)?)?;
            let theta = ((var.as_tensor() * (1.0 - lr * decay))? - (update * lr)?)?;
            var.set(&theta)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }
}

/// The contiguous f32 values of a CPU tensor's storage, read-only.
fn values<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(d), Some((a, b))) => Ok(&d[a..b]),
        _ => candle_core::bail!("adamw: contiguous f32 tensors only"),
    }
}

/// The contiguous f32 values of a CPU tensor's storage, to update in place.
fn values_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(d), Some((a, b))) => Ok(&mut d[a..b]),
        _ => candle_core::bail!("adamw: contiguous f32 tensors only"),
    }
}

/// A moment in place: `m = beta m + (1 - beta) (scale g)`, or of `(scale g)^2`.
struct Moment {
    beta: f32,
    scale: f32,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let (m, g) = (values_mut(s1, l1)?, values(s2, l2)?);
        if m.len() != g.len() {
            candle_core::bail!("adamw: moment of {} values, gradient of {}", m.len(), g.len());
        }
        let (beta, rest, scale) = (self.beta, 1.0 - self.beta, self.scale);
        pricer::fused::for_parts(m, 1, |at, part| {
            let g = &g[at..at + part.len()];
            if self.square {
                part.iter_mut().zip(g).for_each(|(m, &g)| *m = beta * *m + rest * (scale * g) * (scale * g));
            } else {
                part.iter_mut().zip(g).for_each(|(m, &g)| *m = beta * *m + rest * (scale * g));
            }
        });
        Ok(())
    }
}

/// The parameter in place: `theta = keep theta - lr (m / bc1) / (sqrt(v / bc2) + eps)`.
#[derive(Clone, Copy)]
struct Update {
    lr: f32,
    keep: f32,
    bc1: f32,
    sqrt_bc2: f32,
    eps: f32,
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (theta, m, v) = (values_mut(s1, l1)?, values(s2, l2)?, values(s3, l3)?);
        if theta.len() != m.len() || theta.len() != v.len() {
            candle_core::bail!("adamw: {} parameters, moments of {} and {}", theta.len(), m.len(), v.len());
        }
        let Update { lr, keep, bc1, sqrt_bc2, eps } = *self;
        pricer::fused::for_parts(theta, 1, |at, part| {
            let (m, v) = (&m[at..at + part.len()], &v[at..at + part.len()]);
            for ((t, &m), &v) in part.iter_mut().zip(m).zip(v) {
                *t = keep * *t - lr * (m / bc1) / (v.sqrt() / sqrt_bc2 + eps);
            }
        });
        Ok(())
    }
}

/// Global L2 norm of the gradients of `vars`.
pub fn grad_norm(grads: &GradStore, vars: &[(String, Var)]) -> Result<f64> {
    let mut sq = 0.0;
    for (_, var) in vars {
        let Some(g) = grads.get(var.as_tensor()) else { continue };
        let (storage, layout) = g.storage_and_layout();
        // On the CPU, read in place rather than squaring into a new tensor.
        if let candle_core::Storage::Cpu(cpu) = &*storage
            && let Ok(v) = values(cpu, layout)
        {
            sq += v.chunks(1 << 16).map(|c| pricer::fused::dot_lanes(c, c) as f64).sum::<f64>();
            continue;
        }
        drop(storage);
        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(sq.sqrt())
}

/// Linear warm-up to `peak` over `warmup` steps, then linear decay to zero at `total`.
pub fn lr_at(step: usize, total: usize, warmup: usize, peak: f64) -> f64 {
    if step < warmup {
        peak * (step + 1) as f64 / warmup as f64
    } else {
        let rest = total.saturating_sub(warmup).max(1) as f64;
        peak * (1.0 - (step - warmup) as f64 / rest).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((lr_at(0, 100, 10, 1.0) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(55, 100, 10, 1.0) - 0.5).abs() < 1e-12);
        assert_eq!(lr_at(100, 100, 10, 1.0), 0.0);
    }

    #[test]
    fn adamw_minimises_a_quadratic_and_matches_the_first_step_by_hand() {
        let x = Var::new(&[3.0f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![("x".into(), x.clone())], 0.0).unwrap();
        let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap(), 0.1, 1.0).unwrap();
        // First Adam step moves each coordinate by lr * sign(gradient).
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!((v[0] - 2.9).abs() < 1e-5 && (v[1] + 1.9).abs() < 1e-5, "{v:?}");
        for _ in 0..300 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap(), 0.05, 1.0).unwrap();
        }
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|c| c.abs() < 0.05), "{v:?}");
    }

    #[test]
    fn in_place_steps_match_adamw_computed_by_hand() {
        // Large enough to be split across threads; weight decay and clipping on.
        let n = 40_000;
        let start: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let w = Var::new(start.as_slice(), &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), w.clone())], 0.01).unwrap();
        let (mut theta, mut m, mut v): (Vec<f64>, Vec<f64>, Vec<f64>) =
            (start.iter().map(|&x| x as f64).collect(), vec![0.0; n], vec![0.0; n]);
        let (lr, scale) = (0.01, 0.5);
        for step in 1..=3 {
            // loss = sum(w^3) / 3: gradient w^2, different at every step.
            let loss = (w.as_tensor().powf(3.0).unwrap().sum_all().unwrap() / 3.0).unwrap();
            opt.step(&loss.backward().unwrap(), lr, scale).unwrap();
            let (bc1, bc2) = (1.0 - 0.9f64.powi(step), 1.0 - 0.999f64.powi(step));
            for i in 0..n {
                let g = theta[i] * theta[i] * scale;
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                theta[i] = theta[i] * (1.0 - lr * 0.01) - lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + 1e-8);
            }
        }
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        let worst = got.iter().zip(&theta).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-5, "largest difference {worst}");
        let moment = opt.m["w"].to_vec1::<f32>().unwrap();
        assert!((moment[7] as f64 - m[7]).abs() < 1e-5 * m[7].abs().max(1.0));
    }

    #[test]
    fn the_gradient_norm_is_the_l2_norm_of_every_gradient() {
        let a = Var::new(&[3.0f32, -4.0], &Device::Cpu).unwrap();
        let b = Var::new(&[[1.0f32, 2.0], [0.5, -1.0]], &Device::Cpu).unwrap();
        // loss = sum(a^2) / 2 + sum(b^T * c): gradients a and c^T (a transposed view).
        let c = Tensor::new(&[[2.0f32, 0.0], [1.0, -2.0]], &Device::Cpu).unwrap();
        let loss = ((a.as_tensor().sqr().unwrap().sum_all().unwrap() / 2.0).unwrap()
            + b.as_tensor().t().unwrap().mul(&c).unwrap().sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        let vars = vec![("a".to_string(), a), ("b".to_string(), b)];
        let want = (9.0f64 + 16.0 + 4.0 + 1.0 + 4.0).sqrt();
        assert!((grad_norm(&grads, &vars).unwrap() - want).abs() < 1e-6);
    }
}
