//! lookd's int8 depthwise convolution on aarch64: integer sums in NEON, no float until the
//! requantisation.
//!
//! Each input plane is widened once to i16 `x − x0` (|·| ≤ 255) in a zero-padded scratch plane
//! (the padding is the zero point, as the graph's padded convolution has it); each tap then adds
//! `(x − x0) · w` into i32 lanes with `smlal`/`smlal2` (an i16 × i16 product is exact, and
//! 25 taps of at most 255 · 128 stay far inside i32), eight outputs per load. Stride 2 reads
//! every other input with a de-interleaving load (`ld2`). The sums start at the bias and are
//! requantised as [`super::gemm`] does, so the bytes are the scalar path's.
//!
//! On x86 the float depthwise kernel sums the same integers exactly in f32 lanes
//! ([`super::super::depthwise::Layer::run_u8`]); on aarch64 that path widened and converted
//! each plane to f32 and ran 4 lanes a tap, which counted 1.6 instructions per product under
//! qemu (BENCHMARKS.md, "int8 on aarch64").

use std::arch::aarch64::*;
use std::arch::asm;

use super::{Geometry, Quantized};

/// Output points per vector (one i16 load, two i32 accumulators).
const L: usize = 8;
/// Output vectors computed together: each tap's weight is broadcast once for all of them.
const N: usize = 8;

/// The scratch plane's layout for one layer.
struct Plane {
    /// i16 per padded row.
    stride: usize,
    rows: usize,
    /// Per tap, its offset from an output vector's first input.
    taps: Vec<usize>,
}

impl Plane {
    fn new(g: &Geometry) -> Plane {
        let vectors = g.ow.div_ceil(L);
        // Every read of the last vector of a row (16 i16 from its last tap when the stride is
        // 2), and every input column with the row rounded up to whole vectors (`widen`).
        let reads = (vectors * L - 1) * g.sw + g.kw + 2 * L;
        let stride = reads.max(g.pad_left + g.w.next_multiple_of(L));
        let rows = ((g.oh - 1) * g.sh + g.kh).max(g.pad_top + g.h) + 1;
        let taps = (0..g.kh).flat_map(|ky| (0..g.kw).map(move |kx| ky * stride + kx)).collect();
        Plane { stride, rows, taps }
    }
}

