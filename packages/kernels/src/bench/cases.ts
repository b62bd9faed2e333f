/** Every kernel benchmark, in the order `cxr bench kernels` prints them. Each op file adds its cases. */

import { CONV2D_BENCH_CASES } from "../ops/conv2d/bench.ts";
import { IM2COL_BENCH_CASES } from "../ops/im2col/bench.ts";
import { MATMUL_BENCH_CASES } from "../ops/matmul/bench.ts";
import { POOL_BENCH_CASES } from "../ops/pooling/bench.ts";
import { SOFTMAX_BENCH_CASES } from "../ops/softmax/bench.ts";
import { ATTENTION_BENCH_CASES } from "./attention.ts";
import { NORM_BENCH_CASES } from "./norms.ts";
import type { BenchCase } from "./types.ts";

export const BENCH_CASES: BenchCase[] = [
  ...MATMUL_BENCH_CASES,
  ...CONV2D_BENCH_CASES,
  ...IM2COL_BENCH_CASES,
  ...POOL_BENCH_CASES,
  ...NORM_BENCH_CASES,
  ...SOFTMAX_BENCH_CASES,
  ...ATTENTION_BENCH_CASES,
];
