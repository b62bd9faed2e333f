/** Philox rounds are ~10 multiply-hi/lo pairs; counted as integer "FLOPs" for the profiler. */
export function randomCost(kind: "uniform" | "normal", size: number) {
  const blocks = Math.ceil(size / 4) + 1;
  return { flops: blocks * (kind === "uniform" ? 130 : 200), bytes: 4 * size };
}
