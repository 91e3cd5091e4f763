//! lookd's own depthwise convolution, swapped into a loaded graph in place of tract's.
//!
//! tract 0.23.9 runs a float depthwise Conv on NCHW through `tract_linalg`'s `depthwise_w_f32`,
//! vectorised on x86 only for stride 1 and runs of at least 8 output points: EfficientNet-Lite0's
//! stride-2 layers and its 5×5 layers at 14×14 and 7×7 run mostly scalar, and the 16 depthwise
//! layers, 9% of the multiply-adds, took 59% of the graph's time (BENCHMARKS.md).
//!
//! [`swap_in`] replaces every 2-D, f32, channel-first depthwise `Conv` of a decluttered graph
//! (by [`declutter_channels_first`], which keeps tract from moving them channel-last on aarch64)
//! whose weights and bias are constants by a [`Depthwise`] node, folding a following clip
//! (`Max` then `Min` against constants: EfficientNet-Lite's ReLU6) into it. The kernel is one
//! generic routine over a vector type: AVX2 + FMA on x86-64 when the CPU has them (chosen at run
//! time), NEON on aarch64, one lane of plain arithmetic elsewhere.
//!
//! How a plane is computed: the input plane is copied once into a zero-padded scratch where
//! each row is split into `stride` phases (for stride 2, the even padded columns, then the odd
//! ones). Every tap then reads a contiguous run of the scratch whatever the stride, so the
//! output is computed a whole vector of neighbouring points at a time, several vectors at once
//! (they may straddle rows: a 7-point row still fills most of an 8-lane vector).

use std::sync::Arc;

use std::cell::Cell;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::model::Rewriter;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::math::{Max, Min};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::optim::Optimizer;

use super::ops::{eval_unary, replace_chain, sole_successor};

/// The shape of one depthwise layer: everything the kernel needs but the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub batch: usize,
    pub channels: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    /// Zero rows above and columns left of the input.
    pub pad_top: usize,
    pub pad_left: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geometry {
    pub fn macs(&self) -> usize {
        self.batch * self.channels * self.oh * self.ow * self.kh * self.kw
    }
}

/// Which vector unit the kernel uses on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// AVX-512 for layers at least 12 points wide (16 lanes), AVX2 + FMA for narrower ones,
    /// where 16 lanes would be mostly past the row.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Isa {
    /// The best this CPU runs.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if avx2 && is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2Fma;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                return Isa::Neon;
            }
        }
        Isa::Scalar
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => "avx2+fma",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512f",
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => "neon",
        }
    }
}

/// The layer's numbers, laid out for the kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub geo: Geometry,
    /// `channels × kh × kw`.
    pub weights: Vec<f32>,
    /// One per channel.
    pub bias: Vec<f32>,
    /// Lower and upper bound applied after the bias (a fused ReLU6 is `(0, 6)`).
    pub clip: (f32, f32),
}

