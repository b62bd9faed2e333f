/**
 * Losses: mean squared error (the diffusion model's epsilon / v objective) and binary cross-entropy
 * with logits and a per-element mask (the classifier's multi-label head; the mask drops uncertain
 * CheXpert labels under the U-Ignore policy).
 *
 * A reduced loss is computed in two dispatches: each invocation sums one contiguous chunk, then one
 * invocation sums the (at most 4096) chunk partials. The scalar result never leaves the GPU.
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import { grid, LINEAR_INDEX_WGSL, launch } from "../runtime/kernel.ts";
import { OpError, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";

export type LossReduction = "mean" | "sum" | "none";

const LOSS_REDUCTIONS: readonly LossReduction[] = ["mean", "sum", "none"];
const MAX_PARTIALS = 4096;

/** Contiguous chunk length for `size` elements: at least 256, at most MAX_PARTIALS chunks. */
function lossChunkLength(size: number): number {
  return Math.max(256, Math.ceil(size / MAX_PARTIALS));
}

const STABLE_HELPERS = `
// log(1 + v) for v in [0, 1], accurate where 1 + v rounds (Goldberg's correction).
fn log1pOf(v: f32) -> f32 {
  let u = 1.0 + v;
  if (u == 1.0) { return v; }
  return log(u) * (v / (u - 1.0));
}
fn sigmoidOf(z: f32) -> f32 {
  if (z >= 0.0) { return 1.0 / (1.0 + exp(-z)); }
  let e = exp(z);
  return e / (1.0 + e);
}
// max(z, 0) - z * y + log(1 + exp(-|z|)): never exponentiates a positive number.
fn bceWithLogits(z: f32, y: f32) -> f32 { return max(z, 0.0) - z * y + log1pOf(exp(-abs(z))); }
`;

export const MSE_ELEMENTWISE_WGSL = `
@group(0) @binding(0) var<storage, read> prediction: array<f32>;
@group(0) @binding(1) var<storage, read> expected: array<f32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;
struct Params { size: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.size) { return; }
  let difference = prediction[index] - expected[index];
  loss[index] = difference * difference;
}`;

export const MSE_PARTIALS_WGSL = `
@group(0) @binding(0) var<storage, read> prediction: array<f32>;
@group(0) @binding(1) var<storage, read> expected: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
struct Params { size: u32, chunks: u32, chunkLength: u32 }
@group(0) @binding(3) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let chunk = linearIndex(gid, groups, 64u);
  if (chunk >= params.chunks) { return; }
  let begin = chunk * params.chunkLength;
  let end = min(begin + params.chunkLength, params.size);
  var total = 0.0;
  for (var i = begin; i < end; i++) {
    let difference = prediction[i] - expected[i];
    total += difference * difference;
  }
  partials[chunk] = total;
}`;

export const MSE_FINALIZE_WGSL = `
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> loss: array<f32>;
struct Params { chunks: u32, scale: f32 }
@group(0) @binding(2) var<uniform> params: Params;
@compute @workgroup_size(1)
fn main() {
  var total = 0.0;
  for (var j = 0u; j < params.chunks; j++) { total += partials[j]; }
  loss[0] = total * params.scale;
}`;

/** d/dprediction = 2 (p - t) * scale * dL (elementwise or the scalar dL[0]); d/dtarget is its negative. */
export const MSE_BACKWARD_WGSL = `
@group(0) @binding(0) var<storage, read> prediction: array<f32>;
@group(0) @binding(1) var<storage, read> expected: array<f32>;
@group(0) @binding(2) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(3) var<storage, read_write> gradInput: array<f32>;
struct Params { size: u32, elementwise: u32, scale: f32 }
@group(0) @binding(4) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.size) { return; }
  let upstream = gradOutput[select(0u, index, params.elementwise == 1u)];
  gradInput[index] = 2.0 * (prediction[index] - expected[index]) * params.scale * upstream;
}`;

