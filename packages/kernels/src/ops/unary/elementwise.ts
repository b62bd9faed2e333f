/**
 * The one unary variant ("default"): one invocation per element, forward y = f(x) and backward
 * dx = dy * f'(x), with the function's expression pasted into `{{expression}}` / `{{derivative}}`.
 */
import { wgsl } from "../../runtime/kernel.ts";
import { elementwiseKernel, type FloatElement, floatHead, store, widen } from "../common/elementwise.ts";
import { UNARY_FUNCTIONS, UNARY_HELPERS_WGSL } from "./functions.ts";
import type { UnaryKind } from "./reference.ts";

/**
 * y = f(x) with x and y stored as `element`: the f32 forward here, the f16 one in half.ts (the
 * function evaluated in f32 either way, the f16 result rounded once at the store).
 */
export function unaryForwardTemplate(element: FloatElement): string {
  return elementwiseKernel({
    head: floatHead(element),
    declarations: `@group(0) @binding(0) var<storage, read> input: array<${element}>;
@group(0) @binding(1) var<storage, read_write> output: array<${element}>;
struct Params { size: u32, alpha: f32 }
@group(0) @binding(2) var<uniform> params: Params;
${UNARY_HELPERS_WGSL}`,
    body: `  let x = ${widen(element, "input[index]")};
  let alpha = params.alpha;
  output[index] = ${store(element, "{{expression}}")};`,
  });
}

const FORWARD_TEMPLATE = unaryForwardTemplate("f32");

const BACKWARD_TEMPLATE = elementwiseKernel({
  head: "",
  declarations: `@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> gradOutput: array<f32>;
@group(0) @binding(2) var<storage, read_write> gradInput: array<f32>;
struct Params { size: u32, alpha: f32 }
@group(0) @binding(3) var<uniform> params: Params;
${UNARY_HELPERS_WGSL}`,
  body: `  let x = input[index];
  let alpha = params.alpha;
  gradInput[index] = gradOutput[index] * ({{derivative}});`,
});

/** Each function's forward and backward kernel, built once. */
export const ELEMENTWISE: Readonly<Record<UnaryKind, { forward: string; backward: string }>> =
  Object.fromEntries(
    Object.entries(UNARY_FUNCTIONS).map(([kind, f]) => [
      kind,
      {
        forward: wgsl(FORWARD_TEMPLATE, { expression: f.forward }),
        backward: wgsl(BACKWARD_TEMPLATE, { derivative: f.derivative }),
      },
    ]),
  ) as Record<UnaryKind, { forward: string; backward: string }>;
