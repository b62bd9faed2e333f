/**
 * The one cross-entropy variant ("default"), three passes: `rows` gives each row's masked loss (one
 * invocation per row), `sum` adds them up and divides by the mask's total (one invocation: a head's
 * batch is small), `backward` writes each row's gradient. `rows` and `backward` share the row
 * statistics (max and the max-shifted sum of exponentials), written once in ROW_STATS_WGSL.
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

/**
 * A row's largest logit and sum of exp(z - largest), over logits[base .. base + classes). Needs the
 * kernel's `logits` binding and `params.classes`. Never exponentiates a positive number.
 */
const ROW_STATS_WGSL = `
struct RowStats { largest: f32, total: f32 }
fn rowStats(base: u32) -> RowStats {
  var largest = logits[base];
  for (var k = 1u; k < params.classes; k++) { largest = max(largest, logits[base + k]); }
  var total = 0.0;
  for (var k = 0u; k < params.classes; k++) { total += exp(logits[base + k] - largest); }
  return RowStats(largest, total);
}`;

/** rowLoss[r] = mask_r * (logsumexp(z_r) - z_r[target_r]), exactly 0 for a masked row. */
const ROWS = `
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> rowLoss: array<f32>;
struct Params { rows: u32, classes: u32 }
@group(0) @binding(4) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
${ROW_STATS_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let row = linearIndex(gid, groups, 64u);
  if (row >= params.rows) { return; }
  let base = row * params.classes;
  let stats = rowStats(base);
  let weight = mask[row];
  var value = 0.0;
  if (weight != 0.0) { value = weight * (log(stats.total) + stats.largest - logits[base + targets[row]]); }
  rowLoss[row] = value;
}`;

/** loss = sum(rowLoss) / sum(mask) (0 when every row is masked); also keeps sum(mask) for backward. */
const SUM = `
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

/** dz_r = mask_r * gradOutput / sum(mask) * (softmax(z_r) - onehot(target_r)). */
const BACKWARD = `
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(5) var<storage, read_write> gradLogits: array<f32>;
struct Params { rows: u32, classes: u32 }
@group(0) @binding(6) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
${ROW_STATS_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let row = linearIndex(gid, groups, 64u);
  if (row >= params.rows) { return; }
  let base = row * params.classes;
  var factor = 0.0;
  if (weight[0] != 0.0) { factor = mask[row] * gradOutput[0] / weight[0]; }
  let stats = rowStats(base);
  for (var k = 0u; k < params.classes; k++) {
    var onehot = 0.0;
    if (k == targets[row]) { onehot = 1.0; }
    gradLogits[base + k] = factor * (exp(logits[base + k] - stats.largest) / stats.total - onehot);
  }
}`;

export const ROWS_KERNELS = { rows: ROWS, sum: SUM, backward: BACKWARD } as const;