/** Per chunk: Σ mask * loss and Σ mask. */
export const BCE_PARTIALS_WGSL = `
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
struct Params { size: u32, chunks: u32, chunkLength: u32, hasMask: u32 }
@group(0) @binding(4) var<uniform> params: Params;
${STABLE_HELPERS}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let chunk = linearIndex(gid, groups, 64u);
  if (chunk >= params.chunks) { return; }
  let begin = chunk * params.chunkLength;
  let end = min(begin + params.chunkLength, params.size);
  var total = 0.0;
  var weight = 0.0;
  for (var i = begin; i < end; i++) {
    var m = 1.0;
    if (params.hasMask == 1u) { m = mask[i]; }
    if (m != 0.0) { total += m * bceWithLogits(logits[i], labels[i]); }
    weight += m;
  }
  partials[2u * chunk] = total;
  partials[2u * chunk + 1u] = weight;
}`;

/** loss = Σ mask * loss / Σ mask, or 0 when every element is masked; also keeps Σ mask for backward. */
export const BCE_FINALIZE_WGSL = `
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> loss: array<f32>;
@group(0) @binding(2) var<storage, read_write> weight: array<f32>;
struct Params { chunks: u32 }
@group(0) @binding(3) var<uniform> params: Params;
@compute @workgroup_size(1)
fn main() {
  var total = 0.0;
  var weights = 0.0;
  for (var j = 0u; j < params.chunks; j++) {
    total += partials[2u * j];
    weights += partials[2u * j + 1u];
  }
  loss[0] = select(0.0, total / weights, weights != 0.0);
  weight[0] = weights;
}`;

/** d/dlogit = dL * mask * (sigmoid(z) - y) / Σmask; d/dlabel = dL * mask * (-z) / Σmask. */
export const BCE_BACKWARD_WGSL = `
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(5) var<storage, read_write> gradInput: array<f32>;
struct Params { size: u32, hasMask: u32, withRespectToLabels: u32 }
@group(0) @binding(6) var<uniform> params: Params;
${STABLE_HELPERS}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.size) { return; }
  var m = 1.0;
  if (params.hasMask == 1u) { m = mask[index]; }
  let weights = weight[0];
  if (weights == 0.0 || m == 0.0) {
    gradInput[index] = 0.0;
    return;
  }
  let z = logits[index];
  let y = labels[index];
  // sigmoid(z) - y written as (1 - y) sigmoid(z) - y sigmoid(-z): no cancellation when a confident
  // prediction is right (z >> 0, y = 1 would otherwise subtract 1 from ~1).
  var local = (1.0 - y) * sigmoidOf(z) - y * sigmoidOf(-z);
  if (params.withRespectToLabels == 1u) { local = -z; }
  gradInput[index] = gradOutput[0] * m * local / weights;
}`;

export function lossCost(size: number, operands: number) {
  return { flops: 4 * size, bytes: 4 * operands * size };
}

function checkPair(op: string, a: Tensor, b: Tensor, names: [string, string]): void {
  for (const [name, tensor] of [
    [names[0], a],
    [names[1], b],
  ] as const) {
    if (tensor.dtype !== "f32")
      throw new OpError(op, `needs f32 ${name}, got ${tensor.dtype}`, { [name]: tensor });
  }
  if (a.shape.length !== b.shape.length || a.shape.some((extent, axis) => extent !== b.shape[axis])) {
    throw new OpError(op, `${names[0]} and ${names[1]} must have the same shape`, {
      [names[0]]: a,
      [names[1]]: b,
    });
  }
}

/**
 * Mean squared error. "mean" and "sum" return a [1] tensor; "none" the elementwise squares.
 * Differentiable in both operands.
 */
