//! int8 convolutions that run as integers: the quantizer's `DequantizeLinear → Conv →
//! QuantizeLinear` folded into one `QLinearConv`, which tract runs as its quantized `Conv`
//! (`q_params`: integer matrix kernels, requantized output).
//!
//! A static QDQ graph (onnxruntime's quantizer, `models/onnx_eval.py quantize`) spells every
//! convolution as float arithmetic between fake-quantisation pairs: tract dequantizes the i8
//! weights into f32 constants while decluttering and runs a float convolution. The fold works on
//! the ONNX graph, before tract parses it, because that is where the i8 weights, their
//! per-channel scales and the i32 bias still exist.
//!
//! A convolution is folded only when the integer form computes the same thing:
//! - group 1 (depthwise layers stay float, in lookd's kernel);
//! - input and output each go through one per-tensor `DequantizeLinear` / `QuantizeLinear` with
//!   an explicit zero point, and the convolution's output feeds nothing else;
//! - the weights are an i8 constant behind a `DequantizeLinear` (per-tensor or per output
//!   channel, zero point given);
//! - the bias, if any, is an i32 constant whose scale is the input's times the weights' (the
//!   accumulator's scale, which `QLinearConv` assumes), zero point zero.
//!
//! Anything else is left as it is, and [`Folded::skipped`] says why.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, NodeProto, TensorProto};
use tract_onnx::prelude::Datum;

/// How an int8 (QDQ) graph's convolutions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Conv {
    /// As the graph spells them: float convolutions between fake-quantisation pairs.
    Float,
    /// Group-1 convolutions folded by [`fold`] into tract's quantized `Conv`, on its integer
    /// matrix kernels; depthwise layers stay float.
    Integer,
    /// Every convolution folded by [`fold`], group-1 and depthwise, then run by lookd's own
    /// integer kernels ([`super::int8`]): the default.
    Lookd,
}

impl Int8Conv {
    pub const DEFAULT: Int8Conv = Int8Conv::Lookd;

    /// `LOOKD_INT8_CONV=float|integer|lookd`, else [`Int8Conv::DEFAULT`]; any other value is an
    /// error.
    pub fn configured() -> Result<Int8Conv, super::ModelError> {
        match std::env::var("LOOKD_INT8_CONV") {
            Ok(v) if !v.is_empty() => {
                v.parse().map_err(|e| super::ModelError::Run(format!("LOOKD_INT8_CONV: {e}")))
            }
            _ => Ok(Int8Conv::DEFAULT),
        }
    }
}

impl std::str::FromStr for Int8Conv {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "float" => Ok(Int8Conv::Float),
            "integer" => Ok(Int8Conv::Integer),
            "lookd" => Ok(Int8Conv::Lookd),
            _ => Err(format!("int8 convolutions are `float`, `integer` or `lookd`, not {s:?}")),
        }
    }
}

/// What [`fold`] did to a graph.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Folded {
    /// Names of the convolutions now `QLinearConv`.
    pub convs: Vec<String>,
    /// Convolutions between quantisation nodes that stayed float, with the reason.
    pub skipped: Vec<(String, &'static str)>,
}

/// Folds every convolution of `graph` that meets the module's conditions, grouped ones too when
/// `grouped` says so; drops the nodes that nothing reads any more.
pub fn fold(graph: &mut GraphProto, grouped: bool) -> Folded {
    let mut folded = Folded::default();
    if !graph.node.iter().any(|n| n.op_type == "QuantizeLinear") {
        return folded;
    }
    drop_empty_pads(graph);
    let mut replace: Vec<(usize, usize, NodeProto)> = Vec::new();
    let mut biases: Vec<TensorProto> = Vec::new();
    {
        let view = View::new(graph);
        for (ix, node) in graph.node.iter().enumerate() {
            if node.op_type != "Conv" {
                continue;
            }
            match view.plan(node, grouped) {
                Ok((q_ix, qconv, bias)) => {
                    biases.extend(bias);
                    folded.convs.push(node.name.clone());
                    replace.push((ix, q_ix, qconv));
                }
                Err(Skip::NotQuantized) => {}
                Err(Skip::Because(why)) => folded.skipped.push((node.name.clone(), why)),
            }
        }
    }
    let gone: HashSet<usize> = replace.iter().map(|(_, q, _)| *q).collect();
    graph.initializer.extend(biases);
    for (ix, _, qconv) in replace {
        graph.node[ix] = qconv;
    }
    let mut ix = 0;
    graph.node.retain(|_| {
        ix += 1;
        !gone.contains(&(ix - 1))
    });
    drop_unread(graph);
    folded
}