/// Runs a depthwise layer: `x` is `batch × channels × h × w` u8, `y` `batch × channels × oh × ow`.
pub fn run(q: &Quantized, x: &[u8], y: &mut [u8]) {
    let g = &q.geo;
    let plane = Plane::new(g);
    let (in_plane, out_plane, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    assert!(g.sw == 1 || g.sw == 2, "int8 depthwise: stride {} (1 or 2)", g.sw);
    assert_eq!(q.weights.len(), g.co * taps, "int8 depthwise: one filter per channel");
    let mut buf = vec![0i16; plane.stride * plane.rows];
    let weights: Vec<i16> = q.weights.iter().map(|&w| w as i16).collect();
    for (p, (src, dst)) in x.chunks_exact(in_plane).zip(y.chunks_exact_mut(out_plane)).enumerate() {
        let c = p % g.co;
        // SAFETY: NEON is baseline on aarch64; `buf` holds every row and column `widen` writes
        // and `plane_sums` reads (`Plane::new`).
        unsafe {
            widen(g, &plane, src, q.x_zero, &mut buf);
            plane_sums(g, &plane, &buf, &weights[c * taps..(c + 1) * taps], q, c, dst);
        }
    }
}

/// The plane's inputs as `x − x0` in i16, at their padded places in `buf` (whose padding stays
/// zero from plane to plane): 16 at a time, then 8 at a time with the lanes past the row
/// masked to zero, then one at a time only where 8 bytes would read past the plane.
#[target_feature(enable = "neon")]
unsafe fn widen(g: &Geometry, plane: &Plane, src: &[u8], zero: u8, buf: &mut [i16]) {
    let z = vdup_n_u8(zero);
    let zq = vdupq_n_u8(zero);
    let lanes: [u16; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
    let lanes = vld1q_u16(lanes.as_ptr());
    for y in 0..g.h {
        let at = (y + g.pad_top) * plane.stride + g.pad_left;
        let out = buf[at..at + g.w.next_multiple_of(L)].as_mut_ptr();
        let row = src[y * g.w..].as_ptr();
        let mut i = 0;
        while i + 16 <= g.w {
            let v = vld1q_u8(row.add(i));
            // u8 − u8 wraps in u16 to the two's complement of the i16 difference.
            vst1q_s16(out.add(i), vreinterpretq_s16_u16(vsubl_u8(vget_low_u8(v), z)));
            vst1q_s16(out.add(i + 8), vreinterpretq_s16_u16(vsubl_high_u8(v, zq)));
            i += 16;
        }
        while i < g.w && y * g.w + i + L <= src.len() {
            let d = vsubl_u8(vld1_u8(row.add(i)), z);
            let keep = vcltq_u16(lanes, vdupq_n_u16((g.w - i) as u16));
            vst1q_s16(out.add(i), vreinterpretq_s16_u16(vandq_u16(d, keep)));
            i += L;
        }
        for j in i..g.w {
            *out.add(j) = *row.add(j) as i16 - zero as i16;
        }
    }
}

/// One plane's outputs, `N` vectors of `L` points at a time (running on into the next rows).
#[target_feature(enable = "neon")]
unsafe fn plane_sums(
    g: &Geometry,
    plane: &Plane,
    buf: &[i16],
    w: &[i16],
    q: &Quantized,
    c: usize,
    dst: &mut [u8],
) {
    let per_row = g.ow.div_ceil(L);
    let vectors = g.oh * per_row;
    let (m, z) = (vdupq_n_f32(q.mul[c]), vdupq_n_s32(q.y_zero as i32));
    let bias = vdupq_n_s32(q.bias[c]);
    // The next vector's row and place in its row.
    let (mut oy, mut vx) = (0, 0);
    let mut first = 0;
    while first < vectors {
        // Fewer vectors at once with stride 2, whose loads fill two registers each.
        let n = (vectors - first).min(if g.sw == 1 { N } else { N - 2 });
        // Each vector's first input, first output and length.
        let mut base = [0usize; N];
        let mut out = [(0usize, 0usize); N];
        for (b, o) in base.iter_mut().zip(&mut out).take(n) {
            *b = oy * g.sh * plane.stride + vx * L * g.sw;
            *o = (oy * g.ow + vx * L, (g.ow - vx * L).min(L));
            (oy, vx) = if vx + 1 == per_row { (oy + 1, 0) } else { (oy, vx + 1) };
        }
        let k = Group { buf, plane, w, bias, m, z };
        // Each count of vectors its own instance, so that the sums stay in registers.
        match (n, g.sw == 1) {
            (8, true) => k.run::<8, 1>(&base, &out, dst),
            (7, true) => k.run::<7, 1>(&base, &out, dst),
            (6, true) => k.run::<6, 1>(&base, &out, dst),
            (5, true) => k.run::<5, 1>(&base, &out, dst),
            (4, true) => k.run::<4, 1>(&base, &out, dst),
            (3, true) => k.run::<3, 1>(&base, &out, dst),
            (2, true) => k.run::<2, 1>(&base, &out, dst),
            (_, true) => k.run::<1, 1>(&base, &out, dst),
            (6, false) => k.run::<6, 2>(&base, &out, dst),
            (5, false) => k.run::<5, 2>(&base, &out, dst),
            (4, false) => k.run::<4, 2>(&base, &out, dst),
            (3, false) => k.run::<3, 2>(&base, &out, dst),
            (2, false) => k.run::<2, 2>(&base, &out, dst),
            (_, false) => k.run::<1, 2>(&base, &out, dst),
        }
        first += n;
    }
}

/// What a group of output vectors of one plane needs.
struct Group<'a> {
    buf: &'a [i16],
    plane: &'a Plane,
    /// The channel's weights, one per tap.
    w: &'a [i16],
    bias: int32x4_t,
    m: float32x4_t,
    z: int32x4_t,
}

impl Group<'_> {
    /// The first `NV` vectors' sums over every tap, stride `S` (1, or 2 with a de-interleaving
    /// load), requantised and stored (`out`: each vector's first output and length).
    #[inline(always)]
    unsafe fn run<const NV: usize, const S: usize>(
        &self,
        base: &[usize; N],
        out: &[(usize, usize); N],
        dst: &mut [u8],
    ) {
        let p = self.buf.as_ptr();
        let mut a = [[self.bias; 2]; NV];
        let b: [*const i16; NV] = std::array::from_fn(|i| p.add(base[i]));
        for (&off, &wt) in self.plane.taps.iter().zip(self.w) {
            let wv = vdupq_n_s16(wt);
            for (i, acc) in a.iter_mut().enumerate() {
                let v = if S == 1 { vld1q_s16(b[i].add(off)) } else { vld2q_s16(b[i].add(off)).0 };
                // By element, in assembly: given `vmlal_high_s16` of a broadcast, LLVM moves
                // the high half down (`ext`) and multiplies the low halves, an instruction more.
                let [mut lo, mut hi] = *acc;
                asm!(
                    "smlal {lo:v}.4s, {v:v}.4h, {w:v}.h[0]",
                    "smlal2 {hi:v}.4s, {v:v}.8h, {w:v}.h[0]",
                    lo = inout(vreg) lo, hi = inout(vreg) hi, v = in(vreg) v, w = in(vreg_low16) wv,
                    options(pure, nomem, nostack),
                );
                *acc = [lo, hi];
            }
        }
        for (acc, &(at, len)) in a.iter().zip(out) {
            let bytes = requant8(*acc, self.m, self.z);
            // A vector short of its row's end is stored whole all the same where the plane has
            // room: its last bytes land on the next row's first outputs, which are stored after
            // it (vectors go in order), so only the plane's last vector needs the copy.
            if len == L || at + L <= dst.len() {
                vst1_u8(dst[at..at + L].as_mut_ptr(), bytes);
            } else {
                let mut tmp = [0u8; L];
                vst1_u8(tmp.as_mut_ptr(), bytes);
                dst[at..at + len].copy_from_slice(&tmp[..len]);
            }
        }
    }
}

/// Eight i32 sums (bias included) to eight bytes: as `gemm`'s `requant16` (`fcvtns` rounds half
/// to even and saturates, the zero point is added saturating, the narrows saturate).
#[inline(always)]
unsafe fn requant8(a: [int32x4_t; 2], m: float32x4_t, z: int32x4_t) -> uint8x8_t {
    let q = |v: int32x4_t| vqaddq_s32(vcvtnq_s32_f32(vmulq_f32(vcvtq_f32_s32(v), m)), z);
    vqmovn_u16(vqmovun_high_s32(vqmovun_s32(q(a[0])), q(a[1])))
}
