/**
 * Input checks that many ops repeat, with one wording each, so the error names the op, what is wrong
 * and the operands' shapes: dtype (f32 only), one device for every operand, and an output that fits
 * the adapter's largest storage buffer.
 */
import type { Gpu } from "../../runtime/device.ts";
import { formatShape, OpError, type Shape, sizeOf, type Tensor } from "../../runtime/tensor.ts";

/**
 * Throws `<op>: needs f32 <name>, got <dtype> (<shown shapes>)` for the first operand that is not f32.
 * `named` gives the name used in the message (null/undefined entries are skipped); `shown`, the
 * operands whose shapes the message lists (default: `named`).
 */
export function requireF32(
  op: string,
  named: Readonly<Record<string, Tensor | null | undefined>>,
  shown: Readonly<Record<string, Tensor>> = present(named),
): void {
  for (const [name, tensor] of Object.entries(named)) {
    if (tensor && tensor.dtype !== "f32")
      throw new OpError(op, `needs f32 ${name}, got ${tensor.dtype}`, shown);
  }
}

/** Throws `<op>: <name> lives on another device than <first>` when operands come from different devices. */
export function requireSameDevice(
  op: string,
  named: Readonly<Record<string, Tensor | null | undefined>>,
  shown: Readonly<Record<string, Tensor>> = present(named),
): void {
  const entries = Object.entries(named).filter((entry): entry is [string, Tensor] => entry[1] != null);
  const [firstName, first] = entries[0] ?? [];
  for (const [name, tensor] of entries) {
    if (tensor.gpu !== first?.gpu)
      throw new OpError(op, `${name} lives on another device than ${firstName}`, shown);
  }
}

/** The largest f32 buffer one binding can hold on this adapter, in bytes. */
export function largestStorageBuffer(gpu: Gpu): number {
  return Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
}

/** Refuses an f32 output larger than one storage buffer, naming the op (call before any allocation). */
export function checkOutputFits(
  gpu: Gpu,
  op: string,
  shape: Shape,
  operands: Readonly<Record<string, Shape | Tensor>>,
): void {
  const bytes = 4 * sizeOf(shape);
  const limit = largestStorageBuffer(gpu);
  if (bytes > limit) {
    throw new OpError(
      op,
      `output ${formatShape(shape)} needs ${bytes} bytes, more than this adapter's largest storage buffer (${limit} bytes)`,
      operands,
    );
  }
}

/** Whether two shapes are equal dimension by dimension. */
export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((dim, index) => dim === b[index]);
}

function present(named: Readonly<Record<string, Tensor | null | undefined>>): Record<string, Tensor> {
  return Object.fromEntries(
    Object.entries(named).filter((entry): entry is [string, Tensor] => entry[1] != null),
  );
}