export function mseLoss(prediction: Tensor, target: Tensor, reduction: LossReduction = "mean"): Tensor {
  const op = "mseLoss";
  checkPair(op, prediction, target, ["prediction", "target"]);
  if (!LOSS_REDUCTIONS.includes(reduction)) {
    throw new OpError(op, `reduction must be "mean", "sum" or "none", got ${JSON.stringify(reduction)}`);
  }
  const gpu = prediction.gpu;
  const size = prediction.size;
  let loss: Tensor;
  if (reduction === "none") {
    loss = Tensor.empty(gpu, prediction.shape);
    launch(
      gpu,
      { name: op, variant: "elementwise", code: MSE_ELEMENTWISE_WGSL },
      {
        bindings: [prediction, target, loss],
        params: new Params().u32(size),
        workgroups: grid(size, 64),
        ...lossCost(size, 3),
      },
    );
  } else {
    const chunkLength = lossChunkLength(size);
    const chunks = Math.ceil(size / chunkLength);
    const partials = Tensor.empty(gpu, [chunks]);
    launch(
      gpu,
      { name: op, variant: "chunked", code: MSE_PARTIALS_WGSL },
      {
        bindings: [prediction, target, partials],
        params: new Params().u32(size, chunks, chunkLength),
        workgroups: grid(chunks, 64),
        ...lossCost(size, 2),
      },
    );
    loss = Tensor.empty(gpu, [1]);
    launch(
      gpu,
      { name: op, variant: "finalize", code: MSE_FINALIZE_WGSL },
      {
        bindings: [partials, loss],
        params: new Params().u32(chunks).f32(reduction === "mean" ? 1 / size : 1),
        workgroups: [1],
        flops: chunks,
        bytes: 4 * chunks,
      },
    );
    partials.release();
  }
  if (needsGrad(prediction, target)) {
    record(op, [prediction, target], [loss], ([gradOutput]) => {
      const gradientOf = (sign: 1 | -1) => {
        const gradInput = Tensor.empty(gpu, prediction.shape);
        // d/dtarget = -d/dprediction: swap the operands instead of negating.
        const [first, second] = sign === 1 ? [prediction, target] : [target, prediction];
        launch(
          gpu,
          {
            name: `${op}Backward`,
            variant: reduction === "none" ? "elementwise" : "reduced",
            code: MSE_BACKWARD_WGSL,
          },
          {
            bindings: [first, second, gradOutput!, gradInput],
            params: new Params()
              .u32(size, reduction === "none" ? 1 : 0)
              .f32(reduction === "mean" ? 1 / size : 1),
            workgroups: grid(size, 64),
            ...lossCost(size, 4),
          },
        );
        return gradInput;
      };
      return [prediction.requiresGrad ? gradientOf(1) : null, target.requiresGrad ? gradientOf(-1) : null];
    });
  }
  return loss;
}

/**
 * Binary cross-entropy on logits, averaged over unmasked elements: Σ m·ℓ / Σ m with
 * ℓ = max(z, 0) - z·y + log(1 + e^-|z|). `mask` (same shape, 1 = keep, 0 = ignore; other values act
 * as weights) defaults to all ones. When every element is masked the loss and its gradients are 0.
 * Returns a [1] tensor; differentiable in logits and targets (not the mask).
 */
