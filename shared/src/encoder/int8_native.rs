//! Native int8 matrix products: the integer sums of [`crate::int8`]'s
//! layers for a batch of input rows at once, with the weights packed in
//! panels of 16 outputs x 4 inputs. One weight load then serves several
//! rows, one broadcast input serves 16 outputs, and the sums of 4 products
//! land in each output's own lane: no horizontal sums. On x86-64 the kernel
//! is picked at run time: `vpdpbusd` on 512 bits (AVX512-VNNI) or 256
//! (AVX-VNNI), or AVX2's `vpmaddubsw` + `vpmaddwd` where the CPU has no VNNI.
//! Inputs are 0..=127 and weights -127..=127, so every kernel (and the
//! browser's) computes the same exact i32 sums: no pair of products can
//! saturate `vpmaddubsw` (2 x 127 x 127 < 32767).

/// Outputs per panel: one 512-bit vector of i32 sums.
pub const PANEL: usize = 16;
/// Inputs per group: the 4 bytes one `vpdpbusd` lane sums.
pub const GROUP: usize = 4;
/// Rows and panels one kernel step computes: 4 x 4 accumulators.
const ROWS: usize = 4;

/// Set by tests to compare the AVX-512 element-wise passes with the build
/// target's: tests running meanwhile take the other path, to the same bits.
#[cfg(test)]
pub(crate) static NARROW: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether element-wise passes run on AVX-512 ([`wide_or_not`]): where the
/// CPU has AVX512F, BW, VL and DQ and the int8 kernel in use is the 512-bit
/// one (`PRICER_INT8_KERNEL=avx2` then also keeps them at 256 bits, so
/// tests comparing kernels compare these too). Read once.
pub fn wide() -> bool {
    #[cfg(test)]
    if NARROW.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            Kernel::best() == Kernel::Avx512Vnni
                && has!("avx512f")
                && has!("avx512bw")
                && has!("avx512vl")
                && has!("avx512dq")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// Row-major weights (`out x width`, `width` a multiple of [`GROUP`]) in
/// panels: output `o`'s inputs `4g..4g + 4` at
/// `((o / 16 * groups + g) * 16 + o % 16) * 4`. Outputs past `out` are 0.
pub fn pack(weight: &[i8], out: usize, width: usize) -> Vec<i8> {
    assert!(width.is_multiple_of(GROUP) && weight.len() == out * width, "weights are not out x width");
    let groups = width / GROUP;
    let mut packed = vec![0i8; out.div_ceil(PANEL) * groups * PANEL * GROUP];
    for (o, row) in weight.chunks_exact(width.max(1)).enumerate().take(out) {
        for (g, four) in row.chunks_exact(GROUP).enumerate() {
            let at = ((o / PANEL * groups + g) * PANEL + o % PANEL) * GROUP;
            packed[at..at + GROUP].copy_from_slice(four);
        }
    }
    packed
}

/// A kernel for the integer sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `vpdpbusd` on 512-bit vectors.
    Avx512Vnni,
    /// `vpdpbusd` on 256-bit vectors (VEX encoded).
    AvxVnni,
    /// `vpmaddubsw` then `vpmaddwd` on 256-bit vectors.
    Avx2,
    /// Plain loops (other CPUs).
    Scalar,
}

