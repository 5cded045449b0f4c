//! Tensors: a BERT encoder and price head in candle's style, trainable end
//! to end (primitive ops only, so every weight receives a gradient) and
//! loadable from a Hugging Face folder (training) or a model file (use).
//!
//! Tensor names mirror the Hugging Face checkpoint (`embeddings.*`,
//! `encoder.layer.N.*`); the head adds `head.*`.

use candle_core::{D, DType, Device, Result, Tensor};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The encoder's shape, as in a Hugging Face `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "tenth")]
    pub hidden_dropout_prob: f64,
}

fn two() -> usize {
    2
}
fn eps() -> f64 {
    1e-12
}
fn tenth() -> f64 {
    0.1
}

impl Config {
    /// A 2-layer, 32-wide encoder for tests.
    pub fn tiny(vocab_size: usize) -> Config {
        Config {
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 64,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.1,
        }
    }
}

/// Where weights come from: trainable variables, or a model file (whose
/// quantized tensors are dequantized at load: in the browser f32 matmuls ran
/// twice as fast as Q8_0 ones, and activations keep full precision).
pub trait Weights {
    /// A dense tensor of the given shape.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor>;

    /// Whether the matrix `name` is stored as 8-bit values, so inference may
    /// multiply in int8 ([`crate::int8`]) at no further loss of its weights.
    fn is_8bit(&self, _name: &str) -> bool {
        false
    }

    /// Whether a tensor `name` is there (optional tensors, such as a
    /// linear layer's input smoothing).
    fn has(&self, _name: &str) -> bool {
        false
    }
}

impl Weights for candle_nn::VarBuilder<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        candle_nn::VarBuilder::get(self, shape, name)
    }
}

/// `y = x W^T + b`.
#[derive(Debug, Clone)]
pub enum Linear {
    /// f32 weights (training, and files stored in f16 or f32).
    Dense { weight: Tensor, bias: Tensor },
    /// Inference from a file of 8-bit weights, in int8 (no f32 copy kept).
    Int8(std::sync::Arc<crate::int8::Int8Linear>),
}

impl Linear {
    pub fn load(w: &dyn Weights, name: &str, d_in: usize, d_out: usize) -> Result<Self> {
        let wname = format!("{name}.weight");
        let weight = w.get(&wname, &[d_out, d_in])?;
        let bias = w.get(&format!("{name}.bias"), &[d_out])?;
        if !w.is_8bit(&wname) {
            return Ok(Linear::Dense { weight, bias });
        }
        let flat = weight.flatten_all()?.to_vec1::<f32>()?;
        // Calibrated at export for the int8 kernels only: f32 compute of the
        // same weights has no use for it (it changes nothing in exact arithmetic).
        let sname = smoothing_name(name);
        let smooth = if w.has(&sname) { Some(w.get(&sname, &[d_in])?.to_vec1::<f32>()?) } else { None };
        if let Some(s) = &smooth
            && let Some(bad) = s.iter().find(|v| !(v.is_finite() && **v > 0.0))
        {
            candle_core::bail!("model file: {sname} holds {bad}, smoothing factors must be positive and finite");
        }
        let bias = bias.to_vec1::<f32>()?;
        Ok(Linear::Int8(std::sync::Arc::new(crate::int8::Int8Linear::with_smoothing(
            &flat,
            bias,
            d_out,
            d_in,
            smooth.as_deref(),
        ))))
    }

    /// [`Linear::forward`] on `rows` rows of plain values.
    fn forward_rows(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        match self {
            Linear::Int8(q) => Ok(q.forward(x, rows)),
            Linear::Dense { .. } => {
                let x = Tensor::from_slice(x, (rows, x.len() / rows.max(1)), &Device::Cpu)?;
                self.forward(&x)?.flatten_all()?.to_vec1::<f32>()
            }
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Fold leading dims so one 2-D product does the work.
        let mut dims = x.dims().to_vec();
        let d_in = dims[dims.len() - 1];
        let rows = x.elem_count() / d_in;
        match self {
            Linear::Int8(q) => {
                let y = q.forward(&x.flatten_all()?.to_vec1::<f32>()?, rows);
                *dims.last_mut().expect("non-empty dims") = q.out_features();
                Tensor::from_vec(y, dims, x.device())
            }
            Linear::Dense { weight, bias } => {
                let y = x.reshape((rows, d_in))?.matmul(&weight.t()?)?;
                *dims.last_mut().expect("non-empty dims") = weight.dim(0)?;
                y.reshape(dims)?.broadcast_add(bias)
            }
        }
    }
}

/// The optional tensor of a linear layer's per-input-channel smoothing
/// factors (see [`crate::int8::Int8Linear::with_smoothing`]).
pub fn smoothing_name(linear: &str) -> String {
    format!("{linear}{SMOOTHING_SUFFIX}")
}

/// How the names of smoothing tensors end.
pub const SMOOTHING_SUFFIX: &str = ".input_smoothing";

/// Layer normalisation (fused on CPU, with its own backward: `fused.rs`).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(w: &dyn Weights, name: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.get(&format!("{name}.weight"), &[size])?,
            bias: w.get(&format!("{name}.bias"), &[size])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::fused::layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    /// The weight and bias as plain values.
    fn plain(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((self.weight.to_vec1::<f32>()?, self.bias.to_vec1::<f32>()?))
    }
}