impl Layer {
    /// Runs the layer: `input` is `batch × channels × h × w`, `output` `batch × channels × oh × ow`.
    pub fn run(&self, isa: Isa, input: &[f32], output: &mut [f32]) {
        let g = &self.geo;
        assert_eq!(input.len(), g.batch * g.channels * g.h * g.w, "depthwise input size");
        assert_eq!(output.len(), g.batch * g.channels * g.oh * g.ow, "depthwise output size");
        match isa {
            Isa::Scalar => run_planes::<Scalar>(self, input, output),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Avx2Fma comes from `detect` (or a test that checked the same features).
            Isa::Avx2Fma => unsafe { run_avx2(self, input, output) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Avx512 comes from `detect`, which also saw AVX2 and FMA.
            Isa::Avx512 if g.ow >= 12 => unsafe { run_avx512(self, input, output) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { run_avx2(self, input, output) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: NEON is baseline on aarch64.
            Isa::Neon => unsafe { run_neon(self, input, output) },
        }
    }
}

impl Layer {
    /// Runs the layer on u8 planes, a plane at a time: each input plane is handed to the kernel
    /// as `x − zero` in f32, and each output plane of sums to `finish(channel, sums, out)`. With
    /// integer weights and a bias of 0, the sums are exact integers while they stay below 2^24
    /// (lookd's int8 depthwise layers, [`super::int8`]).
    pub fn run_u8(&self, isa: Isa, input: &[u8], zero: u8, output: &mut [u8], finish: PlaneFinish) {
        let g = &self.geo;
        assert_eq!(input.len(), g.batch * g.channels * g.h * g.w, "depthwise input size");
        assert_eq!(output.len(), g.batch * g.channels * g.oh * g.ow, "depthwise output size");
        let io = U8Planes { input, zero: zero as f32, finish };
        match isa {
            Isa::Scalar => run_planes_u8::<Scalar>(self, io, output),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `run`.
            Isa::Avx2Fma => unsafe { run_avx2_u8(self, io, output) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `run`.
            Isa::Avx512 if g.ow >= 12 => unsafe { run_avx512_u8(self, io, output) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { run_avx2_u8(self, io, output) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: NEON is baseline on aarch64.
            Isa::Neon => unsafe { run_neon_u8(self, io, output) },
        }
    }
}

/// What [`Layer::run_u8`] does with each plane of sums: `(channel, sums, output plane)`.
pub type PlaneFinish<'a> = &'a dyn Fn(usize, &[f32], &mut [u8]);

struct U8Planes<'a> {
    input: &'a [u8],
    zero: f32,
    finish: PlaneFinish<'a>,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2_u8(layer: &Layer, io: U8Planes, output: &mut [u8]) {
    run_planes_u8::<Avx2>(layer, io, output)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512_u8(layer: &Layer, io: U8Planes, output: &mut [u8]) {
    run_planes_u8::<Avx512>(layer, io, output)
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn run_neon_u8(layer: &Layer, io: U8Planes, output: &mut [u8]) {
    run_planes_u8::<Neon>(layer, io, output)
}

#[inline(always)]
fn run_planes_u8<L: Lanes>(layer: &Layer, io: U8Planes, output: &mut [u8]) {
    let g = &layer.geo;
    let s = Scratch::new(g, L::LANES);
    let mut buf = vec![0f32; s.rows * s.row_len + L::LANES];
    let (in_plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    let mut plane = vec![0f32; in_plane];
    let mut sums = vec![0f32; out_plane];
    for (p, (src, dst)) in io.input.chunks_exact(in_plane).zip(output.chunks_exact_mut(out_plane)).enumerate()
    {
        let c = p % g.channels;
        for (f, &v) in plane.iter_mut().zip(src) {
            *f = v as f32 - io.zero;
        }
        s.fill::<L>(g, &plane, &mut buf);
        let weights = &layer.weights[c * g.kh * g.kw..(c + 1) * g.kh * g.kw];
        // SAFETY: as in `run_planes`.
        unsafe { plane_kernel::<L>(g, &s, &buf, weights, layer.bias[c], layer.clip, &mut sums) }
        (io.finish)(c, &sums, dst);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2(layer: &Layer, input: &[f32], output: &mut [f32]) {
    run_planes::<Avx2>(layer, input, output)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512(layer: &Layer, input: &[f32], output: &mut [f32]) {
    run_planes::<Avx512>(layer, input, output)
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn run_neon(layer: &Layer, input: &[f32], output: &mut [f32]) {
    run_planes::<Neon>(layer, input, output)
}

/// A vector of `LANES` floats: just what the kernel needs.
trait Lanes {
    const LANES: usize;
    /// Output vectors computed together (independent accumulators).
    const GROUP: usize;
    type V: Copy;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a * b + c`.
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn clamp(v: Self::V, lo: Self::V, hi: Self::V) -> Self::V;
    /// Splits the `2 * LANES` floats at `src` into the even-placed ones at `even` and the
    /// odd-placed ones at `odd` (a stride-2 row's two phases).
    unsafe fn deinterleave(src: *const f32, even: *mut f32, odd: *mut f32);
}

struct Scalar;

impl Lanes for Scalar {
    const LANES: usize = 1;
    const GROUP: usize = 4;
    type V = f32;
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        *p
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        *p = v
    }
    #[inline(always)]
    unsafe fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    #[inline(always)]
    unsafe fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
        v.max(lo).min(hi)
    }
    #[inline(always)]
    unsafe fn deinterleave(src: *const f32, even: *mut f32, odd: *mut f32) {
        *even = *src;
        *odd = *src.add(1);
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2 {
    const LANES: usize = 8;
    const GROUP: usize = 6;
    type V = std::arch::x86_64::__m256;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        std::arch::x86_64::_mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        std::arch::x86_64::_mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::arch::x86_64::_mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn clamp(v: Self::V, lo: Self::V, hi: Self::V) -> Self::V {
        use std::arch::x86_64::{_mm256_max_ps, _mm256_min_ps};
        _mm256_min_ps(_mm256_max_ps(v, lo), hi)
    }
    #[inline(always)]
    unsafe fn deinterleave(src: *const f32, even: *mut f32, odd: *mut f32) {
        use std::arch::x86_64::*;
        let (a, b) = (_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8)));
        // Within each 128-bit half: a0 a2 b0 b2 | a4 a6 b4 b6 (and the odd ones alike); then
        // the 64-bit pairs put in order: a0 a2 a4 a6 b0 b2 b4 b6.
        let (e, o) = (_mm256_shuffle_ps::<0b10_00_10_00>(a, b), _mm256_shuffle_ps::<0b11_01_11_01>(a, b));
        let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
        _mm256_storeu_ps(even, order(e));
        _mm256_storeu_ps(odd, order(o));
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512 {
    const LANES: usize = 16;
    const GROUP: usize = 8;
    type V = std::arch::x86_64::__m512;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        std::arch::x86_64::_mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        std::arch::x86_64::_mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        std::arch::x86_64::_mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::arch::x86_64::_mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn clamp(v: Self::V, lo: Self::V, hi: Self::V) -> Self::V {
        use std::arch::x86_64::{_mm512_max_ps, _mm512_min_ps};
        _mm512_min_ps(_mm512_max_ps(v, lo), hi)
    }
    #[inline(always)]
    unsafe fn deinterleave(src: *const f32, even: *mut f32, odd: *mut f32) {
        use std::arch::x86_64::*;
        let (a, b) = (_mm512_loadu_ps(src), _mm512_loadu_ps(src.add(16)));
        // Indices 0-15 pick from `a`, 16-31 from `b`.
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        _mm512_storeu_ps(even, _mm512_permutex2var_ps(a, evens, b));
        _mm512_storeu_ps(odd, _mm512_permutex2var_ps(a, odds, b));
    }
}

#[cfg(target_arch = "aarch64")]
struct Neon;

#[cfg(target_arch = "aarch64")]
impl Lanes for Neon {
    const LANES: usize = 4;
    const GROUP: usize = 8;
    type V = std::arch::aarch64::float32x4_t;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        std::arch::aarch64::vdupq_n_f32(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        std::arch::aarch64::vld1q_f32(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        std::arch::aarch64::vst1q_f32(p, v)
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // vfmaq_f32(c, a, b) = c + a * b, fused.
        std::arch::aarch64::vfmaq_f32(c, a, b)
    }
    #[inline(always)]
    unsafe fn clamp(v: Self::V, lo: Self::V, hi: Self::V) -> Self::V {
        use std::arch::aarch64::{vmaxq_f32, vminq_f32};
        vminq_f32(vmaxq_f32(v, lo), hi)
    }
    #[inline(always)]
    unsafe fn deinterleave(src: *const f32, even: *mut f32, odd: *mut f32) {
        use std::arch::aarch64::{vld2q_f32, vst1q_f32};
        let pairs = vld2q_f32(src);
        vst1q_f32(even, pairs.0);
        vst1q_f32(odd, pairs.1);
    }
}

/// Where each plane's padded, phase-split copy lives, and where each tap reads in it.
struct Scratch {
    /// Floats per phase of one padded row.
    phase_len: usize,
    /// Floats per padded row (all phases).
    row_len: usize,
    rows: usize,
    /// Per tap (ky, kx), its offset from an output vector's base.
    taps: Vec<usize>,
    /// Output vectors per output row.
    per_row: usize,
}

impl Scratch {
    fn new(g: &Geometry, lanes: usize) -> Scratch {
        let per_row = g.ow.div_ceil(lanes);
        let padded_w = g.pad_left + g.w;
        // A phase must hold every padded column of its residue, and every read of the last
        // output vector (which may run past `ow`, into zeros).
        let phase_len = padded_w.div_ceil(g.sw).max(per_row * lanes + (g.kw - 1) / g.sw);
        let row_len = phase_len * g.sw;
        let rows = (g.oh - 1) * g.sh + g.kh;
        let taps = (0..g.kh)
            .flat_map(|ky| (0..g.kw).map(move |kx| (ky, kx)))
            .map(|(ky, kx)| ky * row_len + (kx % g.sw) * phase_len + kx / g.sw)
            .collect();
        Scratch { phase_len, row_len, rows, taps, per_row }
    }

    /// Copies one input plane into `buf`, split into phases. Only the plane's own positions
    /// are written, the same for every plane: the padding stays as `buf` was (zeros).
    #[inline(always)]
    fn fill<L: Lanes>(&self, g: &Geometry, plane: &[f32], buf: &mut [f32]) {
        for y in 0..g.h {
            let r = y + g.pad_top;
            if r >= self.rows {
                break;
            }
            let src = &plane[y * g.w..(y + 1) * g.w];
            let row = &mut buf[r * self.row_len..(r + 1) * self.row_len];
            if g.sw == 1 {
                row[g.pad_left..g.pad_left + g.w].copy_from_slice(src);
                continue;
            }
            if g.sw == 2 {
                // Padded column c goes to phase c % 2 at c / 2: pairs of inputs split in two.
                let (even, odd) = row.split_at_mut(self.phase_len);
                let (x0, rest) = if g.pad_left % 2 == 1 {
                    // Input column 0 is padded column pad_left, odd.
                    odd[g.pad_left / 2] = src[0];
                    (1, &src[1..])
                } else {
                    (0, src)
                };
                let at = (x0 + g.pad_left) / 2;
                let pairs = rest.chunks_exact(2);
                let tail = pairs.remainder();
                let n = rest.len() / 2;
                let (even_run, odd_run) = (&mut even[at..at + n], &mut odd[at..at + n]);
                // Whole vectors of pairs split in registers, then the last pairs one by one.
                let whole = n - n % L::LANES;
                for i in (0..whole).step_by(L::LANES) {
                    // SAFETY: pairs i..i + LANES lie inside `rest` (2 * whole <= rest.len()) and
                    // their places inside both runs (whole <= n).
                    unsafe {
                        L::deinterleave(
                            rest.as_ptr().add(2 * i),
                            even_run.as_mut_ptr().add(i),
                            odd_run.as_mut_ptr().add(i),
                        )
                    }
                }
                for ((e, o), pair) in
                    even_run[whole..].iter_mut().zip(&mut odd_run[whole..]).zip(pairs.skip(whole))
                {
                    *e = pair[0];
                    *o = pair[1];
                }
                if let [last] = tail {
                    even[at + n] = *last;
                }
                continue;
            }
            for phase in 0..g.sw {
                // The first input column whose padded column falls in this phase.
                let x0 = (phase + g.sw - g.pad_left % g.sw) % g.sw;
                if x0 >= g.w {
                    continue;
                }
                let start = phase * self.phase_len + (x0 + g.pad_left) / g.sw;
                for (d, &v) in row[start..].iter_mut().zip(src[x0..].iter().step_by(g.sw)) {
                    *d = v;
                }
            }
        }
    }
}

#[inline(always)]
fn run_planes<L: Lanes>(layer: &Layer, input: &[f32], output: &mut [f32]) {
    let g = &layer.geo;
    let s = Scratch::new(g, L::LANES);
    // Slack after the last row: the last output vectors read up to a vector past a phase.
    let mut buf = vec![0f32; s.rows * s.row_len + L::LANES];
    let (in_plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    for (p, (src, dst)) in input.chunks_exact(in_plane).zip(output.chunks_exact_mut(out_plane)).enumerate() {
        let c = p % g.channels;
        s.fill::<L>(g, src, &mut buf);
        let weights = &layer.weights[c * g.kh * g.kw..(c + 1) * g.kh * g.kw];
        // SAFETY: every read is inside `buf` (Scratch::new sizes the phases for the widest
        // read), every write inside `dst` (`plane_kernel` stores past a row only while the
        // plane has room, and through a bounded copy otherwise).
        unsafe { plane_kernel::<L>(g, &s, &buf, weights, layer.bias[c], layer.clip, dst) }
    }
}

#[inline(always)]
unsafe fn plane_kernel<L: Lanes>(
    g: &Geometry,
    s: &Scratch,
    buf: &[f32],
    weights: &[f32],
    bias: f32,
    clip: (f32, f32),
    dst: &mut [f32],
) {
    let vectors = g.oh * s.per_row;
    let k: Kernel<L> = Kernel {
        g,
        s,
        src: buf.as_ptr(),
        weights,
        bias: L::splat(bias),
        lo: L::splat(clip.0),
        hi: L::splat(clip.1),
    };
    // The next output vector: its row and its place in the row.
    let mut at = (0, 0);
    let mut first = 0;
    while first < vectors {
        // Whole groups while they last, then one group of what is left (each size its own
        // instance, so the accumulators stay in registers).
        let n = (vectors - first).min(L::GROUP);
        match n {
            8 => k.group::<8>(&mut at, dst),
            7 => k.group::<7>(&mut at, dst),
            6 => k.group::<6>(&mut at, dst),
            5 => k.group::<5>(&mut at, dst),
            4 => k.group::<4>(&mut at, dst),
            3 => k.group::<3>(&mut at, dst),
            2 => k.group::<2>(&mut at, dst),
            _ => k.group::<1>(&mut at, dst),
        }
        first += n;
    }
}

struct Kernel<'a, L: Lanes> {
    g: &'a Geometry,
    s: &'a Scratch,
    src: *const f32,
    weights: &'a [f32],
    bias: L::V,
    lo: L::V,
    hi: L::V,
}

impl<L: Lanes> Kernel<'_, L> {
    /// Computes the `N` output vectors from `at` (row, vector in the row) on, and moves `at` past
    /// them.
    #[inline(always)]
    unsafe fn group<const N: usize>(&self, at: &mut (usize, usize), dst: &mut [f32]) {
        let (g, s) = (self.g, self.s);
        let mut base = [self.src; N];
        let mut out = [0usize; N];
        for i in 0..N {
            let (oy, vx) = *at;
            base[i] = self.src.add(oy * g.sh * s.row_len + vx * L::LANES);
            out[i] = oy * g.ow + vx * L::LANES;
            *at = if vx + 1 == s.per_row { (oy + 1, 0) } else { (oy, vx + 1) };
        }
        let mut acc = [self.bias; N];
        for (&off, &wt) in s.taps.iter().zip(self.weights) {
            let w = L::splat(wt);
            for i in 0..N {
                acc[i] = L::mul_add(L::load(base[i].add(off)), w, acc[i]);
            }
        }
        for i in 0..N {
            let v = L::clamp(acc[i], self.lo, self.hi);
            // A full store may run past its row into the next one, which a later vector
            // overwrites; past the plane's end it goes through a bounded copy.
            if out[i] + L::LANES <= dst.len() {
                L::store(dst.as_mut_ptr().add(out[i]), v);
            } else {
                let mut tmp = [0f32; 16];
                L::store(tmp.as_mut_ptr(), v);
                let rest = dst.len() - out[i];
                dst[out[i]..].copy_from_slice(&tmp[..rest]);
            }
        }
    }
}

/// The op in the graph: one input (`[N,]C,H,W`), one output.
#[derive(Debug, Clone)]
pub struct Depthwise {
    layer: Arc<Layer>,
    isa: Isa,
    output_shape: TVec<usize>,
}

impl PartialEq for Depthwise {
    fn eq(&self, other: &Self) -> bool {
        self.isa == other.isa && self.output_shape == other.output_shape && *self.layer == *other.layer
    }
}
impl Eq for Depthwise {}

impl Depthwise {
    pub fn layer(&self) -> &Layer {
        &self.layer
    }
}

impl Op for Depthwise {
    fn name(&self) -> StaticName {
        "LookdDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.layer.geo;
        Ok(vec![format!(
            "{}x{} stride {}x{} on {}x{}x{}, clip {:?}, {}",
            g.kh,
            g.kw,
            g.sh,
            g.sw,
            g.channels,
            g.h,
            g.w,
            self.layer.clip,
            self.isa.name()
        )])
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for Depthwise {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // SAFETY: the kernel writes every output value (each output row is covered by whole
        // vectors, the last one through a bounded copy).
        unsafe {
            eval_unary("LookdDepthwise", inputs, &self.output_shape, |x, y| self.layer.run(self.isa, x, y))
        }
    }

    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(self.eval(&EvalContext::out_of_plan(), inputs)?))
    }
}

impl TypedOp for Depthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let want = self.layer.geo;
        let fact = inputs[0];
        let shape = fact.shape.as_concrete().map(|s| s.iter().product::<usize>());
        if fact.datum_type != f32::datum_type() || shape != Some(want.batch * want.channels * want.h * want.w)
        {
            bail!("LookdDepthwise expects f32 {:?}, got {:?}", want, fact);
        }
        Ok(tvec!(f32::fact(&*self.output_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((Cost::FMA(f32::datum_type()), self.layer.geo.macs().into())))
    }

    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }
}

/// How many depthwise layers [`swap_in`] replaced, and how many clips it folded into them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swapped {
    pub layers: usize,
    pub clips: usize,
}

/// Declutters `model` as tract does, all but its layout pass (`ChangeAxes`). Where tract has a
/// channel-last depthwise kernel (aarch64), that pass moves every depthwise convolution of 16
/// channels or more channel-last, where [`swap_in`] cannot take it: on the shipped graph it left
/// 1 of 16 layers to lookd's kernel on aarch64. Swapped in first, lookd's op stays channel-first
/// when `into_optimized` runs the whole declutter again, layout pass included: the op does not
/// change axes, so tract's axis changes stop at it. Where tract has no such kernel (x86-64) the
/// pass moves no convolution and the graph is the same either way.
pub fn declutter_channels_first(model: &mut TypedModel) -> TractResult<()> {
    let mut declutter = Optimizer::declutter();
    let before = declutter.passes.len();
    declutter.passes.retain(|pass| format!("{pass:?}") != "ChangeAxes");
    ensure!(declutter.passes.len() + 1 == before, "tract's declutter has no ChangeAxes pass to leave out");
    declutter.optimize(model)
}

/// Replaces every depthwise Conv of a `model` decluttered by [`declutter_channels_first`] that
/// lookd's kernel handles.
pub fn swap_in(model: &mut TypedModel, isa: Isa) -> TractResult<Swapped> {
    let done = Cell::new(Swapped::default());
    Rewriter::default()
        .with_rule_for::<Conv>("lookd-depthwise", move |done, model, node, _, conv| {
            swap_one(isa, done, model, node, conv)
        })
        .rewrite(&done, model)?;
    Ok(done.get())
}

/// The rule for one Conv node: the patch putting a [`Depthwise`] (and the clip after it) in its
/// place, counted in the context.
fn swap_one(
    isa: Isa,
    done: &Cell<Swapped>,
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
) -> TractResult<Option<TypedModelPatch>> {
    let Some(layer) = layer_of(model, node, conv)? else { return Ok(None) };
    let (layer, last, folded) = fold_clip(model, node, layer)?;
    let output_shape: TVec<usize> = model
        .outlet_fact(OutletId::new(last, 0))?
        .shape
        .as_concrete()
        .context("depthwise output shape")?
        .into();
    let op = Depthwise { layer: Arc::new(layer), isa, output_shape };
    let patch = replace_chain(model, node, last, node.inputs[0], op)?;
    let mut count = done.get();
    count.layers += 1;
    count.clips += folded as usize;
    done.set(count);
    Ok(Some(patch))
}

/// The layer a Conv node is, when lookd's kernel runs it: f32, 2-D, channel-first, group equal
/// to both channel counts, no dilation, stride 1 or 2, constant weights and bias.
fn layer_of(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Layer>> {
    let spec = &conv.pool_spec;
    let x = model.outlet_fact(node.inputs[0])?;
    let channels = spec.input_channels;
    if conv.q_params.is_some()
        || x.datum_type != f32::datum_type()
        || spec.rank() != 2
        || !matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
        || conv.kernel_fmt != KernelFormat::OIHW
        || channels < 2
        || conv.group != channels
        || spec.output_channels != channels
        || spec.dilations().iter().any(|&d| d != 1)
        || spec.strides().iter().any(|&s| s != 1 && s != 2)
        || node.inputs.len() != 3
    {
        return Ok(None);
    }
    let Some(shape) = x.shape.as_concrete() else { return Ok(None) };
    let shape = spec.data_format.shape(shape.to_vec())?;
    let (batch, hw) = (shape.n().copied().unwrap_or(1), shape.hw_dims().to_vec());
    let (Some(kernel), Some(bias)) =
        (model.outlet_fact(node.inputs[1])?.konst.clone(), model.outlet_fact(node.inputs[2])?.konst.clone())
    else {
        return Ok(None);
    };
    let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
    if kernel.shape() != [channels, 1, kh, kw] || kernel.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let bias = bias.cast_to::<f32>()?;
    let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let bias = match bias.len() {
        1 => vec![bias[0]; channels],
        n if n == channels => bias,
        _ => return Ok(None),
    };
    let pads = spec.computed_padding(&hw);
    let strides = spec.strides();
    let geo = Geometry {
        batch,
        channels,
        h: hw[0],
        w: hw[1],
        kh,
        kw,
        sh: strides[0],
        sw: strides[1],
        pad_top: pads[0].pad_before,
        pad_left: pads[1].pad_before,
        oh: pads[0].convoluted,
        ow: pads[1].convoluted,
    };
    if geo.oh == 0 || geo.ow == 0 {
        return Ok(None);
    }
    let weights = kernel.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    Ok(Some(Layer { geo, weights, bias, clip: (f32::NEG_INFINITY, f32::INFINITY) }))
}

/// Folds a `Max` against a constant, and a `Min` after it, that alone read the layer's output.
/// Returns the layer, the node whose output the fused op stands for, and whether it folded.
fn fold_clip(model: &TypedModel, node: &TypedNode, mut layer: Layer) -> TractResult<(Layer, usize, bool)> {
    let mut last = node.id;
    let mut folded = false;
    for kind in ["max", "min"] {
        let Some(next) = sole_successor(model, last) else { break };
        let Some(bound) = clip_bound(model, next, kind)? else { break };
        if kind == "max" {
            layer.clip.0 = bound;
        } else {
            layer.clip.1 = bound;
        }
        last = next.id;
        folded = true;
    }
    Ok((layer, last, folded))
}

/// The constant of `next` when it is `Max(x, k)` (kind "max") or `Min(x, k)` with a single k.
fn clip_bound(model: &TypedModel, next: &TypedNode, kind: &str) -> TractResult<Option<f32>> {
    let Some(bin) = next.op_as::<TypedBinOp>() else { return Ok(None) };
    let right_kind = match kind {
        "max" => bin.0.is::<Max>(),
        _ => bin.0.is::<Min>(),
    };
    if !right_kind || next.inputs.len() != 2 || bin.1.is_some() {
        return Ok(None);
    }
    let (out, x) = (&next.outputs[0].fact, model.outlet_fact(next.inputs[0])?);
    let y = model.outlet_fact(next.inputs[1])?;
    if out.shape != x.shape && out.shape != y.shape {
        return Ok(None);
    }
    for other in &next.inputs {
        let fact = model.outlet_fact(*other)?;
        if let Some(k) = &fact.konst {
            if k.len() == 1 && k.datum_type() == f32::datum_type() {
                return Ok(Some(k.cast_to_scalar::<f32>()?));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64 as Rng;
    use tract_onnx::prelude::{Framework, InferenceFact, InferenceModelExt};

    impl Rng {
        fn next_f32(&mut self) -> f32 {
            self.unit()
        }
    }

    fn shipped_decluttered() -> TypedModel {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/default-f32/embed.onnx");
        let mut g = tract_onnx::onnx().model_for_path(path).unwrap();
        g.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), [1, 3, 224, 224])).unwrap();
        let mut model = g.into_typed().unwrap();
        declutter_channels_first(&mut model).unwrap();
        model
    }

    /// A graph of one Conv node as the shipped graph has it (its real weights), then ReLU6 when
    /// `clip`, on an input of the node's shape.
    fn one_layer(model: &TypedModel, node: &TypedNode, clip: bool) -> TypedModel {
        let mut m = TypedModel::default();
        let fact = model.outlet_fact(node.inputs[0]).unwrap().without_value();
        let x = m.add_source("x", fact).unwrap();
        let k = m.add_const("k", model.outlet_fact(node.inputs[1]).unwrap().konst.clone().unwrap()).unwrap();
        let b = m.add_const("b", model.outlet_fact(node.inputs[2]).unwrap().konst.clone().unwrap()).unwrap();
        let mut y = m.wire_node("conv", node.op.clone(), &[x, k, b]).unwrap()[0];
        if clip {
            let rank = m.outlet_fact(y).unwrap().rank();
            let lo = m.add_const("lo", tensor0(0f32).broadcast_into_rank(rank).unwrap()).unwrap();
            let hi = m.add_const("hi", tensor0(6f32).broadcast_into_rank(rank).unwrap()).unwrap();
            y = m.wire_node("max", TypedBinOp(Box::new(Max), None), &[y, lo]).unwrap()[0];
            y = m.wire_node("min", TypedBinOp(Box::new(Min), None), &[y, hi]).unwrap()[0];
        }
        m.select_output_outlets(&[y]).unwrap();
        m
    }

    fn run(model: TypedModel, input: &Tensor) -> Vec<f32> {
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let out = plan.run(tvec!(input.clone().into())).unwrap();
        out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()
    }

    /// The largest |a - b| over the largest |b| (at least 1): "to 1e-5" read against the
    /// layer's range. The first layer's outputs reach the hundreds, where one float step is
    /// 3e-5 and sums of 9 products of that size round differently in another order. NaN fails.
    fn worst_relative(want: &[f32], got: &[f32]) -> f32 {
        assert_eq!(want.len(), got.len());
        let range = want.iter().fold(1f32, |m, w| m.max(w.abs()));
        crate::model::max_abs_diff(want, got) / range
    }

    /// Every kernel this CPU can run.
    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        if Isa::detect() == Isa::Avx512 {
            v.push(Isa::Avx2Fma);
        }
        if Isa::detect() != Isa::Scalar {
            v.push(Isa::detect());
        }
        v
    }

    #[test]
    fn every_depthwise_layer_of_the_shipped_model_matches_tracts_own() {
        let model = shipped_decluttered();
        let convs: Vec<&TypedNode> =
            model.nodes().iter().filter(|n| n.op_as::<Conv>().is_some_and(|c| c.group > 1)).collect();
        assert_eq!(convs.len(), 16, "EfficientNet-Lite0 has 16 depthwise layers");
        let mut rng = Rng::new(15);
        let mut shapes = std::collections::BTreeSet::new();
        for node in convs {
            let fact = model.outlet_fact(node.inputs[0]).unwrap();
            let shape = fact.shape.as_concrete().unwrap().to_vec();
            let values: Vec<f32> = (0..shape.iter().product()).map(|_| rng.next_f32() * 9.0 - 3.0).collect();
            let input = Tensor::from_shape(&shape, &values).unwrap();
            for clip in [false, true] {
                let reference = run(one_layer(&model, node, clip), &input);
                for isa in isas() {
                    let mut m = one_layer(&model, node, clip);
                    let swapped = swap_in(&mut m, isa).unwrap();
                    assert_eq!(swapped, Swapped { layers: 1, clips: clip as usize }, "{}", node.name);
                    let got = run(m, &input);
                    let worst = worst_relative(&reference, &got);
                    assert!(
                        worst <= 1e-5,
                        "{} ({}, clip {clip}): relative diff {worst:e}",
                        node.name,
                        isa.name()
                    );
                }
            }
            let c = node.op_as::<Conv>().unwrap();
            shapes.insert((shape, c.pool_spec.kernel_shape.to_vec(), c.pool_spec.strides().to_vec()));
        }
        // 3x3 and 5x5, stride 1 and 2, from 112x112 down to 7x7.
        assert!(shapes.len() >= 10, "{shapes:?}");
    }

    #[test]
    fn the_shipped_graph_gets_every_layer_swapped_and_its_clips_folded() {
        let mut model = shipped_decluttered();
        let swapped = swap_in(&mut model, Isa::detect()).unwrap();
        assert_eq!(swapped, Swapped { layers: 16, clips: 16 });
        assert!(model.nodes().iter().all(|n| n.op_as::<Conv>().is_none_or(|c| c.group == 1)));
        assert_eq!(model.nodes().iter().filter(|n| n.op_is::<Depthwise>()).count(), 16);
    }

    #[test]
    fn layers_the_kernel_does_not_handle_are_left_to_tract() {
        // Stride 3 and dilation 2: tract keeps them, and they still compute.
        for (strides, dilations) in [([3, 3], [1, 1]), ([1, 1], [2, 2])] {
            let mut m = TypedModel::default();
            let x = m.add_source("x", f32::fact([1, 4, 9, 9])).unwrap();
            let k = m.add_const("k", Tensor::zero::<f32>(&[4, 1, 3, 3]).unwrap()).unwrap();
            let b = m.add_const("b", Tensor::zero::<f32>(&[4]).unwrap()).unwrap();
            let pool_spec = tract_onnx::tract_core::ops::cnn::PoolSpec::new(
                DataFormat::NCHW,
                tvec!(3, 3),
                tract_onnx::tract_core::ops::cnn::PaddingSpec::Valid,
                Some(tvec!(dilations[0], dilations[1])),
                Some(tvec!(strides[0], strides[1])),
                4,
                4,
            );
            let conv = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: 4, q_params: None };
            let y = m.wire_node("conv", conv, &[x, k, b]).unwrap();
            m.select_output_outlets(&y).unwrap();
            assert_eq!(
                swap_in(&mut m, Isa::detect()).unwrap(),
                Swapped::default(),
                "{strides:?} {dilations:?}"
            );
        }
    }

    /// The textbook loop, zero padding read as "skip".
    fn direct(l: &Layer, input: &[f32]) -> Vec<f32> {
        let g = &l.geo;
        let mut out = Vec::new();
        for p in 0..g.batch * g.channels {
            let c = p % g.channels;
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut sum = l.bias[c];
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let (y, x) = (
                                (oy * g.sh + ky) as isize - g.pad_top as isize,
                                (ox * g.sw + kx) as isize - g.pad_left as isize,
                            );
                            if y >= 0 && x >= 0 && (y as usize) < g.h && (x as usize) < g.w {
                                sum += l.weights[(c * g.kh + ky) * g.kw + kx]
                                    * input[(p * g.h + y as usize) * g.w + x as usize];
                            }
                        }
                    }
                    out.push(sum.max(l.clip.0).min(l.clip.1));
                }
            }
        }
        out
    }

    #[test]
    fn odd_widths_paddings_and_batches_match_the_textbook_loop() {
        // Widths that leave every possible remainder in the last vector, asymmetric padding,
        // a batch of 3: the vector kernel writes exactly the output, nothing past it. The widest
        // stride-2 rows are split into phases by whole vectors (two of 16 lanes) and a tail,
        // after an odd padding and after an even one.
        let mut rng = Rng::new(7);
        for (w, k, s, pad) in [
            (1, 1, 1, 0),
            (5, 3, 1, 1),
            (9, 3, 2, 0),
            (13, 5, 2, 2),
            (17, 5, 1, 2),
            (31, 3, 2, 1),
            (67, 3, 2, 1),
            (70, 5, 2, 2),
        ] {
            let (h, channels, batch) = (w + 2, 3, 3);
            let oh = (h + 2 * pad - k) / s + 1;
            let ow = (w + 2 * pad - k) / s + 1;
            let geo = Geometry {
                batch,
                channels,
                h,
                w,
                kh: k,
                kw: k,
                sh: s,
                sw: s,
                pad_top: pad,
                pad_left: pad,
                oh,
                ow,
            };
            let layer = Layer {
                geo,
                weights: (0..channels * k * k).map(|_| rng.next_f32() - 0.5).collect(),
                bias: (0..channels).map(|_| rng.next_f32()).collect(),
                clip: (-0.5, 2.0),
            };
            let input: Vec<f32> = (0..batch * channels * h * w).map(|_| rng.next_f32() * 4.0 - 1.0).collect();
            let want = direct(&layer, &input);
            for isa in isas() {
                // One more value after the output, that must stay as it was.
                let mut got = vec![f32::NAN; want.len() + 1];
                let n = want.len();
                layer.run(isa, &input, &mut got[..n]);
                assert!(got[n].is_nan(), "{} wrote past the output", isa.name());
                let worst = worst_relative(&want, &got[..n]);
                assert!(worst <= 1e-5, "{} w {w} k {k} s {s} pad {pad}: {worst:e}", isa.name());
            }
        }
    }
}