impl Kernel {
    /// Every kernel this CPU can run, fastest first.
    pub fn available() -> Vec<Kernel> {
        let mut ks = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512vnni") && std::arch::is_x86_feature_detected!("avx512f") {
                ks.push(Kernel::Avx512Vnni);
            }
            if std::arch::is_x86_feature_detected!("avxvnni") && std::arch::is_x86_feature_detected!("avx2") {
                ks.push(Kernel::AvxVnni);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                ks.push(Kernel::Avx2);
            }
        }
        ks.push(Kernel::Scalar);
        ks
    }

    /// The fastest kernel this CPU runs, or the one `PRICER_INT8_KERNEL`
    /// names (`avx512-vnni`, `avx-vnni`, `avx2`, `scalar`) when it can run
    /// it (else the fastest): benchmarks compare kernels with it. Read once.
    pub fn best() -> Kernel {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let ks = Kernel::available();
            let asked = std::env::var("PRICER_INT8_KERNEL").ok();
            asked.and_then(|name| ks.iter().copied().find(|k| k.name() == name)).unwrap_or(ks[0])
        })
    }

    /// Whether this CPU runs the kernel (detected once).
    pub fn runs_here(self) -> bool {
        static HERE: std::sync::OnceLock<Vec<Kernel>> = std::sync::OnceLock::new();
        HERE.get_or_init(Kernel::available).contains(&self)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Vnni => "avx512-vnni",
            Kernel::AvxVnni => "avx-vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Scalar => "scalar",
        }
    }

    /// `sums[r * panels * 16 + o]` = the dot product of input row `r` of
    /// `x` (`rows x width`, values 0..=127) with weight row `o` of `packed`
    /// (from [`pack`], `panels` panels). Panics if this CPU cannot run the kernel.
    pub fn sums(self, x: &[u8], rows: usize, width: usize, packed: &[i8], panels: usize, sums: &mut [i32]) {
        let groups = width / GROUP;
        assert!(width.is_multiple_of(GROUP) && x.len() == rows * width, "inputs are not rows x width");
        assert!(packed.len() == panels * groups * PANEL * GROUP, "packed weights of another shape");
        assert!(sums.len() == rows * panels * PANEL, "sums are not rows x panels x 16");
        if rows == 0 || panels == 0 {
            return;
        }
        assert!(self.runs_here(), "this CPU cannot run the {} kernel", self.name());
        let job = Job { x, rows, width, packed, panels };
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX512F and AVX512-VNNI (asserted above,
            // `available` detects them); `Job::row` and `Job::panel` give
            // slices of the shapes asserted above, which the kernels read.
            Kernel::Avx512Vnni => unsafe { x86::run_avx512_vnni(&job, sums) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX2 and AVX-VNNI (asserted above).
            Kernel::AvxVnni => unsafe { x86::run_avx_vnni(&job, sums) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX2 (asserted above).
            Kernel::Avx2 => unsafe { x86::run_avx2(&job, sums) },
            _ => scalar(&job, sums),
        }
    }
}

/// One product's operands.
struct Job<'a> {
    x: &'a [u8],
    rows: usize,
    width: usize,
    packed: &'a [i8],
    panels: usize,
}

impl Job<'_> {
    /// Input row `r` (the last row again past the end: its sums are not stored).
    fn row(&self, r: usize) -> &[u8] {
        let r = r.min(self.rows - 1);
        &self.x[r * self.width..(r + 1) * self.width]
    }

    /// Panel `p` (the last again past the end).
    fn panel(&self, p: usize) -> &[i8] {
        let len = self.width * PANEL;
        let p = p.min(self.panels - 1);
        &self.packed[p * len..(p + 1) * len]
    }

    /// Stores a block's sums for rows `r..r + 4` and panels `p..p + n`
    /// (`acc[row][panel]`, 16 lanes each), leaving out rows and panels past the end.
    fn store<const N: usize>(&self, r: usize, p: usize, acc: &[[[i32; PANEL]; N]; ROWS], sums: &mut [i32]) {
        let stride = self.panels * PANEL;
        for (i, row) in acc.iter().enumerate().take(self.rows - r) {
            for (j, lanes) in row.iter().enumerate().take(self.panels - p) {
                let at = (r + i) * stride + (p + j) * PANEL;
                sums[at..at + PANEL].copy_from_slice(lanes);
            }
        }
    }
}

/// The plain-loop kernel (and the reference the SIMD kernels are tested against).
fn scalar(job: &Job, sums: &mut [i32]) {
    let stride = job.panels * PANEL;
    for r in 0..job.rows {
        let x = job.row(r);
        for p in 0..job.panels {
            let w = job.panel(p);
            for (o, sum) in sums[r * stride + p * PANEL..][..PANEL].iter_mut().enumerate() {
                *sum = x
                    .chunks_exact(GROUP)
                    .enumerate()
                    .map(|(g, xs)| {
                        let ws = &w[(g * PANEL + o) * GROUP..][..GROUP];
                        xs.iter().zip(ws).map(|(&a, &b)| a as i32 * b as i32).sum::<i32>()
                    })
                    .sum();
            }
        }
    }
}

