/**
 * Softmax cross-entropy over the last axis with integer class targets and a per-row mask (a
 * classifier's single-label head, e.g. race in 4 classes, where unknown rows are masked out):
 *   loss = Σ_r mask_r * (logsumexp(z_r) - z_r[target_r]) / Σ_r mask_r     (0 when every row is masked)
 *   dloss/dz_r = mask_r * (softmax(z_r) - onehot(target_r)) / Σ mask * gradOutput.
 * One invocation per row computes its loss (max-shifted, never exponentiating a positive number);
 * one invocation sums the rows (a head's batch is small). Targets are u32 class indices.
 */
import { needsGrad, record } from "../runtime/autograd.ts";
import { grid, LINEAR_INDEX_WGSL, launch } from "../runtime/kernel.ts";
import { OpError, Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";

export const CROSS_ENTROPY_ROWS_WGSL = `
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> rowLoss: array<f32>;
struct Params { rows: u32, classes: u32 }
@group(0) @binding(4) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let row = linearIndex(gid, groups, 64u);
  if (row >= params.rows) { return; }
  let base = row * params.classes;
  var largest = logits[base];
  for (var k = 1u; k < params.classes; k++) { largest = max(largest, logits[base + k]); }
  var total = 0.0;
  for (var k = 0u; k < params.classes; k++) { total += exp(logits[base + k] - largest); }
  let weight = mask[row];
  var value = 0.0;
  if (weight != 0.0) { value = weight * (log(total) + largest - logits[base + targets[row]]); }
  rowLoss[row] = value;
}`;

export const CROSS_ENTROPY_SUM_WGSL = `
@group(0) @binding(0) var<storage, read> rowLoss: array<f32>;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> weight: array<f32>;
struct Params { rows: u32 }
@group(0) @binding(4) var<uniform> params: Params;
@compute @workgroup_size(1)
fn main() {
  var total = 0.0;
  var count = 0.0;
  for (var row = 0u; row < params.rows; row++) { total += rowLoss[row]; count += mask[row]; }
  weight[0] = count;
  if (count == 0.0) { loss[0] = 0.0; } else { loss[0] = total / count; }
}`;

export const CROSS_ENTROPY_BACKWARD_WGSL = `
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(5) var<storage, read_write> gradLogits: array<f32>;
struct Params { rows: u32, classes: u32 }
@group(0) @binding(6) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let row = linearIndex(gid, groups, 64u);
  if (row >= params.rows) { return; }
  let base = row * params.classes;
  var factor = 0.0;
  if (weight[0] != 0.0) { factor = mask[row] * gradOutput[0] / weight[0]; }
  var largest = logits[base];
  for (var k = 1u; k < params.classes; k++) { largest = max(largest, logits[base + k]); }
  var total = 0.0;
  for (var k = 0u; k < params.classes; k++) { total += exp(logits[base + k] - largest); }
  for (var k = 0u; k < params.classes; k++) {
    var onehot = 0.0;
    if (k == targets[row]) { onehot = 1.0; }
    gradLogits[base + k] = factor * (exp(logits[base + k] - largest) / total - onehot);
  }
}`;

export function crossEntropyCost(rows: number, classes: number) {
  return { flops: 6 * rows * classes, bytes: 4 * (rows * classes + 3 * rows) };
}

/**
 * logits [rows, classes] (f32), targets [rows] (u32 class indices), mask [rows] (f32 weights, e.g.
 * 0 for an unknown class) -> mean over the mask, a [1] tensor. Differentiable in the logits.
 */
export function softmaxCrossEntropy(logits: Tensor, targets: Tensor, mask: Tensor): Tensor {
  const op = "softmaxCrossEntropy";
  const operands = { logits, targets, mask };
  if (logits.rank !== 2) throw new OpError(op, "needs logits of shape [rows, classes]", operands);
  const [rows, classes] = logits.shape;
  if (logits.dtype !== "f32") throw new OpError(op, `needs f32 logits, got ${logits.dtype}`, operands);
  if (targets.dtype !== "u32")
    throw new OpError(op, `needs u32 class indices, got ${targets.dtype}`, operands);
  if (mask.dtype !== "f32") throw new OpError(op, `needs an f32 mask, got ${mask.dtype}`, operands);
  if (targets.size !== rows || mask.size !== rows)
    throw new OpError(op, `targets and mask need ${rows} values, one per row`, operands);
  const gpu = logits.gpu;
  const rowLoss = Tensor.empty(gpu, [rows]);
  const params = new Params().u32(rows, classes);
  launch(
    gpu,
    { name: op, variant: "rows", code: CROSS_ENTROPY_ROWS_WGSL },
    {
      bindings: [logits, targets, mask, rowLoss],
      params,
      workgroups: grid(rows, 64),
      ...crossEntropyCost(rows, classes),
    },
  );
  const loss = Tensor.empty(gpu, [1]);
  const weight = Tensor.empty(gpu, [1]);
  launch(
    gpu,
    { name: op, variant: "sum", code: CROSS_ENTROPY_SUM_WGSL },
    {
      bindings: [rowLoss, mask, loss, weight],
      params: new Params().u32(rows),
      workgroups: [1],
      flops: 2 * rows,
      bytes: 8 * rows,
    },
  );
  rowLoss.release();
  if (!needsGrad(logits)) {
    weight.release();
    return loss;
  }
  record(
    op,
    [logits],
    [loss],
    ([gradOutput]) => {
      const gradLogits = Tensor.empty(gpu, logits.shape);
      launch(
        gpu,
        { name: `${op}Backward`, code: CROSS_ENTROPY_BACKWARD_WGSL },
        {
          bindings: [logits, targets, mask, weight, gradOutput!, gradLogits],
          params: new Params().u32(rows, classes),
          workgroups: grid(rows, 64),
          ...crossEntropyCost(rows, classes),
        },
      );
      return [gradLogits];
    },
    [weight],
  );
  return loss;
}

/** Float64 reference: the loss and its gradient with respect to the logits. */
export const softmaxCrossEntropyReference = {
  forward(
    logits: Float64Array,
    classes: number,
    targets: ArrayLike<number>,
    mask: ArrayLike<number>,
  ): number {
    const rows = logits.length / classes;
    let total = 0;
    let weight = 0;
    for (let row = 0; row < rows; row++) {
      weight += mask[row];
      if (mask[row] === 0) continue;
      const values = logits.subarray(row * classes, (row + 1) * classes);
      const largest = Math.max(...values);
      const logSum = Math.log(values.reduce((sum, value) => sum + Math.exp(value - largest), 0)) + largest;
      total += mask[row] * (logSum - values[targets[row]]);
    }
    return weight === 0 ? 0 : total / weight;
  },
  backward(
    logits: Float64Array,
    classes: number,
    targets: ArrayLike<number>,
    mask: ArrayLike<number>,
    gradOutput: number,
  ): Float64Array {
    const rows = logits.length / classes;
    const weight = Array.from(mask).reduce((sum, value) => sum + value, 0);
    const grad = new Float64Array(logits.length);
    for (let row = 0; row < rows; row++) {
      if (weight === 0 || mask[row] === 0) continue;
      const values = logits.subarray(row * classes, (row + 1) * classes);
      const largest = Math.max(...values);
      const total = values.reduce((sum, value) => sum + Math.exp(value - largest), 0);
      for (let k = 0; k < classes; k++) {
        const probability = Math.exp(values[k] - largest) / total;
        grad[row * classes + k] =
          ((mask[row] * gradOutput) / weight) * (probability - (k === targets[row] ? 1 : 0));
      }
    }
    return grad;
  },
};
