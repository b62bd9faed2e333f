/**
 * WGSL shared by every softmax kernel: the uniform block, the row addressing, and the bindings of the
 * forward (input, mask, output) and backward (probabilities, gradOutput, gradInput) kernels. The
 * variant files paste these in; `cxr kernels dump softmax` prints the result.
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";

/** Threads per row in the workgroup variant (each later reads all partials, so not more). */
export const WORKGROUP_ROW_THREADS = 64;

/** Bindings and helpers shared by all softmax kernels. Rows: `rows` of `length` values `stride` apart. */
export const SOFTMAX_COMMON_WGSL = `
struct Params { rows: u32, length: u32, stride: u32, rowsPerMaskRow: u32, scale: f32, useMask: u32 }
@group(0) @binding({{paramsBinding}}) var<uniform> params: Params;
// Sentinel below every real score; finite so no inf arithmetic is needed (WGSL may assume finite math).
const NEG_BIG: f32 = -3.0e38;
// Differences are taken before the conversion to base 2, so inputs near the f32 range stay finite.
const LOG2E: f32 = 1.4426950408889634;
fn rowBase(row: u32) -> u32 {
  let outer = row / params.stride;
  return outer * params.length * params.stride + row % params.stride;
}
${LINEAR_INDEX_WGSL}`;

/**
 * Forward kernels also read the mask; backward needs none (masked probabilities are already 0). The
 * input and output are `element` (f32, or f16 for the half-precision variant); the mask is always f32.
 */
export function softmaxForwardBindings(element: "f32" | "f16"): string {
  return `
@group(0) @binding(0) var<storage, read> input: array<${element}>;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<${element}>;
fn keeps(row: u32, j: u32) -> bool {
  if (params.useMask == 0u) { return true; }
  return mask[(row / params.rowsPerMaskRow) * params.length + j] != 0.0;
}`;
}

export const SOFTMAX_FORWARD_BINDINGS_WGSL = softmaxForwardBindings("f32");

export const SOFTMAX_BACKWARD_BINDINGS_WGSL = `
@group(0) @binding(0) var<storage, read> probabilities: array<f32>;
@group(0) @binding(1) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(2) var<storage, read_write> gradInput: array<f32>;`;

/** One variant's kernels: the exact WGSL `launch` receives, and its dispatch shape for `rows` rows. */
export interface SoftmaxKernels {
  forward: string;
  backward: string;
  workgroups(rows: number): [number, number, number];
}
