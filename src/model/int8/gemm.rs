//! The integer matrix product under lookd's int8 convolutions: `y[co][p] = requant(bias[co] +
//! Σ_k w[co][k] · x[k][p])`, with `x` unsigned 8-bit activations (`k` input channels, or
//! channels × taps after im2col; `p` output points), `w` signed 8-bit weights, and the
//! requantisation `clamp(round_even(acc · m[co]) + y0, 0, 255)` fused into the store.
//!
//! One kernel per vector unit, all computing the same integers (the accumulators are exact, and
//! the one float step, `acc as f32 · m`, rounds alike everywhere), so every path must give the
//! scalar path's bytes exactly (tested on each path this CPU has):
//! - AVX-512 VNNI (`vpdpbusd` on 512 bits) and AVX-VNNI (the same on 256): four u8 × i8 products
//!   summed into each i32 lane, the activations packed four input channels to a point;
//! - AVX2 without VNNI: the activations widened to i16 and multiplied by `vpmaddwd`, two input
//!   channels to a point. Exact, unlike `vpmaddubsw`, whose i16 pair sums saturate once two
//!   large products meet (255 · 127 · 2 > 32,767);
//! - aarch64 with the dot product extension (`sdot`, Cortex-A76 / Pi 5): four i8 × i8 products per
//!   lane, the activations shifted to i8 (`x − 128`, the shift folded into the bias);
//! - aarch64 without it (`smull` + `sadalp`, Cortex-A72 / Pi 4): i8 × i8 into i16 products,
//!   pairs added into i32 lanes (exact: one product fits i16, and the pair is summed in i32);
//! - scalar, anywhere.
//!
//! Each kernel computes a tile of 4 output channels by several vectors of points, the packed
//! activations of that tile of points staying in L1 while every output channel passes over them.

use super::Isa;

/// Output channels per tile.
const MR: usize = 4;

/// A layer's bias, zero points and multipliers: `y = requant(bias + Σ w·(x − x_zero), mul, y_zero)`.
#[derive(Debug, Clone, Copy)]
pub struct Requant<'a> {
    /// One per output channel, in the accumulator's scale.
    pub bias: &'a [i32],
    pub x_zero: u8,
    /// One per output channel.
    pub mul: &'a [f32],
    pub y_zero: u8,
}

/// The weights, bias and requantisation of one layer, laid out for one kernel.
#[derive(Debug, Clone)]
pub struct Packed {
    pub isa: Isa,
    /// Output channels.
    pub co: usize,
    /// Products summed per output (input channels × taps).
    pub k: usize,
    /// `k` rounded up to the kernel's step of input channels (`Isa::k_step`).
    kp: usize,
    /// `co` rounded up to [`MR`].
    cop: usize,
    /// One i32 per output channel and group of `group()` input channels: four i8 (VNNI, sdot)
    /// or two i16 (AVX2) or two i8 repeated twice (smull) or one i8 (scalar). Laid out
    /// `[co / MR][kp / group][MR]` for the vector kernels, `[co][kp]` for the scalar path.
    w: Vec<i32>,
    /// The graph's bias, less the input's zero point times the row's weights (plus 128 times
    /// them on the i8 paths), per output channel.
    bias: Vec<i32>,
    /// `x_scale · w_scale[co] / y_scale`.
    mul: Vec<f32>,
    y_zero: i32,
    /// Whether two i8 × i8 products of this layer always fit one i16 sum: no weight is −128
    /// (x · w with x in [−128, 127] and |w| ≤ 127 is at most 16,256 in size). The `smull` path
    /// then adds pairs of products in i16 before widening; otherwise it widens each product.
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pairs_fit_i16: bool,
}