/// Seeded dropout: the same seed gives the same masks, so CPU training is
/// reproducible and a resumed run can re-derive its randomness.
pub struct Dropout {
    pub p: f32,
    rng: rand_chacha::ChaCha8Rng,
}

impl Dropout {
    pub fn new(p: f32, seed: u64) -> Self {
        use rand::SeedableRng;
        Self { p, rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed) }
    }

    pub fn apply(&mut self, x: &Tensor) -> Result<Tensor> {
        match self.mask(x.elem_count()) {
            None => Ok(x.clone()),
            Some(mask) => x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?),
        }
    }

    /// The next `n` mask values (0, or 1 / (1 - p) for kept values); `None`
    /// when nothing is dropped.
    pub fn mask(&mut self, n: usize) -> Option<Vec<f32>> {
        if self.p <= 0.0 {
            return None;
        }
        let threshold = (self.p as f64 * u32::MAX as f64) as u32;
        let scale = 1.0 / (1.0 - self.p);
        Some((0..n).map(|_| if self.rng.next_u32() >= threshold { scale } else { 0.0 }).collect())
    }
}

fn drop(x: Tensor, dropout: &mut Option<&mut Dropout>) -> Result<Tensor> {
    match dropout {
        Some(d) => d.apply(&x),
        None => Ok(x),
    }
}

struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

impl Embeddings {
    fn load(w: &dyn Weights, cfg: &Config) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            word: w.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?,
            position: w.get("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, h])?,
            token_type: w.get("embeddings.token_type_embeddings.weight", &[cfg.type_vocab_size, h])?,
            norm: LayerNorm::load(w, "embeddings.LayerNorm", h, cfg.layer_norm_eps)?,
        })
    }

    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let h = self.word.dim(1)?;
        let words = self.word.embedding(&ids.flatten_all()?)?.reshape((b, t, h))?;
        let pos = self.position.narrow(0, 0, t)?;
        // Single-segment input: every token has type 0.
        let typ = self.token_type.narrow(0, 0, 1)?;
        let x = words.broadcast_add(&pos.broadcast_add(&typ)?.unsqueeze(0)?)?;
        self.norm.forward(&x)
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    heads: usize,
    /// `encoder.layer.{i}`: where its tensors are in the file.
    prefix: String,
}

impl Layer {
    fn load(w: &dyn Weights, cfg: &Config, i: usize) -> Result<Self> {
        let (h, f, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let p = format!("encoder.layer.{i}");
        Ok(Self {
            query: Linear::load(w, &format!("{p}.attention.self.query"), h, h)?,
            key: Linear::load(w, &format!("{p}.attention.self.key"), h, h)?,
            value: Linear::load(w, &format!("{p}.attention.self.value"), h, h)?,
            attn_out: Linear::load(w, &format!("{p}.attention.output.dense"), h, h)?,
            attn_norm: LayerNorm::load(w, &format!("{p}.attention.output.LayerNorm"), h, eps)?,
            intermediate: Linear::load(w, &format!("{p}.intermediate.dense"), h, f)?,
            output: Linear::load(w, &format!("{p}.output.dense"), f, h)?,
            out_norm: LayerNorm::load(w, &format!("{p}.output.LayerNorm"), h, eps)?,
            heads: cfg.num_attention_heads,
            prefix: p,
        })
    }

    /// The layer's output as [`Layer::forward`] computes it without dropout,
    /// and each linear layer's input `[rows, d_in]` by name (query, key and
    /// value share one).
    fn forward_observed(&self, x: &Tensor, mask_bias: &Tensor) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let p = &self.prefix;
        let rows = |x: &Tensor| x.reshape(((), x.dim(D::Minus1)?));
        let mut seen = Vec::new();
        for n in ["query", "key", "value"] {
            seen.push((format!("{p}.attention.self.{n}"), rows(x)?));
        }
        let (q, k, v) = (self.query.forward(x)?, self.key.forward(x)?, self.value.forward(x)?);
        let ctx = crate::fused::attention(&q, &k, &v, mask_bias, self.heads)?;
        seen.push((format!("{p}.attention.output.dense"), rows(&ctx)?));
        let a = self.attn_out.forward(&ctx)?;
        let x = self.attn_norm.forward(&(a + x)?)?;
        seen.push((format!("{p}.intermediate.dense"), rows(&x)?));
        let f = crate::fused::gelu(&self.intermediate.forward(&x)?)?;
        seen.push((format!("{p}.output.dense"), rows(&f)?));
        let f = self.output.forward(&f)?;
        Ok((self.out_norm.forward(&(f + x)?)?, seen))
    }

