//! Inference kernels for files of 8-bit weights. Integer matrix products:
//! `y = x W^T + b` with W in int8 (one scale per output row) and x quantized
//! per row as it comes to 7 unsigned bits with a zero point, summed exactly
//! in i32. 7 bits because that is the operand relaxed SIMD's
//! `i32x4.relaxed_dot_i8x16_i7x16_add_s` multiplies exactly on every engine
//! (sixteen products and their sums in one instruction, `vpdpbusd` where the
//! CPU has VNNI): the browser build with the `relaxed-simd` feature uses it;
//! plain simd128 builds use `i32x4.dot_i16x8_s` on the same integers; native
//! builds pack the weights in panels and use `vpdpbusd` themselves where the
//! CPU has VNNI, AVX2 where not ([`crate::int8_native`]). Every build sums
//! the same integers, so all give the same bits.

#[cfg(all(target_arch = "wasm32", feature = "relaxed-simd", not(target_feature = "simd128")))]
compile_error!("the relaxed-simd feature needs simd128 (.cargo/config.toml enables it for wasm32)");

#[cfg(not(target_arch = "wasm32"))]
use crate::int8_native::{self as native, PANEL};

/// The kernel's integer types and how many values one step reads.
#[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
mod ints {
    pub type Weight = i8;
    pub type Input = u8;
    pub const STEP: usize = 16;
}
#[cfg(all(target_arch = "wasm32", not(feature = "relaxed-simd")))]
mod ints {
    pub type Weight = i16;
    pub type Input = i16;
    pub const STEP: usize = 8;
}
#[cfg(not(target_arch = "wasm32"))]
mod ints {
    pub type Weight = i8;
    pub type Input = u8;
    pub const STEP: usize = crate::int8_native::GROUP;
}
use ints::{Input, STEP, Weight};

/// A linear layer's weights as int8 values (stored in the kernel's input
/// width) with one scale per output row.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    /// `out x width` values in -127..=127, each row padded with zeros to
    /// `width`, a multiple of the kernel's step: row-major in the browser,
    /// natively in panels ([`native::pack`]).
    weight: Vec<Weight>,
    /// Each output row's weights summed: what an input's zero point adds to
    /// its dot product.
    weight_sum: Vec<i32>,
    scale: Vec<f32>,
    bias: Vec<f32>,
    /// Per-channel smoothing: each input channel is multiplied by this before
    /// it is quantized (and the weights' column by its inverse), so that a
    /// few channels of large values no longer set the whole row's step.
    input_mul: Option<Vec<f32>>,
    inp: usize,
    width: usize,
    out: usize,
}

/// Largest weight magnitude: symmetric, so -127..=127.
const Q: f32 = 127.0;
/// Largest quantized input: 7 bits, 0..=127.
const Q_INPUT: f32 = 127.0;

/// A weight row quantized symmetrically into `dst`; returns the scale (0 for an all-zero row).
fn quantize_weights(row: &[f32], dst: &mut [Weight]) -> f32 {
    let (lo, hi) = min_max(row);
    let max = hi.max(-lo);
    if max == 0.0 || !max.is_finite() {
        dst.iter_mut().for_each(|d| *d = 0);
        return if max.is_finite() { 0.0 } else { f32::NAN };
    }
    quantize_with(row, dst, Q / max, 0.0, -Q, Q);
    max / Q
}

/// An input row quantized to 0..=127 into `dst`, with zero mapped to an
/// integer (the zero point): `v ~ scale * (q - zero)`. Returns
/// `(scale, zero)`; the scale is 0 for an all-zero row and NaN for a row
/// with an infinite value.
fn quantize_input(row: &[f32], dst: &mut [Input]) -> (f32, i32) {
    let (lo, hi) = min_max(row);
    let range = hi - lo;
    if range == 0.0 || !range.is_finite() {
        dst.iter_mut().for_each(|d| *d = 0);
        return (if range.is_finite() { 0.0 } else { f32::NAN }, 0);
    }
    let inv = Q_INPUT / range;
    // Ties to even: one instruction in wasm (`f32.nearest`) and on x86.
    let zero = (-lo * inv).round_ties_even();
    quantize_with(row, dst, inv, zero, 0.0, Q_INPUT);
    (range / Q_INPUT, zero as i32)
}

/// The smallest and largest values of `row` and 0 (NaN is passed over).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
fn min_max(row: &[f32]) -> (f32, f32) {
    native::min_max(row)
}

/// The smallest and largest values of `row` and 0 (NaN is passed over).
#[cfg(not(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "x86_64", target_feature = "avx2")
)))]
fn min_max(row: &[f32]) -> (f32, f32) {
    // 16 lanes of compare-and-selects the compiler vectorises, folded in
    // halves at the end; min and max are exact, so any number of lanes
    // gives what one running pair would.
    const L: usize = 16;
    let (mut lo, mut hi) = ([0f32; L], [0f32; L]);
    let mut chunks = row.chunks_exact(L);
    for c in &mut chunks {
        for i in 0..L {
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    let mut half = L / 2;
    while half >= 4 {
        for i in 0..half {
            lo[i] = if lo[i + half] < lo[i] { lo[i + half] } else { lo[i] };
            hi[i] = if hi[i + half] > hi[i] { hi[i + half] } else { hi[i] };
        }
        half /= 2;
    }
    let (lo4, hi4) = ([lo[0], lo[1], lo[2], lo[3]], [hi[0], hi[1], hi[2], hi[3]]);
    min_max_of(lo4, hi4, chunks.remainder())
}

/// The smallest and largest values of `row` and 0 (NaN is passed over),
/// four lanes at a time.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn min_max(row: &[f32]) -> (f32, f32) {
    use core::arch::wasm32::*;
    let (mut lo, mut hi) = (f32x4_splat(0.0), f32x4_splat(0.0));
    let mut chunks = row.chunks_exact(4);
    for c in &mut chunks {
        // SAFETY: `c` holds 4 f32s, 16 bytes; wasm loads need no alignment.
        let v = unsafe { v128_load(c.as_ptr() as *const v128) };
        // pmin(lo, v) is `v < lo ? v : lo` and pmax(hi, v) `hi < v ? v : hi`: NaN is never taken.
        lo = f32x4_pmin(lo, v);
        hi = f32x4_pmax(hi, v);
    }
    let lanes = |v: v128| {
        [f32x4_extract_lane::<0>(v), f32x4_extract_lane::<1>(v), f32x4_extract_lane::<2>(v), f32x4_extract_lane::<3>(v)]
    };
    min_max_of(lanes(lo), lanes(hi), chunks.remainder())
}

/// Lanes' minima and maxima, and a remainder, to one pair.
pub(crate) fn min_max_of(lo: [f32; 4], hi: [f32; 4], rest: &[f32]) -> (f32, f32) {
    let pick = |(l, h): (f32, f32), &v: &f32| (if v < l { v } else { l }, if v > h { v } else { h });
    let lh = lo.iter().zip(&hi).fold((0f32, 0f32), |acc, (l, h)| pick(pick(acc, l), h));
    rest.iter().fold(lh, pick)
}

/// The kernels' integer types, converted from f32 values already rounded
/// and clamped into their range.
trait Int: Copy {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    fn of(v: f32) -> Self;
    /// A value already within the type's range.
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    fn of_i32(v: i32) -> Self;
    /// Sixteen values given as two i16x8 vectors, stored at `dst[at..at + 16]`.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    fn store16(dst: &mut [Self], at: usize, lo: core::arch::wasm32::v128, hi: core::arch::wasm32::v128);
}

macro_rules! int {
    ($t:ty, $narrow:ident) => {
        impl Int for $t {
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            fn of(v: f32) -> Self {
                v as $t
            }
            #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
            fn of_i32(v: i32) -> Self {
                v as $t
            }
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            fn store16(dst: &mut [Self], at: usize, lo: core::arch::wasm32::v128, hi: core::arch::wasm32::v128) {
                use core::arch::wasm32::*;
                let dst = &mut dst[at..at + 16];
                // SAFETY: `dst` holds 16 values (the slice above would have
                // panicked otherwise), 16 or 32 bytes; wasm stores need no alignment.
                unsafe {
                    if core::mem::size_of::<$t>() == 1 {
                        v128_store(dst.as_mut_ptr() as *mut v128, $narrow(lo, hi));
                    } else {
                        v128_store(dst.as_mut_ptr() as *mut v128, lo);
                        v128_store(dst.as_mut_ptr().add(8) as *mut v128, hi);
                    }
                }
            }
        }
    };
}
int!(i8, i8x16_narrow_i16x8);
int!(u8, u8x16_narrow_i16x8);
int!(i16, i8x16_narrow_i16x8);

wide_or_not! {
/// `dst[i] = clamp(nearest(row[i] * inv) + zero, min, max)`, NaN as 0
/// (as `as` makes it), for ranges within -127..=127.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn quantize_with<T: Int>(row: &[f32], dst: &mut [T], inv: f32, zero: f32, min: f32, max: f32) {
    assert!((-127.0..=0.0).contains(&min) && (0.0..=127.0).contains(&max), "a range within -127..=127 holding 0");
    for (d, v) in dst.iter_mut().zip(row) {
        let q = (v * inv).round_ties_even() + zero;
        let q = if q.is_nan() { 0.0 } else { q.clamp(min, max) };
        // SAFETY: q is a finite whole number within -127..=127 (clamped to
        // the range asserted above, NaN replaced by 0), so it is an i32: a
        // plain conversion the compiler vectorises, where `as` checks
        // each value for NaN and range one at a time.
        *d = T::of_i32(unsafe { q.to_int_unchecked::<i32>() });
    }
}
}

