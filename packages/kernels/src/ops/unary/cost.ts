/** FLOPs and bytes of the unary kernels, for the profiler. */
import { UNARY_FUNCTIONS } from "./functions.ts";
import type { UnaryKind } from "./reference.ts";

export function unaryCost(kind: UnaryKind, size: number) {
  return { flops: UNARY_FUNCTIONS[kind].flops * size, bytes: 8 * size };
}

export function unaryBackwardCost(kind: UnaryKind, size: number) {
  return { flops: (UNARY_FUNCTIONS[kind].flops + 1) * size, bytes: 12 * size };
}
