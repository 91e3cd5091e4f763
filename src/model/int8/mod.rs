//! lookd's own int8 convolutions, swapped into a loaded graph in place of tract's quantized
//! `Conv` (the `QLinearConv` that [`super::qconv::fold`] makes of each `DequantizeLinear → Conv →
//! QuantizeLinear`).
//!
//! tract 0.23.9 runs a quantized convolution as an `EinSum` that plans one integer product per
//! image row and requantises in separate passes over i32 tensors, and it keeps depthwise layers
//! in float between quantize and dequantize passes (BENCHMARKS.md, "int8"). [`swap_in`] puts a
//! [`QConv`] in place of every 2-D, channel-first quantized `Conv` with u8 activations, constant
//! i8 weights (symmetric: zero point 0), an i32 bias and per-tensor activation scales, so that
//! the backbone's activations stay 8-bit from one convolution to the next:
//! - group 1 (the pointwise 1×1 layers; the stem and ResNet's 3×3 and 7×7 layers through an
//!   im2col): the integer matrix product of [`gemm`], on the CPU's best vector unit, the bias and
//!   the requantisation (ReLU6 is the output's u8 range) fused into its store;
//! - depthwise on aarch64: integer sums in NEON ([`dw`]: i16 inputs, `smlal` into i32);
//! - depthwise elsewhere: the products summed exactly in f32 lanes by lookd's depthwise kernel
//!   ([`super::depthwise`]): the inputs `x − x0` (|·| ≤ 255) times i8 weights (|·| ≤ 128) over at
//!   most 25 taps stay far below 2^24, where every integer is an f32, so the sums are the
//!   integer sums, and the requantisation is the same step as [`gemm`]'s.
//!
//! The zero padding that EfficientNet's "same" convolutions spell as a separate float `Pad`
//! between a dequantize and a quantize of the same scale is folded into the convolution: the
//! padded points take the input's zero point, which is what that chain computes.

#[cfg(target_arch = "aarch64")]
mod dw;
pub mod gemm;

use std::cell::Cell;
use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::model::Rewriter;
use tract_onnx::tract_core::ops::array::{Pad, PadMode};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::math::{Mul, Sub};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearU8};

use super::depthwise;

/// Which vector unit the integer matrix product uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    #[cfg(target_arch = "aarch64")]
    Smull,
    #[cfg(target_arch = "aarch64")]
    Sdot,
}

impl Isa {
    /// Every path this CPU can run, best last.
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut all = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                all.push(Isa::Avx2);
                if is_x86_feature_detected!("avxvnni") {
                    all.push(Isa::AvxVnni);
                }
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
                {
                    all.push(Isa::Avx512Vnni);
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                all.push(Isa::Smull);
                if std::arch::is_aarch64_feature_detected!("dotprod") {
                    all.push(Isa::Sdot);
                }
            }
        }
        all
    }

    /// The best this CPU runs.
    pub fn detect() -> Isa {
        *Isa::available().last().unwrap_or(&Isa::Scalar)
    }

    /// `LOOKD_INT8_ISA` (any name of [`Isa::name`] that this CPU runs), else [`Isa::detect`].
    pub fn configured() -> Result<Isa, super::ModelError> {
        match std::env::var("LOOKD_INT8_ISA") {
            Ok(v) if !v.is_empty() => {
                v.parse().map_err(|e| super::ModelError::Run(format!("LOOKD_INT8_ISA: {e}")))
            }
            _ => Ok(Isa::detect()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => "avx-vnni",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => "avx512-vnni",
            #[cfg(target_arch = "aarch64")]
            Isa::Smull => "smull",
            #[cfg(target_arch = "aarch64")]
            Isa::Sdot => "sdot",
        }
    }

    /// Input channels packed to one point.
    fn group(self) -> usize {
        match self {
            Isa::Scalar => 1,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 2,
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni | Isa::Avx512Vnni => 4,
            #[cfg(target_arch = "aarch64")]
            Isa::Smull => 2,
            #[cfg(target_arch = "aarch64")]
            Isa::Sdot => 4,
        }
    }

    /// Whether the weights are widened to i16 (AVX2's `vpmaddwd`).
    fn widens(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx2 {
            return true;
        }
        false
    }

    /// Input channels the kernel consumes per step of its inner loop: `k` is padded to a
    /// multiple of this. Two groups for `smull`, whose i16 products are summed in pairs before
    /// they are widened (`smlal`), one group elsewhere.
    fn k_step(self) -> usize {
        #[cfg(target_arch = "aarch64")]
        if self == Isa::Smull {
            return 4;
        }
        self.group()
    }

    /// Whether the activations are shifted to i8 (the aarch64 paths multiply i8 by i8).
    fn signed_activations(self) -> bool {
        #[cfg(target_arch = "aarch64")]
        if matches!(self, Isa::Smull | Isa::Sdot) {
            return true;
        }
        false
    }

    /// Points one tile of the kernel covers.
    fn points_per_tile(self) -> usize {
        match self {
            Isa::Scalar => 1,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::AvxVnni => 24,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => 64,
            #[cfg(target_arch = "aarch64")]
            Isa::Smull | Isa::Sdot => 16,
        }
    }
}

