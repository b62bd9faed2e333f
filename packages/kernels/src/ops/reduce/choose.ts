/**
 * The reductions have one design ("chunked": one invocation per (output, chunk), further passes
 * until one value per output is left); what depends on the adapter is how long a chunk is. A pure
 * function of the adapter kind and the pass's shape (tested without a GPU in test/kernels/reduce.test.ts).
 */
import type { AdapterKind } from "../../runtime/device.ts";

export type ReduceVariant = "chunked";
export const REDUCE_VARIANTS: readonly ReduceVariant[] = ["chunked"];

/** Invocations that keep every core (lavapipe) or every SM (GPU) busy. */
export function parallelTarget(adapter: { readonly kind: AdapterKind }): number {
  return adapter.kind === "cpu" ? 4096 : 65536;
}

/** Chunk length along the reduced axis for `outputs` independent reductions of `length` each. */
export function reductionChunkLength(
  adapter: { readonly kind: AdapterKind },
  outputs: number,
  length: number,
): number {
  const minimumChunk = 32;
  const target = parallelTarget(adapter);
  if (outputs >= target || length <= minimumChunk) return length;
  const chunks = Math.min(Math.ceil(target / outputs), Math.ceil(length / minimumChunk));
  return Math.ceil(length / chunks);
}
