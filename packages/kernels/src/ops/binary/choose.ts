/**
 * Which binary variant runs, as a pure function of the sizes (the same on every adapter; tested
 * without a GPU in test/kernels/binary.test.ts).
 */
export type BinaryVariant = "flat" | "broadcast";
export const BINARY_VARIANTS: readonly BinaryVariant[] = ["flat", "broadcast"];

/** Equal sizes need no index arithmetic; anything broadcast reads through strides. */
export function chooseBinaryVariant(aSize: number, bSize: number, outputSize: number): BinaryVariant {
  return aSize === outputSize && bSize === outputSize ? "flat" : "broadcast";
}
