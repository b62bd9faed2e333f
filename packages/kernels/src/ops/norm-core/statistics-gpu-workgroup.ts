/**
 * Statistics of variant "gpu-workgroup" (GPUs): 256 invocations read a chunk with coalesced strides
 * and reduce it in workgroup memory, two passes over the chunk (mean, then squared deviations).
 * Partials [rows * chunks, 3] = count, mean, M2; merged by statistics-combine.ts.
 */
import { wgsl } from "../../runtime/kernel.ts";
import { VECTOR_TYPES } from "./vectors.ts";

const MOMENTS_WORKGROUP_TEMPLATE = `
@group(0) @binding(0) var<storage, read> x: array<{{vector}}>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
struct Params { rows: u32, rowUnits: u32, chunks: u32, chunkUnits: u32 }
@group(0) @binding(2) var<uniform> params: Params;
var<workgroup> scratch: array<f32, 256>;
fn horizontalSum(v: {{vector}}) -> f32 { return {{horizontalSum}}; }
fn workgroupSum(lid: u32, value: f32) -> f32 {
  scratch[lid] = value;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { scratch[lid] += scratch[lid + stride]; }
    workgroupBarrier();
  }
  let result = scratch[0];
  workgroupBarrier();
  return result;
}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let index = wid.x + wid.y * groups.x;
  if (index >= params.rows * params.chunks) { return; }
  let row = index / params.chunks;
  let chunk = index % params.chunks;
  let rowStart = row * params.rowUnits;
  let begin = rowStart + chunk * params.chunkUnits;
  let end = rowStart + min((chunk + 1u) * params.chunkUnits, params.rowUnits);
  var sum = {{vector}}(0.0);
  for (var i = begin + lid; i < end; i += 256u) { sum += x[i]; }
  let count = f32((end - begin) * {{lanes}}u);
  let mean = workgroupSum(lid, horizontalSum(sum)) / count;
  var squares = {{vector}}(0.0);
  for (var i = begin + lid; i < end; i += 256u) {
    let deviation = x[i] - mean;
    squares += deviation * deviation;
  }
  let m2 = workgroupSum(lid, horizontalSum(squares));
  if (lid == 0u) {
    partials[3u * index] = count;
    partials[3u * index + 1u] = mean;
    partials[3u * index + 2u] = m2;
  }
}`;

export const momentsWorkgroupSource = (lanes: 4 | 1) => wgsl(MOMENTS_WORKGROUP_TEMPLATE, VECTOR_TYPES[lanes]);