    /// `mask_bias`: `[b, 1, 1, t]`, 0 for tokens and a large negative for padding.
    fn forward(&self, x: &Tensor, mask_bias: &Tensor, dropout: &mut Option<&mut Dropout>) -> Result<Tensor> {
        if dropout.is_none() && self.int8_qkv().is_some() {
            let (b, t, _) = x.dims3()?;
            let flat = |y: &Tensor| -> Result<Vec<f32>> { y.flatten_all()?.to_vec1::<f32>() };
            let mut rows = Rows8::default();
            self.forward_8bit(&flat(x)?, (b, t), &flat(mask_bias)?, &mut rows)?;
            return Tensor::from_vec(rows.out, x.shape(), x.device());
        }
        if let Some(params) = self.dense_params().filter(|_| crate::fused::fused(x)) {
            let n = x.elem_count();
            // Drawn in the order the primitive path below draws them.
            let masks = match dropout {
                Some(d) => [d.mask(n), d.mask(n)],
                None => [None, None],
            };
            let eps = self.attn_norm.eps;
            return crate::fused_layer::layer(x, params, mask_bias, self.heads, eps, masks);
        }
        let (q, k, v) = (self.query.forward(x)?, self.key.forward(x)?, self.value.forward(x)?);
        let ctx = crate::fused::attention(&q, &k, &v, mask_bias, self.heads)?;
        let a = drop(self.attn_out.forward(&ctx)?, dropout)?;
        let x = self.attn_norm.forward(&(a + x)?)?;
        let f = crate::fused::gelu(&self.intermediate.forward(&x)?)?;
        let f = drop(self.output.forward(&f)?, dropout)?;
        self.out_norm.forward(&(f + x)?)
    }
}

impl Layer {
    /// The parameters in [`crate::fused_layer::PARAMS`] order, when every
    /// projection is dense.
    fn dense_params(&self) -> Option<[&Tensor; 16]> {
        fn d(l: &Linear) -> Option<(&Tensor, &Tensor)> {
            match l {
                Linear::Dense { weight, bias } => Some((weight, bias)),
                Linear::Int8(_) => None,
            }
        }
        let (q, k, v, o) = (d(&self.query)?, d(&self.key)?, d(&self.value)?, d(&self.attn_out)?);
        let (i, out) = (d(&self.intermediate)?, d(&self.output)?);
        let (n1, n2) = (&self.attn_norm, &self.out_norm);
        Some([
            q.0, q.1, k.0, k.1, v.0, v.1, o.0, o.1, &n1.weight, &n1.bias, i.0, i.1, out.0, out.1, &n2.weight, &n2.bias,
        ])
    }

    /// The query, key and value projections, when they are int8: the
    /// layer then runs on [`Layer::forward_8bit`].
    fn int8_qkv(&self) -> Option<[&crate::int8::Int8Linear; 3]> {
        match (&self.query, &self.key, &self.value) {
            (Linear::Int8(q), Linear::Int8(k), Linear::Int8(v)) => Some([&**q, &**k, &**v]),
            _ => None,
        }
    }

