/** Every kernel benchmark, in the order `cxr bench kernels` prints them. Each op file adds its cases. */
import type { BenchCase } from "./types.ts";

export const BENCH_CASES: BenchCase[] = [];
