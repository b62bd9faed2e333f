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

function checkF32(op: string, operands: Record<string, Tensor>): void {
  for (const [name, tensor] of Object.entries(operands)) {
    if (tensor.dtype !== "f32") throw new OpError(op, `${name} must be f32, got ${tensor.dtype}`, operands);
  }
}

function checkScale(op: string, scale: number, operands: Record<string, Tensor>): void {
  if (!Number.isFinite(scale)) throw new OpError(op, `guidance scale must be finite, got ${scale}`, operands);
  checkF32(op, operands);
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
 * last B conditional (diffusers' `noise_pred.chunk(2)` order). Returns [B, ...]. `rescale` (phi in
 * [0, 1], default 0: off) then applies `guidanceRescale` to each sample.
 */
export function classifierFreeGuidanceBatched(
  prediction: Tensor,
  scale = GUIDANCE_DEFAULTS.scale,
  rescale = 0,
): Tensor {
  const op = "classifierFreeGuidance";
  checkScale(op, scale, { prediction });
  checkRescale(op, rescale, { prediction });
  const doubled = prediction.shape[0];
  if (prediction.rank < 1 || doubled % 2 !== 0) {
    throw new OpError(op, `needs an even batch (unconditional then conditional), got ${doubled}`, {
      prediction,
    });
  }
  const shape = [doubled / 2, ...prediction.shape.slice(1)];
  const guided = launchGuidance(prediction, prediction, shape, [0, prediction.size / 2], scale);
  return rescaledBy(prediction, prediction.size / 2, guided, rescale);
}

/**
 * `guided` as it is when `rescale` is 0, else rescaled toward the deviation of the conditional rows
 * that start at `conditionalOffset` in `prediction` (`guided` is released then).
 */
function rescaledBy(prediction: Tensor, conditionalOffset: number, guided: Tensor, rescale: number): Tensor {
  if (rescale === 0) return guided;
  try {
    return launchRescale(prediction, conditionalOffset, guided, rescale);
  } finally {
    guided.release();
  }
}

/**
 * Guidance with a negative prompt at its own scale, from one model call on a tripled batch
 * [empty; negative; conditional]: eps_0 + sn (eps_n - eps_0) + s (eps_c - eps_n). It splits plain
 * guidance in two: with the patient's demographic sentence as the negative prompt, sn scales the
 * demographics over the empty prompt and s the impression over the patient (sn = s is plain guidance
 * of the whole prompt; sn = 1 is the negative prompt as diffusers uses it, eps_n + s (eps_c - eps_n)).
 */
export const TWO_SCALE_GUIDANCE_WGSL = `
@group(0) @binding(0) var<storage, read> prediction: array<f32>;
@group(0) @binding(1) var<storage, read_write> guided: array<f32>;
struct Params { size: u32, unused: u32, negativeScale: f32, scale: f32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let empty = prediction[index];
  let negative = prediction[params.size + index];
  let conditional = prediction[2u * params.size + index];
  guided[index] = empty + params.negativeScale * (negative - empty) + params.scale * (conditional - negative);
}`;

/**
 * `TWO_SCALE_GUIDANCE_WGSL` on a tripled batch [3B, ...] (empty, negative, conditional rows): returns
 * [B, ...]; `rescale` (phi in [0, 1], default 0: off) then applies `guidanceRescale` toward the
 * conditional rows' deviation, as `classifierFreeGuidanceBatched` does.
 */
export function twoScaleGuidanceBatched(
  prediction: Tensor,
  negativeScale: number,
  scale = GUIDANCE_DEFAULTS.scale,
  rescale = 0,
): Tensor {
  const op = "twoScaleGuidance";
  checkScale(op, scale, { prediction });
  if (!Number.isFinite(negativeScale)) {
    throw new OpError(op, `negative guidance scale must be finite, got ${negativeScale}`, { prediction });
  }
  checkRescale(op, rescale, { prediction });
  const tripled = prediction.shape[0];
  if (prediction.rank < 1 || tripled % 3 !== 0 || tripled === 0) {
    throw new OpError(op, `needs a batch of three parts (empty, negative, conditional), got ${tripled}`, {
      prediction,
    });
  }
  const shape = [tripled / 3, ...prediction.shape.slice(1)];
  const guided = Tensor.empty(prediction.gpu, shape);
  launch(
    prediction.gpu,
    { name: "twoScaleGuidance", code: TWO_SCALE_GUIDANCE_WGSL },
    {
      bindings: [prediction, guided],
      params: new Params().u32(guided.size, 0).f32(negativeScale, scale),
      workgroups: grid(guided.size, 256),
      flops: 6 * guided.size,
      bytes: 16 * guided.size,
    },
  );
  return rescaledBy(prediction, (2 * prediction.size) / 3, guided, rescale);
}

function checkRescale(op: string, rescale: number, operands: Record<string, Tensor>): void {
  if (!(rescale >= 0 && rescale <= 1)) {
    throw new OpError(op, `guidance rescale must be in [0, 1], got ${rescale}`, operands);
  }
}

/**
 * Guidance rescale (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed",
 * section 3.4; diffusers' `rescale_noise_cfg`): per sample, the guided prediction scaled so that its
 * standard deviation matches the conditional prediction's, mixed with the unscaled one by phi:
 * out = guided (phi std(cond) / std(guided) + 1 - phi). One workgroup per sample reduces both
 * (two passes: means, then squared deviations; the n - 1 of the unbiased deviation cancels in the
 * ratio). A sample whose guided prediction is constant (a single element, or all equal) has no
 * deviation to match and is left as it is (diffusers' formula divides by zero there). Inference only:
 * no backward.
 */
export const GUIDANCE_RESCALE_WGSL = `
@group(0) @binding(0) var<storage, read> conditional: array<f32>;
@group(0) @binding(1) var<storage, read> guided: array<f32>;
@group(0) @binding(2) var<storage, read_write> rescaled: array<f32>;
struct Params { perSample: u32, conditionalOffset: u32, phi: f32, unused: u32 }
@group(0) @binding(3) var<uniform> params: Params;
var<workgroup> partialC: array<f32, 256>;
var<workgroup> partialG: array<f32, 256>;

fn reduce(lid: u32) {
  for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) {
      partialC[lid] += partialC[lid + stride];
      partialG[lid] += partialG[lid + stride];
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n = params.perSample;
  let c0 = params.conditionalOffset + wid.x * n;
  let g0 = wid.x * n;
  var sumC = 0.0;
  var sumG = 0.0;
  for (var i = lid; i < n; i += 256u) {
    sumC += conditional[c0 + i];
    sumG += guided[g0 + i];
  }
  partialC[lid] = sumC;
  partialG[lid] = sumG;
  workgroupBarrier();
  reduce(lid);
  let meanC = partialC[0] / f32(n);
  let meanG = partialG[0] / f32(n);
  workgroupBarrier();
  sumC = 0.0;
  sumG = 0.0;
  for (var i = lid; i < n; i += 256u) {
    let dc = conditional[c0 + i] - meanC;
    let dg = guided[g0 + i] - meanG;
    sumC += dc * dc;
    sumG += dg * dg;
  }
  partialC[lid] = sumC;
  partialG[lid] = sumG;
  workgroupBarrier();
  reduce(lid);
  var factor = 1.0;
  if (partialG[0] > 0.0) {
    factor = params.phi * sqrt(partialC[0] / partialG[0]) + 1.0 - params.phi;
  }
  for (var i = lid; i < n; i += 256u) {
    rescaled[g0 + i] = guided[g0 + i] * factor;
  }
}`;

function launchRescale(conditional: Tensor, conditionalOffset: number, guided: Tensor, phi: number): Tensor {
  const samples = guided.shape[0];
  const perSample = guided.size / samples;
  const rescaled = Tensor.empty(guided.gpu, guided.shape);
  launch(
    guided.gpu,
    { name: "guidanceRescale", code: GUIDANCE_RESCALE_WGSL },
    {
      bindings: [conditional, guided, rescaled],
      params: new Params().u32(perSample, conditionalOffset).f32(phi).u32(0),
      workgroups: [samples, 1, 1],
      flops: 8 * guided.size,
      bytes: 16 * guided.size,
    },
  );
  return rescaled;
}

/**
 * `guidanceRescale` alone: `guided` [B, ...] rescaled to the standard deviation of `conditional`
 * (same shape) by phi, per sample.
 */
export function guidanceRescale(conditional: Tensor, guided: Tensor, phi: number): Tensor {
  const op = "guidanceRescale";
  checkF32(op, { conditional, guided });
  checkRescale(op, phi, { conditional, guided });
  const sameShape =
    conditional.rank === guided.rank && conditional.shape.every((dim, axis) => dim === guided.shape[axis]);
  if (!sameShape || guided.rank < 1) {
    throw new OpError(op, "the conditional and guided predictions differ in shape", { conditional, guided });
  }
  return launchRescale(conditional, 0, guided, phi);
}

export const guidanceReference = {
  combine(unconditional: Float64Array, conditional: Float64Array, scale: number): Float64Array {
    return unconditional.map((u, index) => u + scale * (conditional[index] - u));
  },
  /** eps_0 + sn (eps_n - eps_0) + s (eps_c - eps_n) in float64. */
  combineTwoScales(
    empty: Float64Array,
    negative: Float64Array,
    conditional: Float64Array,
    negativeScale: number,
    scale: number,
  ): Float64Array {
    return empty.map(
      (e, index) =>
        e + negativeScale * (negative[index] - e) + scale * (conditional[index] - negative[index]),
    );
  },
  /** diffusers' rescale_noise_cfg in float64 (unbiased deviations, as torch.std), per sample of `samples`. */
  rescale(conditional: Float64Array, guided: Float64Array, samples: number, phi: number): Float64Array {
    const n = guided.length / samples;
    const out = new Float64Array(guided.length);
    const deviation = (values: Float64Array) => {
      const mean = values.reduce((sum, value) => sum + value, 0) / n;
      return Math.sqrt(values.reduce((sum, value) => sum + (value - mean) ** 2, 0) / (n - 1));
    };
    for (let sample = 0; sample < samples; sample++) {
      const range = [sample * n, (sample + 1) * n] as const;
      const stdG = n > 1 ? deviation(guided.subarray(...range)) : 0;
      const factor = stdG > 0 ? phi * (deviation(conditional.subarray(...range)) / stdG) + 1 - phi : 1;
      for (let index = range[0]; index < range[1]; index++) out[index] = guided[index] * factor;
    }
    return out;
  },
};