    /// Inference from 8-bit weights on rows of plain values (`b * t` rows
    /// of the hidden size, `mask_bias` one per token): int8 projections and
    /// an attention whose sums run in a fixed order, the same bits natively
    /// and in the browser, with the layer norms' and GELU's arithmetic of
    /// [`crate::fused`]. Two passes over parts of [`PART_ROWS`] rows (the
    /// projections before the attention, everything after it), each part
    /// from its input rows to its output rows while they are in cache;
    /// natively the parts go to rayon's pool, so a layer waits for its
    /// threads three times (the attention's heads between the passes).
    /// The output rows go to `rows8.out`.
    fn forward_8bit(&self, xs: &[f32], (b, t): (usize, usize), mask_bias: &[f32], rows8: &mut Rows8) -> Result<()> {
        let Some([q, k, v]) = self.int8_qkv() else {
            candle_core::bail!("forward_8bit needs int8 query, key and value projections")
        };
        let rows = b * t;
        let hidden = xs.len() / rows.max(1);
        if [q, k, v].iter().any(|l| l.out_features() != hidden) {
            candle_core::bail!("forward_8bit needs query, key and value projections to the hidden size {hidden}")
        }
        let part = PART_ROWS * hidden;
        // Every value of these is written below before it is read.
        let Rows8 { q: qs, k: ks, v: vs, out } = rows8;
        for buf in [&mut *qs, &mut *ks, &mut *vs, &mut *out] {
            buf.resize(xs.len(), 0.0);
        }
        let parts = qs.chunks_mut(part).zip(ks.chunks_mut(part)).zip(vs.chunks_mut(part)).zip(xs.chunks(part));
        each_part(parts.collect(), |(((qp, kp), vp), x)| {
            let n = x.len() / hidden;
            // One quantized copy of the input feeds all three projections when
            // they take it the same way (export smooths them alike).
            let xq = q.quantize(x, n);
            q.forward_into(&xq, qp);
            for (l, out) in [(k, kp), (v, vp)] {
                if l.takes_inputs_as(q) { l.forward_into(&xq, out) } else { l.forward_into(&l.quantize(x, n), out) }
            }
            Ok(())
        })?;
        let ctx = crate::int8::attention_heads(qs, ks, vs, mask_bias, b, t, self.heads);
        let (n1, n2) = (self.attn_norm.plain()?, self.out_norm.plain()?);
        each_part(out.chunks_mut(part).zip(xs.chunks(part)).enumerate().collect(), |(i, (y, x))| {
            let n = x.len() / hidden;
            // This part's rows of the attention's output, gathered here
            // rather than all of them on the calling thread.
            let c = ctx.rows(i * PART_ROWS, n);
            let mut a = self.attn_out.forward_rows(&c, n)?;
            a.iter_mut().zip(x).for_each(|(a, x)| *a += x);
            let mut x = vec![0f32; a.len()];
            crate::fused::layer_norm_into(&a, &n1.0, &n1.1, self.attn_norm.eps, &mut x);
            let mut f = self.intermediate.forward_rows(&x, n)?;
            crate::fused::gelu_in_place(&mut f);
            let mut o = self.output.forward_rows(&f, n)?;
            o.iter_mut().zip(&x).for_each(|(o, x)| *o += x);
            crate::fused::layer_norm_into(&o, &n2.0, &n2.1, self.out_norm.eps, y);
            Ok(())
        })
    }
}

/// The row buffers of [`Layer::forward_8bit`] (each `b * t` rows of the
/// hidden size), kept from layer to layer of one pass: zeroing fresh ones
/// for each layer took ~2% of a product's time, on the calling thread
/// while the pool's threads waited.
#[derive(Default)]
struct Rows8 {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// The layer's output rows.
    out: Vec<f32>,
}

/// Rows per part of [`Layer::forward_8bit`]'s passes: the int8 kernels'
/// block of rows (each weight panel loaded once per part).
const PART_ROWS: usize = 16;

/// `f` on each part, on the pool's threads where there are some
/// ([`super::on_threads`]). Each row is computed alone, so the split
/// changes no bit.
fn each_part<T: Send>(parts: Vec<T>, f: impl Fn(T) -> Result<()> + Sync + Send) -> Result<()> {
    super::on_threads(parts, f).into_iter().collect()
}

/// The BERT encoder: token ids and mask to one vector per text (mean pooling).
pub struct Encoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pub config: Config,
}

impl Encoder {
    pub fn load(w: &dyn Weights, cfg: &Config) -> Result<Self> {
        Ok(Self {
            embeddings: Embeddings::load(w, cfg)?,
            layers: (0..cfg.num_hidden_layers).map(|i| Layer::load(w, cfg, i)).collect::<Result<_>>()?,
            config: cfg.clone(),
        })
    }

    /// Hidden states `[b, t, hidden]` for ids and mask `[b, t]` (u32).
    pub fn hidden(&self, ids: &Tensor, mask: &Tensor, mut dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if dropout.is_none()
            && let Some(xs) = self.hidden_8bit(ids, mask)?
        {
            return Tensor::from_vec(xs, (b, t, self.config.hidden_size), ids.device());
        }
        if t > self.config.max_position_embeddings {
            candle_core::bail!("{t} tokens exceed the model's {} positions", self.config.max_position_embeddings);
        }
        let mask_bias = mask_bias(mask)?;
        let mut x = drop(self.embeddings.forward(ids)?, &mut dropout)?;
        for layer in &self.layers {
            super::check_stop()?;
            x = layer.forward(&x, &mask_bias, &mut dropout)?;
        }
        Ok(x)
    }