impl std::str::FromStr for Isa {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let all = Isa::available();
        all.iter().copied().find(|i| i.name() == s).ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|i| i.name()).collect();
            format!("this CPU runs int8 paths {}, not {s:?}", names.join(", "))
        })
    }
}

/// The shape of one int8 convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    pub batch: usize,
    pub ci: usize,
    pub co: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    /// Padded rows above and columns left of the input (the rest of the padding, below and
    /// right, is whatever the output size needs).
    pub pad_top: usize,
    pub pad_left: usize,
    pub oh: usize,
    pub ow: usize,
    /// One filter per channel (`ci == co`), rather than every input channel to every output.
    pub depthwise: bool,
}

impl Geometry {
    pub fn macs(&self) -> usize {
        let per_output = if self.depthwise { 1 } else { self.ci };
        self.batch * self.co * self.oh * self.ow * self.kh * self.kw * per_output
    }

    /// Whether the input is the matrix product's right operand as it is (1×1, stride 1, no pad).
    fn direct(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.pad_top == 0
            && self.pad_left == 0
            && self.oh == self.h
            && self.ow == self.w
    }
}

/// The numbers of one int8 convolution: `y = clamp(round((bias + Σ w·(x − x0)) · m) + y0)`.
#[derive(Debug, Clone)]
pub struct Quantized {
    pub geo: Geometry,
    /// `co × (ci or 1) × kh × kw`.
    pub weights: Vec<i8>,
    /// One per output channel, in the accumulator's scale.
    pub bias: Vec<i32>,
    pub x_zero: u8,
    /// `x_scale · w_scale[co] / y_scale`, one per output channel.
    pub mul: Vec<f32>,
    pub y_zero: u8,
}

impl Quantized {
    pub fn requant(&self) -> gemm::Requant<'_> {
        gemm::Requant { bias: &self.bias, x_zero: self.x_zero, mul: &self.mul, y_zero: self.y_zero }
    }

    /// The textbook loops, for tests: what every path must give, byte for byte.
    pub fn reference(&self, x: &[u8]) -> Vec<u8> {
        let g = &self.geo;
        let cin = if g.depthwise { 1 } else { g.ci };
        let mut y = vec![0u8; g.batch * g.co * g.oh * g.ow];
        for n in 0..g.batch {
            for co in 0..g.co {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut acc = self.bias[co];
                        for i in 0..cin {
                            let c = if g.depthwise { co } else { i };
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.sh + ky) as isize - g.pad_top as isize;
                                    let ix = (ox * g.sw + kx) as isize - g.pad_left as isize;
                                    let v = if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                        self.x_zero
                                    } else {
                                        x[((n * g.ci + c) * g.h + iy as usize) * g.w + ix as usize]
                                    };
                                    let w = self.weights[((co * cin + i) * g.kh + ky) * g.kw + kx];
                                    acc += w as i32 * (v as i32 - self.x_zero as i32);
                                }
                            }
                        }
                        y[((n * g.co + co) * g.oh + oy) * g.ow + ox] =
                            gemm::requant(acc, self.mul[co], self.y_zero as i32);
                    }
                }
            }
        }
        y
    }
}