enum Skip {
    /// Not between quantisation nodes at all (a float graph): nothing to say.
    NotQuantized,
    Because(&'static str),
}

/// Who produces and who reads each tensor, and the constants.
struct View<'g> {
    graph: &'g GraphProto,
    producer: HashMap<&'g str, usize>,
    readers: HashMap<&'g str, Vec<usize>>,
    outputs: HashSet<&'g str>,
    constants: HashMap<&'g str, &'g TensorProto>,
}

impl<'g> View<'g> {
    fn new(graph: &'g GraphProto) -> View<'g> {
        let mut producer = HashMap::new();
        let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (ix, node) in graph.node.iter().enumerate() {
            for o in &node.output {
                producer.insert(o.as_str(), ix);
            }
            for i in node.input.iter().filter(|i| !i.is_empty()) {
                readers.entry(i.as_str()).or_default().push(ix);
            }
        }
        let outputs = graph.output.iter().map(|o| o.name.as_str()).collect();
        let constants = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        View { graph, producer, readers, outputs, constants }
    }

    fn producing(&self, tensor: &str, op: &str) -> Option<&'g NodeProto> {
        let node = &self.graph.node[*self.producer.get(tensor)?];
        (node.op_type == op).then_some(node)
    }

    fn constant(&self, name: &str) -> Option<&'g TensorProto> {
        self.constants.get(name).copied()
    }

    /// The `QLinearConv` standing for `conv`, the index of the `QuantizeLinear` it absorbs, and
    /// the i32 bias it reads when the graph's bias is float.
    fn plan(&self, conv: &NodeProto, grouped: bool) -> Result<(usize, NodeProto, Option<TensorProto>), Skip> {
        let x_dq = conv.input.first().and_then(|x| self.producing(x, "DequantizeLinear"));
        let w_dq = conv.input.get(1).and_then(|w| self.producing(w, "DequantizeLinear"));
        let (Some(x_dq), Some(w_dq)) = (x_dq, w_dq) else {
            return Err(Skip::NotQuantized);
        };
        let group = conv.attribute.iter().find(|a| a.name == "group").map_or(1, |a| a.i);
        if group != 1 && !grouped {
            return Err(Skip::Because("grouped (depthwise stays float)"));
        }
        let out = conv.output.first().ok_or(Skip::Because("no output"))?;
        let q_ix = match self.readers.get(out.as_str()).map(Vec::as_slice) {
            Some(&[q]) if !self.outputs.contains(out.as_str()) => q,
            _ => return Err(Skip::Because("its float output is read by more than one node")),
        };
        let q = &self.graph.node[q_ix];
        if q.op_type != "QuantizeLinear" {
            return Err(Skip::Because("its output is not quantized"));
        }
        if x_dq.input.len() != 3 || w_dq.input.len() != 3 || q.input.len() != 3 {
            return Err(Skip::Because("a quantisation node without an explicit zero point"));
        }
        let x_scale = self.floats(&x_dq.input[1]).ok_or(Skip::Because("input scale is not a constant"))?;
        let y_scale = self.floats(&q.input[1]).ok_or(Skip::Because("output scale is not a constant"))?;
        let (Some(_), Some(_)) = (self.constant(&x_dq.input[2]), self.constant(&q.input[2])) else {
            return Err(Skip::Because("a zero point is not a constant"));
        };
        if x_scale.len() != 1 || y_scale.len() != 1 {
            return Err(Skip::Because("activations quantized per channel"));
        }
        let weights = self.constant(&w_dq.input[0]).ok_or(Skip::Because("weights are not a constant"))?;
        if weights.data_type != DataType::Int8 as i32 || self.constant(&w_dq.input[2]).is_none() {
            return Err(Skip::Because("weights are not i8 constants"));
        }
        let w_scale = self.floats(&w_dq.input[1]).ok_or(Skip::Because("weight scale is not a constant"))?;
        let out_channels = weights.dims.first().copied().unwrap_or(0) as usize;
        if w_scale.len() != 1 && w_scale.len() != out_channels {
            return Err(Skip::Because("weight scales are neither per tensor nor per output channel"));
        }
        let mut inputs = vec![
            x_dq.input[0].clone(),
            x_dq.input[1].clone(),
            x_dq.input[2].clone(),
            w_dq.input[0].clone(),
            w_dq.input[1].clone(),
            w_dq.input[2].clone(),
            q.input[1].clone(),
            q.input[2].clone(),
        ];
        let mut made_bias = None;
        if let Some(b) = conv.input.get(2).filter(|b| !b.is_empty()) {
            // An exporter may share one initializer between layers through `Identity` nodes.
            let mut b = b.as_str();
            while let Some(id) = self.producing(b, "Identity") {
                b = id.input.first().map_or("", String::as_str);
            }
            // The bias as the graph holds it: an i32 constant in the accumulator's scale (the
            // quantizer's own), used as it is; else its float values, quantized here.
            let float = match self.floats(b) {
                Some(f) => f,
                None => {
                    let b_dq = self
                        .producing(b, "DequantizeLinear")
                        .ok_or(Skip::Because("bias is not quantized"))?;
                    let bias = b_dq.input.first().and_then(|b| self.constant(b)).and_then(values::<i32>);
                    let Some(bias) = bias else { return Err(Skip::Because("bias is not an i32 constant")) };
                    let b_scale =
                        b_dq.input.get(1).and_then(|s| self.floats(s)).ok_or(Skip::Because("bias scale"))?;
                    let zero = match b_dq.input.get(2).filter(|z| !z.is_empty()) {
                        None => Some(vec![0]),
                        Some(z) => self.constant(z).and_then(values::<i32>),
                    };
                    let Some(zero) = zero else { return Err(Skip::Because("bias zero point")) };
                    if zero.iter().all(|&z| z == 0)
                        && accumulator_scale(&b_scale, x_scale[0], &w_scale, out_channels)
                    {
                        inputs.push(b_dq.input[0].clone());
                        Vec::new()
                    } else {
                        // One initializer shared by layers of other scales (ResNet50's exporter
                        // shares equal biases): dequantized, then quantized for this layer.
                        if ![1, bias.len()].contains(&b_scale.len()) || ![1, bias.len()].contains(&zero.len())
                        {
                            return Err(Skip::Because("bias scale"));
                        }
                        let at = |v: &[i32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
                        let sc = |i: usize| if b_scale.len() == 1 { b_scale[0] } else { b_scale[i] };
                        (0..bias.len()).map(|i| (bias[i] - at(&zero, i)) as f32 * sc(i)).collect()
                    }
                }
            };
            if !float.is_empty() {
                // A float bias (the quantizer leaves one when its own check fails): quantized to the
                // accumulator's scale, within half an accumulator step of the float sum, far below
                // one output step.
                let at = |v: &[f32], c: usize| if v.len() == 1 { v[0] } else { v[c] };
                if float.len() != out_channels && float.len() != 1 {
                    return Err(Skip::Because("float bias is neither per tensor nor per output channel"));
                }
                let mut bytes = Vec::with_capacity(out_channels * 4);
                for c in 0..out_channels {
                    let v = (at(&float, c) as f64 / (x_scale[0] as f64 * at(&w_scale, c) as f64)).round();
                    if !v.is_finite() || v.abs() >= i32::MAX as f64 {
                        return Err(Skip::Because("float bias does not fit the accumulator"));
                    }
                    bytes.extend_from_slice(&(v as i32).to_le_bytes());
                }
                let name = format!("{}.lookd_bias_i32", conv.name);
                inputs.push(name.clone());
                made_bias = Some(TensorProto {
                    dims: vec![out_channels as i64],
                    data_type: DataType::Int32 as i32,
                    name,
                    raw_data: bytes,
                    ..Default::default()
                });
            }
        }
        let qconv = NodeProto {
            input: inputs,
            output: q.output.clone(),
            name: conv.name.clone(),
            op_type: "QLinearConv".into(),
            domain: String::new(),
            attribute: conv.attribute.clone(),
            doc_string: String::new(),
        };
        Ok((q_ix, qconv, made_bias))
    }

    fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.constant(name).and_then(values::<f32>)
    }
}