    /// For one text's token ids `[1, t]` (no padding), each linear layer's
    /// input channels' largest magnitude over the tokens, by layer name:
    /// what export calibrates the int8 kernels' input smoothing on.
    pub fn linear_input_peaks(&self, ids: &Tensor) -> Result<Vec<(String, Vec<f32>)>> {
        let (b, t) = ids.dims2()?;
        if b != 1 {
            candle_core::bail!("linear_input_peaks takes one text at a time, not {b}");
        }
        let mask_bias = Tensor::zeros((1, 1, 1, t), DType::F32, ids.device())?;
        let mut x = self.embeddings.forward(ids)?;
        let mut peaks = Vec::new();
        for layer in &self.layers {
            let (next, seen) = layer.forward_observed(&x, &mask_bias)?;
            for (name, inputs) in seen {
                peaks.push((name, inputs.abs()?.max(0)?.to_vec1::<f32>()?));
            }
            x = next;
        }
        Ok(peaks)
    }

    /// Mean of the hidden states over real (unmasked) tokens: `[b, hidden]`.
    pub fn pooled(&self, ids: &Tensor, mask: &Tensor, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        if dropout.is_none()
            && let Some(xs) = self.hidden_8bit(ids, mask)?
        {
            let (b, t) = ids.dims2()?;
            let pooled = mean_pool_rows(&xs, (b, t, self.config.hidden_size), &mask.to_dtype(DType::F32)?.to_vec2()?);
            return Tensor::from_vec(pooled, (b, self.config.hidden_size), ids.device());
        }
        let x = self.hidden(ids, mask, dropout)?;
        mean_pool(&x, mask)
    }

    /// The last layer's rows (`b * t` of the hidden size) from 8-bit
    /// weights, plain rows from layer to layer with no tensors between;
    /// `None` when some layer has no 8-bit weights.
    fn hidden_8bit(&self, ids: &Tensor, mask: &Tensor) -> Result<Option<Vec<f32>>> {
        if !self.layers.iter().all(|l| l.int8_qkv().is_some()) {
            return Ok(None);
        }
        let (b, t) = ids.dims2()?;
        if t > self.config.max_position_embeddings {
            candle_core::bail!("{t} tokens exceed the model's {} positions", self.config.max_position_embeddings);
        }
        let mut xs = self.embeddings.forward(ids)?.flatten_all()?.to_vec1::<f32>()?;
        let mb = mask_bias(mask)?.flatten_all()?.to_vec1::<f32>()?;
        let mut rows = Rows8::default();
        for layer in &self.layers {
            super::check_stop()?;
            layer.forward_8bit(&xs, (b, t), &mb, &mut rows)?;
            // The output is the next layer's input; the input's buffer its output.
            std::mem::swap(&mut xs, &mut rows.out);
        }
        Ok(Some(xs))
    }
}

/// What the attention adds to each key's score: 0 for a token, -10,000
/// for padding (mask 0), shaped `[b, 1, 1, t]` to broadcast over heads and queries.
fn mask_bias(mask: &Tensor) -> Result<Tensor> {
    let (b, t) = mask.dims2()?;
    ((mask.to_dtype(DType::F32)? - 1.0)? * 1e4)?.reshape((b, 1, 1, t))
}

/// [`mean_pool`] of plain rows (`b * t` rows of `h` values, `mask` one row
/// of `t` per text) in the same operations in the same order (each sum
/// from 0 in token order, as candle's reduction runs): the same bits, where
/// candle's sum over the middle dimension cost 1% of a product's time in
/// index arithmetic, on one thread while the others waited.
pub fn mean_pool_rows(x: &[f32], (b, t, h): (usize, usize, usize), mask: &[Vec<f32>]) -> Vec<f32> {
    let mut out = vec![0f32; b * h];
    for ((sum, rows), m) in out.chunks_exact_mut(h).zip(x.chunks_exact(t * h)).zip(mask) {
        let mut count = 0f32;
        for (row, &w) in rows.chunks_exact(h).zip(m) {
            count += w;
            sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v * w);
        }
        // candle's clamp to [1e-9, f64::MAX]: a maximum, then a minimum with infinity.
        let lo = 1e-9f64 as f32;
        let count = if count < lo { lo } else { count };
        sum.iter_mut().for_each(|s| *s /= count);
    }
    out
}

/// Mean over the tokens whose mask is 1.
pub fn mean_pool(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(x.dtype())?.unsqueeze(2)?;
    let sum = x.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    sum.broadcast_div(&count)
}