/// The smallest and largest values of `row` and 0, NaN passed over, as the
/// quantizers need them: in 512-bit lanes where [`wide`] says so, else 256.
/// `minps(v, lo)` is exactly `v < lo ? v : lo` (NaN never taken) and the
/// lanes never hold -0 (they start at +0 and only strictly smaller or larger
/// values replace them), so any lanes and any reduction order give the
/// bits of one running pair.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
pub fn min_max(row: &[f32]) -> (f32, f32) {
    if wide() {
        // SAFETY: `wide()` is true only where AVX512F was detected at run time.
        unsafe { x86::min_max_512(row) }
    } else {
        // SAFETY: the build's target has AVX2 (this function's cfg), so AVX.
        unsafe { x86::min_max_256(row) }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{GROUP, Job, PANEL, ROWS};
    use std::arch::x86_64::*;

    /// [`super::min_max`] in 16 lanes.
    ///
    /// # Safety
    /// The CPU must have AVX512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn min_max_512(row: &[f32]) -> (f32, f32) {
        // Four pairs of accumulators, so four chains of minps/maxps run at
        // once instead of one waiting on each result; lanes merge exactly.
        let (mut lo, mut hi) = ([_mm512_setzero_ps(); 4], [_mm512_setzero_ps(); 4]);
        let mut blocks = row.chunks_exact(64);
        for b in &mut blocks {
            for i in 0..4 {
                // SAFETY: `b` holds 64 f32s, so 16 from 16 * i; unaligned loads are allowed.
                let v = unsafe { _mm512_loadu_ps(b.as_ptr().add(16 * i)) };
                (lo[i], hi[i]) = (_mm512_min_ps(v, lo[i]), _mm512_max_ps(v, hi[i]));
            }
        }
        let mut chunks = blocks.remainder().chunks_exact(16);
        for c in &mut chunks {
            // SAFETY: `c` holds 16 f32s; unaligned loads are allowed.
            let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
            (lo[0], hi[0]) = (_mm512_min_ps(v, lo[0]), _mm512_max_ps(v, hi[0]));
        }
        let rest = chunks.remainder();
        // SAFETY: the mask selects the remainder's `rest.len()` (< 16) values;
        // masked-out lanes are not read (and read as 0, which changes neither).
        let v = unsafe { _mm512_maskz_loadu_ps((1u16 << rest.len()) - 1, rest.as_ptr()) };
        (lo[1], hi[1]) = (_mm512_min_ps(v, lo[1]), _mm512_max_ps(v, hi[1]));
        let lo = _mm512_min_ps(_mm512_min_ps(lo[0], lo[1]), _mm512_min_ps(lo[2], lo[3]));
        let hi = _mm512_max_ps(_mm512_max_ps(hi[0], hi[1]), _mm512_max_ps(hi[2], hi[3]));
        (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi))
    }

    /// [`super::min_max`] in 8 lanes.
    ///
    /// # Safety
    /// The CPU must have AVX.
    #[target_feature(enable = "avx")]
    pub unsafe fn min_max_256(row: &[f32]) -> (f32, f32) {
        let (mut lo4, mut hi4) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
        let mut blocks = row.chunks_exact(32);
        for b in &mut blocks {
            for i in 0..4 {
                // SAFETY: `b` holds 32 f32s, so 8 from 8 * i; unaligned loads are allowed.
                let v = unsafe { _mm256_loadu_ps(b.as_ptr().add(8 * i)) };
                (lo4[i], hi4[i]) = (_mm256_min_ps(v, lo4[i]), _mm256_max_ps(v, hi4[i]));
            }
        }
        let mut chunks = blocks.remainder().chunks_exact(8);
        for c in &mut chunks {
            // SAFETY: `c` holds 8 f32s; unaligned loads are allowed.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            (lo4[0], hi4[0]) = (_mm256_min_ps(v, lo4[0]), _mm256_max_ps(v, hi4[0]));
        }
        let lo = _mm256_min_ps(_mm256_min_ps(lo4[0], lo4[1]), _mm256_min_ps(lo4[2], lo4[3]));
        let hi = _mm256_max_ps(_mm256_max_ps(hi4[0], hi4[1]), _mm256_max_ps(hi4[2], hi4[3]));
        let half = |v: __m256, f: fn(__m128, __m128) -> __m128| {
            let mut lanes = [0f32; 4];
            // SAFETY: `lanes` holds 4 f32s; unaligned stores are allowed.
            unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), f(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v))) };
            lanes
        };
        let (lo4, hi4) = (half(lo, |a, b| _mm_min_ps(a, b)), half(hi, |a, b| _mm_max_ps(a, b)));
        crate::encoder::int8::min_max_of(lo4, hi4, chunks.remainder())
    }

    /// Group `g` (4 bytes) of a row at `row`, as one i32 for a broadcast.
    ///
    /// # Safety
    /// `row` must point at a row of at least `4 * (g + 1)` bytes.
    #[inline(always)]
    unsafe fn group(row: *const u8, g: usize) -> i32 {
        // SAFETY: the caller guarantees the 4 bytes are inside the row.
        unsafe { row.add(g * GROUP).cast::<i32>().read_unaligned() }
    }

    /// 4 rows x 4 panels per step, one 512-bit accumulator each.
    ///
    /// # Safety
    /// The CPU must have AVX512F and AVX512-VNNI.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn run_avx512_vnni(job: &Job, sums: &mut [i32]) {
        const C: usize = 4;
        let groups = job.width / GROUP;
        for p in (0..job.panels).step_by(C) {
            let w: [*const i8; C] = std::array::from_fn(|j| job.panel(p + j).as_ptr());
            for r in (0..job.rows).step_by(ROWS) {
                let x: [*const u8; ROWS] = std::array::from_fn(|i| job.row(r + i).as_ptr());
                let mut acc = [[_mm512_setzero_si512(); C]; ROWS];
                // SAFETY: every row holds `groups` groups of 4 bytes and every
                // panel `groups` blocks of 64 (`Job::row`, `Job::panel`), and g < groups.
                unsafe {
                    for g in 0..groups {
                        let wv: [__m512i; C] = std::array::from_fn(|j| _mm512_loadu_si512(w[j].add(g * 64).cast()));
                        for i in 0..ROWS {
                            let xv = _mm512_set1_epi32(group(x[i], g));
                            for j in 0..C {
                                acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], xv, wv[j]);
                            }
                        }
                    }
                }
                if r + ROWS <= job.rows && p + C <= job.panels {
                    // A whole block: straight into the sums.
                    let stride = job.panels * PANEL;
                    for (i, row) in acc.iter().enumerate() {
                        for (j, a) in row.iter().enumerate() {
                            let at = (r + i) * stride + (p + j) * PANEL;
                            let dst = &mut sums[at..at + PANEL];
                            // SAFETY: `dst` holds 16 i32s, 64 bytes; unaligned stores are allowed.
                            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), *a) };
                        }
                    }
                    continue;
                }
                let mut out = [[[0i32; PANEL]; C]; ROWS];
                for i in 0..ROWS {
                    for j in 0..C {
                        // SAFETY: `out[i][j]` holds 16 i32s, 64 bytes.
                        unsafe { _mm512_storeu_si512(out[i][j].as_mut_ptr().cast(), acc[i][j]) };
                    }
                }
                job.store(r, p, &out, sums);
            }
        }
    }

    /// Pair `g` of an i16 row at `row`, as one i32 for a broadcast.
    ///
    /// # Safety
    /// `row` must point at a row of at least `2 * (g + 1)` values.
    #[inline(always)]
    unsafe fn pair(row: *const i16, g: usize) -> i32 {
        // SAFETY: the caller guarantees the 2 values are inside the row.
        unsafe { row.add(2 * g).cast::<i32>().read_unaligned() }
    }

    /// [`super::pairs_sums`] with `vpdpwssd`: 4 rows x one panel per step.
    ///
    /// # Safety
    /// The CPU must have AVX512F and AVX512-VNNI; `p` holds `rows` rows of
    /// `2 * pairs` values, `packed` `panels * pairs` blocks of 32, and `sums`
    /// `rows * panels * 16` values.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn pairs_avx512_vnni(
        p: &[i16],
        rows: usize,
        packed: &[i16],
        panels: usize,
        pairs: usize,
        sums: &mut [i32],
    ) {
        let (width, stride) = (2 * pairs, panels * PANEL);
        for d in 0..panels {
            let w = packed[d * pairs * 32..(d + 1) * pairs * 32].as_ptr();
            for r in (0..rows).step_by(ROWS) {
                let x: [*const i16; ROWS] = std::array::from_fn(|i| p[(r + i).min(rows - 1) * width..].as_ptr());
                let mut acc = [_mm512_setzero_si512(); ROWS];
                // SAFETY: the caller guarantees the shapes; g < pairs.
                unsafe {
                    for g in 0..pairs {
                        let wv = _mm512_loadu_si512(w.add(g * 32).cast());
                        for i in 0..ROWS {
                            acc[i] = _mm512_dpwssd_epi32(acc[i], _mm512_set1_epi32(pair(x[i], g)), wv);
                        }
                    }
                }
                for (i, a) in acc.iter().enumerate().take(rows - r) {
                    let at = (r + i) * stride + d * PANEL;
                    // SAFETY: `sums[at..at + 16]` is inside `sums` (the indexing checks it).
                    unsafe { _mm512_storeu_si512(sums[at..at + PANEL].as_mut_ptr().cast(), *a) };
                }
            }
        }
    }

    /// [`super::pairs_sums`] with `vpmaddwd`: 4 rows x one panel (two
    /// 256-bit halves) per step.
    ///
    /// # Safety
    /// The CPU must have AVX2; shapes as for [`pairs_avx512_vnni`].
    #[target_feature(enable = "avx2")]
    pub unsafe fn pairs_avx2(p: &[i16], rows: usize, packed: &[i16], panels: usize, pairs: usize, sums: &mut [i32]) {
        let (width, stride) = (2 * pairs, panels * PANEL);
        for d in 0..panels {
            let w = packed[d * pairs * 32..(d + 1) * pairs * 32].as_ptr();
            for r in (0..rows).step_by(ROWS) {
                let x: [*const i16; ROWS] = std::array::from_fn(|i| p[(r + i).min(rows - 1) * width..].as_ptr());
                let mut acc = [[_mm256_setzero_si256(); 2]; ROWS];
                // SAFETY: the caller guarantees the shapes; g < pairs.
                unsafe {
                    for g in 0..pairs {
                        let w0 = _mm256_loadu_si256(w.add(g * 32).cast());
                        let w1 = _mm256_loadu_si256(w.add(g * 32 + 16).cast());
                        for i in 0..ROWS {
                            let xv = _mm256_set1_epi32(pair(x[i], g));
                            acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(xv, w0));
                            acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(xv, w1));
                        }
                    }
                }
                for (i, a) in acc.iter().enumerate().take(rows - r) {
                    let at = (r + i) * stride + d * PANEL;
                    // SAFETY: each half is 8 i32s inside `sums` (the indexing checks it).
                    unsafe {
                        _mm256_storeu_si256(sums[at..at + 8].as_mut_ptr().cast(), a[0]);
                        _mm256_storeu_si256(sums[at + 8..at + PANEL].as_mut_ptr().cast(), a[1]);
                    }
                }
            }
        }
    }

    /// One panel (two 256-bit halves) x 4 rows per step; `dot` adds the
    /// sums of 4 products of each lane. Inlined into its callers, which
    /// enable the CPU features it needs.
    ///
    /// # Safety
    /// The CPU must have AVX2 and whatever `dot` uses.
    #[inline(always)]
    unsafe fn run_256(job: &Job, sums: &mut [i32], dot: impl Fn(__m256i, __m256i, __m256i) -> __m256i) {
        let groups = job.width / GROUP;
        // SAFETY: the caller guarantees AVX2. Every row holds `groups`
        // groups of 4 bytes and every panel `groups` blocks of 64
        // (`Job::row`, `Job::panel`), and g < groups; each store is of a
        // slice of exactly 32 bytes.
        unsafe {
            for p in 0..job.panels {
                let w = job.panel(p).as_ptr();
                for r in (0..job.rows).step_by(ROWS) {
                    let x: [*const u8; ROWS] = std::array::from_fn(|i| job.row(r + i).as_ptr());
                    let mut acc = [[_mm256_setzero_si256(); 2]; ROWS];
                    for g in 0..groups {
                        let w0 = _mm256_loadu_si256(w.add(g * 64).cast());
                        let w1 = _mm256_loadu_si256(w.add(g * 64 + 32).cast());
                        for i in 0..ROWS {
                            let xv = _mm256_set1_epi32(group(x[i], g));
                            acc[i][0] = dot(acc[i][0], xv, w0);
                            acc[i][1] = dot(acc[i][1], xv, w1);
                        }
                    }
                    let mut out = [[[0i32; PANEL]; 1]; ROWS];
                    for i in 0..ROWS {
                        _mm256_storeu_si256(out[i][0][..8].as_mut_ptr().cast(), acc[i][0]);
                        _mm256_storeu_si256(out[i][0][8..].as_mut_ptr().cast(), acc[i][1]);
                    }
                    job.store(r, p, &out, sums);
                }
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX2 and AVX-VNNI.
    #[target_feature(enable = "avx2,avxvnni")]
    pub unsafe fn run_avx_vnni(job: &Job, sums: &mut [i32]) {
        // SAFETY: the caller guarantees AVX2 and AVX-VNNI.
        unsafe { run_256(job, sums, |acc, x, w| _mm256_dpbusd_avx_epi32(acc, x, w)) }
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn run_avx2(job: &Job, sums: &mut [i32]) {
        let ones = _mm256_set1_epi16(1);
        // Pairs of u8 x i8 products summed in i16 (exact: |sum| <= 2 x 127 x 127),
        // then pairs of those in i32: the 4-product sums `vpdpbusd` gives.
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            run_256(job, sums, |acc, x, w| _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), ones)))
        }
    }
}