/// `dst[i] = clamp(nearest(row[i] * inv) + zero, min, max)`, NaN as 0,
/// sixteen at a time: the same operations as the scalar loop, so the same
/// integers.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn quantize_with<T: Int>(row: &[f32], dst: &mut [T], inv: f32, zero: f32, min: f32, max: f32) {
    use core::arch::wasm32::*;
    let n = row.len().min(dst.len());
    let (inv4, zero4, min4, max4) = (f32x4_splat(inv), f32x4_splat(zero), f32x4_splat(min), f32x4_splat(max));
    let four = |at: usize| {
        assert!(at + 4 <= row.len());
        // SAFETY: at + 4 <= row.len() (asserted); wasm loads need no alignment.
        let v = unsafe { v128_load(row.as_ptr().add(at) as *const v128) };
        let q = f32x4_add(f32x4_nearest(f32x4_mul(v, inv4)), zero4);
        // pmax(q, m) is `q < m ? m : q`: a NaN q stays NaN, which the
        // saturating conversion makes 0, as `as` does in the scalar loop.
        i32x4_trunc_sat_f32x4(f32x4_pmin(f32x4_pmax(q, min4), max4))
    };
    let mut i = 0;
    while i + 16 <= n {
        let lo = i16x8_narrow_i32x4(four(i), four(i + 4));
        let hi = i16x8_narrow_i32x4(four(i + 8), four(i + 12));
        T::store16(dst, i, lo, hi);
        i += 16;
    }
    for (d, v) in dst[i..n].iter_mut().zip(&row[i..n]) {
        *d = T::of(((v * inv).round_ties_even() + zero).clamp(min, max));
    }
}

/// Input rows quantized for the int8 products (`rows x width`, each row
/// padded with zeros), each with its scale and zero point: quantized once,
/// they can go through several layers of the same input width.
pub struct QuantizedRows {
    q: Vec<Input>,
    scale: Vec<f32>,
    zero: Vec<i32>,
    inp: usize,
    rows: usize,
}

impl QuantizedRows {
    /// `x`: `rows x inp`, row-major.
    pub fn new(x: &[f32], rows: usize, inp: usize) -> QuantizedRows {
        assert_eq!(x.len(), rows * inp, "input is not rows x inp");
        let width = inp.div_ceil(STEP) * STEP;
        // Padding is zero in the weights, so whatever it holds here adds nothing.
        let mut q: Vec<Input> = vec![0; rows * width];
        let (scale, zero) = if inp == 0 {
            (vec![0.0; rows], vec![0; rows])
        } else {
            x.chunks_exact(inp).zip(q.chunks_exact_mut(width)).map(|(r, d)| quantize_input(r, &mut d[..inp])).unzip()
        };
        QuantizedRows { q, scale, zero, inp, rows }
    }