/// Quantile levels of the head's range outputs.
pub const QUANTILES: [f64; 3] = [0.1, 0.5, 0.9];
/// Head outputs: the point estimate, then one per quantile.
pub const HEAD_OUTPUTS: usize = 1 + QUANTILES.len();

/// The price head: pooled vector to standardized log price and its quantiles.
pub struct Head {
    dense: Linear,
    out: Linear,
}

impl Head {
    pub fn load(w: &dyn Weights, hidden: usize) -> Result<Self> {
        Ok(Self {
            dense: Linear::load(w, "head.dense", hidden, hidden)?,
            out: Linear::load(w, "head.out", hidden, HEAD_OUTPUTS)?,
        })
    }

    /// `[b, hidden]` to `[b, HEAD_OUTPUTS]`.
    pub fn forward(&self, pooled: &Tensor, mut dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let x = drop(pooled.clone(), &mut dropout)?;
        let x = crate::fused::gelu(&self.dense.forward(&x)?)?;
        self.out.forward(&x)
    }
}

/// Encoder and head: what `--kind minilm` trains and exports.
pub struct PriceModel {
    pub encoder: Encoder,
    pub head: Head,
}

impl PriceModel {
    pub fn load(w: &dyn Weights, cfg: &Config) -> Result<Self> {
        Ok(Self { encoder: Encoder::load(w, cfg)?, head: Head::load(w, cfg.hidden_size)? })
    }

    pub fn forward(&self, ids: &Tensor, mask: &Tensor, mut dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let pooled = self.encoder.pooled(ids, mask, dropout.as_deref_mut())?;
        self.head.forward(&pooled, dropout)
    }
}

/// Token ids and masks of several texts as `[b, t]` tensors, padded to the longest.
pub fn batch_tensors(rows: &[crate::tokenizer::Tokens], pad_id: u32, device: &Device) -> Result<(Tensor, Tensor)> {
    let t = rows.iter().map(|r| r.ids.len()).max().unwrap_or(1).max(1);
    let mut ids = Vec::with_capacity(rows.len() * t);
    let mut mask = Vec::with_capacity(rows.len() * t);
    for r in rows {
        ids.extend(&r.ids);
        mask.extend(&r.mask);
        ids.extend(std::iter::repeat_n(pad_id, t - r.ids.len()));
        mask.extend(std::iter::repeat_n(0u32, t - r.ids.len()));
    }
    Ok((Tensor::from_vec(ids, (rows.len(), t), device)?, Tensor::from_vec(mask, (rows.len(), t), device)?))
}

/// Trainable weights: pretrained tensors where given, seeded random
/// initialisation elsewhere (the new head), all registered in a `VarMap`.
pub struct TrainableWeights<'a> {
    pub varmap: &'a candle_nn::VarMap,
    pretrained: std::collections::HashMap<String, Tensor>,
    rng: std::sync::Mutex<rand_chacha::ChaCha8Rng>,
    device: Device,
}

impl<'a> TrainableWeights<'a> {
    pub fn new(
        varmap: &'a candle_nn::VarMap,
        pretrained: std::collections::HashMap<String, Tensor>,
        seed: u64,
        device: &Device,
    ) -> Self {
        use rand::SeedableRng;
        Self {
            varmap,
            pretrained,
            rng: std::sync::Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(seed)),
            device: device.clone(),
        }
    }

    /// BERT's initialisation: normal(0, 0.02) for matrices, ones for norm
    /// scales, zeros for biases.
    fn init(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if name.ends_with(".bias") {
            return Tensor::zeros(shape, DType::F32, &self.device);
        }
        if name.contains("LayerNorm") {
            return Tensor::ones(shape, DType::F32, &self.device);
        }
        let mut rng = self.rng.lock().map_err(|_| candle_core::Error::Msg("rng lock poisoned".into()))?;
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            // Box-Muller: two uniforms to two normals.
            let u1 = ((rng.next_u32() as f64) + 1.0) / (u32::MAX as f64 + 2.0);
            let u2 = (rng.next_u32() as f64) / (u32::MAX as f64 + 1.0);
            let r = (-2.0 * u1.ln()).sqrt() * 0.02;
            v.push((r * (std::f64::consts::TAU * u2).cos()) as f32);
            v.push((r * (std::f64::consts::TAU * u2).sin()) as f32);
        }
        v.truncate(n);
        Tensor::from_vec(v, shape, &self.device)
    }
}