/// i16 rows (`dims x width`, `width` even) packed for [`Pairs::sums`]: in
/// panels of 16 rows x 2 values, so one `vpdpwssd` (or `vpmaddwd`) adds two
/// products to each of 16 rows' sums. The attention's values, transposed.
pub struct Pairs {
    packed: Vec<i16>,
    panels: usize,
    pairs: usize,
}

impl Pairs {
    pub fn new(v: &[i16], dims: usize, width: usize) -> Pairs {
        assert!(width.is_multiple_of(2) && v.len() == dims * width, "rows of another width");
        let (pairs, panels) = (width / 2, dims.div_ceil(PANEL));
        let mut packed = vec![0i16; panels * pairs * PANEL * 2];
        for (d, row) in v.chunks_exact(width.max(1)).enumerate().take(dims) {
            for (g, two) in row.chunks_exact(2).enumerate() {
                let at = ((d / PANEL * pairs + g) * PANEL + d % PANEL) * 2;
                packed[at..at + 2].copy_from_slice(two);
            }
        }
        Pairs { packed, panels, pairs }
    }

    /// Values between one row's sums in [`Pairs::sums`]'s output.
    pub fn stride(&self) -> usize {
        self.panels * PANEL
    }

    /// `sums[i * stride + d]` = the dot product of i16 row `i` of `p`
    /// (`rows x width`) with packed row `d`: exact i32 sums, as the
    /// browser's i16 kernel's.
    pub fn sums(&self, kernel: Kernel, p: &[i16], rows: usize, sums: &mut [i32]) {
        let (width, stride) = (2 * self.pairs, self.stride());
        assert!(p.len() == rows * width && sums.len() == rows * stride, "rows of another shape");
        if rows == 0 || self.panels == 0 || self.pairs == 0 {
            sums.iter_mut().for_each(|s| *s = 0);
            return;
        }
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni | Kernel::AvxVnni | Kernel::Avx2 => {
                assert!(kernel.runs_here(), "this CPU cannot run the {} kernel", kernel.name());
                let (packed, panels, pairs) = (&self.packed, self.panels, self.pairs);
                // SAFETY: the CPU has AVX2 (and AVX512F with AVX512-VNNI for
                // the first), as asserted; `packed` holds panels x pairs
                // blocks of 32 i16 (built in `new`), each row of `p` `pairs`
                // pairs and `sums` rows x stride values (asserted above).
                unsafe {
                    if kernel == Kernel::Avx512Vnni {
                        x86::pairs_avx512_vnni(p, rows, packed, panels, pairs, sums)
                    } else {
                        x86::pairs_avx2(p, rows, packed, panels, pairs, sums)
                    }
                }
            }
            _ => {
                for (i, prow) in p.chunks_exact(width).enumerate() {
                    for d in 0..stride {
                        sums[i * stride + d] = (0..self.pairs)
                            .map(|g| {
                                let at = ((d / PANEL * self.pairs + g) * PANEL + d % PANEL) * 2;
                                let w = &self.packed[at..at + 2];
                                prow[2 * g] as i32 * w[0] as i32 + prow[2 * g + 1] as i32 * w[1] as i32
                            })
                            .sum();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(n: usize, seed: u64, lo: i32, hi: i32) -> Vec<i32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                lo + (s % (hi - lo + 1) as u64) as i32
            })
            .collect()
    }

    #[test]
    fn every_kernel_gives_the_plain_dot_products() {
        // Ragged shapes: rows and panels that fill no whole block, widths of
        // one group, odd group counts and a long row; extreme values included.
        for (case, (rows, out, width)) in
            [(1, 1, 4), (3, 17, 12), (4, 16, 64), (5, 33, 36), (9, 70, 388), (13, 48, 1536), (2, 5, 32), (8, 128, 64)]
                .into_iter()
                .enumerate()
        {
            let mut x: Vec<u8> = ints(rows * width, case as u64, 0, 127).into_iter().map(|v| v as u8).collect();
            let mut w: Vec<i8> = ints(out * width, 100 + case as u64, -127, 127).into_iter().map(|v| v as i8).collect();
            x[0] = 127;
            w[0] = -127;
            let want: Vec<i32> = (0..rows)
                .flat_map(|r| {
                    let (x, w) = (&x, &w);
                    (0..out.div_ceil(PANEL) * PANEL).map(move |o| {
                        if o >= out {
                            return 0;
                        }
                        (0..width).map(|k| x[r * width + k] as i32 * w[o * width + k] as i32).sum()
                    })
                })
                .collect();
            let packed = pack(&w, out, width);
            let panels = out.div_ceil(PANEL);
            for k in Kernel::available() {
                let mut got = vec![i32::MIN; want.len()];
                k.sums(&x, rows, width, &packed, panels, &mut got);
                assert_eq!(got, want, "{} on {rows} x {width} x {out}", k.name());
            }
        }
    }

    #[test]
    fn every_kernel_gives_the_plain_i16_pair_sums() {
        for (case, (rows, dims, width)) in
            [(1, 1, 2), (3, 32, 136), (6, 16, 8), (5, 20, 130), (131, 32, 264)].into_iter().enumerate()
        {
            let p: Vec<i16> = ints(rows * width, case as u64, 0, 32767).into_iter().map(|v| v as i16).collect();
            let v: Vec<i16> = ints(dims * width, 50 + case as u64, -127, 127).into_iter().map(|v| v as i16).collect();
            let pairs = Pairs::new(&v, dims, width);
            let stride = pairs.stride();
            for k in Kernel::available() {
                let mut got = vec![i32::MIN; rows * stride];
                pairs.sums(k, &p, rows, &mut got);
                for i in 0..rows {
                    for d in 0..dims {
                        let want: i32 = (0..width).map(|j| p[i * width + j] as i32 * v[d * width + j] as i32).sum();
                        assert_eq!(got[i * stride + d], want, "{} [{i},{d}] of {rows} x {width} x {dims}", k.name());
                    }
                }
            }
        }
    }

    #[test]
    fn the_vnni_kernels_run_where_the_cpu_has_vnni() {
        let ks = Kernel::available();
        let has = |f: &str| -> bool {
            #[cfg(target_arch = "x86_64")]
            {
                std::fs::read_to_string("/proc/cpuinfo").map(|c| c.split_whitespace().any(|w| w == f)).unwrap_or(false)
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = f;
                false
            }
        };
        for (flag, k) in [("avx512_vnni", Kernel::Avx512Vnni), ("avx_vnni", Kernel::AvxVnni)] {
            if has(flag) {
                assert!(ks.contains(&k), "the CPU has {flag} but the {} kernel is not used", k.name());
            } else {
                println!("skipped: this CPU has no {flag}, so the {} kernel is not tested here", k.name());
            }
        }
        assert_eq!(Kernel::best(), ks[0], "the fastest kernel is the default (no PRICER_INT8_KERNEL in tests)");
    }
}
