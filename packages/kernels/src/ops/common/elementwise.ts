/**
 * The WGSL scaffolding of the one-invocation-per-element kernels (unary, binary broadcast, cast,
 * the embedding lookup), written once for their f32 and f16 variants: a head (`enable f16;` and the
 * rounding store for f16 kernels, nothing for f32 ones), the kernel's declarations (bindings, its
 * `Params` struct with a `size` field, helpers), the linear index over a 2-D dispatch of 256-wide
 * workgroups, the bounds check, then the body. Only the storage types and the loads and stores
 * differ between a kernel's variants, which `widen` and `store` spell for each element type.
 */
import { LINEAR_INDEX_WGSL } from "../../runtime/kernel.ts";
import { HALF_PRELUDE_WGSL } from "./half.ts";

/** A storage element type of the float kernels. */
export type FloatElement = "f32" | "f16";

export interface ElementwiseParts {
  /** Text before the declarations ("" or a directive such as `enable f16;`). */
  head: string;
  /** Bindings, the Params struct (with `size`) and helpers. */
  declarations: string;
  /** Statements after the bounds check, each line indented by two spaces. */
  body: string;
}

/** A kernel of one invocation per element (`index` < `params.size`), 256 invocations a workgroup. */
export function elementwiseKernel({ head, declarations, body }: ElementwiseParts): string {
  return `${head}
${declarations}
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index >= params.size) { return; }
${body}
}`;
}

/** The head of a float kernel: f16 kernels enable f16 and get `toHalf`, the one rounding store. */
export function floatHead(element: FloatElement): string {
  return element === "f16" ? HALF_PRELUDE_WGSL : "";
}

/** A load of `element` storage as an f32 value (f16 is widened; f32 as is). */
export function widen(element: FloatElement, load: string): string {
  return element === "f16" ? `f32(${load})` : load;
}

/** An f32 value as stored in `element` storage (f16 rounds once, saturating; f32 as is). */
export function store(element: FloatElement, value: string): string {
  return element === "f16" ? `toHalf(${value})` : value;
}