impl Weights for TrainableWeights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let mut data = self.varmap.data().lock().map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
        if let Some(v) = data.get(name) {
            return Ok(v.as_tensor().clone());
        }
        let t = match self.pretrained.get(name) {
            Some(t) if t.dims() == shape => t.to_dtype(DType::F32)?.to_device(&self.device)?,
            Some(t) => candle_core::bail!("{name}: expected shape {shape:?}, the checkpoint has {:?}", t.dims()),
            None => self.init(name, shape)?,
        };
        let var = candle_core::Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn tiny() -> (candle_nn::VarMap, PriceModel, Config) {
        let cfg = Config::tiny(50);
        let varmap = candle_nn::VarMap::new();
        let w = TrainableWeights::new(&varmap, HashMap::new(), 7, &Device::Cpu);
        let model = PriceModel::load(&w, &cfg).unwrap();
        (varmap, model, cfg)
    }

    fn inputs() -> (Tensor, Tensor) {
        let ids = Tensor::new(&[[2u32, 7, 9, 11, 3, 0], [2, 5, 3, 0, 0, 0]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], &Device::Cpu).unwrap();
        (ids, mask)
    }

    #[test]
    fn plain_mean_pooling_gives_candles_bits() {
        let (b, t, h) = (3, 7, 20);
        let mut seed = 7u32;
        let x: Vec<f32> = (0..b * t * h)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1 << 24) as f32 * 20.0 - 10.0
            })
            .collect();
        // A full text, a padded one and one with no tokens at all.
        let mask = Tensor::new(&[[1u32; 7], [1, 1, 1, 0, 0, 0, 0], [0; 7]], &Device::Cpu).unwrap();
        let candle = mean_pool(&Tensor::from_vec(x.clone(), (b, t, h), &Device::Cpu).unwrap(), &mask).unwrap();
        let plain = mean_pool_rows(&x, (b, t, h), &mask.to_dtype(DType::F32).unwrap().to_vec2().unwrap());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&plain), bits(&candle.flatten_all().unwrap().to_vec1::<f32>().unwrap()));
        assert!(plain[2 * h..].iter().all(|&v| v == 0.0), "a text with no tokens pools to zeros");
    }

    #[test]
    fn forward_matches_candle_transformers_bert() {
        let (varmap, model, cfg) = tiny();
        // Perturb norms and biases away from their initial ones/zeros so the comparison covers them.
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if !name.contains("word_embeddings") {
                let t = var.as_tensor();
                let noise = (Tensor::randn(0f32, 0.1, t.shape(), &Device::Cpu).unwrap() + t).unwrap();
                var.set(&noise).unwrap();
            }
        }
        let tensors: HashMap<String, Tensor> =
            varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap())).collect();
        let reference_cfg: candle_transformers::models::bert::Config = serde_json::from_value(serde_json::json!({
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads, "intermediate_size": cfg.intermediate_size,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "max_position_embeddings": cfg.max_position_embeddings,
            "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0
        }))
        .unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let reference = candle_transformers::models::bert::BertModel::load(vb, &reference_cfg).unwrap();
        let (ids, mask) = inputs();
        let want = reference.forward(&ids, &ids.zeros_like().unwrap(), Some(&mask)).unwrap();
        let got = model.encoder.hidden(&ids, &mask, None).unwrap();
        // Compare real tokens only: padding positions carry no meaning.
        let m = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().broadcast_mul(&m).unwrap();
        let max = diff.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(max < 1e-4, "max abs difference {max}");
    }

    /// A tiny model's weights as a file of 8-bit matrices would give them,
    /// with optional smoothing tensors.
    struct Eight(HashMap<String, Tensor>);

    impl Weights for Eight {
        fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
            let t = self.0.get(name).ok_or_else(|| candle_core::Error::Msg(format!("missing {name}")))?;
            t.reshape(shape)
        }
        fn is_8bit(&self, name: &str) -> bool {
            name.starts_with("encoder.") && name.ends_with(".weight") && !name.contains("LayerNorm")
        }
        fn has(&self, name: &str) -> bool {
            self.0.contains_key(name)
        }
    }

    #[test]
    fn linear_input_peaks_and_smoothing_factors_in_a_file() {
        let (varmap, model, cfg) = tiny();
        let ids = Tensor::new(&[[2u32, 7, 9, 11, 3]], &Device::Cpu).unwrap();
        let peaks = model.encoder.linear_input_peaks(&ids).unwrap();
        assert_eq!(peaks.len(), 6 * cfg.num_hidden_layers, "query, key, value, attention output, intermediate, output");
        let get = |n: &str| &peaks.iter().find(|(name, _)| name == n).unwrap_or_else(|| panic!("no {n}")).1;
        assert_eq!(get("encoder.layer.1.attention.self.query"), get("encoder.layer.1.attention.self.value"));
        assert_eq!(get("encoder.layer.0.output.dense").len(), cfg.intermediate_size);
        // The first layer's query input is the embeddings' output: its peak per channel.
        let emb = model.encoder.embeddings.forward(&ids).unwrap().squeeze(0).unwrap();
        let want = emb.abs().unwrap().max(0).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(get("encoder.layer.0.attention.self.query"), &want);
        assert!(peaks.iter().all(|(_, v)| v.iter().all(|x| x.is_finite() && *x >= 0.0)));

        let tensors: HashMap<String, Tensor> =
            varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap())).collect();
        let mask = Tensor::ones((1, 5), DType::U32, &Device::Cpu).unwrap();
        let pooled = |w: &Eight| -> Result<Vec<f32>> {
            let m = PriceModel::load(w, &cfg)?;
            m.encoder.pooled(&ids, &mask, None)?.flatten_all()?.to_vec1::<f32>()
        };
        let plain = pooled(&Eight(tensors.clone())).unwrap();
        // Factors of one: the same bits as no smoothing.
        let mut ones = tensors.clone();
        for (name, v) in &peaks {
            ones.insert(smoothing_name(name), Tensor::ones(v.len(), DType::F32, &Device::Cpu).unwrap());
        }
        assert_eq!(pooled(&Eight(ones.clone())).unwrap(), plain);
        // Calibrated factors: a different product in int8, the same in exact arithmetic.
        let mut calibrated = tensors.clone();
        for (name, v) in &peaks {
            let s: Vec<f32> = v.iter().map(|x| x.max(1e-3).sqrt()).collect();
            calibrated.insert(smoothing_name(name), Tensor::new(s, &Device::Cpu).unwrap());
        }
        let got = pooled(&Eight(calibrated)).unwrap();
        assert_ne!(got, plain);
        let dense = model.encoder.pooled(&ids, &mask, None).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gap = |a: &[f32]| a.iter().zip(&dense).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(gap(&got) < 0.1 && gap(&plain) < 0.1, "smoothed {} plain {}", gap(&got), gap(&plain));
        // A factor that is not positive and finite is a clear error naming the tensor.
        for bad in [0.0, f32::NAN, -1.0] {
            let mut b = ones.clone();
            let name = smoothing_name("encoder.layer.0.intermediate.dense");
            let mut v = vec![1f32; cfg.hidden_size];
            v[3] = bad;
            b.insert(name.clone(), Tensor::new(v, &Device::Cpu).unwrap());
            let err = pooled(&Eight(b)).unwrap_err().to_string();
            assert!(err.contains(&name) && err.contains("positive and finite"), "{err}");
        }
    }

    #[test]
    fn every_parameter_receives_a_gradient() {
        let (varmap, model, _) = tiny();
        let (ids, mask) = inputs();
        let mut dropout = Dropout::new(0.1, 1);
        let out = model.forward(&ids, &mask, Some(&mut dropout)).unwrap();
        let loss = out.sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        assert_eq!(data.len(), 5 + 16 * 2 + 4, "embeddings 5, 16 per layer, head 4");
        for (name, var) in data.iter() {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} has no gradient"));
            let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0, "{name} has a zero gradient");
        }
    }

    #[test]
    fn seeded_dropout_is_reproducible_and_scales() {
        let x = Tensor::ones((4, 1000), DType::F32, &Device::Cpu).unwrap();
        let a = Dropout::new(0.25, 3).apply(&x).unwrap().to_vec2::<f32>().unwrap();
        let b = Dropout::new(0.25, 3).apply(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(a, b);
        let flat: Vec<f32> = a.into_iter().flatten().collect();
        let zeros = flat.iter().filter(|v| **v == 0.0).count() as f64 / flat.len() as f64;
        assert!((zeros - 0.25).abs() < 0.03, "{zeros}");
        assert!(flat.iter().all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6));
    }

    #[test]
    fn padding_does_not_change_a_text_s_pooled_vector() {
        let (_, model, _) = tiny();
        let ids = Tensor::new(&[[2u32, 7, 9, 3]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1]], &Device::Cpu).unwrap();
        let alone = model.encoder.pooled(&ids, &mask, None).unwrap();
        let ids2 = Tensor::new(&[[2u32, 7, 9, 3, 0, 0]], &Device::Cpu).unwrap();
        let mask2 = Tensor::new(&[[1u32, 1, 1, 1, 0, 0]], &Device::Cpu).unwrap();
        let padded = model.encoder.pooled(&ids2, &mask2, None).unwrap();
        let d = (alone - padded).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-5, "{d}");
    }
}
