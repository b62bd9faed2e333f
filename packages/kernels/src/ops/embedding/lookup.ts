/**
 * The one embedding variant ("default"). Forward: one invocation per output element copies its table
 * entry. Backward: one invocation per embedding column walks the tokens in order and adds into its
 * column, race-free without atomics and deterministic.
 */
import { elementwiseKernel, type FloatElement } from "../common/elementwise.ts";

/**
 * The forward copy for a table stored as `element`: f32, or f16 for the half-precision variant
 * (half.ts; a copy needs no f32 arithmetic, so it is exact either way).
 */
export function lookupForward(element: FloatElement): string {
  return elementwiseKernel({
    head: element === "f16" ? "enable f16;" : "",
    declarations: `@group(0) @binding(0) var<storage, read> table: array<${element}>;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> output: array<${element}>;
struct Params { size: u32, dim: u32, vocabulary: u32 }
@group(0) @binding(3) var<uniform> params: Params;`,
    body: `  // Ids are range-checked on upload by embedding(); min() keeps a stray id from reading out of bounds.
  let token = min(tokens[index / params.dim], params.vocabulary - 1u);
  output[index] = table[token * params.dim + index % params.dim];`,
  });
}

const FORWARD = lookupForward("f32");

const BACKWARD = `
@group(0) @binding(0) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> gradTable: array<f32>;
struct Params { tokenCount: u32, dim: u32, vocabulary: u32 }
@group(0) @binding(3) var<uniform> params: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let column = gid.x;
  if (column >= params.dim) { return; }
  for (var t = 0u; t < params.tokenCount; t++) {
    let token = min(tokens[t], params.vocabulary - 1u);
    gradTable[token * params.dim + column] += gradOutput[t * params.dim + column];
  }
}`;

export const LOOKUP = { forward: FORWARD, backward: BACKWARD } as const;