/// A [`Quantized`] layer made ready for one vector unit.
#[derive(Debug, Clone)]
pub struct Layer {
    pub q: Quantized,
    plan: Plan,
}

#[derive(Debug, Clone)]
enum Plan {
    Gemm(gemm::Packed),
    /// The float depthwise layer whose sums are the integer ones (weights as f32, no bias: the
    /// input is handed over as `x − x0`, the bias added to the exact sum as an integer), and the
    /// vector unit it runs on.
    Depthwise(depthwise::Layer, depthwise::Isa),
    /// aarch64's integer depthwise kernel ([`dw`]), for the NEON depthwise path.
    #[cfg(target_arch = "aarch64")]
    DepthwiseNeon,
}

impl Layer {
    pub fn new(q: Quantized, isa: Isa, dw_isa: depthwise::Isa) -> Layer {
        let g = q.geo;
        #[cfg(target_arch = "aarch64")]
        if g.depthwise && dw_isa == depthwise::Isa::Neon && (g.sw == 1 || g.sw == 2) {
            return Layer { q, plan: Plan::DepthwiseNeon };
        }
        let plan = if g.depthwise {
            let geo = depthwise::Geometry {
                batch: g.batch,
                channels: g.co,
                h: g.h,
                w: g.w,
                kh: g.kh,
                kw: g.kw,
                sh: g.sh,
                sw: g.sw,
                pad_top: g.pad_top,
                pad_left: g.pad_left,
                oh: g.oh,
                ow: g.ow,
            };
            let layer = depthwise::Layer {
                geo,
                weights: q.weights.iter().map(|&w| w as f32).collect(),
                bias: vec![0.0; g.co],
                clip: (f32::NEG_INFINITY, f32::INFINITY),
            };
            Plan::Depthwise(layer, dw_isa)
        } else {
            let k = g.ci * g.kh * g.kw;
            Plan::Gemm(gemm::Packed::new(isa, &q.weights, g.co, k, &q.requant()))
        };
        Layer { q, plan }
    }

    pub fn isa_name(&self) -> &'static str {
        match &self.plan {
            Plan::Gemm(p) => p.isa.name(),
            Plan::Depthwise(_, isa) => isa.name(),
            #[cfg(target_arch = "aarch64")]
            Plan::DepthwiseNeon => "neon-i16",
        }
    }

    /// Runs the layer: `x` is `batch × ci × h × w`, `y` `batch × co × oh × ow`.
    pub fn run(&self, x: &[u8], y: &mut [u8]) {
        let g = &self.q.geo;
        assert_eq!(x.len(), g.batch * g.ci * g.h * g.w, "int8 convolution input size");
        assert_eq!(y.len(), g.batch * g.co * g.oh * g.ow, "int8 convolution output size");
        let points = g.oh * g.ow;
        match &self.plan {
            Plan::Gemm(packed) => {
                let per_in = g.ci * g.h * g.w;
                let per_out = g.co * points;
                COLUMNS.with_borrow_mut(|cols| {
                    for n in 0..g.batch {
                        let xn = &x[n * per_in..(n + 1) * per_in];
                        let b = if g.direct() {
                            xn
                        } else {
                            im2col(g, self.q.x_zero, xn, cols);
                            &cols[..]
                        };
                        packed.run(b, points, &mut y[n * per_out..(n + 1) * per_out]);
                    }
                });
            }
            Plan::Depthwise(layer, isa) => {
                let q = &self.q;
                let finish = |c: usize, sums: &[f32], out: &mut [u8]| {
                    gemm::requant_sums(sums, q.bias[c], q.mul[c], q.y_zero as i32, out)
                };
                layer.run_u8(*isa, x, q.x_zero, y, &finish);
            }
            #[cfg(target_arch = "aarch64")]
            Plan::DepthwiseNeon => dw::run(&self.q, x, y),
        }
    }
}

