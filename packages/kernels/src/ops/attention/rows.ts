/**
 * The two small kernels every variant runs around the fused ones: the backward's row statistics
 * (delta_i next to the log-sum-exp) and the zero-padding of rows to a multiple of 4 floats (odd D).
 */
import { grid, LINEAR_INDEX_WGSL, launch } from "../../runtime/kernel.ts";
import { Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";

/**
 * Backward step 1, shared by both variants: delta_i = rowsum(dO_i * O_i), stored next to the row's
 * log-sum-exp as rowStats[i] = (lse_i, delta_i) so the next kernels bind one buffer for both.
 */
export const ATTENTION_ROW_STATS_WGSL = `
@group(0) @binding(0) var<storage, read> output: array<f32>;
@group(0) @binding(1) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(2) var<storage, read> logSumExp: array<f32>;
@group(0) @binding(3) var<storage, read_write> rowStats: array<vec2<f32>>;
struct Params { rows: u32, headDim: u32 }
@group(0) @binding(4) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let row = linearIndex(gid, groups, 64u);
  if (row >= params.rows) { return; }
  var delta = 0.0;
  for (var d = 0u; d < params.headDim; d++) {
    let index = row * params.headDim + d;
    delta += gradOutput[index] * output[index];
  }
  rowStats[row] = vec2<f32>(logSumExp[row], delta);
}`;

/** Copies rows of `fromWidth` floats into rows of `toWidth`, zero-filling (pads or trims odd D). */
export const ATTENTION_RESIZE_ROWS_WGSL = `
@group(0) @binding(0) var<storage, read> source: array<f32>;
@group(0) @binding(1) var<storage, read_write> destination: array<f32>;
struct Params { size: u32, fromWidth: u32, toWidth: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
  let row = index / params.toWidth;
  let column = index % params.toWidth;
  let sourceIndex = row * params.fromWidth + min(column, params.fromWidth - 1u);
  destination[index] = select(0.0, source[sourceIndex], column < params.fromWidth);
}`;

/** `x` [..., width] as [..., newWidth]: zero-padded or trimmed. */
export function resizeRows(x: Tensor, newWidth: number): Tensor {
  const width = x.shape[x.rank - 1];
  const shape = [...x.shape.slice(0, -1), newWidth];
  const resized = Tensor.empty(x.gpu, shape);
  launch(
    x.gpu,
    { name: "attention", variant: "resize-rows", code: ATTENTION_RESIZE_ROWS_WGSL },
    {
      bindings: [x, resized],
      params: new Params().u32(resized.size, width, newWidth),
      workgroups: grid(resized.size, 256),
      flops: 0,
      bytes: 4 * (x.size + resized.size),
    },
  );
  return resized;
}

/** The tensor itself when its rows already have `width` floats, else a zero-padded copy. */
export const withWidth = (x: Tensor, width: number) =>
  x.shape[x.rank - 1] === width ? x : resizeRows(x, width);
/** Releases `copy` when it is a padded copy rather than the original. */
export const releaseCopy = (copy: Tensor, original: Tensor) => {
  if (copy !== original) copy.release();
};
/** A padded result trimmed back to `width` (the padded one released). */
export function trimmed(x: Tensor, width: number): Tensor {
  if (x.shape[x.rank - 1] === width) return x;
  const result = resizeRows(x, width);
  x.release();
  return result;
}
