/** FLOPs and bytes of the cross-entropy kernels, for the profiler. */

/** The per-row passes (forward rows, backward): ~6 FLOPs per logit. */
export function crossEntropyCost(rows: number, classes: number) {
  return { flops: 6 * rows * classes, bytes: 4 * (rows * classes + 3 * rows) };
}

/** The sum pass: two adds per row. */
export function crossEntropySumCost(rows: number) {
  return { flops: 2 * rows, bytes: 8 * rows };
}
