/**
 * Binary cross-entropy with logits and an optional mask, the one variant ("default"): `partials`
 * sums mask * loss and the mask over one contiguous chunk per invocation, `finalize` divides the
 * totals (0 when every element is masked) and keeps the mask's total for `backward`, which gives the
 * gradient with respect to the logits or the targets. The losses use stable forms (STABLE_HELPERS).
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

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

/** Per chunk: Σ mask * loss and Σ mask. */
const BCE_PARTIALS_WGSL = `
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
const BCE_FINALIZE_WGSL = `
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
const BCE_BACKWARD_WGSL = `
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

export const BCE_KERNELS = {
  partials: BCE_PARTIALS_WGSL,
  finalize: BCE_FINALIZE_WGSL,
  backward: BCE_BACKWARD_WGSL,
} as const;