    /// `x` with channel `j` multiplied by `mul[j]` (when given) before it is
    /// quantized: an IEEE product per value, the same bits on every build.
    fn smoothed(x: &[f32], rows: usize, inp: usize, mul: Option<&[f32]>) -> QuantizedRows {
        match mul {
            None => Self::new(x, rows, inp),
            Some(m) => {
                let scaled: Vec<f32> =
                    x.chunks_exact(inp.max(1)).flat_map(|r| r.iter().zip(m).map(|(v, m)| v * m)).collect();
                Self::new(&scaled, rows, inp)
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    /// [`Int8Linear`]'s integer sums of 16 rows, reused by each call on a thread.
    static SUMS: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Int8Linear {
    /// From an f32 weight matrix (`out x inp`, row-major) and bias.
    pub fn new(weight: &[f32], bias: Vec<f32>, out: usize, inp: usize) -> Int8Linear {
        Self::with_smoothing(weight, bias, out, inp, None)
    }

    /// As [`Int8Linear::new`], with input channel `j` divided by `smooth[j]`
    /// and the weights' column `j` multiplied by it (SmoothQuant): the same
    /// product in exact arithmetic, and channels whose values dwarf the
    /// others' no longer cost those their precision. `smooth` comes from
    /// calibration at export (`pricer smooth`); values must be positive and finite.
    pub fn with_smoothing(
        weight: &[f32],
        bias: Vec<f32>,
        out: usize,
        inp: usize,
        smooth: Option<&[f32]>,
    ) -> Int8Linear {
        assert_eq!(weight.len(), out * inp, "weight is not out x inp");
        assert_eq!(bias.len(), out, "one bias per output");
        if let Some(s) = smooth {
            assert_eq!(s.len(), inp, "one smoothing factor per input channel");
            assert!(s.iter().all(|v| v.is_finite() && *v > 0.0), "smoothing factors must be positive and finite");
        }
        let scaled: Vec<f32>;
        let weight = match smooth {
            Some(s) => {
                scaled = weight.chunks_exact(inp.max(1)).flat_map(|r| r.iter().zip(s).map(|(w, s)| w * s)).collect();
                &scaled[..]
            }
            None => weight,
        };
        let width = inp.div_ceil(STEP) * STEP;
        let mut q: Vec<Weight> = vec![0; out * width];
        let scale =
            weight.chunks_exact(inp).zip(q.chunks_exact_mut(width)).map(|(r, d)| quantize_weights(r, d)).collect();
        let mut scale: Vec<f32> = scale;
        let mut weight_sum: Vec<i32> = q.chunks_exact(width).map(|r| r.iter().map(|&w| w as i32).sum()).collect();
        let mut bias = bias;
        // Four outputs are finished at a time, from panels of eight in the
        // browser: pad the per-output values to a multiple of 8.
        let padded = out.next_multiple_of(8);
        scale.resize(padded, 0.0);
        weight_sum.resize(padded, 0);
        bias.resize(padded, 0.0);
        let input_mul = smooth.map(|s| s.iter().map(|v| 1.0 / v).collect());
        #[cfg(not(target_arch = "wasm32"))]
        let q = native::pack(&q, out, width);
        #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
        let q = pack_relaxed(&q, out, width);
        Int8Linear { weight: q, weight_sum, scale, bias, input_mul, inp, width, out }
    }

    pub fn out_features(&self) -> usize {
        self.out
    }

    /// `x` (`rows x inp`, row-major) quantized as this layer takes its
    /// inputs; layers that [`Int8Linear::takes_inputs_as`] each other can share it.
    pub fn quantize(&self, x: &[f32], rows: usize) -> QuantizedRows {
        QuantizedRows::smoothed(x, rows, self.inp, self.input_mul.as_deref())
    }

    /// Whether `other` quantizes its inputs the same way (width and smoothing).
    pub fn takes_inputs_as(&self, other: &Int8Linear) -> bool {
        self.inp == other.inp && self.input_mul == other.input_mul
    }

    /// `x` (`rows x inp`, row-major) times the weights, plus the bias.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.forward_quantized(&self.quantize(x, rows))
    }

    /// Quantized input rows times the weights, plus the bias. Parts of 16
    /// rows go to rayon's pool where there is one (natively one thread per
    /// core; the browser's threaded worker), each value computed the same
    /// way whatever the split; the single-thread browser builds take them
    /// in turn.
    pub fn forward_quantized(&self, x: &QuantizedRows) -> Vec<f32> {
        #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
        if x.rows > 16 && self.out > 0 {
            use rayon::prelude::*;
            assert_eq!(x.inp, self.inp, "input rows of another width");
            let mut y = vec![0f32; x.rows * self.out];
            y.par_chunks_mut(16 * self.out).enumerate().for_each(|(i, part)| self.block(x, i * 16, part));
            return y;
        }
        self.forward_one_thread(x)
    }

    /// [`Int8Linear::forward_quantized`] into `y` (`x.rows x out`), on the calling thread.
    pub fn forward_into(&self, x: &QuantizedRows, y: &mut [f32]) {
        assert_eq!(x.inp, self.inp, "input rows of another width");
        assert_eq!(y.len(), x.rows * self.out, "output is not rows x out");
        if x.rows > 0 {
            self.block(x, 0, y);
        }
    }

    /// [`Int8Linear::forward_quantized`] on the calling thread.
    fn forward_one_thread(&self, x: &QuantizedRows) -> Vec<f32> {
        assert_eq!(x.inp, self.inp, "input rows of another width");
        let mut y = vec![0f32; x.rows * self.out];
        if x.rows > 0 {
            self.block(x, 0, &mut y);
        }
        y
    }

    /// Output rows `first..` (as many as `y` holds) from quantized inputs:
    /// the integer sums of 16 rows at a time (their buffer stays in cache),
    /// then each output finished.
    #[cfg(not(target_arch = "wasm32"))]
    fn block(&self, x: &QuantizedRows, first: usize, y: &mut [f32]) {
        const CHUNK: usize = 16;
        let (out, width) = (self.out, self.width);
        let (panels, kernel) = (out.div_ceil(PANEL), native::Kernel::best());
        let stride = panels * PANEL;
        SUMS.with_borrow_mut(|sums| {
            // The kernels write every sum they are given, so the buffer
            // is only zeroed where it grows (one per thread, kept between
            // calls: zeroing a fresh one cost 3.5% of a product's time).
            if sums.len() < CHUNK * stride {
                sums.resize(CHUNK * stride, 0);
            }
            for (c, yc) in y.chunks_mut(CHUNK * out).enumerate() {
                let (from, rows) = (first + c * CHUNK, yc.len() / out);
                let sums = &mut sums[..rows * stride];
                kernel.sums(&x.q[from * width..(from + rows) * width], rows, width, &self.weight, panels, sums);
                for (r, (yr, sr)) in yc.chunks_exact_mut(out).zip(sums.chunks_exact(stride)).enumerate() {
                    self.finish(&sr[..out], x.zero[from + r], x.scale[from + r], yr);
                }
            }
        })
    }

    /// One input row's outputs from their integer sums, as
    /// [`Int8Linear::finish4`] computes them (the same operations in the same
    /// order), in one loop the compiler vectorises.
    #[cfg(not(target_arch = "wasm32"))]
    fn finish(&self, sums: &[i32], zero: i32, input_scale: f32, dst: &mut [f32]) {
        finish(sums, zero, input_scale, (&self.weight_sum, &self.scale, &self.bias), dst);
    }

    /// Output rows `first..` (as many as `y` holds) from quantized inputs,
    /// in relaxed SIMD's dot product on the packed weights: blocks of 8
    /// outputs x 4 rows whose accumulators hold one output per lane, so the
    /// sums need no adding across lanes (out of range rows repeat the last
    /// row and are not stored).
    #[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
    #[target_feature(enable = "relaxed-simd")]
    fn block(&self, x: &QuantizedRows, first: usize, y: &mut [f32]) {
        let (out, width, rows) = (self.out, self.width, y.len() / self.out);
        let last = first + rows - 1;
        let xrow = |r: usize| &x.q[r.min(last) * width..(r.min(last) + 1) * width];
        for (p, panel) in self.weight.chunks_exact(RELAXED_PANEL * width).enumerate() {
            let o = p * RELAXED_PANEL;
            // The panel's per-output values, loaded once for all its rows.
            let per_output = [o, o + 4].map(|o| PerOutput::of(self, o));
            for r in (0..rows).step_by(4) {
                let rows4 = [xrow(first + r), xrow(first + r + 1), xrow(first + r + 2), xrow(first + r + 3)];
                let sums = dot4x8(rows4, panel);
                for (i, halves) in sums.into_iter().enumerate().take(rows - r) {
                    let (row, at) = (first + r + i, (r + i) * out);
                    for (h, (sums, po)) in halves.into_iter().zip(&per_output).enumerate() {
                        let o = o + 4 * h;
                        if o < out {
                            po.finish(sums, x.zero[row], x.scale[row], &mut y[at + o..at + (o + 4).min(out)]);
                        }
                    }
                }
            }
        }
    }

    /// Output rows `first..` (as many as `y` holds) from quantized inputs.
    #[cfg(all(target_arch = "wasm32", not(feature = "relaxed-simd")))]
    fn block(&self, x: &QuantizedRows, first: usize, y: &mut [f32]) {
        let (out, width, rows) = (self.out, self.width, y.len() / self.out);
        let last = first + rows - 1;
        let xrow = |r: usize| &x.q[r.min(last) * width..(r.min(last) + 1) * width];
        let wrow = |o: usize| &self.weight[o.min(out - 1) * width..(o.min(out - 1) + 1) * width];
        // Blocks of 4 outputs x 2 rows: the 4 weight rows stay in L1 while
        // every input row passes (out of range indices repeat the last row
        // and are not stored).
        for o in (0..out).step_by(4) {
            let w4 = [wrow(o), wrow(o + 1), wrow(o + 2), wrow(o + 3)];
            for r in (0..rows).step_by(2) {
                let d = dot2x4([xrow(first + r), xrow(first + r + 1)], w4);
                for (i, sums) in d.into_iter().enumerate().take(rows - r) {
                    let row = first + r + i;
                    let yr = &mut y[(r + i) * out + o..(r + i) * out + (o + 4).min(out)];
                    self.finish4(sums, o, x.zero[row], x.scale[row], yr);
                }
            }
        }
    }

    /// Outputs `o..o + dst.len()` of one input row from their integer sums:
    /// `(sum - zero * weight_sum) * input_scale * scale + bias`.
    #[cfg(all(target_arch = "wasm32", not(target_feature = "simd128")))]
    fn finish4(&self, sums: [i32; 4], o: usize, zero: i32, input_scale: f32, dst: &mut [f32]) {
        for (j, d) in dst.iter_mut().enumerate() {
            let dot = sums[j] - zero * self.weight_sum[o + j];
            *d = dot as f32 * input_scale * self.scale[o + j] + self.bias[o + j];
        }
    }

    /// Outputs `o..o + dst.len()` of one input row from their integer sums,
    /// four lanes at once: the scalar version's operations in its order, so
    /// the same bits.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128", not(feature = "relaxed-simd")))]
    fn finish4(&self, sums: core::arch::wasm32::v128, o: usize, zero: i32, input_scale: f32, dst: &mut [f32]) {
        PerOutput::of(self, o).finish(sums, zero, input_scale, dst);
    }
}

wide_or_not! {
/// [`Int8Linear::finish`] on the layer's per-output weight sums, scales and biases.
#[cfg(not(target_arch = "wasm32"))]
fn finish(sums: &[i32], zero: i32, input_scale: f32, per_output: (&[i32], &[f32], &[f32]), dst: &mut [f32]) {
    let (n, (ws, sc, bi)) = (dst.len(), per_output);
    let (ws, sc, bi) = (&ws[..n], &sc[..n], &bi[..n]);
    for ((((d, &s), &w), &c), &b) in dst.iter_mut().zip(sums).zip(ws).zip(sc).zip(bi) {
        *d = (s - zero * w) as f32 * input_scale * c + b;
    }
}
}

/// A key whose bias is at most this is padding (the encoder's mask bias is
/// 0 for tokens and -10,000 for padding).
const PADDING: f32 = -1000.0;

/// Multi-head scaled dot-product attention over `q`, `k`, `v` laid out
/// `[b, t, heads * hd]` (as the projections give them), `bias` `[b, t]` added
/// to every query's scores (0 for tokens, a large negative for padding):
/// `[b, t, heads * hd]`. Both products are int8 products like the
/// projections': scores from the queries (inputs, 7 bits per row) and the
/// keys (weights, 8 bits per key), the output from the probabilities
/// (inputs) and the values (weights, 8 bits per dimension). Integer sums
/// and a softmax in fixed lanes: the same bits natively and in the browser.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], bias: &[f32], b: usize, t: usize, heads: usize) -> Vec<f32> {
    attention_heads(q, k, v, bias, b, t, heads).rows(0, b * t)
}

/// [`attention`]'s output as each text's heads computed it, for callers
/// that take its rows in parts ([`HeadRows::rows`]) on their own threads.
pub fn attention_heads(q: &[f32], k: &[f32], v: &[f32], bias: &[f32], b: usize, t: usize, heads: usize) -> HeadRows {
    let width = q.len() / (b * t).max(1);
    let hd = width / heads.max(1);
    assert_eq!(hd * heads, width, "a row of {width} values does not split into {heads} heads");
    assert!(q.len() == b * t * width && k.len() == q.len() && v.len() == q.len() && bias.len() == b * t);
    if q.is_empty() {
        return HeadRows { heads, t, hd, blocks: Vec::new() };
    }
    #[cfg(target_arch = "wasm32")]
    let head_attention = head_attention_plain;
    let one = |bi: usize, h: usize| head_attention(q, k, v, &bias[bi * t..(bi + 1) * t], bi, h, t, width, hd);
    // Heads go to the pool's threads (natively one per core; in the browser, the threaded worker's).
    let jobs: Vec<(usize, usize)> = (0..b).flat_map(|bi| (0..heads).map(move |h| (bi, h))).collect();
    HeadRows { heads, t, hd, blocks: super::on_threads(jobs, |(bi, h)| one(bi, h)) }
}

/// The attention's output by text and head: block `text * heads + head`
/// holds that head's `t x hd` values.
pub struct HeadRows {
    heads: usize,
    t: usize,
    hd: usize,
    blocks: Vec<Vec<f32>>,
}

impl HeadRows {
    /// Output rows `from..from + n` (of `b * t`), each row its heads' values
    /// in turn, as [`attention`] lays them out.
    pub fn rows(&self, from: usize, n: usize) -> Vec<f32> {
        let hd = self.hd;
        let mut out = Vec::with_capacity(n * self.heads * hd);
        for r in from..from + n {
            let (text, i) = (r / self.t.max(1), r % self.t.max(1));
            for block in &self.blocks[text * self.heads..(text + 1) * self.heads] {
                out.extend_from_slice(&block[i * hd..(i + 1) * hd]);
            }
        }
        out
    }
}

/// One text's one head: `t x hd`, row-major. The browser's version (and
/// natively the reference the native version is tested against).
#[cfg(any(target_arch = "wasm32", test))]
#[allow(clippy::too_many_arguments)]
fn head_attention_plain(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: &[f32],
    bi: usize,
    h: usize,
    t: usize,
    width: usize,
    hd: usize,
) -> Vec<f32> {
    let at = |i: usize| (bi * t + i) * width + h * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    // Padding keys (their softmax weight is exactly 0) are left out, so a
    // text's values are the same bits alone or padded in a batch: the
    // values' quantization and the softmax's sums see only its own tokens.
    let keys: Vec<usize> = (0..t).filter(|&j| bias[j] > PADDING).collect();
    let n = keys.len();
    let mut qh = Vec::with_capacity(t * hd);
    for i in 0..t {
        qh.extend(q[at(i)..at(i) + hd].iter().map(|x| x * scale));
    }
    let mut kh = Vec::with_capacity(n * hd);
    // The values transposed: one row per dimension, across the keys.
    let mut vt = vec![0f32; hd * n];
    for (jn, &j) in keys.iter().enumerate() {
        kh.extend_from_slice(&k[at(j)..at(j) + hd]);
        for (d, x) in v[at(j)..at(j) + hd].iter().enumerate() {
            vt[d * n + jn] = *x;
        }
    }
    let bias: Vec<f32> = keys.iter().map(|&j| bias[j]).collect();
    if n == 0 {
        return vec![0.0; t * hd];
    }
    let keys = Int8Linear::new(&kh, bias, n, hd);
    let mut probs = keys.forward_one_thread(&QuantizedRows::new(&qh, t, hd));
    probs.chunks_exact_mut(n).for_each(crate::fused::softmax_lanes_in_place);
    probabilities_times_values(&probs, t, n, &vt, hd)
}

wide_or_not! {
/// One text's one head natively: the numbers of [`head_attention_plain`]
/// (the same quantization, exact integer sums, finishing and softmax), with
/// the keys and values quantized and packed for the kernels once, then 16
/// query rows at a time from scores to output, their buffers reused.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::too_many_arguments)]
fn head_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    bias: &[f32],
    bi: usize,
    h: usize,
    t: usize,
    width: usize,
    hd: usize,
) -> Vec<f32> {
    const CHUNK: usize = 16;
    let at = |i: usize| (bi * t + i) * width + h * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let keys: Vec<usize> = (0..t).filter(|&j| bias[j] > PADDING).collect();
    let n = keys.len();
    if n == 0 {
        return vec![0.0; t * hd];
    }
    let kernel = native::Kernel::best();
    // The keys are the scores' weights: 8 bits, one scale per key.
    let kw = hd.div_ceil(STEP) * STEP;
    let mut kq: Vec<i8> = vec![0; n * kw];
    let kscale: Vec<f32> = keys
        .iter()
        .zip(kq.chunks_exact_mut(kw))
        .map(|(&j, d)| quantize_weights(&k[at(j)..at(j) + hd], &mut d[..hd]))
        .collect();
    let ksum: Vec<i32> = kq.chunks_exact(kw).map(|r| r.iter().map(|&w| w as i32).sum()).collect();
    let kbias: Vec<f32> = keys.iter().map(|&j| bias[j]).collect();
    let (panels, kpacked) = (n.div_ceil(PANEL), native::pack(&kq, n, kw));
    // The values, transposed, are the output's weights: 8 bits per dimension.
    let pw = n.div_ceil(8) * 8;
    let mut vt = vec![0f32; hd * n];
    for (jn, &j) in keys.iter().enumerate() {
        for (d, x) in v[at(j)..at(j) + hd].iter().enumerate() {
            vt[d * n + jn] = *x;
        }
    }
    let mut vq = vec![0i16; hd * pw];
    let vscale: Vec<f32> =
        vt.chunks_exact(n).zip(vq.chunks_exact_mut(pw)).map(|(r, d)| quantize_i16(r, &mut d[..n], Q)).collect();
    let values = native::Pairs::new(&vq, hd, pw);
    let (sstride, ostride) = (panels * PANEL, values.stride());
    let mut out = vec![0f32; t * hd];
    let (mut xq, mut qrow) = (vec![0u8; CHUNK * kw], vec![0f32; hd]);
    let (mut qscale, mut qzero) = ([0f32; CHUNK], [0i32; CHUNK]);
    let (mut scores, mut probs) = (vec![0i32; CHUNK * sstride], vec![0f32; n]);
    let (mut pq, mut pscale) = (vec![0i16; CHUNK * pw], [0f32; CHUNK]);
    let mut sums = vec![0i32; CHUNK * ostride];
    for c in (0..t).step_by(CHUNK) {
        let rows = (t - c).min(CHUNK);
        for r in 0..rows {
            qrow.iter_mut().zip(&q[at(c + r)..at(c + r) + hd]).for_each(|(d, x)| *d = x * scale);
            (qscale[r], qzero[r]) = quantize_input(&qrow, &mut xq[r * kw..r * kw + hd]);
        }
        kernel.sums(&xq[..rows * kw], rows, kw, &kpacked, panels, &mut scores[..rows * sstride]);
        for r in 0..rows {
            let srow = &scores[r * sstride..r * sstride + n];
            for (o, p) in probs.iter_mut().enumerate() {
                *p = (srow[o] - qzero[r] * ksum[o]) as f32 * qscale[r] * kscale[o] + kbias[o];
            }
            crate::fused::softmax_lanes_in_place(&mut probs);
            pscale[r] = quantize_i16(&probs, &mut pq[r * pw..r * pw + n], Q_PROB);
        }
        values.sums(kernel, &pq[..rows * pw], rows, &mut sums[..rows * ostride]);
        for (r, o) in out[c * hd..(c + rows) * hd].chunks_exact_mut(hd).enumerate() {
            for ((o, &s), &vs) in o.iter_mut().zip(&sums[r * ostride..r * ostride + hd]).zip(&vscale) {
                *o = s as f32 * pscale[r] * vs;
            }
        }
    }
    out
}
}

/// Largest quantized probability: 15 bits. With values in 8 bits (up to
/// 127 in size) a sum over 512 keys stays below 2^31: probabilities are
/// scaled by their row's largest, which is at least 1/keys, so a row's
/// quantized probabilities add up to at most 32,767 x keys.
const Q_PROB: f32 = 32767.0;

wide_or_not! {
/// The attention output `probs (t x n) x values`, `vt` the values
/// transposed (`hd x n`): the probabilities in 15 bits per query row (zero
/// exact, no zero point: they are never negative), the values in 8 bits per
/// dimension, multiplied as i16 and summed exactly in i32. 7-bit
/// probabilities (the linear layers' input width) lost the small weights of
/// long texts: the largest source of the int8 path's error
/// (docs/benchmarks.md, "Faithful int8").
/// `row` quantized symmetrically to -top..=top (top at most 32,767) into
/// `dst`, which is zeroed for an all-zero or non-finite row; returns the
/// scale (0 for such a row).
fn quantize_i16(row: &[f32], dst: &mut [i16], top: f32) -> f32 {
    let (lo, hi) = min_max(row);
    let max = hi.max(-lo);
    if max == 0.0 || !max.is_finite() {
        dst.iter_mut().for_each(|d| *d = 0);
        return 0.0;
    }
    let inv = top / max;
    // The loop below in explicit lanes (the compiler leaves it scalar in
    // wasm): `+ 0.0` changes no integer, -0 and NaN still become 0.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    quantize_with(row, dst, inv, 0.0, -top, top);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    for (d, v) in dst.iter_mut().zip(row) {
        let q = (v * inv).round_ties_even();
        let q = if q.is_nan() { 0.0 } else { q.clamp(-top, top) };
        // SAFETY: q is a finite whole number within -32767..=32767 (top is
        // Q or Q_PROB; NaN replaced by 0, as `as` would make it): a
        // conversion the compiler vectorises, where `as i16` checks each value.
        *d = unsafe { q.to_int_unchecked::<i32>() } as i16;
    }
    max / top
}
}

