//! What lookd's own tract operators ([`super::depthwise`], [`super::sqdist`]) share: finding the
//! chain of nodes one of them stands for, putting it in place of that chain, and evaluating it.

use tract_onnx::tract_core::internal::*;

/// The one node reading `id`'s only output, unless that output is also a graph output.
pub(super) fn sole_successor(model: &TypedModel, id: usize) -> Option<&TypedNode> {
    let node = model.node(id);
    let outlet = OutletId::new(id, 0);
    if node.outputs.len() != 1
        || node.outputs[0].successors.len() != 1
        || model.output_outlets().ok()?.contains(&outlet)
    {
        return None;
    }
    Some(model.node(node.outputs[0].successors[0].node))
}

/// A patch putting `op`, reading `input`, in place of the chain from `first` to `last` (what
/// read `last`'s output reads the new node's; the chain is left for tract to drop).
pub(super) fn replace_chain(
    model: &TypedModel,
    first: &TypedNode,
    last: usize,
    input: OutletId,
    op: impl Into<Box<dyn TypedOp>>,
) -> TractResult<TypedModelPatch> {
    let mut patch = TypedModelPatch::new(format!("lookd {}", first.name));
    let input = patch.tap_model(model, input)?;
    let wire = patch.wire_node(&first.name, op, &[input])?[0];
    patch.shunt_outside(model, OutletId::new(last, 0), wire)?;
    Ok(patch)
}

/// An operator's evaluation: its one f32 input, and a new f32 tensor of `shape` that `run` fills.
///
/// # Safety
/// `run` must write every value of its output slice: the tensor is not initialised first.
pub(super) unsafe fn eval_unary(
    name: &str,
    mut inputs: TVec<TValue>,
    shape: &[usize],
    run: impl FnOnce(&[f32], &mut [f32]),
) -> TractResult<TVec<TValue>> {
    if inputs.len() != 1 {
        bail!("{name} takes one input, got {}", inputs.len());
    }
    let input = inputs.remove(0);
    let x = input.try_as_plain_ram()?;
    // SAFETY: f32 has no invalid bit patterns, and the caller promises `run` writes every value.
    let mut out = unsafe { Tensor::uninitialized::<f32>(shape)? };
    {
        let mut view = out.try_as_plain_ram_mut()?;
        run(x.as_slice::<f32>()?, view.as_slice_mut::<f32>()?);
    }
    Ok(tvec!(out.into_tvalue()))
}
