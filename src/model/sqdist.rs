//! Squared distances from each row of a tensor to a constant set of points, in one pass.
//!
//! The colour head of lookd's models soft-assigns each of 3,136 pooled pixels to 64 colour
//! centres: ONNX spells `‖x − c‖²` as `Sub` (broadcast to `[1, 3136, 64, 3]`), `Pow 2` and
//! `ReduceSum` over the last axis. tract runs the broadcast `Sub` through ndarray's generic
//! zip, a few nanoseconds per value: 5.1 ms of a 28 ms scene graph. [`swap_in`] replaces the
//! three nodes with one [`SquaredDistances`] node that never materialises the broadcast; the
//! sum is taken in the same order (k = 0, 1, ...), so the values are those tract computed.

use std::cell::Cell;
use std::sync::Arc;

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::model::Rewriter;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::math::{Square, Sub};
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};

use super::ops::{eval_unary, replace_chain, sole_successor};

/// `out[.., n, m, 0] = Σ_k (x[.., n, 0, k] − centres[m, k])²`.
#[derive(Debug, Clone, PartialEq)]
pub struct SquaredDistances {
    /// `m × k`, row-major.
    centres: Arc<Vec<f32>>,
    m: usize,
    k: usize,
}

impl Eq for SquaredDistances {}

impl SquaredDistances {
    /// The distances of `x` (rows of `k`) to every centre, `rows × m`.
    pub fn run(&self, x: &[f32], out: &mut [f32]) {
        let (m, k) = (self.m, self.k);
        for (row, dst) in x.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
            for (d, c) in dst.iter_mut().zip(self.centres.chunks_exact(k)) {
                let mut sum = 0f32;
                for (a, b) in row.iter().zip(c) {
                    let e = a - b;
                    sum += e * e;
                }
                *d = sum;
            }
        }
    }
}

impl Op for SquaredDistances {
    fn name(&self) -> StaticName {
        "LookdSquaredDistances".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("to {} points of {}", self.m, self.k)])
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for SquaredDistances {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let mut shape: TVec<usize> = inputs.first().map(|x| x.shape().into()).unwrap_or_default();
        if let [.., points, one] = &mut shape[..] {
            (*points, *one) = (self.m, 1);
        }
        // SAFETY: `run` writes a distance for every row and every point.
        unsafe { eval_unary("LookdSquaredDistances", inputs, &shape, |x, y| self.run(x, y)) }
    }

    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(self.eval(&EvalContext::out_of_plan(), inputs)?))
    }
}

impl TypedOp for SquaredDistances {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        let rank = x.rank();
        if x.datum_type != f32::datum_type()
            || rank < 2
            || x.shape[rank - 1] != self.k.to_dim()
            || x.shape[rank - 2] != 1.to_dim()
        {
            bail!("LookdSquaredDistances expects f32 [.., 1, {}], got {:?}", self.k, x);
        }
        let mut shape = x.shape.to_tvec();
        shape[rank - 2] = self.m.to_dim();
        shape[rank - 1] = 1.to_dim();
        Ok(tvec!(f32::fact(shape)))
    }

    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }
}

/// Replaces every `ReduceSum(Square(x − c), last axis)` where `x` is `[.., 1, k]`, `c` a
/// constant `[1, .., 1, m, k]` and each node reads only the one before. Returns how many.
pub fn swap_in(model: &mut TypedModel) -> TractResult<usize> {
    let done = Cell::new(0);
    Rewriter::default().with_rule_for::<TypedBinOp>("lookd-sqdist", swap_one).rewrite(&done, model)?;
    Ok(done.get())
}

/// The rule for one `Sub` node: the patch putting a [`SquaredDistances`] in place of it and the
/// two nodes after it, counted in the context.
fn swap_one(
    done: &Cell<usize>,
    model: &TypedModel,
    node: &TypedNode,
    _name: &str,
    _op: &TypedBinOp,
) -> TractResult<Option<TypedModelPatch>> {
    let Some((x, op, last)) = matches(model, node.id)? else { return Ok(None) };
    let patch = replace_chain(model, node, last, x, op)?;
    done.set(done.get() + 1);
    Ok(Some(patch))
}