#[cfg(any(target_arch = "wasm32", test))]
fn probabilities_times_values(probs: &[f32], t: usize, n: usize, vt: &[f32], hd: usize) -> Vec<f32> {
    let width = n.div_ceil(8) * 8;
    let mut vq = vec![0i16; hd * width];
    let vscale: Vec<f32> =
        vt.chunks_exact(n).zip(vq.chunks_exact_mut(width)).map(|(r, d)| quantize_i16(r, &mut d[..n], Q)).collect();
    let mut pq = vec![0i16; t * width];
    let pscale: Vec<f32> = probs
        .chunks_exact(n)
        .zip(pq.chunks_exact_mut(width))
        .map(|(r, d)| quantize_i16(r, &mut d[..n], Q_PROB))
        .collect();
    let mut out = vec![0f32; t * hd];
    #[cfg(not(target_arch = "wasm32"))]
    {
        let pairs = native::Pairs::new(&vq, hd, width);
        let stride = pairs.stride();
        let mut sums = vec![0i32; t * stride];
        pairs.sums(native::Kernel::best(), &pq, t, &mut sums);
        for (i, row) in out.chunks_exact_mut(hd).enumerate() {
            for (d, o) in row.iter_mut().enumerate() {
                *o = sums[i * stride + d] as f32 * pscale[i] * vscale[d];
            }
        }
        out
    }
    // Blocks of 2 query rows x 4 dimensions, as the linear layers' kernel.
    #[cfg(target_arch = "wasm32")]
    {
        let prow = |i: usize| &pq[i.min(t - 1) * width..(i.min(t - 1) + 1) * width];
        let vrow = |d: usize| &vq[d.min(hd - 1) * width..(d.min(hd - 1) + 1) * width];
        for d in (0..hd).step_by(4) {
            let v4 = [vrow(d), vrow(d + 1), vrow(d + 2), vrow(d + 3)];
            for i in (0..t).step_by(2) {
                let sums = dot2x4_i16([prow(i), prow(i + 1)], v4);
                for (r, lanes) in sums.into_iter().map(lanes_i32).enumerate().take(t - i) {
                    for (j, sum) in lanes.into_iter().enumerate().take(hd - d) {
                        out[(i + r) * hd + d + j] = sum as f32 * pscale[i + r] * vscale[d + j];
                    }
                }
            }
        }
        out
    }
}

