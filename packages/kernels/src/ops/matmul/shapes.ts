/**
 * Operand shapes of a matmul: checking them, the product's sizes, and where each operand element
 * lives in row-major storage (shared by the op, its variants and the float64 reference).
 */
import { OpError, type Shape, sizeOf } from "../../runtime/tensor.ts";

/** The size of one matmul: `batch` independent `[M, K] x [K, N]` products. */
export interface MatmulShape {
  batch: number;
  M: number;
  N: number;
  K: number;
}

/** Operand shapes resolved: sizes, which operand carries the batch, and the output shape. */
export interface MatmulPlan extends MatmulShape {
  /** False when the operand has no batch (2-D or all batch dims 1) and is reused for every batch. */
  aBatched: boolean;
  bBatched: boolean;
  outputShape: Shape;
}

/** Checks operand shapes and works out the product's sizes; shared by the GPU op and the reference. */
export function resolveMatmulShapes(
  aShape: Shape,
  bShape: Shape,
  options: { transposeA?: boolean; transposeB?: boolean } = {},
): MatmulPlan {
  if (aShape.length < 2 || bShape.length < 2) {
    throw new OpError("matmul", "operands need at least 2 dimensions", { a: aShape, b: bShape });
  }
  const [aRows, aColumns] = aShape.slice(-2);
  const [bRows, bColumns] = bShape.slice(-2);
  const M = options.transposeA ? aColumns : aRows;
  const K = options.transposeA ? aRows : aColumns;
  const bDepth = options.transposeB ? bColumns : bRows;
  const N = options.transposeB ? bRows : bColumns;
  if (K !== bDepth) {
    throw new OpError(
      "matmul",
      `inner dimensions differ: a gives K=${K}${options.transposeA ? " (transposed)" : ""}, b gives K=${bDepth}${options.transposeB ? " (transposed)" : ""}`,
      { a: aShape, b: bShape },
    );
  }
  const aBatchShape = aShape.slice(0, -2);
  const bBatchShape = bShape.slice(0, -2);
  const aBatch = sizeOf(aBatchShape);
  const bBatch = sizeOf(bBatchShape);
  const rank = Math.max(aBatchShape.length, bBatchShape.length);
  const padded = (shape: Shape) => [...new Array<number>(rank - shape.length).fill(1), ...shape];
  const aPadded = padded(aBatchShape);
  const bPadded = padded(bBatchShape);
  const batchShape = aPadded.map((dim, index) => Math.max(dim, bPadded[index]));
  const matches = (shape: number[]) => shape.every((dim, index) => dim === batchShape[index]);
  if (aBatch > 1 && bBatch > 1 && !(matches(aPadded) && matches(bPadded))) {
    throw new OpError(
      "matmul",
      "batch dimensions differ; they broadcast only when one operand's batch is 1 or absent",
      { a: aShape, b: bShape },
    );
  }
  return {
    batch: sizeOf(batchShape),
    M,
    N,
    K,
    aBatched: aBatch > 1,
    bBatched: bBatch > 1,
    outputShape: [...batchShape, M, N],
  };
}

/** Element offsets of operand (row, depth) / (depth, column) in row-major storage. */
export interface OperandLayout {
  batchStride: number;
  /** Stride of the output-row index m (for a) or output-column index n (for b). */
  outerStride: number;
  /** Stride of the contraction index k. */
  depthStride: number;
}

export function layoutOfA(shape: MatmulShape, batched: boolean, transposed: boolean): OperandLayout {
  return {
    batchStride: batched ? shape.M * shape.K : 0,
    outerStride: transposed ? 1 : shape.K,
    depthStride: transposed ? shape.M : 1,
  };
}

export function layoutOfB(shape: MatmulShape, batched: boolean, transposed: boolean): OperandLayout {
  return {
    batchStride: batched ? shape.K * shape.N : 0,
    outerStride: transposed ? shape.K : 1,
    depthStride: transposed ? 1 : shape.N,
  };
}