/// `dst[i] = src[step · i]` for each output (im2col's strided rows; stride 2, the stem's, by a
/// de-interleaving load on aarch64).
fn strided(src: &[u8], step: usize, dst: &mut [u8]) {
    assert!(src.len() > step * (dst.len().max(1) - 1), "strided: source too short");
    #[allow(unused_mut)]
    let mut i = 0;
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is baseline on aarch64; each de-interleaving load reads 32 bytes from 2i,
    // inside `src` by the loop's condition, and each store writes 16 bytes inside `dst`.
    unsafe {
        use std::arch::aarch64::*;
        while step == 2 && i + 16 <= dst.len() && 2 * i + 32 <= src.len() {
            vst1q_u8(dst.as_mut_ptr().add(i), vld2q_u8(src.as_ptr().add(2 * i)).0);
            i += 16;
        }
    }
    for (d, &v) in dst[i..].iter_mut().zip(src[step * i..].iter().step_by(step)) {
        *d = v;
    }
}

thread_local! {
    /// im2col's columns, kept from one layer to the next.
    static COLUMNS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The columns of one image: `(ci · kh · kw) × (oh · ow)`, padded points at the zero point.
fn im2col(g: &Geometry, zero: u8, x: &[u8], cols: &mut Vec<u8>) {
    let points = g.oh * g.ow;
    cols.clear();
    cols.resize(g.ci * g.kh * g.kw * points, zero);
    for c in 0..g.ci {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &mut cols[((c * g.kh + ky) * g.kw + kx) * points..][..points];
                for oy in 0..g.oh {
                    let iy = (oy * g.sh + ky) as isize - g.pad_top as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..][..g.w];
                    let dst = &mut row[oy * g.ow..][..g.ow];
                    // The outputs whose input column ox · sw + kx − pad_left lies in the row;
                    // the others keep the zero point.
                    let lo = g.pad_left.saturating_sub(kx).div_ceil(g.sw);
                    let hi = ((g.w + g.pad_left).saturating_sub(kx)).div_ceil(g.sw).min(g.ow);
                    if lo >= hi {
                        continue;
                    }
                    let first = lo * g.sw + kx - g.pad_left;
                    if g.sw == 1 {
                        dst[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                    } else {
                        strided(&src[first..], g.sw, &mut dst[lo..hi]);
                    }
                }
            }
        }
    }
}

/// lookd's int8 convolution as a tract operator: u8 in, u8 out.
#[derive(Debug, Clone)]
pub struct QConv {
    layer: Arc<Layer>,
    output_shape: TVec<usize>,
}

impl PartialEq for QConv {
    /// The same layer object: two layers are one only when they share their numbers.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.layer, &other.layer)
    }
}

impl Eq for QConv {}

