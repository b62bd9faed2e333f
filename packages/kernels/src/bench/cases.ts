/** Every kernel benchmark, in the order `cxr bench kernels` prints them. Each op file adds its cases. */

import { ATTENTION_BENCH_CASES } from "../ops/attention/bench.ts";
import { BATCH_NORM_BENCH_CASES } from "../ops/batchnorm/bench.ts";
import { CONV2D_BENCH_CASES } from "../ops/conv2d/bench.ts";
import { GROUP_NORM_BENCH_CASES } from "../ops/groupnorm/bench.ts";
import { IM2COL_BENCH_CASES } from "../ops/im2col/bench.ts";
import { LAYER_NORM_BENCH_CASES } from "../ops/layernorm/bench.ts";
import { MATMUL_BENCH_CASES } from "../ops/matmul/bench.ts";
import { POOL_BENCH_CASES } from "../ops/pooling/bench.ts";
import { REDUCE_BENCH_CASES } from "../ops/reduce/bench.ts";
import { SOFTMAX_BENCH_CASES } from "../ops/softmax/bench.ts";
import type { BenchCase } from "./types.ts";

export const BENCH_CASES: BenchCase[] = [
  ...MATMUL_BENCH_CASES,
  ...CONV2D_BENCH_CASES,
  ...GROUP_NORM_BENCH_CASES,
  ...BATCH_NORM_BENCH_CASES,
  ...LAYER_NORM_BENCH_CASES,
  ...REDUCE_BENCH_CASES,
  ...IM2COL_BENCH_CASES,
  ...POOL_BENCH_CASES,
  ...SOFTMAX_BENCH_CASES,
  ...ATTENTION_BENCH_CASES,
];
