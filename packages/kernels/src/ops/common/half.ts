/**
 * What every f16 (half precision) kernel shares: the adapter check (`shader-f16`), the dtype check
 * (every float operand f16), the inference-only rule (no backward), and the WGSL store helper.
 *
 * The f16 kernels store weights and activations in f16 and compute in f32 inside each invocation:
 * every load is widened with `f32(...)`, sums, softmax and norm statistics accumulate in f32, and
 * only the final store rounds to f16 (round to nearest even). A value beyond f16's largest finite
 * value (65504) saturates there instead of becoming infinite.
 */

import { needsGrad } from "../../runtime/autograd.ts";
import type { Gpu } from "../../runtime/device.ts";
import { OpError, type Tensor } from "../../runtime/tensor.ts";

/** Largest finite f16 value; stores saturate at +-HALF_MAX. */
export const HALF_MAX = 65504;

/** WGSL: `enable f16;` and `toHalf`, the one rounding store every f16 kernel uses. */
export const HALF_PRELUDE_WGSL = `enable f16;
fn toHalf(value: f32) -> f16 { return f16(clamp(value, -65504.0, 65504.0)); }`;

/** Throws when the adapter lacks `shader-f16` (the message names the adapter and the way out). */
export function requireHalfAdapter(
  op: string,
  gpu: Gpu,
  operands: Readonly<Record<string, Tensor>> = {},
): void {
  if (!gpu.features.has("shader-f16")) {
    const name = gpu.adapter?.description || gpu.adapter?.device || "this adapter";
    throw new OpError(
      op,
      `f16 kernels need the adapter feature 'shader-f16', which ${name} lacks; use f32 (--precision f32)`,
      operands,
    );
  }
}

/**
 * The checks of an f16 op: the adapter has shader-f16, every named operand is f16 (null entries
 * skipped) and on one device, and nothing asks for a gradient (the f16 kernels are inference only).
 */
export function checkHalfOperands(
  op: string,
  named: Readonly<Record<string, Tensor | null | undefined>>,
): Gpu {
  const present = Object.entries(named).filter((entry): entry is [string, Tensor] => entry[1] != null);
  const shown = Object.fromEntries(present);
  const [firstName, first] = present[0];
  requireHalfAdapter(op, first.gpu, shown);
  const halfName = present.find(([, tensor]) => tensor.dtype === "f16")?.[0] ?? firstName;
  for (const [name, tensor] of present) {
    if (tensor.dtype !== "f16") {
      throw new OpError(op, `f16 ${halfName} needs f16 ${name}, got ${tensor.dtype} (cast it first)`, shown);
    }
    if (tensor.gpu !== first.gpu)
      throw new OpError(op, `${name} lives on another device than ${firstName}`, shown);
  }
  if (needsGrad(...present.map(([, tensor]) => tensor))) {
    throw new OpError(
      op,
      "the f16 kernels are inference only (no backward): run under noGrad(), or train in f32",
      shown,
    );
  }
  return first.gpu;
}