/// Exact dot products of two i16 rows with four (all of one length, a
/// multiple of 8): output j of row r in `[r][j]`.
#[cfg(all(target_arch = "wasm32", not(target_feature = "simd128")))]
fn dot2x4_i16(x: [&[i16]; 2], w: [&[i16]; 4]) -> [[i32; 4]; 2] {
    x.map(|xr| w.map(|wr| xr.iter().zip(wr).map(|(p, q)| *p as i32 * *q as i32).sum()))
}

#[cfg(all(target_arch = "wasm32", not(target_feature = "simd128")))]
fn lanes_i32(s: [i32; 4]) -> [i32; 4] {
    s
}

/// Exact dot products of two i16 rows with four (all of one length, a
/// multiple of 8), eight products at a time: output j of row r in lane j of `[r]`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn dot2x4_i16(x: [&[i16]; 2], w: [&[i16]; 4]) -> [core::arch::wasm32::v128; 2] {
    use core::arch::wasm32::*;
    let n = x[0].len();
    assert!(n.is_multiple_of(8) && x.iter().chain(&w).all(|r| r.len() == n), "rows of one length, a multiple of 8");
    let mut acc = [[i32x4_splat(0); 4]; 2];
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
    lane_sums(acc)
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn lanes_i32(s: core::arch::wasm32::v128) -> [i32; 4] {
    use core::arch::wasm32::*;
    [i32x4_extract_lane::<0>(s), i32x4_extract_lane::<1>(s), i32x4_extract_lane::<2>(s), i32x4_extract_lane::<3>(s)]
}