impl Op for QConv {
    fn name(&self) -> StaticName {
        "LookdQConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.layer.q.geo;
        Ok(vec![format!(
            "{} {}x{} stride {}x{} {}→{} on {}x{}, {}",
            if g.depthwise { "depthwise" } else { "dense" },
            g.kh,
            g.kw,
            g.sh,
            g.sw,
            g.ci,
            g.co,
            g.h,
            g.w,
            self.layer.isa_name()
        )])
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for QConv {
    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(self.eval(&EvalContext::out_of_plan(), inputs)?))
    }

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        if inputs.len() != 1 {
            bail!("LookdQConv takes one input, got {}", inputs.len());
        }
        let x = inputs[0].try_as_plain_ram()?;
        // SAFETY: u8 has no invalid values, and `Layer::run` writes every output (the matrix
        // product every channel's points, the depthwise kernel every plane).
        let mut out = unsafe { Tensor::uninitialized::<u8>(&self.output_shape)? };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            self.layer.run(x.as_slice::<u8>()?, view.as_slice_mut::<u8>()?);
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for QConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let g = self.layer.q.geo;
        let fact = inputs[0];
        let len = fact.shape.as_concrete().map(|s| s.iter().product::<usize>());
        if fact.datum_type != u8::datum_type() || len != Some(g.batch * g.ci * g.h * g.w) {
            bail!("LookdQConv expects u8 {:?}, got {:?}", g, fact);
        }
        Ok(tvec!(u8::fact(&*self.output_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((Cost::FMA(i32::datum_type()), self.layer.q.geo.macs().into())))
    }

    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }
}

/// What [`swap_in`] replaced.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swapped {
    pub dense: usize,
    pub depthwise: usize,
    /// Float `Pad` chains folded into a convolution's padding.
    pub pads: usize,
}

/// Replaces every quantized `Conv` of a typed, not yet decluttered `model` that lookd's kernels
/// handle (see the module's text).
pub fn swap_in(model: &mut TypedModel, isa: Isa, dw_isa: depthwise::Isa) -> TractResult<Swapped> {
    let done = Cell::new(Swapped::default());
    Rewriter::default()
        .with_rule_for::<Conv>("lookd-int8-conv", move |done, model, node, _, conv| {
            swap_one(isa, dw_isa, done, model, node, conv)
        })
        .rewrite(&done, model)?;
    Ok(done.get())
}

/// The constant value of `outlet`: its `konst`, a constant behind a `Cast`, or its `uniform`
/// value spread over its shape.
fn konst(model: &TypedModel, outlet: OutletId) -> TractResult<Option<Arc<Tensor>>> {
    let fact = model.outlet_fact(outlet)?;
    if let Some(k) = &fact.konst {
        return Ok(Some(k.clone()));
    }
    // Before decluttering, a constant may still sit behind the `Cast` that tract-onnx put on
    // each quantisation parameter.
    let node = model.node(outlet.node);
    if let Some(cast) = node.op_as::<Cast>() {
        if let Some(k) = konst(model, node.inputs[0])? {
            return Ok(Some(k.cast_to_dt(cast.to)?.into_owned().into_arc_tensor()));
        }
    }
    match (&fact.uniform, fact.shape.as_concrete()) {
        (Some(u), Some(shape)) if u.len() == 1 => {
            Ok(Some(u.broadcast_scalar_to_shape(shape)?.into_arc_tensor()))
        }
        _ => Ok(None),
    }
}

fn scalar<T: Datum + Copy>(t: &Tensor) -> TractResult<Option<T>> {
    if t.len() != 1 {
        return Ok(None);
    }
    Ok(Some(t.cast_to::<T>()?.try_as_plain_ram()?.as_slice::<T>()?[0]))
}

fn per_channel<T: Datum + Copy>(t: &Tensor, n: usize) -> TractResult<Option<Vec<T>>> {
    let v = t.cast_to::<T>()?.try_as_plain_ram()?.as_slice::<T>()?.to_vec();
    Ok(match v.len() {
        1 => Some(vec![v[0]; n]),
        l if l == n => Some(v),
        _ => None,
    })
}