impl Packed {
    /// `w` is `co × k` row-major; `bias` and `mul` one per output channel.
    pub fn new(isa: Isa, w: &[i8], co: usize, k: usize, r: &Requant) -> Packed {
        assert_eq!(w.len(), co * k, "weights are co × k");
        let (bias, x_zero, mul, y_zero) = (r.bias, r.x_zero, r.mul, r.y_zero);
        assert!(bias.len() == co && mul.len() == co, "one bias and one multiplier per output channel");
        let g = isa.group();
        let kp = k.div_ceil(isa.k_step()) * isa.k_step();
        let cop = co.div_ceil(MR) * MR;
        let at = |c: usize, i: usize| if c < co && i < k { w[c * k + i] } else { 0 };
        // The vector kernels read a tile's MR channels side by side for each group of inputs
        // (`[co / MR][kp / group][MR]`); the scalar path reads whole rows (`[co][k]`).
        let order: Vec<(usize, usize)> = if isa == Isa::Scalar {
            (0..cop).flat_map(|c| (0..kp).map(move |i| (c, i))).collect()
        } else {
            (0..cop)
                .step_by(MR)
                .flat_map(|c0| (0..kp).step_by(g).flat_map(move |i| (c0..c0 + MR).map(move |c| (c, i))))
                .collect()
        };
        let packed: Vec<i32> = order
            .into_iter()
            .map(|(c, i)| match g {
                4 => i32::from_le_bytes([
                    at(c, i) as u8,
                    at(c, i + 1) as u8,
                    at(c, i + 2) as u8,
                    at(c, i + 3) as u8,
                ]),
                2 if isa.widens() => {
                    (at(c, i) as i16 as u16 as u32 | ((at(c, i + 1) as i16 as u16 as u32) << 16)) as i32
                }
                2 => i32::from_le_bytes([
                    at(c, i) as u8,
                    at(c, i + 1) as u8,
                    at(c, i) as u8,
                    at(c, i + 1) as u8,
                ]),
                _ => at(c, i) as i32,
            })
            .collect();
        let shift = if isa.signed_activations() { 128 } else { 0 };
        let mut adjusted = vec![0; cop];
        for c in 0..co {
            let row: i32 = w[c * k..(c + 1) * k].iter().map(|&v| v as i32).sum();
            adjusted[c] = bias[c] - (x_zero as i32 - shift) * row;
        }
        let mut m = mul.to_vec();
        m.resize(cop, 0.0);
        let pairs_fit_i16 = w.iter().all(|&v| v != i8::MIN);
        Packed {
            isa,
            co,
            k,
            kp,
            cop,
            w: packed,
            bias: adjusted,
            mul: m,
            y_zero: y_zero as i32,
            pairs_fit_i16,
        }
    }

    /// `x` is `k × points` row-major (u8); `out` is `co × points`.
    pub fn run(&self, x: &[u8], points: usize, out: &mut [u8]) {
        assert_eq!(x.len(), self.k * points, "activations are k × points");
        assert_eq!(out.len(), self.co * points, "output is co × points");
        if points == 0 {
            return;
        }
        type Kernel = unsafe fn(&Packed, &[u8], usize, usize, &mut [u8]);
        let kernel: Kernel = match self.isa {
            Isa::Scalar => return self.scalar(x, points, out),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86::vnni512,
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => x86::avxvnni,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::avx2,
            #[cfg(target_arch = "aarch64")]
            Isa::Sdot => arm::sdot,
            #[cfg(target_arch = "aarch64")]
            Isa::Smull => arm::smull,
        };
        // The activations packed as the kernel reads them: its group of input channels per
        // point, shifted to i8 on the paths that multiply i8 by i8.
        let lanes = self.isa.points_per_tile();
        PACKED.with_borrow_mut(|b| {
            pack(x, self.k, self.kp, points, self.isa.group(), lanes, self.isa.signed_activations(), b);
            // SAFETY: an Isa other than Scalar is only made for a CPU that has its features
            // (`Isa::available`), and the packed activations cover every tile the kernel reads.
            unsafe { kernel(self, b, points.div_ceil(lanes) * lanes, points, out) }
        })
    }

    fn scalar(&self, x: &[u8], points: usize, out: &mut [u8]) {
        let mut acc = vec![0i32; points];
        for c in 0..self.co {
            acc.fill(self.bias[c]);
            let row = &self.w[c * self.kp..c * self.kp + self.k];
            for (i, &w) in row.iter().enumerate() {
                let xs = &x[i * points..(i + 1) * points];
                for (a, &v) in acc.iter_mut().zip(xs) {
                    *a += w * v as i32;
                }
            }
            let (m, z) = (self.mul[c], self.y_zero);
            for (o, &a) in out[c * points..(c + 1) * points].iter_mut().zip(&acc) {
                *o = requant(a, m, z);
            }
        }
    }
}