/// For each row, the four accumulators' lane sums as one i32x4 (output j
/// in lane j). Integer sums: exact in any order.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn lane_sums(acc: [[core::arch::wasm32::v128; 4]; 2]) -> [core::arch::wasm32::v128; 2] {
    use core::arch::wasm32::*;
    acc.map(|[a0, a1, a2, a3]| {
        let t01 = i32x4_add(i32x4_shuffle::<0, 4, 1, 5>(a0, a1), i32x4_shuffle::<2, 6, 3, 7>(a0, a1));
        let t23 = i32x4_add(i32x4_shuffle::<0, 4, 1, 5>(a2, a3), i32x4_shuffle::<2, 6, 3, 7>(a2, a3));
        i32x4_add(i32x4_shuffle::<0, 1, 4, 5>(t01, t23), i32x4_shuffle::<2, 3, 6, 7>(t01, t23))
    })
}

/// Four outputs' weight sums, scales and biases in vectors, to finish
/// their integer sums four lanes at once: the scalar `finish4`'s
/// operations in its order, so the same bits.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
struct PerOutput {
    weight_sum: core::arch::wasm32::v128,
    scale: core::arch::wasm32::v128,
    bias: core::arch::wasm32::v128,
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl PerOutput {
    /// Outputs `o..o + 4` of `lin` (its per-output values are padded to a multiple of 8).
    fn of(lin: &Int8Linear, o: usize) -> PerOutput {
        use core::arch::wasm32::*;
        let (ws, sc, bi) = (&lin.weight_sum[o..o + 4], &lin.scale[o..o + 4], &lin.bias[o..o + 4]);
        // SAFETY: each slice holds 4 values, 16 bytes; wasm loads need no alignment.
        unsafe {
            PerOutput {
                weight_sum: v128_load(ws.as_ptr() as *const v128),
                scale: v128_load(sc.as_ptr() as *const v128),
                bias: v128_load(bi.as_ptr() as *const v128),
            }
        }
    }

    /// `(sum - zero * weight_sum) * input_scale * scale + bias` into `dst` (at most 4 outputs).
    #[inline(always)]
    fn finish(&self, sums: core::arch::wasm32::v128, zero: i32, input_scale: f32, dst: &mut [f32]) {
        use core::arch::wasm32::*;
        let dot = i32x4_sub(sums, i32x4_mul(i32x4_splat(zero), self.weight_sum));
        let y =
            f32x4_add(f32x4_mul(f32x4_mul(f32x4_convert_i32x4(dot), f32x4_splat(input_scale)), self.scale), self.bias);
        if dst.len() == 4 {
            // SAFETY: `dst` holds 4 f32 (16 bytes); wasm stores need no alignment.
            unsafe { v128_store(dst.as_mut_ptr() as *mut v128, y) };
        } else {
            let lanes = [
                f32x4_extract_lane::<0>(y),
                f32x4_extract_lane::<1>(y),
                f32x4_extract_lane::<2>(y),
                f32x4_extract_lane::<3>(y),
            ];
            let n = dst.len();
            dst.copy_from_slice(&lanes[..n]);
        }
    }
}

/// Outputs per panel of the browser's relaxed-SIMD weights.
#[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
const RELAXED_PANEL: usize = 8;

/// Row-major weights (`out x width`, `width` a multiple of 16) in panels of
/// [`RELAXED_PANEL`] outputs: output `o`'s inputs `4g..4g + 4` at
/// `((o / 8 * groups + g) * 8 + o % 8) * 4`, so one 16-byte load holds four
/// outputs' four weights for one group of four inputs. Outputs past `out`
/// are 0.
#[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
fn pack_relaxed(weight: &[i8], out: usize, width: usize) -> Vec<i8> {
    const GROUP: usize = 4;
    assert!(width.is_multiple_of(STEP) && weight.len() == out * width, "weights are not out x width");
    let groups = width / GROUP;
    let mut packed = vec![0i8; out.div_ceil(RELAXED_PANEL) * RELAXED_PANEL * width];
    for (o, row) in weight.chunks_exact(width.max(1)).enumerate().take(out) {
        for (g, four) in row.chunks_exact(GROUP).enumerate() {
            let at = ((o / RELAXED_PANEL * groups + g) * RELAXED_PANEL + o % RELAXED_PANEL) * GROUP;
            packed[at..at + GROUP].copy_from_slice(four);
        }
    }
    packed
}

/// Exact dot products of four input rows `x` (0..=127, all of one length
/// `width`, a multiple of 4) with one panel of eight weight rows (-127..=127,
/// [`pack_relaxed`]'s layout, `8 * width` values): row `i`'s outputs 0-3 in
/// the lanes of `[i][0]`, 4-7 in `[i][1]`. Each step splats four inputs of a
/// row to every lane and multiplies them with four outputs' four weights:
/// 8 accumulators, 2 weight loads and 4 input loads per 8 dot products. The
/// weights go first, as the signed 8-bit operand, and the inputs second, as
/// the 7-bit one: no pair of products can saturate (2 * 127 * 127 < 32767),
/// so every engine gives the exact sums.
#[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
#[target_feature(enable = "relaxed-simd")]
fn dot4x8(x: [&[u8]; 4], panel: &[i8]) -> [[core::arch::wasm32::v128; 2]; 4] {
    use core::arch::wasm32::*;
    let width = x[0].len();
    assert!(
        width.is_multiple_of(4) && x.iter().all(|r| r.len() == width) && panel.len() == RELAXED_PANEL * width,
        "rows of one length and a panel of eight"
    );
    let mut acc = [[i32x4_splat(0); 2]; 4];
    let mut k = 0;
    while k < width {
        // SAFETY: k + 4 <= width, so each 4-byte splat load lies inside its
        // row, and the two 16-byte weight loads at 8k and 8k + 16 end at
        // 8(k + 4) <= panel.len() (asserted above); wasm loads need no alignment.
        unsafe {
            let w0 = v128_load(panel.as_ptr().add(8 * k) as *const v128);
            let w1 = v128_load(panel.as_ptr().add(8 * k + 16) as *const v128);
            for i in 0..4 {
                let xs = v128_load32_splat(x[i].as_ptr().add(k) as *const u32);
                acc[i][0] = i32x4_relaxed_dot_i8x16_i7x16_add(w0, xs, acc[i][0]);
                acc[i][1] = i32x4_relaxed_dot_i8x16_i7x16_add(w1, xs, acc[i][1]);
            }
        }
        k += 4;
    }
    acc
}

/// Exact dot products of two rows `x` with four rows `w` (all of one
/// length, a multiple of 8), eight products at a time.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128", not(feature = "relaxed-simd")))]
fn dot2x4(x: [&[i16]; 2], w: [&[i16]; 4]) -> [core::arch::wasm32::v128; 2] {
    dot2x4_i16(x, w)
}

/// Exact dot products of two rows `x` with four rows `w` (wasm without SIMD).
#[cfg(all(target_arch = "wasm32", not(target_feature = "simd128")))]
fn dot2x4(x: [&[Input]; 2], w: [&[Weight]; 4]) -> [[i32; 4]; 2] {
    dot2x4_i16(x, w)
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
                    // A weight is off by at most half of 1/127 of its row's largest
                    // magnitude, an input by half of 1/127 of its row's range (at
                    // most twice its largest magnitude).
                    let bound = 1.5 * (inp as f32).sqrt() / 127.0;
                    let g = got[r * out + o];
                    assert!((g - want).abs() < bound, "{rows}x{inp}x{out} [{r},{o}]: {g} vs {want}");
                }
            }
        }
    }

    #[test]
    fn smoothing_an_outlier_channel_gives_the_other_channels_their_precision() {
        // A transformer's fixed outlier channels: two input channels 30x the rest.
        let (rows, inp, out) = (16, 384, 32);
        let (w, b) = (data(out * inp, 11), data(out, 12));
        let mut x = data(rows * inp, 13);
        for r in 0..rows {
            x[r * inp + 99] *= 30.0;
            x[r * inp + 157] = 25.0 + r as f32;
        }
        let exact: Vec<f32> = (0..rows * out)
            .map(|i| (0..inp).map(|k| x[i / out * inp + k] * w[i % out * inp + k]).sum::<f32>() + b[i % out])
            .collect();
        let err = |y: Vec<f32>| y.iter().zip(&exact).map(|(a, e)| (a - e).abs()).sum::<f32>() / y.len() as f32;
        let plain = err(Int8Linear::new(&w, b.clone(), out, inp).forward(&x, rows));
        // SmoothQuant's factors with alpha 0.5: sqrt(input peak / weight peak).
        let smooth: Vec<f32> = (0..inp)
            .map(|k| {
                let xp = (0..rows).map(|r| x[r * inp + k].abs()).fold(0f32, f32::max);
                let wp = (0..out).map(|o| w[o * inp + k].abs()).fold(0f32, f32::max);
                (xp / wp).sqrt()
            })
            .collect();
        let lin = Int8Linear::with_smoothing(&w, b.clone(), out, inp, Some(&smooth));
        let smoothed = err(lin.forward(&x, rows));
        assert!(smoothed < plain / 3.0, "mean error {smoothed} smoothed vs {plain} plain");
        // Factors of 1 change nothing; a layer quantizes its own inputs and
        // shares them only with layers that take them the same way.
        let ones = Int8Linear::with_smoothing(&w, b.clone(), out, inp, Some(&vec![1.0; inp]));
        assert_eq!(ones.forward(&x, rows), Int8Linear::new(&w, b.clone(), out, inp).forward(&x, rows));
        assert_eq!(lin.forward_quantized(&lin.quantize(&x, rows)), lin.forward(&x, rows));
        assert!(!lin.takes_inputs_as(&ones) && lin.takes_inputs_as(&lin.clone()));
    }

    #[test]
    fn inputs_take_seven_bits_over_their_range_with_zero_exact() {
        let width = 16;
        let dequantize = |row: &[f32]| {
            let mut q: Vec<Input> = vec![0; width];
            let (scale, zero) = quantize_input(row, &mut q[..row.len()]);
            assert!((0..=127).contains(&zero), "zero point {zero}");
            q.iter().take(row.len()).map(|&v| (v as i32 - zero) as f32 * scale).collect::<Vec<f32>>()
        };
        // One-sided rows (GELU outputs) keep all 127 steps for their values.
        for row in [vec![0.0, 0.3, 1.0, 0.77, 0.5], vec![-2.0, -0.1, 0.0, -1.3], vec![-1.0, 0.25, 3.0, 0.0, -0.5]] {
            let (lo, hi) = row.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
            let back = dequantize(&row);
            for (v, b) in row.iter().zip(&back) {
                assert!((v - b).abs() <= (hi - lo) / 254.0 * 1.001, "{row:?}: {v} came back as {b}");
            }
            assert_eq!(back[row.iter().position(|&v| v == 0.0).unwrap()], 0.0, "zero is exact: {row:?}");
        }
        let mut q: Vec<Input> = vec![0; width];
        assert_eq!(quantize_input(&[0.0; 5], &mut q[..5]), (0.0, 0), "an all-zero row");
        assert!(quantize_input(&[1.0, f32::INFINITY], &mut q[..2]).0.is_nan(), "an infinite value");
        let (_, zero) = quantize_input(&[1.0, f32::NAN, -1.0], &mut q[..3]);
        assert_eq!(q[1] as i32, 0, "NaN is passed over and becomes 0 (zero point {zero})");
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

    /// The browser's linear layer, written plainly: row-major weights,
    /// integer sums in index order, then its finishing formula.
    fn plain_linear(w: &[f32], b: &[f32], x: &[f32], rows: usize, inp: usize) -> Vec<f32> {
        let mut wq = vec![0; inp];
        let mut xq = vec![0; inp];
        let rows_q: Vec<(f32, Vec<i32>)> = w
            .chunks_exact(inp)
            .map(|r| (quantize_weights(r, &mut wq), wq.iter().map(|&v| v as i32).collect()))
            .collect();
        let mut y = Vec::new();
        for r in x.chunks_exact(inp).take(rows) {
            let (scale, zero) = quantize_input(r, &mut xq);
            for (o, (ws, wr)) in rows_q.iter().enumerate() {
                let sum: i32 = wr.iter().zip(&xq).map(|(a, c)| a * *c as i32).sum();
                let dot = sum - zero * wr.iter().sum::<i32>();
                y.push(dot as f32 * scale * ws + b[o]);
            }
        }
        y
    }

    #[test]
    fn the_native_kernels_give_the_browsers_bits() {
        // Ragged shapes: rows past a 16-row part and past 128 (a product
        // longer than 128 tokens), outputs that fill no panel, odd widths.
        for (rows, inp, out) in [(150, 384, 37), (1, 20, 7), (17, 36, 16), (130, 1536, 50), (5, 4, 1)] {
            let (w, x, b) = (data(out * inp, 21), data(rows * inp, 22), data(out, 23));
            let got = Int8Linear::new(&w, b.clone(), out, inp).forward(&x, rows);
            assert_eq!(got, plain_linear(&w, &b, &x, rows, inp), "{rows} x {inp} x {out}");
        }
    }

    #[test]
    fn the_native_attention_gives_the_browsers_bits() {
        // Texts of 150 tokens (past 128) and of 7 padded to 150, heads of 32
        // and of 8 dimensions.
        for (b, t, heads, hd, pad) in [(2, 150, 3, 32, 143), (1, 7, 2, 8, 0), (3, 33, 4, 16, 5)] {
            let width = heads * hd;
            let (q, k, v) = (data(b * t * width, 31), data(b * t * width, 32), data(b * t * width, 33));
            let mut bias = vec![0f32; b * t];
            bias[b * t - pad..].iter_mut().for_each(|x| *x = -1e4);
            let got = attention(&q, &k, &v, &bias, b, t, heads);
            for bi in 0..b {
                for h in 0..heads {
                    let plain = head_attention_plain(&q, &k, &v, &bias[bi * t..(bi + 1) * t], bi, h, t, width, hd);
                    for i in 0..t {
                        let at = (bi * t + i) * width + h * hd;
                        assert_eq!(got[at..at + hd], plain[i * hd..(i + 1) * hd], "text {bi} head {h} token {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_avx512_element_wise_passes_give_the_narrow_passes_bits() {
        use crate::encoder::int8_native::{NARROW, wide};
        use std::sync::atomic::Ordering::Relaxed;
        if !wide() {
            eprintln!(
                "skipped: no AVX-512 element-wise passes on this CPU (or PRICER_INT8_KERNEL chose another kernel)"
            );
            return;
        }
        let (rows, inp, out, heads) = (150, 384, 50, 12);
        let mut x = data(rows * inp, 41);
        // Values each pass must treat alike: NaN, infinities, signed zeros,
        // subnormals, the exponential's clamps; one row left ordinary.
        let odd = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-40, -1e30, 88.5, -87.5, 1e-3, 3.0];
        for (i, v) in odd.iter().enumerate() {
            x[i * 7 * inp + i] = *v;
        }
        let lin = Int8Linear::new(&data(out * inp, 42), data(out, 43), out, inp);
        let (w, b) = (data(inp, 44), data(inp, 45));
        let mut bias = vec![0f32; rows];
        bias[140..].iter_mut().for_each(|v| *v = -1e4);
        let passes = || {
            let (mut gelu, mut norm, mut soft) = (vec![0f32; x.len()], vec![0f32; x.len()], x.clone());
            crate::fused::gelu_into(&x, &mut gelu);
            let mut in_place = x.clone();
            crate::fused::gelu_in_place(&mut in_place);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&in_place), bits(&gelu), "GELU in place gives gelu_into's bits");
            crate::fused::layer_norm_into(&x, &w, &b, 1e-12, &mut norm);
            soft.chunks_exact_mut(inp).for_each(crate::fused::softmax_lanes_in_place);
            let att = attention(&x[..rows * 96], &data(rows * 96, 46), &data(rows * 96, 47), &bias, 1, rows, heads / 4);
            [lin.forward(&x, rows), gelu, norm, soft, att].map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
        };
        let wide_bits = passes();
        NARROW.store(true, Relaxed);
        let narrow_bits = passes();
        NARROW.store(false, Relaxed);
        for (name, (a, b)) in
            ["linear", "gelu", "layer norm", "softmax", "attention"].iter().zip(wide_bits.iter().zip(&narrow_bits))
        {
            assert_eq!(a, b, "{name}: AVX-512 and narrow passes differ");
        }
    }

    #[test]
    fn min_max_gives_the_bits_of_one_running_pair() {
        use crate::encoder::int8_native::NARROW;
        use std::sync::atomic::Ordering::Relaxed;
        let one_pair = |row: &[f32]| {
            row.iter().fold((0f32, 0f32), |(l, h), &v| (if v < l { v } else { l }, if v > h { v } else { h }))
        };
        let odd = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1e-40, -1e-40, f32::MAX, f32::MIN, -3.0];
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for len in (0..70).chain([130, 384, 1536]) {
            let row = data(len, len as u32);
            rows.push(row.iter().map(|v| v.abs()).collect());
            rows.push(row.iter().map(|v| -v.abs()).collect());
            rows.push(vec![-0.0; len]);
            for (i, v) in odd.iter().enumerate().filter(|(i, _)| *i < len) {
                let mut r = row.clone();
                r[(i * 7919) % len] = *v;
                r[len - 1 - i] = odd[(i + 3) % odd.len()];
                rows.push(r);
            }
            rows.push(row);
        }
        let bits = |(l, h): (f32, f32)| (l.to_bits(), h.to_bits());
        for narrow in [false, true] {
            NARROW.store(narrow, Relaxed);
            for row in &rows {
                assert_eq!(bits(min_max(row)), bits(one_pair(row)), "{row:?}, narrow {narrow}");
            }
        }
        NARROW.store(false, Relaxed);
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
    fn a_text_gets_the_same_attention_bits_alone_or_padded_in_a_batch() {
        let (t, heads, hd) = (7, 2, 16);
        let width = heads * hd;
        let (q, k, v) = (data(t * width, 11), data(t * width, 12), data(t * width, 13));
        let alone = attention(&q, &k, &v, &vec![0.0; t], 1, t, heads);
        // Padded to 10 tokens (padding values large, to move any scale they
        // would enter), after a second text of 10 tokens.
        let tp = 10;
        let pad = |x: &[f32], other: Vec<f32>| {
            let mut y = other;
            y.extend_from_slice(x);
            y.extend(std::iter::repeat_n(50.0, (tp - t) * width));
            y
        };
        let (qb, kb, vb) =
            (pad(&q, data(tp * width, 14)), pad(&k, data(tp * width, 15)), pad(&v, data(tp * width, 16)));
        let mut bias = vec![0.0; 2 * tp];
        bias[tp + t..].iter_mut().for_each(|b| *b = -1e4);
        let batch = attention(&qb, &kb, &vb, &bias, 2, tp, heads);
        assert_eq!(alone, batch[(tp) * width..(tp + t) * width], "the padded text's tokens");
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
        // Rows taken in parts across the texts' boundary are the same rows.
        let by_heads = attention_heads(&q, &k, &v, &bias, b, t, heads);
        let parts: Vec<f32> = [(0, 3), (3, 4), (7, 3)].iter().flat_map(|&(from, n)| by_heads.rows(from, n)).collect();
        assert_eq!(parts, got);
        let mut worst = 0f64;
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
                        // Probabilities are off by at most 1/254 of their row's
                        // largest (t of them), values by 1/254 of their largest
                        // magnitude (1 here), scores by a few hundredths.
                        assert!((g - want).abs() < 0.03, "[{bi},{h},{i},{d}] {g} vs {want}");
                        worst = worst.max((g - want).abs());
                    }
                }
            }
        }
        // Int8 rounding shows (a test of f32 arithmetic would see 1e-7).
        assert!(worst > 1e-4, "worst error {worst}");
    }

    #[test]
    fn the_many_small_probabilities_of_a_long_text_keep_their_weight() {
        // 128 keys: one holds 40% of the weight, the others share the rest
        // (about 0.0047 each). In 7 bits the small ones were a step of 0.0031
        // apart, so their sum could move by tens of percent of a value; in 15
        // bits a step is 0.000012.
        let (t, n, hd) = (3, 128, 8);
        let mut probs = vec![0f32; t * n];
        for (i, row) in probs.chunks_exact_mut(n).enumerate() {
            let wave = data(n, 11 + i as u32);
            let rest: Vec<f32> = wave.iter().map(|w| 1.0 + 0.5 * w).collect();
            let total: f32 = rest.iter().sum::<f32>() - rest[i];
            for (j, p) in row.iter_mut().enumerate() {
                *p = if j == i { 0.4 } else { 0.6 * rest[j] / total };
            }
        }
        let vt = data(hd * n, 12);
        let got = probabilities_times_values(&probs, t, n, &vt, hd);
        let mut worst = 0f64;
        for i in 0..t {
            for d in 0..hd {
                let want: f64 = (0..n).map(|j| probs[i * n + j] as f64 * vt[d * n + j] as f64).sum();
                worst = worst.max((got[i * hd + d] as f64 - want).abs());
            }
        }
        // Values are off by at most 1/254 of their largest magnitude (1 here),
        // and the probabilities add almost nothing.
        assert!(worst < 1.0 / 254.0 + 0.002, "worst error {worst}");
        assert!(worst > 1e-6, "int8 rounding shows: {worst}");
    }
}