fn swap_one(
    isa: Isa,
    dw_isa: depthwise::Isa,
    done: &Cell<Swapped>,
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
) -> TractResult<Option<TypedModelPatch>> {
    let spec = &conv.pool_spec;
    if conv.q_params != Some(u8::datum_type())
        || node.inputs.len() != 9
        || spec.rank() != 2
        || !matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
        || conv.kernel_fmt != KernelFormat::OIHW
        || spec.dilations().iter().any(|&d| d != 1)
    {
        return Ok(None);
    }
    let x = model.outlet_fact(node.inputs[0])?;
    if x.datum_type != u8::datum_type() {
        return Ok(None);
    }
    let Some(shape) = x.shape.as_concrete() else { return Ok(None) };
    let shape = spec.data_format.shape(shape.to_vec())?;
    let (batch, hw) = (shape.n().copied().unwrap_or(1), shape.hw_dims().to_vec());
    let (ci, co) = (spec.input_channels, spec.output_channels);
    let depthwise = conv.group != 1;
    if depthwise && (conv.group != ci || co != ci) {
        return Ok(None);
    }
    let mut k = Vec::with_capacity(8);
    for &i in &node.inputs[1..] {
        let Some(t) = konst(model, i)? else { return Ok(None) };
        k.push(t);
    }
    let [kernel, bias, x0, xs, k0, ks, y0, ys] = &k[..] else { return Ok(None) };
    let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
    let cin = if depthwise { 1 } else { ci };
    if kernel.datum_type() != i8::datum_type() || kernel.shape() != [co, cin, kh, kw] {
        return Ok(None);
    }
    let k0 = k0.cast_to::<i32>()?;
    if k0.try_as_plain_ram()?.as_slice::<i32>()?.iter().any(|&z| z != 0) {
        return Ok(None);
    }
    let (Some(x0), Some(xs), Some(y0), Some(ys)) =
        (scalar::<i32>(x0)?, scalar::<f32>(xs)?, scalar::<i32>(y0)?, scalar::<f32>(ys)?)
    else {
        return Ok(None);
    };
    let (Some(ks), Some(bias)) = (per_channel::<f32>(ks, co)?, per_channel::<i32>(bias, co)?) else {
        return Ok(None);
    };
    if !(0..=255).contains(&x0) || !(0..=255).contains(&y0) || ys.is_nan() || ys <= 0.0 {
        return Ok(None);
    }
    let pads = spec.computed_padding(&hw);
    let strides = spec.strides();
    let mut geo = Geometry {
        batch,
        ci,
        co,
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
        depthwise,
    };
    if geo.oh == 0 || geo.ow == 0 {
        return Ok(None);
    }
    // Depthwise sums run in f32 lanes: exact only while every partial sum stays below 2^24
    // (the bias is added afterwards, as an integer).
    if depthwise && 255 * 128 * kh * kw >= 1 << 24 {
        return Ok(None);
    }
    // A float Pad between a dequantize and a quantize of the input's own scale, folded in.
    let mut input = node.inputs[0];
    if let Some((source, (top, _), (left, _))) = padded_u8(model, input, x0 as u8, xs)? {
        let src = model.outlet_fact(source)?.shape.as_concrete().map(|s| s.to_vec());
        if let Some(src) = src.filter(|s| s.len() == 4 && s[0] == batch && s[1] == ci) {
            geo.h = src[2];
            geo.w = src[3];
            geo.pad_top += top;
            geo.pad_left += left;
            input = source;
            let mut d = done.get();
            d.pads += 1;
            done.set(d);
        }
    }
    let mul: Vec<f32> = ks.iter().map(|s| xs * s / ys).collect();
    let weights = kernel.try_as_plain_ram()?.as_slice::<i8>()?.to_vec();
    let q = Quantized { geo, weights, bias, x_zero: x0 as u8, mul, y_zero: y0 as u8 };
    let output_shape: TVec<usize> =
        model.outlet_fact(node.id.into())?.shape.as_concrete().context("int8 conv output")?.into();
    let op = QConv { layer: Arc::new(Layer::new(q, isa, dw_isa)), output_shape };
    let mut patch = TypedModelPatch::new(format!("lookd int8 {}", node.name));
    let tapped = patch.tap_model(model, input)?;
    let wire = patch.wire_node(&node.name, op, &[tapped])?[0];
    patch.shunt_outside(model, node.id.into(), wire)?;
    let mut d = done.get();
    if depthwise {
        d.depthwise += 1;
    } else {
        d.dense += 1;
    }
    done.set(d);
    Ok(Some(patch))
}