fn matches(model: &TypedModel, id: usize) -> TractResult<Option<(OutletId, SquaredDistances, usize)>> {
    let node = model.node(id);
    let Some(bin) = node.op_as::<TypedBinOp>() else { return Ok(None) };
    if !bin.0.is::<Sub>() || bin.1.is_some() || node.inputs.len() != 2 {
        return Ok(None);
    }
    let facts = [model.outlet_fact(node.inputs[0])?, model.outlet_fact(node.inputs[1])?];
    // Which side is the constant set of points (the squared difference does not care).
    let Some(c) = facts.iter().position(|f| f.konst.is_some()) else { return Ok(None) };
    let (x, centres) = (facts[1 - c], facts[c].konst.clone().unwrap());
    if x.konst.is_some() || x.datum_type != f32::datum_type() || centres.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let rank = x.rank();
    let cs = centres.shape();
    if rank < 2 || cs.len() != rank || cs[..rank - 2].iter().any(|&d| d != 1) {
        return Ok(None);
    }
    let (m, k) = (cs[rank - 2], cs[rank - 1]);
    if x.shape[rank - 2] != 1.to_dim() || x.shape[rank - 1] != k.to_dim() || m == 0 || k == 0 {
        return Ok(None);
    }
    let Some(square) = sole_successor(model, id) else { return Ok(None) };
    let is_square = square.op_as::<ElementWiseOp>().is_some_and(|e| e.0.is::<Square>() && e.1.is_none());
    if !is_square {
        return Ok(None);
    }
    let Some(sum) = sole_successor(model, square.id) else { return Ok(None) };
    let is_sum = sum.op_as::<Reduce>().is_some_and(|r| r.reducer == Reducer::Sum && *r.axes == [rank - 1]);
    if !is_sum {
        return Ok(None);
    }
    let centres = centres.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
    let op = SquaredDistances { centres: Arc::new(centres), m, k };
    Ok(Some((node.inputs[1 - c], op, sum.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use tract_onnx::tract_core::ops::binary::TypedBinOp;

    /// x: [1, n, 1, k] against constant centres [1, 1, m, k], as the colour head spells it;
    /// `centres_first` swaps the Sub's operands.
    fn graph(n: usize, m: usize, k: usize, centres_first: bool, rng: &mut SplitMix64) -> TypedModel {
        let mut g = TypedModel::default();
        let x = g.add_source("x", f32::fact([1, n, 1, k])).unwrap();
        let values: Vec<f32> = (0..m * k).map(|_| rng.unit()).collect();
        let c = g.add_const("c", Tensor::from_shape(&[1, 1, m, k], &values).unwrap()).unwrap();
        let inputs = if centres_first { [c, x] } else { [x, c] };
        let d = g.wire_node("sub", TypedBinOp(Box::new(Sub), None), &inputs).unwrap();
        let sq = g.wire_node("sq", ElementWiseOp(Box::new(Square {}), None), &d).unwrap();
        let sum = g.wire_node("sum", Reduce::new(tvec!(3), Reducer::Sum), &sq).unwrap();
        g.select_output_outlets(&sum).unwrap();
        g
    }

    fn run(model: TypedModel, input: &Tensor) -> Vec<f32> {
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let out = plan.run(tvec!(input.clone().into())).unwrap();
        assert_eq!(out[0].shape()[2..], [out[0].shape()[2], 1]);
        out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn squared_distances_are_the_values_tract_computes() {
        let mut rng = SplitMix64::new(3);
        for (n, m, k, centres_first) in [(3136, 64, 3, false), (7, 5, 1, true), (10, 3, 4, false)] {
            let values: Vec<f32> = (0..n * k).map(|_| rng.unit()).collect();
            let input = Tensor::from_shape(&[1, n, 1, k], &values).unwrap();
            let model = graph(n, m, k, centres_first, &mut rng);
            let want = run(model.clone(), &input);
            let mut swapped = model;
            assert_eq!(swap_in(&mut swapped).unwrap(), 1);
            assert_eq!(swapped.nodes().iter().filter(|n| n.op_is::<SquaredDistances>()).count(), 1);
            let got = run(swapped, &input);
            assert_eq!(want.len(), n * m);
            assert_eq!(crate::model::max_abs_diff(&want, &got), 0.0, "n {n} m {m} k {k}");
        }
    }

    #[test]
    fn a_sum_over_another_axis_is_not_swapped() {
        let mut rng = SplitMix64::new(4);
        let mut model = graph(6, 4, 3, false, &mut rng);
        let sum = model.nodes().iter().find(|n| n.name == "sum").unwrap().id;
        *model.node_mut(sum).op_as_mut::<Reduce>().unwrap() = Reduce::new(tvec!(2), Reducer::Sum);
        assert_eq!(swap_in(&mut model).unwrap(), 0);
    }
}
