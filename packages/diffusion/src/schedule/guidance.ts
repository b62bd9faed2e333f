/**
 * Classifier-free guidance (Ho & Salimans 2022): eps = eps_u + s (eps_c - eps_u), the unconditional
 * branch being the empty prompt. RoentGen-v2 samples with s = 3.
 */
import { grid, LINEAR_INDEX_WGSL, launch, OpError, Params, Tensor } from "@cxr/kernels";

export const GUIDANCE_DEFAULTS: Readonly<{ scale: number }> = { scale: 3 };

/** Offsets let one batched tensor [2B, ...] serve as both inputs (bound twice, read-only). */
export const GUIDANCE_WGSL = `
@group(0) @binding(0) var<storage, read> unconditional: array<f32>;
@group(0) @binding(1) var<storage, read> conditional: array<f32>;
@group(0) @binding(2) var<storage, read_write> guided: array<f32>;
struct Params { size: u32, unconditionalOffset: u32, conditionalOffset: u32, scale: f32 }
@group(0) @binding(3) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let u = unconditional[params.unconditionalOffset + index];
  guided[index] = u + params.scale * (conditional[params.conditionalOffset + index] - u);
}`;

function checkScale(op: string, scale: number, operands: Record<string, Tensor>): void {
  if (!Number.isFinite(scale)) throw new OpError(op, `guidance scale must be finite, got ${scale}`, operands);
  for (const [name, tensor] of Object.entries(operands)) {
    if (tensor.dtype !== "f32") throw new OpError(op, `${name} must be f32, got ${tensor.dtype}`, operands);
  }
}

function launchGuidance(
  unconditional: Tensor,
  conditional: Tensor,
  shape: readonly number[],
  offsets: [number, number],
  scale: number,
): Tensor {
  const guided = Tensor.empty(unconditional.gpu, shape);
  launch(
    unconditional.gpu,
    { name: "classifierFreeGuidance", code: GUIDANCE_WGSL },
    {
      bindings: [unconditional, conditional, guided],
      params: new Params().u32(guided.size, ...offsets).f32(scale),
      workgroups: grid(guided.size, 256),
      flops: 3 * guided.size,
      bytes: 12 * guided.size,
    },
  );
  return guided;
}

/** eps_u + scale (eps_c - eps_u) from two tensors of one shape. */
export function classifierFreeGuidance(
  unconditional: Tensor,
  conditional: Tensor,
  scale = GUIDANCE_DEFAULTS.scale,
): Tensor {
  const op = "classifierFreeGuidance";
  checkScale(op, scale, { unconditional, conditional });
  const sameShape =
    unconditional.rank === conditional.rank &&
    unconditional.shape.every((dim, axis) => dim === conditional.shape[axis]);
  if (!sameShape)
    throw new OpError(op, "the two predictions differ in shape", { unconditional, conditional });
  return launchGuidance(unconditional, conditional, unconditional.shape, [0, 0], scale);
}

/**
 * The same from one model call on a doubled batch [2B, ...]: the first B samples unconditional, the
 * last B conditional (diffusers' `noise_pred.chunk(2)` order). Returns [B, ...].
 */
export function classifierFreeGuidanceBatched(prediction: Tensor, scale = GUIDANCE_DEFAULTS.scale): Tensor {
  const op = "classifierFreeGuidance";
  checkScale(op, scale, { prediction });
  const doubled = prediction.shape[0];
  if (prediction.rank < 1 || doubled % 2 !== 0) {
    throw new OpError(op, `needs an even batch (unconditional then conditional), got ${doubled}`, {
      prediction,
    });
  }
  const shape = [doubled / 2, ...prediction.shape.slice(1)];
  return launchGuidance(prediction, prediction, shape, [0, prediction.size / 2], scale);
}

export const guidanceReference = {
  combine(unconditional: Float64Array, conditional: Float64Array, scale: number): Float64Array {
    return unconditional.map((u, index) => u + scale * (conditional[index] - u));
  },
};
