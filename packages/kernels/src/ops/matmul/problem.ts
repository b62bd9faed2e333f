/**
 * A matmul as the dispatchers see it: operands with their layout after folding batches, the fused
 * epilogue, and its uniforms and bindings (shared by every variant's dispatch).
 */
import type { Gpu } from "../../runtime/device.ts";
import { Tensor } from "../../runtime/tensor.ts";
import { Params } from "../../runtime/uniforms.ts";
import { ACTIVATION_CODES, type MatmulActivation } from "./common.ts";
import { matmulCost } from "./cost.ts";
import { layoutOfA, layoutOfB, type MatmulShape } from "./shapes.ts";

/** One operand as the kernels see it: a buffer and element strides. */
export interface Operand {
  tensor: Tensor;
  /** Stored transposed ([K, M] for a, [N, K] for b). */
  transposed: boolean;
  batched: boolean;
}

/** A fully resolved product: sizes plus the operand layouts, after folding batches where possible. */
export interface MatmulProblem extends MatmulShape {
  a: Operand;
  b: Operand;
}

/**
 * Builds a problem. When only `a` carries the batch and is not transposed, `[batch, M, K]` rows are
 * contiguous, so the batch folds into M: one larger product instead of `batch` small ones (and the
 * gradient of the shared `b` becomes one product over batch * M, with no reduction pass).
 */
export function makeProblem(shape: MatmulShape, a: Operand, b: Operand): MatmulProblem {
  if (shape.batch > 1 && a.batched && !b.batched && !a.transposed) {
    return { batch: 1, M: shape.batch * shape.M, N: shape.N, K: shape.K, a: { ...a, batched: false }, b };
  }
  return { ...shape, a, b };
}

export const stridesOfA = (problem: MatmulProblem) =>
  layoutOfA(problem, problem.a.batched, problem.a.transposed);
export const stridesOfB = (problem: MatmulProblem) =>
  layoutOfB(problem, problem.b.batched, problem.b.transposed);

export interface Epilogue {
  bias: Tensor | null;
  activation: MatmulActivation;
  /** Where to keep z = product + bias for backward; null when not needed. */
  preActivation: Tensor | null;
}

/** Stand-ins bound when there is no bias / no pre-activation to keep (every binding must be bound). */
interface StandIns {
  noBias: Tensor;
  noPreActivation: Tensor;
}

const standInsByGpu = new WeakMap<Gpu, StandIns>();

function standInsOf(gpu: Gpu): StandIns {
  let standIns = standInsByGpu.get(gpu);
  if (!standIns) {
    // retain(): these outlive any tidy() scope that happens to create them.
    standIns = { noBias: Tensor.zeros(gpu, [4]).retain(), noPreActivation: Tensor.empty(gpu, [4]).retain() };
    standInsByGpu.set(gpu, standIns);
  }
  return standIns;
}

/** Frees the stand-in buffers (they are made again when needed). */
export function releaseStandIns(gpu: Gpu): void {
  const standIns = standInsByGpu.get(gpu);
  if (!standIns) return;
  gpu.flush(); // recorded dispatches may still reference them
  standIns.noBias.release();
  standIns.noPreActivation.release();
  standInsByGpu.delete(gpu);
}

export function epilogueParams(problem: MatmulShape, epilogue: Epilogue): Params {
  return new Params().u32(
    problem.N,
    epilogue.bias ? 1 : 0,
    ACTIVATION_CODES[epilogue.activation],
    epilogue.preActivation ? 1 : 0,
  );
}

export function epilogueBindings(gpu: Gpu, output: Tensor, epilogue: Epilogue): Tensor[] {
  const standIns = standInsOf(gpu);
  return [epilogue.bias ?? standIns.noBias, output, epilogue.preActivation ?? standIns.noPreActivation];
}

export function problemCost(problem: MatmulProblem, epilogue: Epilogue) {
  return matmulCost(problem, {
    bias: epilogue.bias !== null,
    activation: epilogue.activation,
    aBatched: problem.a.batched,
    bBatched: problem.b.batched,
  });
}
