/**
 * cast's one variant ("default"): one invocation per element. f32 -> f16 rounds to nearest even and
 * saturates at +-65504; f16 -> f32 is exact.
 */
import { elementwiseKernel } from "../common/elementwise.ts";
import { HALF_PRELUDE_WGSL } from "../common/half.ts";

/** One element from `from` storage to `to` storage; `convert` spells the value stored. */
function castKernel(head: string, from: string, to: string, convert: string): string {
  return elementwiseKernel({
    head,
    declarations: `@group(0) @binding(0) var<storage, read> input: array<${from}>;
@group(0) @binding(1) var<storage, read_write> output: array<${to}>;
struct Params { size: u32 }
@group(0) @binding(2) var<uniform> params: Params;`,
    body: `  output[index] = ${convert};`,
  });
}

export const CAST_TO_HALF_WGSL = castKernel(HALF_PRELUDE_WGSL, "f32", "f16", "toHalf(input[index])");

export const CAST_TO_FLOAT_WGSL = castKernel("enable f16;", "f16", "f32", "f32(input[index])");