export function bceWithLogitsLoss(logits: Tensor, targets: Tensor, mask: Tensor | null = null): Tensor {
  const op = "bceWithLogitsLoss";
  checkPair(op, logits, targets, ["logits", "targets"]);
  if (mask) checkPair(op, logits, mask, ["logits", "mask"]);
  const gpu = logits.gpu;
  const size = logits.size;
  const chunkLength = lossChunkLength(size);
  const chunks = Math.ceil(size / chunkLength);
  const partials = Tensor.empty(gpu, [chunks, 2]);
  launch(
    gpu,
    { name: op, variant: "chunked", code: BCE_PARTIALS_WGSL },
    {
      bindings: [logits, targets, mask ?? logits, partials],
      params: new Params().u32(size, chunks, chunkLength, mask ? 1 : 0),
      workgroups: grid(chunks, 64),
      flops: 12 * size,
      bytes: 4 * (mask ? 3 : 2) * size,
    },
  );
  const loss = Tensor.empty(gpu, [1]);
  const weight = Tensor.empty(gpu, [1]);
  launch(
    gpu,
    { name: op, variant: "finalize", code: BCE_FINALIZE_WGSL },
    {
      bindings: [partials, loss, weight],
      params: new Params().u32(chunks),
      workgroups: [1],
      flops: 2 * chunks,
      bytes: 8 * chunks,
    },
  );
  partials.release();
  if (needsGrad(logits, targets)) {
    record(
      op,
      [logits, targets],
      [loss],
      ([gradOutput]) => {
        const gradientOf = (withRespectToLabels: boolean) => {
          const gradInput = Tensor.empty(gpu, logits.shape);
          launch(
            gpu,
            {
              name: `${op}Backward`,
              variant: withRespectToLabels ? "targets" : "logits",
              code: BCE_BACKWARD_WGSL,
            },
            {
              bindings: [logits, targets, mask ?? logits, weight, gradOutput!, gradInput],
              params: new Params().u32(size, mask ? 1 : 0, withRespectToLabels ? 1 : 0),
              workgroups: grid(size, 64),
              flops: 8 * size,
              bytes: 4 * (mask ? 4 : 3) * size,
            },
          );
          return gradInput;
        };
        return [
          logits.requiresGrad ? gradientOf(false) : null,
          targets.requiresGrad ? gradientOf(true) : null,
        ];
      },
      [weight],
    );
  } else {
    weight.release();
  }
  return loss;
}

// ---------------------------------------------------------------------------------------------
// Float64 references
// ---------------------------------------------------------------------------------------------

function referenceBce(z: number, y: number): number {
  return Math.max(z, 0) - z * y + Math.log1p(Math.exp(-Math.abs(z)));
}

function referenceSigmoid(z: number): number {
  return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
}

export const mseLossReference = {
  forward(prediction: Float64Array, target: Float64Array, reduction: LossReduction = "mean"): Float64Array {
    const squares = prediction.map((value, index) => (value - target[index]) ** 2);
    if (reduction === "none") return squares;
    const total = squares.reduce((sum, value) => sum + value, 0);
    return Float64Array.of(reduction === "mean" ? total / prediction.length : total);
  },
  backward(
    prediction: Float64Array,
    target: Float64Array,
    gradOutput: Float64Array,
    reduction: LossReduction = "mean",
  ): { gradPrediction: Float64Array; gradTarget: Float64Array } {
    const scale = reduction === "mean" ? 1 / prediction.length : 1;
    const gradPrediction = prediction.map(
      (value, index) => 2 * (value - target[index]) * scale * gradOutput[reduction === "none" ? index : 0],
    );
    return { gradPrediction, gradTarget: gradPrediction.map((value) => -value) };
  },
};

export const bceWithLogitsReference = {
  forward(logits: Float64Array, targets: Float64Array, mask: Float64Array | null = null): number {
    let total = 0;
    let weight = 0;
    logits.forEach((z, index) => {
      const m = mask ? mask[index] : 1;
      if (m !== 0) total += m * referenceBce(z, targets[index]);
      weight += m;
    });
    return weight === 0 ? 0 : total / weight;
  },
  backward(
    logits: Float64Array,
    targets: Float64Array,
    mask: Float64Array | null,
    gradOutput: number,
  ): { gradLogits: Float64Array; gradTargets: Float64Array } {
    const weight = mask ? mask.reduce((sum, value) => sum + value, 0) : logits.length;
    const factor = (index: number) => (weight === 0 ? 0 : (gradOutput * (mask ? mask[index] : 1)) / weight);
    return {
      gradLogits: logits.map(
        (z, index) =>
          factor(index) *
          ((1 - targets[index]) * referenceSigmoid(z) - targets[index] * referenceSigmoid(-z)),
      ),
      gradTargets: logits.map((z, index) => factor(index) * -z),
    };
  },
};