/// When `outlet` is `QuantizeLinearU8(Pad(dequantize(u8 source)))` with the pad zero, only on
/// the two spatial axes, and the dequantize and quantize of one scale and zero point (`zero`,
/// `scale`): the u8 source and the (before, after) pads of its two spatial axes.
#[allow(clippy::type_complexity)]
fn padded_u8(
    model: &TypedModel,
    outlet: OutletId,
    zero: u8,
    scale: f32,
) -> TractResult<Option<(OutletId, (usize, usize), (usize, usize))>> {
    let same = |a: f32, b: f32| (a - b).abs() <= 1e-6 * b.abs();
    let q = model.node(outlet.node);
    let Some(quant) = q.op_as::<ElementWiseOp>().and_then(|e| e.0.downcast_ref::<QuantizeLinearU8>()) else {
        return Ok(None);
    };
    if quant.zero_point != zero || !same(1.0 / quant.scale, scale) {
        return Ok(None);
    }
    let pad_node = model.node(q.inputs[0].node);
    let Some(pad) = pad_node.op_as::<Pad>() else { return Ok(None) };
    let PadMode::Constant(value) = &pad.mode else { return Ok(None) };
    if scalar::<f32>(value)? != Some(0.0)
        || pad.pads.len() != 4
        || pad.pads[0] != (0, 0)
        || pad.pads[1] != (0, 0)
    {
        return Ok(None);
    }
    let Some(source) = dequantized(model, pad_node.inputs[0], zero, scale)? else { return Ok(None) };
    Ok(Some((source, pad.pads[2], pad.pads[3])))
}

/// The u8 outlet that `outlet` dequantizes with `zero` and `scale`: a `DequantizeLinearF32`,
/// or the `Cast → Sub → Mul` that [`super::qdq::guard`] spells it as (the `Sub` absent for a zero
/// point of 0).
fn dequantized(model: &TypedModel, outlet: OutletId, zero: u8, scale: f32) -> TractResult<Option<OutletId>> {
    let same = |a: f32, b: f32| (a - b).abs() <= 1e-6 * b.abs();
    let node = model.node(outlet.node);
    if let Some(dq) = node.op_as::<DequantizeLinearF32>() {
        let ok = dq.zero_point == zero as i32 && same(dq.scale, scale);
        return Ok(ok.then_some(node.inputs[0]));
    }
    let bin_const = |n: &TypedNode| -> TractResult<Option<(OutletId, f32)>> {
        if n.inputs.len() != 2 {
            return Ok(None);
        }
        let Some(k) = konst(model, n.inputs[1])? else { return Ok(None) };
        Ok(scalar::<f32>(&k)?.map(|v| (n.inputs[0], v)))
    };
    let Some(mul) = node.op_as::<TypedBinOp>().filter(|b| b.0.is::<Mul>()) else { return Ok(None) };
    let _ = mul;
    let Some((mut inner, s)) = bin_const(node)? else { return Ok(None) };
    if !same(s, scale) {
        return Ok(None);
    }
    let mut z = 0.0;
    let sub_node = model.node(inner.node);
    if sub_node.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<Sub>()) {
        let Some((x, v)) = bin_const(sub_node)? else { return Ok(None) };
        inner = x;
        z = v;
    }
    if z != zero as f32 {
        return Ok(None);
    }
    let cast = model.node(inner.node);
    if !cast.op_is::<Cast>() || model.outlet_fact(cast.inputs[0])?.datum_type != u8::datum_type() {
        return Ok(None);
    }
    Ok(Some(cast.inputs[0]))
}

#[cfg(test)]
mod tests;
