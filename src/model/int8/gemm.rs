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
    /// `k` rounded up to the kernel's group of input channels.
    kp: usize,
    /// `co` rounded up to [`MR`].
    cop: usize,
    /// One i32 per output channel and group of `group()` input channels: four i8 (VNNI, sdot)
    /// or two i16 (AVX2) or two i8 repeated twice (smull) or one i8 (scalar).
    w: Vec<i32>,
    /// The graph's bias, less the input's zero point times the row's weights (plus 128 times
    /// them on the i8 paths), per output channel.
    bias: Vec<i32>,
    /// `x_scale · w_scale[co] / y_scale`.
    mul: Vec<f32>,
    y_zero: i32,
}

impl Packed {
    /// `w` is `co × k` row-major; `bias` and `mul` one per output channel.
    pub fn new(isa: Isa, w: &[i8], co: usize, k: usize, r: &Requant) -> Packed {
        assert_eq!(w.len(), co * k, "weights are co × k");
        let (bias, x_zero, mul, y_zero) = (r.bias, r.x_zero, r.mul, r.y_zero);
        assert!(bias.len() == co && mul.len() == co, "one bias and one multiplier per output channel");
        let g = isa.group();
        let kp = k.div_ceil(g) * g;
        let cop = co.div_ceil(MR) * MR;
        let at = |c: usize, i: usize| if c < co && i < k { w[c * k + i] } else { 0 };
        let mut packed = Vec::with_capacity(cop * kp / g);
        for c in 0..cop {
            for i in (0..kp).step_by(g) {
                packed.push(match g {
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
                });
            }
        }
        let shift = if isa.signed_activations() { 128 } else { 0 };
        let mut adjusted = vec![0; cop];
        for c in 0..co {
            let row: i32 = w[c * k..(c + 1) * k].iter().map(|&v| v as i32).sum();
            adjusted[c] = bias[c] - (x_zero as i32 - shift) * row;
        }
        let mut m = mul.to_vec();
        m.resize(cop, 0.0);
        Packed { isa, co, k, kp, cop, w: packed, bias: adjusted, mul: m, y_zero: y_zero as i32 }
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
            pack(x, self.k, points, self.isa.group(), lanes, self.isa.signed_activations(), b);
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

/// `x` (`k × points`) packed `group` input channels to a point: `[k/group][padded points][group]`,
/// the points padded with zeros to a whole number of `tile` (and `k` to a whole group). With
/// `signed`, each value is shifted to i8 (`x − 128`, as `x ^ 0x80`).
pub fn pack(x: &[u8], k: usize, points: usize, group: usize, tile: usize, signed: bool, out: &mut Vec<u8>) {
    let pp = points.div_ceil(tile) * tile;
    let groups = k.div_ceil(group);
    out.clear();
    out.resize(groups * pp * group, 0);
    let flip = if signed { 0x80 } else { 0 };
    for g in 0..groups {
        let dst = &mut out[g * pp * group..(g + 1) * pp * group];
        for j in 0..group {
            let i = g * group + j;
            if i >= k {
                break;
            }
            let row = &x[i * points..(i + 1) * points];
            for (d, &v) in dst.chunks_exact_mut(group).zip(row) {
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

/// The output of a tile row, `n` points from `at`: whole when all `n` fit, else through a copy.
#[inline(always)]
fn store(out: &mut [u8], at: usize, bytes: &[u8], n: usize) {
    out[at..at + n].copy_from_slice(&bytes[..n]);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{store, Packed, MR};

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
                        let w = _mm512_set1_epi32(*wp.add(r * groups + g));
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
                        let w = _mm256_set1_epi32(*wp.add(r * groups + g));
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
                        let w = _mm256_set1_epi32(*wp.add(r * groups + g));
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

    use super::{requant, store, Packed, MR};

    /// Four i32 lanes to four bytes, requantised: `fcvtns` rounds half to even, as the scalar
    /// path does.
    #[inline(always)]
    unsafe fn requant4(a: int32x4_t, bias: int32x4_t, m: float32x4_t, z: int32x4_t) -> [u8; 8] {
        let f = vmulq_f32(vcvtq_f32_s32(vaddq_s32(a, bias)), m);
        let f = vminq_f32(vmaxq_f32(f, vdupq_n_f32(-1024.0)), vdupq_n_f32(1024.0));
        let v = vaddq_s32(vcvtnq_s32_f32(f), z);
        let h = vqmovun_s32(v);
        let mut bytes = [0u8; 8];
        vst1_u8(bytes.as_mut_ptr(), vqmovn_u16(vcombine_u16(h, h)));
        bytes
    }

    #[inline(always)]
    unsafe fn finish<const NV: usize>(
        p: &Packed,
        acc: &[[int32x4_t; NV]; MR],
        c0: usize,
        p0: usize,
        points: usize,
        out: &mut [u8],
    ) {
        const L: usize = 4;
        for (r, row) in acc.iter().enumerate() {
            let c = c0 + r;
            if c >= p.co {
                break;
            }
            let (bias, m, z) = (vdupq_n_s32(p.bias[c]), vdupq_n_f32(p.mul[c]), vdupq_n_s32(p.y_zero));
            for (j, &a) in row.iter().enumerate() {
                let at = p0 + j * L;
                if at >= points {
                    break;
                }
                let bytes = requant4(a, bias, m, z);
                store(out, c * points + at, &bytes, (points - at).min(L));
            }
        }
    }

    /// [`super::requant_sums`] four values at a time.
    pub(super) unsafe fn requant_sums(sums: &[f32], bias: i32, m: f32, zero: i32, out: &mut [u8]) {
        let n = sums.len().min(out.len());
        let (b, mv, z) = (vdupq_n_s32(bias), vdupq_n_f32(m), vdupq_n_s32(zero));
        let mut i = 0;
        while i + 4 <= n {
            let a = vcvtq_s32_f32(vld1q_f32(sums.as_ptr().add(i)));
            let bytes = requant4(a, b, mv, z);
            out[i..i + 4].copy_from_slice(&bytes[..4]);
            i += 4;
        }
        for (o, &s) in out[i..n].iter_mut().zip(&sums[i..n]) {
            *o = requant(s as i32 + bias, m, zero);
        }
    }

    /// 4 output channels × 4 vectors of 4 points; `b` packed 4 channels to a point, as i8.
    #[target_feature(enable = "neon,dotprod")]
    pub(super) unsafe fn sdot(p: &Packed, b: &[u8], pp: usize, points: usize, out: &mut [u8]) {
        const NV: usize = 4;
        const L: usize = 4;
        let groups = p.kp / 4;
        debug_assert!(b.len() >= groups * pp * 4);
        for p0 in (0..pp).step_by(NV * L) {
            for c0 in (0..p.cop).step_by(MR) {
                let mut acc = [[vdupq_n_s32(0); NV]; MR];
                let mut bp = b.as_ptr().add(p0 * 4) as *const i8;
                let wp = p.w.as_ptr().add(c0 * groups);
                for g in 0..groups {
                    let bv: [int8x16_t; NV] = std::array::from_fn(|j| vld1q_s8(bp.add(j * 16)));
                    for (r, row) in acc.iter_mut().enumerate() {
                        let w = vreinterpretq_s8_s32(vdupq_n_s32(*wp.add(r * groups + g)));
                        for (a, &x) in row.iter_mut().zip(&bv) {
                            asm!("sdot {a:v}.4s, {x:v}.16b, {w:v}.16b", a = inout(vreg) *a, x = in(vreg) x, w = in(vreg) w, options(pure, nomem, nostack));
                        }
                    }
                    bp = bp.add(pp * 4);
                }
                finish(p, &acc, c0, p0, points, out);
            }
        }
    }

    /// 4 output channels × 4 vectors of 4 points; `b` packed 2 channels to a point, as i8:
    /// `smull` makes eight i16 products, `sadalp` adds each point's pair into its i32 lane.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn smull(p: &Packed, b: &[u8], pp: usize, points: usize, out: &mut [u8]) {
        const NV: usize = 4;
        const L: usize = 4;
        let groups = p.kp / 2;
        debug_assert!(b.len() >= groups * pp * 2);
        for p0 in (0..pp).step_by(NV * L) {
            for c0 in (0..p.cop).step_by(MR) {
                let mut acc = [[vdupq_n_s32(0); NV]; MR];
                let mut bp = b.as_ptr().add(p0 * 2) as *const i8;
                let wp = p.w.as_ptr().add(c0 * groups);
                for g in 0..groups {
                    // Two 16-byte loads: 16 points × 2 channels.
                    let lo = vld1q_s8(bp);
                    let hi = vld1q_s8(bp.add(16));
                    for (r, row) in acc.iter_mut().enumerate() {
                        let w = vreinterpret_s8_s32(vdup_n_s32(*wp.add(r * groups + g)));
                        row[0] = vpadalq_s16(row[0], vmull_s8(vget_low_s8(lo), w));
                        row[1] = vpadalq_s16(row[1], vmull_s8(vget_high_s8(lo), w));
                        row[2] = vpadalq_s16(row[2], vmull_s8(vget_low_s8(hi), w));
                        row[3] = vpadalq_s16(row[3], vmull_s8(vget_high_s8(hi), w));
                    }
                    bp = bp.add(pp * 2);
                }
                finish(p, &acc, c0, p0, points, out);
            }
        }
    }
}