/// One output value: `clamp(round_even(acc · m) + zero, 0, 255)`, as every kernel's vector
/// instructions compute it.
///
/// The rounding adds and takes away 1.5 · 2^23, which leaves a float of magnitude below 2^22
/// rounded to an integer, half to even (the default rounding mode, as `cvtps2dq` rounds): the
/// same result as `round_ties_even`, which without SSE4.1 is a library call per value. The
/// product is first clamped to ±1024, past which every output saturates anyway.
#[inline]
pub fn requant(acc: i32, m: f32, zero: i32) -> u8 {
    const MAGIC: f32 = 12_582_912.0;
    let v = (acc as f32 * m).clamp(-1024.0, 1024.0);
    (((v + MAGIC) - MAGIC) as i32 + zero).clamp(0, 255) as u8
}

/// `requant(sums[i] + bias, m, zero)` for each `i`: the sums are exact integers held in f32
/// (lookd's int8 depthwise layers).
pub fn requant_sums(sums: &[f32], bias: i32, m: f32, zero: i32, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { x86::requant_sums(sums, bias, m, zero, out) };
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is baseline on aarch64.
    return unsafe { arm::requant_sums(sums, bias, m, zero, out) };
    #[allow(unreachable_code)]
    for (o, &s) in out.iter_mut().zip(sums) {
        *o = requant(s as i32 + bias, m, zero);
    }
}

/// `x` (`k × points`) packed `group` input channels to a point: `[kp/group][padded points][group]`,
/// the points padded with zeros to a whole number of `tile`, and the channels to `kp`. With
/// `signed`, each value is shifted to i8 (`x − 128`, as `x ^ 0x80`).
#[allow(clippy::too_many_arguments)]
pub fn pack(
    x: &[u8],
    k: usize,
    kp: usize,
    points: usize,
    group: usize,
    tile: usize,
    signed: bool,
    out: &mut Vec<u8>,
) {
    debug_assert!(kp >= k && kp.is_multiple_of(group));
    let pp = points.div_ceil(tile) * tile;
    let groups = kp / group;
    out.clear();
    out.resize(groups * pp * group, 0);
    let flip = if signed { 0x80 } else { 0 };
    for g in 0..groups {
        let dst = &mut out[g * pp * group..(g + 1) * pp * group];
        let rows = (k.min((g + 1) * group)).saturating_sub(g * group);
        let row = |j: usize| &x[(g * group + j) * points..(g * group + j + 1) * points];
        #[cfg(target_arch = "aarch64")]
        if rows == group && (group == 4 || group == 2) {
            // SAFETY: NEON is baseline on aarch64; the rows and `dst` hold `points` points.
            unsafe { arm::interleave(group, [row(0), row(1), row(group - 2), row(group - 1)], flip, dst) };
            continue;
        }
        for j in 0..rows {
            for (d, &v) in dst.chunks_exact_mut(group).zip(row(j)) {
                d[j] = v ^ flip;
            }
        }
    }
}

