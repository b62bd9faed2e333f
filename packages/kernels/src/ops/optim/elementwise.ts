/**
 * The elementwise optimizer kernels, each written once as a template over `{{type}}` and built for
 * both variants ("scalar": f32, one element per invocation; "vec4": vec4<f32>, four): the fused
 * AdamW update, clipping's scale, and the EMA update.
 */
import { LINEAR_INDEX_WGSL, wgsl } from "../../runtime/kernel.ts";
import type { ElementwiseVariant } from "./choose.ts";

/** The WGSL of an elementwise template (`{{type}}` is f32 or vec4<f32>) for each variant. */
function elementwiseSources(template: string): Record<ElementwiseVariant, string> {
  return { scalar: wgsl(template, { type: "f32" }), vec4: wgsl(template, { type: "vec4<f32>" }) };
}

/** One fused update per element: decay, both moments, bias-corrected step (PyTorch `_single_tensor_adamw`). */
const ADAMW_TEMPLATE = `
@group(0) @binding(0) var<storage, read_write> parameter: array<{{type}}>;
@group(0) @binding(1) var<storage, read> gradient: array<{{type}}>;
@group(0) @binding(2) var<storage, read_write> firstMoment: array<{{type}}>;
@group(0) @binding(3) var<storage, read_write> secondMoment: array<{{type}}>;
struct Params {
  size: u32, decayFactor: f32, beta1: f32, oneMinusBeta1: f32,
  beta2: f32, oneMinusBeta2: f32, stepSize: f32, sqrtBiasCorrection2: f32, epsilon: f32,
}
@group(0) @binding(4) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let g = gradient[index];
  let m = params.beta1 * firstMoment[index] + params.oneMinusBeta1 * g;
  let v = params.beta2 * secondMoment[index] + params.oneMinusBeta2 * g * g;
  firstMoment[index] = m;
  secondMoment[index] = v;
  let denominator = sqrt(v) / params.sqrtBiasCorrection2 + params.epsilon;
  parameter[index] = parameter[index] * params.decayFactor - params.stepSize * m / denominator;
}`;

/** gradient *= min(1, maxNorm / (norm + 1e-6)), with the norm read from the GPU (torch.nn.utils.clip_grad_norm_). */
const CLIP_SCALE_TEMPLATE = `
@group(0) @binding(0) var<storage, read_write> gradient: array<{{type}}>;
@group(0) @binding(1) var<storage, read> norm: array<f32>;
struct Params { size: u32, maxNorm: f32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let factor = min(1.0, params.maxNorm / (norm[0] + 1e-6));
  gradient[index] = gradient[index] * factor;
}`;

/** average += (1 - decay) * (param - average), diffusers' form. */
const EMA_UPDATE_TEMPLATE = `
@group(0) @binding(0) var<storage, read_write> average: array<{{type}}>;
@group(0) @binding(1) var<storage, read> parameter: array<{{type}}>;
struct Params { size: u32, oneMinusDecay: f32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let current = average[index];
  average[index] = current - params.oneMinusDecay * (current - parameter[index]);
}`;

/** Each kernel by variant, exactly as launched. */
export const ELEMENTWISE: Readonly<
  Record<ElementwiseVariant, { adamw: string; clipScale: string; emaUpdate: string }>
> = {
  scalar: {
    adamw: elementwiseSources(ADAMW_TEMPLATE).scalar,
    clipScale: elementwiseSources(CLIP_SCALE_TEMPLATE).scalar,
    emaUpdate: elementwiseSources(EMA_UPDATE_TEMPLATE).scalar,
  },
  vec4: {
    adamw: elementwiseSources(ADAMW_TEMPLATE).vec4,
    clipScale: elementwiseSources(CLIP_SCALE_TEMPLATE).vec4,
    emaUpdate: elementwiseSources(EMA_UPDATE_TEMPLATE).vec4,
  },
};