/// A constant's values, if it holds `T`s: read by tract-onnx's own loader, which knows every
/// way ONNX stores a tensor.
fn values<T: Datum>(t: &TensorProto) -> Option<Vec<T>> {
    let tensor = tract_onnx::tensor::load_tensor(&*tract_onnx::data_resolver::default(), t, None).ok()?;
    (tensor.datum_type() == T::datum_type()).then_some(())?;
    Some(tensor.try_as_plain_ram().ok()?.as_slice::<T>().ok()?.to_vec())
}

/// Whether each bias scale is the input scale times its channel's weight scale (to 1e-5 of it:
/// the quantizer computes the product in f32).
fn accumulator_scale(bias: &[f32], x: f32, weights: &[f32], channels: usize) -> bool {
    let at = |v: &[f32], c: usize| if v.len() == 1 { v[0] } else { v[c] };
    (bias.len() == 1 || bias.len() == channels)
        && (0..channels.max(1)).all(|c| {
            let want = x * at(weights, c);
            (at(bias, c) - want).abs() <= 1e-5 * want.abs()
        })
}

/// Removes `Pad` nodes that pad nothing (constant pads, all zero), their readers reading the
/// input instead. The regions branch has one between two quantisation nodes; once the
/// convolution beside it is folded, tract 0.23.9's decluttering of that chain fails ("Pad:
/// inconsistent pad", from quantizing the pad in place), and the pad does nothing anyway.
fn drop_empty_pads(graph: &mut GraphProto) {
    let constant = |name: &str| -> Option<Vec<i64>> {
        let t = graph.initializer.iter().find(|t| t.name == name).or_else(|| {
            let n = graph
                .node
                .iter()
                .find(|n| n.op_type == "Constant" && n.output.first().is_some_and(|o| o == name))?;
            n.attribute.iter().find(|a| a.name == "value")?.t.as_ref()
        })?;
        values::<i64>(t)
    };
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let empty: HashMap<String, String> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Pad" && n.input.len() >= 2 && n.output.len() == 1)
        .filter(|n| !outputs.contains(n.output[0].as_str()))
        .filter(|n| constant(&n.input[1]).is_some_and(|p| p.iter().all(|&v| v == 0)))
        .map(|n| (n.output[0].clone(), n.input[0].clone()))
        .collect();
    if empty.is_empty() {
        return;
    }
    graph.node.retain(|n| !(n.op_type == "Pad" && empty.contains_key(&n.output[0])));
    for n in &mut graph.node {
        for i in &mut n.input {
            if let Some(src) = empty.get(i) {
                *i = src.clone();
            }
        }
    }
}

