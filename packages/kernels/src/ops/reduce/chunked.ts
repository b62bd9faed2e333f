/**
 * The forward kernels of the reductions (variant "chunked"): one invocation reduces a chunk of
 * `length` for one (outer, inner) pair of an [outer, length, inner] view; a reduction that leaves
 * too few outputs to fill the device is split into chunks and finished by further, smaller passes.
 */
import { LINEAR_INDEX_WGSL, wgsl } from "../../runtime/kernel.ts";

/** One pass of sum/mean: output[a, chunk, b] = scale * sum of input[a, r, b] over the chunk's r. */
export const REDUCE_SUM_WGSL = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
struct Params { outer: u32, length: u32, inner: u32, chunks: u32, chunkLength: u32, scale: f32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.outer * params.chunks * params.inner) { return; }
  let b = index % params.inner;
  let rest = index / params.inner;
  let chunk = rest % params.chunks;
  let a = rest / params.chunks;
  let first = chunk * params.chunkLength;
  let last = min(first + params.chunkLength, params.length);
  var offset = (a * params.length + first) * params.inner + b;
  // Two accumulators halve the dependency chain of the adds.
  var even = 0.0;
  var odd = 0.0;
  var r = first;
  for (; r + 1u < last; r += 2u) {
    even += input[offset];
    odd += input[offset + params.inner];
    offset += 2u * params.inner;
  }
  if (r < last) { even += input[offset]; }
  output[index] = (even + odd) * params.scale;
}`;

/**
 * One pass of max with the flat input index of the first maximum (row-major order). The first pass
 * takes indices from positions; later passes carry them from the previous pass's indices.
 */
const REDUCE_MAX_TEMPLATE = `
@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
@group(0) @binding(2) var<storage, read_write> outputIndices: array<u32>;
{{carriedBinding}}
struct Params { outer: u32, length: u32, inner: u32, chunks: u32, chunkLength: u32 }
@group(0) @binding({{paramsBinding}}) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 64u);
  if (index >= params.outer * params.chunks * params.inner) { return; }
  let b = index % params.inner;
  let rest = index / params.inner;
  let chunk = rest % params.chunks;
  let a = rest / params.chunks;
  let first = chunk * params.chunkLength;
  let last = min(first + params.chunkLength, params.length);
  var offset = (a * params.length + first) * params.inner + b;
  var best = input[offset];
  var bestIndex = {{sourceIndex}};
  for (var r = first + 1u; r < last; r++) {
    offset += params.inner;
    let value = input[offset];
    // Strictly greater: ties keep the earlier element, so the first argmax wins.
    if (value > best) {
      best = value;
      bestIndex = {{sourceIndex}};
    }
  }
  output[index] = best;
  outputIndices[index] = bestIndex;
}`;

export const REDUCE_MAX_FIRST_WGSL = wgsl(REDUCE_MAX_TEMPLATE, {
  carriedBinding: "",
  paramsBinding: 3,
  sourceIndex: "offset",
});
export const REDUCE_MAX_CARRIED_WGSL = wgsl(REDUCE_MAX_TEMPLATE, {
  carriedBinding: "@group(0) @binding(3) var<storage, read> inputIndices: array<u32>;",
  paramsBinding: 4,
  sourceIndex: "inputIndices[offset]",
});