thread_local! {
    /// The packed activations, kept from one layer to the next (a fresh allocation of a few
    /// megabytes is fresh pages, zeroed by the kernel, every inference).
    static PACKED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Packed, MR};

    /// The output of a tile row, `n` of its `N` points from `at`: one fixed-size store when all
    /// fit, a copy of `n` for the last, partial tile.
    #[inline(always)]
    fn store<const N: usize>(out: &mut [u8], at: usize, bytes: &[u8; N], n: usize) {
        if n == N {
            out[at..at + N].copy_from_slice(bytes);
        } else {
            out[at..at + n].copy_from_slice(&bytes[..n]);
        }
    }

    /// 4 output channels × 4 vectors of 16 points; `b` packed 4 channels to a point.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn vnni512(p: &Packed, b: &[u8], pp: usize, points: usize, out: &mut [u8]) {
        const NV: usize = 4;
        const L: usize = 16;
        let groups = p.kp / 4;
        debug_assert!(b.len() >= groups * pp * 4);
        for p0 in (0..pp).step_by(NV * L) {
            for c0 in (0..p.cop).step_by(MR) {
                let mut acc = [[_mm512_setzero_si512(); NV]; MR];
                let mut bp = b.as_ptr().add(p0 * 4);
                let wp = p.w.as_ptr().add(c0 * groups);
                for g in 0..groups {
                    let bv: [__m512i; NV] =
                        std::array::from_fn(|j| _mm512_loadu_si512(bp.add(j * 64) as *const _));
                    for (r, row) in acc.iter_mut().enumerate() {
                        let w = _mm512_set1_epi32(*wp.add(g * MR + r));
                        for (a, &x) in row.iter_mut().zip(&bv) {
                            *a = _mm512_dpbusd_epi32(*a, x, w);
                        }
                    }
                    bp = bp.add(pp * 4);
                }
                for (r, row) in acc.iter().enumerate() {
                    let c = c0 + r;
                    if c >= p.co {
                        break;
                    }
                    let bias = _mm512_set1_epi32(p.bias[c]);
                    let m = _mm512_set1_ps(p.mul[c]);
                    let z = _mm512_set1_epi32(p.y_zero);
                    for (j, &a) in row.iter().enumerate() {
                        let at = p0 + j * L;
                        if at >= points {
                            break;
                        }
                        let f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(a, bias)), m);
                        let f =
                            _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(-1024.0)), _mm512_set1_ps(1024.0));
                        let v = _mm512_cvtps_epi32(f);
                        let v = _mm512_max_epi32(_mm512_add_epi32(v, z), _mm512_setzero_si512());
                        let mut bytes = [0u8; L];
                        _mm_storeu_si128(bytes.as_mut_ptr() as *mut __m128i, _mm512_cvtusepi32_epi8(v));
                        store(out, c * points + at, &bytes, (points - at).min(L));
                    }
                }
            }
        }
    }

    /// Eight i32 lanes to eight bytes, requantised.
    #[inline(always)]
    pub(super) unsafe fn requant8(a: __m256i, bias: __m256i, m: __m256, z: __m256i) -> [u8; 8] {
        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a, bias)), m);
        let f = _mm256_min_ps(_mm256_max_ps(f, _mm256_set1_ps(-1024.0)), _mm256_set1_ps(1024.0));
        let v = _mm256_cvtps_epi32(f);
        let v = _mm256_add_epi32(v, z);
        // i32 → i16 (saturating) → u8 (saturating), within each 128-bit lane; then the two
        // lanes' four bytes side by side.
        let w = _mm256_packs_epi32(v, v);
        let u = _mm256_packus_epi16(w, w);
        let both = _mm256_permutevar8x32_epi32(u, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
        let mut bytes = [0u8; 8];
        _mm_storel_epi64(bytes.as_mut_ptr() as *mut __m128i, _mm256_castsi256_si128(both));
        bytes
    }

    #[inline(always)]
    unsafe fn finish<const NV: usize>(
        p: &Packed,
        acc: &[[__m256i; NV]; MR],
        c0: usize,
        p0: usize,
        points: usize,
        out: &mut [u8],
    ) {
        const L: usize = 8;
        for (r, row) in acc.iter().enumerate() {
            let c = c0 + r;
            if c >= p.co {
                break;
            }
            let bias = _mm256_set1_epi32(p.bias[c]);
            let m = _mm256_set1_ps(p.mul[c]);
            let z = _mm256_set1_epi32(p.y_zero);
            for (j, &a) in row.iter().enumerate() {
                let at = p0 + j * L;
                if at >= points {
                    break;
                }
                let bytes = requant8(a, bias, m, z);
                store(out, c * points + at, &bytes, (points - at).min(L));
            }
        }
    }

    /// [`super::requant_sums`] eight values at a time.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn requant_sums(sums: &[f32], bias: i32, m: f32, zero: i32, out: &mut [u8]) {
        let n = sums.len().min(out.len());
        let (b, mv, z) = (_mm256_set1_epi32(bias), _mm256_set1_ps(m), _mm256_set1_epi32(zero));
        let mut i = 0;
        while i + 8 <= n {
            let a = _mm256_cvttps_epi32(_mm256_loadu_ps(sums.as_ptr().add(i)));
            let bytes = requant8(a, b, mv, z);
            out[i..i + 8].copy_from_slice(&bytes);
            i += 8;
        }
        for (o, &s) in out[i..n].iter_mut().zip(&sums[i..n]) {
            *o = super::requant(s as i32 + bias, m, zero);
        }
    }

    /// 4 output channels × 3 vectors of 8 points; `b` packed 4 channels to a point.
    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) unsafe fn avxvnni(p: &Packed, b: &[u8], pp: usize, points: usize, out: &mut [u8]) {
        const NV: usize = 3;
        const L: usize = 8;
        let groups = p.kp / 4;
        debug_assert!(b.len() >= groups * pp * 4);
        for p0 in (0..pp).step_by(NV * L) {
            for c0 in (0..p.cop).step_by(MR) {
                let mut acc = [[_mm256_setzero_si256(); NV]; MR];
                let mut bp = b.as_ptr().add(p0 * 4);
                let wp = p.w.as_ptr().add(c0 * groups);
                for g in 0..groups {
                    let bv: [__m256i; NV] =
                        std::array::from_fn(|j| _mm256_loadu_si256(bp.add(j * 32) as *const _));
                    for (r, row) in acc.iter_mut().enumerate() {
                        let w = _mm256_set1_epi32(*wp.add(g * MR + r));
                        for (a, &x) in row.iter_mut().zip(&bv) {
                            *a = _mm256_dpbusd_avx_epi32(*a, x, w);
                        }
                    }
                    bp = bp.add(pp * 4);
                }
                finish(p, &acc, c0, p0, points, out);
            }
        }
    }

    /// 4 output channels × 3 vectors of 8 points; `b` packed 2 channels to a point, widened to
    /// i16 as it is loaded, multiplied and pair-summed by `vpmaddwd`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn avx2(p: &Packed, b: &[u8], pp: usize, points: usize, out: &mut [u8]) {
        const NV: usize = 3;
        const L: usize = 8;
        let groups = p.kp / 2;
        debug_assert!(b.len() >= groups * pp * 2);
        for p0 in (0..pp).step_by(NV * L) {
            for c0 in (0..p.cop).step_by(MR) {
                let mut acc = [[_mm256_setzero_si256(); NV]; MR];
                let mut bp = b.as_ptr().add(p0 * 2);
                let wp = p.w.as_ptr().add(c0 * groups);
                for g in 0..groups {
                    let bv: [__m256i; NV] = std::array::from_fn(|j| {
                        _mm256_cvtepu8_epi16(_mm_loadu_si128(bp.add(j * 16) as *const __m128i))
                    });
                    for (r, row) in acc.iter_mut().enumerate() {
                        let w = _mm256_set1_epi32(*wp.add(g * MR + r));
                        for (a, &x) in row.iter_mut().zip(&bv) {
                            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(x, w));
                        }
                    }
                    bp = bp.add(pp * 2);
                }
                finish(p, &acc, c0, p0, points, out);
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;
    use std::arch::asm;

    use super::{requant, Packed, MR};

    /// Sixteen i32 lanes (the bias included) to sixteen bytes, requantised. `fcvtns` rounds half
    /// to even, as the scalar path does, and saturates; the zero point is added saturating and
    /// both narrows saturate. That gives the scalar path's bytes without its clamp to ±1024:
    /// past ±1024 both end at 0 or 255.
    #[inline(always)]
    unsafe fn requant16(a: [int32x4_t; 4], m: float32x4_t, z: int32x4_t) -> uint8x16_t {
        let q = |v: int32x4_t| vqaddq_s32(vcvtnq_s32_f32(vmulq_f32(vcvtq_f32_s32(v), m)), z);
        let lo = vqmovun_high_s32(vqmovun_s32(q(a[0])), q(a[1]));
        let hi = vqmovun_high_s32(vqmovun_s32(q(a[2])), q(a[3]));
        vqmovn_high_u16(vqmovn_u16(lo), hi)
    }

    /// The accumulators of a tile, one vector of bias per output channel.
    #[inline(always)]
    unsafe fn start<const NV: usize>(p: &Packed, c0: usize) -> [[int32x4_t; NV]; MR] {
        std::array::from_fn(|r| [vdupq_n_s32(p.bias[c0 + r]); NV])
    }

    /// A tile's 4 output channels × `NV` vectors of 4 points, requantised and stored: one
    /// 16-byte store per channel, through a copy only for the last, partial tile of points.
    #[inline(always)]
    unsafe fn finish<const NV: usize>(
        p: &Packed,
        acc: &[[int32x4_t; NV]; MR],
        c0: usize,
        p0: usize,
        points: usize,
        out: &mut [u8],
    ) {
        let z = vdupq_n_s32(p.y_zero);
        let n = (points - p0).min(NV * 4);
        for (r, row) in acc.iter().enumerate() {
            let c = c0 + r;
            if c >= p.co {
                break;
            }
            let four = std::array::from_fn(|j| if j < NV { row[j] } else { vdupq_n_s32(0) });
            let v = requant16(four, vdupq_n_f32(p.mul[c]), z);
            let at = c * points + p0;
            if n == 16 {
                vst1q_u8(out[at..at + 16].as_mut_ptr(), v);
            } else {
                let mut bytes = [0u8; 16];
                vst1q_u8(bytes.as_mut_ptr(), v);
                out[at..at + n].copy_from_slice(&bytes[..n]);
            }
        }
    }

    /// Runs `tile::<NV>` over every tile of points and output channels: whole tiles of 4 vectors
    /// of 4 points, then the last points in as few vectors as cover them (7 × 7 = 49 points
    /// take 3 tiles and one vector, not 4 tiles).
    macro_rules! tiles {
        ($tile:ident, $p:expr, $b:expr, $pp:expr, $points:expr, $out:expr) => {{
            let (p, points) = ($p, $points);
            for p0 in (0..$pp).step_by(16) {
                for c0 in (0..p.cop).step_by(MR) {
                    match (points - p0).div_ceil(4).min(4) {
                        4 => finish(p, &$tile::<4>(p, $b, $pp, p0, c0), c0, p0, points, $out),
                        3 => finish(p, &$tile::<3>(p, $b, $pp, p0, c0), c0, p0, points, $out),
                        2 => finish(p, &$tile::<2>(p, $b, $pp, p0, c0), c0, p0, points, $out),
                        _ => finish(p, &$tile::<1>(p, $b, $pp, p0, c0), c0, p0, points, $out),
                    }
                }
            }
        }};
    }

    /// [`super::requant_sums`] sixteen values at a time.
    pub(super) unsafe fn requant_sums(sums: &[f32], bias: i32, m: f32, zero: i32, out: &mut [u8]) {
        let n = sums.len().min(out.len());
        let (b, mv, z) = (vdupq_n_s32(bias), vdupq_n_f32(m), vdupq_n_s32(zero));
        let mut i = 0;
        while i + 16 <= n {
            let a =
                std::array::from_fn(|j| vaddq_s32(vcvtq_s32_f32(vld1q_f32(sums.as_ptr().add(i + 4 * j))), b));
            vst1q_u8(out[i..i + 16].as_mut_ptr(), requant16(a, mv, z));
            i += 16;
        }
        for (o, &s) in out[i..n].iter_mut().zip(&sums[i..n]) {
            *o = requant(s as i32 + bias, m, zero);
        }
    }

    /// `group` (4 or 2) rows of points interleaved into `dst`, `group` bytes to a point, each
    /// XORed with `flip`: `vst4q_u8` / `vst2q_u8` sixteen points at a time. With 2, only the
    /// first two rows are read.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn interleave(group: usize, rows: [&[u8]; 4], flip: u8, dst: &mut [u8]) {
        let points = rows[0].len();
        assert!(rows[..group].iter().all(|r| r.len() == points) && dst.len() >= points * group);
        let f = vdupq_n_u8(flip);
        let load = |j: usize, p: usize| veorq_u8(vld1q_u8(rows[j].as_ptr().add(p)), f);
        let mut p = 0;
        while p + 16 <= points {
            if group == 4 {
                vst4q_u8(
                    dst.as_mut_ptr().add(p * 4),
                    uint8x16x4_t(load(0, p), load(1, p), load(2, p), load(3, p)),
                );
            } else {
                vst2q_u8(dst.as_mut_ptr().add(p * 2), uint8x16x2_t(load(0, p), load(1, p)));
            }
            p += 16;
        }
        for q in p..points {
            for (j, row) in rows[..group].iter().enumerate() {
                dst[q * group + j] = row[q] ^ flip;
            }
        }
    }

    /// 4 output channels × 4 vectors of 4 points; `b` packed 4 channels to a point, as i8. One
    /// 16-byte load brings a group's weights for the tile's four channels, and `sdot` by
    /// element takes each channel's four from it.
    #[target_feature(enable = "neon,dotprod")]
    pub(super) unsafe fn sdot(p: &Packed, b: &[u8], pp: usize, points: usize, out: &mut [u8]) {
        debug_assert!(b.len() >= p.kp * pp);
        tiles!(sdot_tile, p, b, pp, points, out)
    }

    #[inline(always)]
    unsafe fn sdot_tile<const NV: usize>(
        p: &Packed,
        b: &[u8],
        pp: usize,
        p0: usize,
        c0: usize,
    ) -> [[int32x4_t; NV]; MR] {
        let groups = p.kp / 4;
        let mut acc = start::<NV>(p, c0);
        let mut bp = b.as_ptr().add(p0 * 4) as *const i8;
        let wp = p.w.as_ptr().add(c0 * groups);
        for g in 0..groups {
            let w = vld1q_s8(wp.add(g * MR) as *const i8);
            for j in 0..NV {
                let x = vld1q_s8(bp.add(j * 16));
                let [mut a0, mut a1, mut a2, mut a3] = [acc[0][j], acc[1][j], acc[2][j], acc[3][j]];
                asm!(
                    "sdot {a0:v}.4s, {x:v}.16b, {w:v}.4b[0]",
                    "sdot {a1:v}.4s, {x:v}.16b, {w:v}.4b[1]",
                    "sdot {a2:v}.4s, {x:v}.16b, {w:v}.4b[2]",
                    "sdot {a3:v}.4s, {x:v}.16b, {w:v}.4b[3]",
                    a0 = inout(vreg) a0, a1 = inout(vreg) a1, a2 = inout(vreg) a2, a3 = inout(vreg) a3,
                    x = in(vreg) x, w = in(vreg) w, options(pure, nomem, nostack),
                );
                [acc[0][j], acc[1][j], acc[2][j], acc[3][j]] = [a0, a1, a2, a3];
            }
            bp = bp.add(pp * 4);
        }
        acc
    }

    /// 4 output channels × 4 vectors of 4 points; `b` packed 2 channels to a point, as i8.
    /// `smull` makes eight i16 products of one pair of channels and `smlal` adds the next pair's
    /// (when they fit, `pairs_fit_i16`); `sadalp` adds each point's two i16 lanes into its i32
    /// lane: four products per lane for three instructions.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn smull(p: &Packed, b: &[u8], pp: usize, points: usize, out: &mut [u8]) {
        debug_assert!(b.len() >= p.kp * pp && p.kp.is_multiple_of(4));
        tiles!(smull_tile, p, b, pp, points, out)
    }

    #[inline(always)]
    unsafe fn smull_tile<const NV: usize>(
        p: &Packed,
        b: &[u8],
        pp: usize,
        p0: usize,
        c0: usize,
    ) -> [[int32x4_t; NV]; MR] {
        let groups = p.kp / 2;
        let step = pp * 2;
        // A channel's pair of weights, twice: eight bytes against four points' pairs.
        let weight = |wp: *const i32, at: usize| vreinterpret_s8_s32(vld1_dup_s32(wp.add(at)));
        let mut acc = start::<NV>(p, c0);
        let mut bp = b.as_ptr().add(p0 * 2) as *const i8;
        let wp = p.w.as_ptr().add(c0 * groups);
        if p.pairs_fit_i16 {
            for g in (0..groups).step_by(2) {
                // Two pairs of channels × 4 points per 8-byte register.
                let x0: [int8x8_t; NV] = std::array::from_fn(|j| vld1_s8(bp.add(j * 8)));
                let x1: [int8x8_t; NV] = std::array::from_fn(|j| vld1_s8(bp.add(step + j * 8)));
                for (r, row) in acc.iter_mut().enumerate() {
                    let (w0, w1) = (weight(wp, g * MR + r), weight(wp, (g + 1) * MR + r));
                    for (j, a) in row.iter_mut().enumerate() {
                        *a = vpadalq_s16(*a, vmlal_s8(vmull_s8(x0[j], w0), x1[j], w1));
                    }
                }
                bp = bp.add(2 * step);
            }
        } else {
            for g in 0..groups {
                let x: [int8x8_t; NV] = std::array::from_fn(|j| vld1_s8(bp.add(j * 8)));
                for (r, row) in acc.iter_mut().enumerate() {
                    let w = weight(wp, g * MR + r);
                    for (j, a) in row.iter_mut().enumerate() {
                        *a = vpadalq_s16(*a, vmull_s8(x[j], w));
                    }
                }
                bp = bp.add(step);
            }
        }
        acc
    }
}