/// Drops nodes none of whose outputs anything reads (graph outputs count as read), until none
/// is left: the quantisation nodes a fold made useless.
fn drop_unread(graph: &mut GraphProto) {
    loop {
        let read: HashSet<String> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().cloned())
            .chain(graph.output.iter().map(|o| o.name.clone()))
            .collect();
        let before = graph.node.len();
        graph.node.retain(|n| n.output.iter().any(|o| read.contains(o)));
        if graph.node.len() == before {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::attribute_proto::AttributeType;
    use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
    use tract_onnx::pb::{
        type_proto, AttributeProto, ModelProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
        ValueInfoProto,
    };
    use tract_onnx::prelude::*;

    use crate::rng::SplitMix64;

    fn tensor(name: &str, dims: &[i64], dt: DataType, raw: Vec<u8>) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: dt as i32,
            raw_data: raw,
            ..Default::default()
        }
    }
    fn f32s(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
        tensor(name, dims, DataType::Float, v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: AttributeType::Ints as i32,
            ints: v.to_vec(),
            ..Default::default()
        }
    }
    fn int_attr(name: &str, v: i64) -> AttributeProto {
        AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: v, ..Default::default() }
    }
    fn node(
        op: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<AttributeProto>,
    ) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        }
    }
    fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|&d| Dimension { value: Some(dimension::Value::DimValue(d)), ..Default::default() });
        let t = type_proto::Tensor {
            elem_type: DataType::Float as i32,
            shape: Some(TensorShapeProto { dim: dim.collect() }),
        };
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(t)), ..Default::default() }),
            ..Default::default()
        }
    }

    /// How the layer under test is built.
    struct Layer {
        cin: usize,
        cout: usize,
        group: usize,
        kernel: usize,
        stride: usize,
        size: usize,
        /// Multiplies the bias scale the graph declares (1: the accumulator's, as the quantizer
        /// writes it).
        bias_scale_error: f32,
    }

    /// The quantizer's form of one convolution: `Q → DQ → Conv(DQ w, DQ b) → Q → DQ`, u8
    /// activations, i8 weights per output channel, i32 bias.
    fn qdq_model(l: &Layer, seed: u64) -> ModelProto {
        let mut r = SplitMix64::new(seed);
        let per_group = l.cin / l.group;
        let (k, pad) = (l.kernel as i64, (l.kernel / 2) as i64);
        let w_len = l.cout * per_group * l.kernel * l.kernel;
        let weights: Vec<u8> = (0..w_len).map(|_| ((r.unit() * 255.0) as i32 - 127) as i8 as u8).collect();
        let w_scale: Vec<f32> = (0..l.cout).map(|_| 0.002 + 0.01 * r.unit()).collect();
        let x_scale = 0.03f32;
        let b_scale: Vec<f32> = w_scale.iter().map(|w| w * x_scale * l.bias_scale_error).collect();
        let bias: Vec<u8> =
            (0..l.cout).flat_map(|_| (((r.unit() - 0.5) * 4000.0) as i32).to_le_bytes()).collect();
        let graph = GraphProto {
            name: "qdq".into(),
            node: vec![
                node("QuantizeLinear", "xq", &["x", "x_scale", "x_zp"], "x_u8", vec![]),
                node("DequantizeLinear", "xdq", &["x_u8", "x_scale", "x_zp"], "x_f", vec![]),
                node("DequantizeLinear", "wdq", &["w", "w_scale", "w_zp"], "w_f", vec![int_attr("axis", 0)]),
                node("DequantizeLinear", "bdq", &["b", "b_scale", "b_zp"], "b_f", vec![int_attr("axis", 0)]),
                node(
                    "Conv",
                    "conv",
                    &["x_f", "w_f", "b_f"],
                    "y_f",
                    vec![
                        ints_attr("kernel_shape", &[k, k]),
                        ints_attr("pads", &[pad, pad, pad, pad]),
                        ints_attr("strides", &[l.stride as i64; 2]),
                        int_attr("group", l.group as i64),
                    ],
                ),
                node("QuantizeLinear", "yq", &["y_f", "y_scale", "y_zp"], "y_u8", vec![]),
                node("DequantizeLinear", "ydq", &["y_u8", "y_scale", "y_zp"], "y", vec![]),
            ],
            initializer: vec![
                f32s("x_scale", &[], &[x_scale]),
                tensor("x_zp", &[], DataType::Uint8, vec![100]),
                tensor("w", &[l.cout as i64, per_group as i64, k, k], DataType::Int8, weights),
                f32s("w_scale", &[l.cout as i64], &w_scale),
                tensor("w_zp", &[l.cout as i64], DataType::Int8, vec![0; l.cout]),
                tensor("b", &[l.cout as i64], DataType::Int32, bias),
                f32s("b_scale", &[l.cout as i64], &b_scale),
                tensor("b_zp", &[l.cout as i64], DataType::Int32, vec![0; 4 * l.cout]),
                f32s("y_scale", &[], &[0.05]),
                tensor("y_zp", &[], DataType::Uint8, vec![128]),
            ],
            input: vec![value("x", &[1, l.cin as i64, l.size as i64, l.size as i64])],
            output: vec![ValueInfoProto { name: "y".into(), ..Default::default() }],
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
            graph: Some(graph),
            ..Default::default()
        }
    }

    fn run(proto: &ModelProto, input: &Tensor) -> (Vec<f32>, usize) {
        let model = tract_onnx::onnx().model_for_proto_model(proto).unwrap().into_typed().unwrap();
        let quantized = model
            .nodes()
            .iter()
            .filter(|n| {
                n.op_as::<tract_onnx::tract_core::ops::cnn::Conv>().is_some_and(|c| c.q_params.is_some())
            })
            .count();
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let out = plan.run(tvec!(input.clone().into())).unwrap();
        (out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec(), quantized)
    }

    fn input(l: &Layer, seed: u64) -> Tensor {
        let mut r = SplitMix64::new(seed);
        let v: Vec<f32> = (0..l.cin * l.size * l.size).map(|_| (r.unit() - 0.4) * 6.0).collect();
        Tensor::from_shape(&[1, l.cin, l.size, l.size], &v).unwrap()
    }

    #[test]
    fn a_folded_convolution_runs_as_integers_and_matches_the_float_one() {
        for (seed, l) in [
            Layer { cin: 24, cout: 40, group: 1, kernel: 1, stride: 1, size: 9, bias_scale_error: 1.0 },
            Layer { cin: 3, cout: 16, group: 1, kernel: 3, stride: 2, size: 11, bias_scale_error: 1.0 },
            // A bias the graph quantized to another scale (an initializer shared between layers):
            // dequantized and quantized again for this one.
            Layer { cin: 8, cout: 8, group: 1, kernel: 1, stride: 1, size: 7, bias_scale_error: 1.5 },
            // Depthwise, folded when lookd's kernels will run it.
            Layer { cin: 8, cout: 8, group: 8, kernel: 3, stride: 1, size: 7, bias_scale_error: 1.0 },
        ]
        .into_iter()
        .enumerate()
        {
            let float = qdq_model(&l, seed as u64);
            let mut folded = float.clone();
            let report = fold(folded.graph.as_mut().unwrap(), true);
            assert_eq!(report.convs, ["conv"], "{:?}", report.skipped);
            let ops: Vec<&str> =
                folded.graph.as_ref().unwrap().node.iter().map(|n| n.op_type.as_str()).collect();
            assert_eq!(ops, ["QuantizeLinear", "QLinearConv", "DequantizeLinear"]);
            let x = input(&l, 99 + seed as u64);
            let (want, q_want) = run(&float, &x);
            let (got, q_got) = run(&folded, &x);
            assert_eq!((q_want, q_got), (0, 1), "the folded graph has tract's quantized Conv");
            assert_eq!(want.len(), got.len());
            // Both end on the same u8 grid (y_scale 0.05): the integer path may round a value
            // that sits on a half step the other way, never further.
            let steps: Vec<f32> = want.iter().zip(&got).map(|(a, b)| ((a - b) / 0.05).abs()).collect();
            let worst = steps.iter().cloned().fold(0.0, f32::max);
            let off = steps.iter().filter(|&&s| s > 0.5).count();
            assert!(worst <= 1.001, "layer {seed}: {worst} steps apart");
            assert!(off * 50 <= got.len(), "layer {seed}: {off} of {} values a step apart", got.len());
            assert!(want.iter().any(|&v| v != want[0]), "the layer's output is not constant");
        }
    }

    #[test]
    fn depthwise_stays_float_for_tracts_quantized_conv() {
        let cases = [(
            Layer { cin: 8, cout: 8, group: 8, kernel: 3, stride: 1, size: 7, bias_scale_error: 1.0 },
            "grouped",
        )];
        for (l, why) in cases {
            let mut proto = qdq_model(&l, 7);
            let before = proto.clone();
            let report = fold(proto.graph.as_mut().unwrap(), false);
            assert!(report.convs.is_empty());
            assert_eq!(report.skipped.len(), 1);
            assert!(report.skipped[0].1.contains(why), "{:?}", report.skipped);
            assert_eq!(proto, before, "a skipped convolution leaves the graph as it was");
        }
    }

    #[test]
    fn the_choice_is_float_integer_or_lookd_and_nothing_else() {
        assert_eq!("integer".parse::<Int8Conv>(), Ok(Int8Conv::Integer));
        assert_eq!("float".parse::<Int8Conv>(), Ok(Int8Conv::Float));
        assert_eq!("lookd".parse::<Int8Conv>(), Ok(Int8Conv::Lookd));
        let err = "int".parse::<Int8Conv>().unwrap_err();
        assert!(err.contains("\"int\""), "{err}");
    }

    #[test]
    fn a_float_graph_is_untouched() {
        let l = Layer { cin: 4, cout: 4, group: 1, kernel: 1, stride: 1, size: 5, bias_scale_error: 1.0 };
        let mut proto = qdq_model(&l, 3);
        let g = proto.graph.as_mut().unwrap();
        // The same convolution reading its float input and weights directly.
        g.node.retain(|n| n.name == "conv");
        g.node[0].input = vec!["x".into(), "w_f".into()];
        g.initializer = vec![f32s("w_f", &[4, 4, 1, 1], &[0.5; 16])];
        g.output = vec![ValueInfoProto { name: "y_f".into(), ..Default::default() }];
        let before = proto.clone();
        let report = fold(proto.graph.as_mut().unwrap(), false);
        assert_eq!(report, Folded::default());
        assert_eq!(proto, before);
    }
}
