/** FLOPs and bytes of a matmul, for the profiler and the benchmarks. */
import { UNARY_FUNCTIONS } from "../unary/index.ts";
import type { MatmulActivation } from "./common.ts";
import type { MatmulShape } from "./shapes.ts";

/** FLOPs (multiply-add = 2, plus the epilogue) and bytes read and written once each. */
export function matmulCost(
  shape: MatmulShape,
  options: { bias?: boolean; activation?: MatmulActivation; aBatched?: boolean; bBatched?: boolean } = {},
): { flops: number; bytes: number } {
  const { batch, M, N, K } = shape;
  const outputs = batch * M * N;
  const activation = options.activation ?? "none";
  const epilogue = (options.bias ? 1 : 0) + (activation === "none" ? 0 : UNARY_FUNCTIONS[activation].flops);
  const aElements = (options.aBatched === false ? 1 : batch) * M * K;
  const bElements = (options.bBatched === false ? 1 : batch) * K * N;
  return {
    flops: 2 * outputs * K + epilogue * outputs,
    bytes: 4 * (aElements + bElements + outputs + (options.bias ? N : 0)),
  };
}
