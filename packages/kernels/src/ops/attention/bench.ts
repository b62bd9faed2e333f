/**
 * Attention benchmarks: the issue's target shape (8 heads, 1024 and 2048 tokens, head size 64) forward
 * and forward+backward, the UNet block's self- and cross-attention (32x32 latent tokens, 2 heads of 64,
 * batch 2; 77 text tokens) forward+backward, and SD's cross-attention at a 64x64 latent (4096 latent
 * tokens attending to CLIP's 77 text tokens, batch 2 for classifier-free guidance, 5 heads of 64). Each
 * case runs the fused kernel next to our own matmul -> softmax -> matmul composition on the same
 * inputs: the issue's baseline (the composition is what a library without a fused kernel would run).
 * The cases also report working memory (linear vs quadratic growth) and, on a CPU adapter, the
 * process CPU time of fused and composed calls interleaved (less sensitive to other jobs than wall time).
 */

import type { BenchCase, BenchInstance } from "../../bench/types.ts";
import { benchValues } from "../../bench/values.ts";
import { backward, noGrad } from "../../runtime/autograd.ts";
import type { Gpu } from "../../runtime/device.ts";
import { Tensor } from "../../runtime/tensor.ts";
import {
  type AttentionBackward,
  type AttentionShape,
  attention,
  attentionComposed,
  attentionCost,
  chooseAttentionBackward,
  chooseAttentionVariant,
} from "./index.ts";

const COMPOSED_LABEL = "naive = our matmul-softmax-matmul composition";

interface AttentionInputs {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  release(): void;
}

function inputsFor(gpu: Gpu, shape: AttentionShape, trainable: boolean): AttentionInputs {
  const { batch, heads, queryLength, keyLength, headDim } = shape;
  const make = (length: number, seed: number) => {
    const tensor = Tensor.upload(gpu, benchValues(batch * heads * length * headDim, seed), [
      batch,
      heads,
      length,
      headDim,
    ]);
    return trainable ? tensor.trainable() : tensor;
  };
  const q = make(queryLength, 11);
  const k = make(keyLength, 13);
  const v = make(keyLength, 17);
  return {
    q,
    k,
    v,
    release: () => {
      for (const tensor of [q, k, v]) tensor.release();
    },
  };
}

type AttentionFunction = (q: Tensor, k: Tensor, v: Tensor) => Tensor;
/** The fused op with the given backward (default: the chooser's). */
const fusedWith =
  (backward?: AttentionBackward): AttentionFunction =>
  (q, k, v) =>
    attention(q, k, v, backward ? { backward } : {});
const fused = fusedWith();
const composed: AttentionFunction = (q, k, v) => attentionComposed(q, k, v);

/** Forward and backward through `fn`; gradients are released, so repeated calls do not accumulate. */
function trainingStep(fn: AttentionFunction, inputs: AttentionInputs, gradOutput: Tensor): void {
  const output = fn(inputs.q, inputs.k, inputs.v);
  backward(output, gradOutput);
  output.release();
  for (const tensor of [inputs.q, inputs.k, inputs.v]) {
    tensor.grad?.release();
    tensor.grad = null;
  }
}

/**
 * Pool bytes in use at the peak of one call, above what was in use when it started (the inputs):
 * the op's output plus every temporary. Synchronous: the pool counts allocations as they are recorded.
 */
function workingBytes(gpu: Gpu, call: () => void): number {
  gpu.pool.resetPeak();
  const before = gpu.pool.snapshot().inUseBytes;
  call();
  return gpu.pool.snapshot().peakInUseBytes - before;
}

const mebibytes = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/**
 * Process CPU time of one call and its GPU work, in ms. On a CPU adapter llvmpipe's worker threads run
 * in this process, so this counts the kernels' own work and hardly anything of other processes.
 */
async function cpuMilliseconds(gpu: Gpu, call: () => void): Promise<number> {
  await gpu.sync();
  const start = process.cpuUsage();
  call();
  await gpu.sync();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1000;
}

/** CPU-time rounds of fused and composed calls, interleaved so both see the same machine. */
export const CPU_TIME_ROUNDS = 3;

/** Median process CPU time of fused and composed calls, interleaved (CPU adapters only). */
async function cpuTimeReport(
  gpu: Gpu,
  fusedCall: () => void,
  composedCall: () => void,
): Promise<Record<string, string>> {
  if (gpu.kind !== "cpu") return {};
  const fusedTimes: number[] = [];
  const composedTimes: number[] = [];
  for (let round = 0; round < CPU_TIME_ROUNDS; round++) {
    fusedTimes.push(await cpuMilliseconds(gpu, fusedCall));
    composedTimes.push(await cpuMilliseconds(gpu, composedCall));
  }
  const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const fused = median(fusedTimes);
  const composed = median(composedTimes);
  return {
    [`CPU ms fused/composed (interleaved, median of ${CPU_TIME_ROUNDS})`]: `${fused.toFixed(0)} / ${composed.toFixed(0)} = ${(composed / fused).toFixed(2)}x`,
  };
}

/** Working memory of fused and composed forward at each length (8 heads of 64, batch 1). */
function forwardMemoryReport(gpu: Gpu, lengths: number[]): Record<string, string> {
  const report: Record<string, string> = {};
  for (const length of lengths) {
    const shape = { batch: 1, heads: 8, queryLength: length, keyLength: length, headDim: 64 };
    const inputs = inputsFor(gpu, shape, false);
    const measure = (fn: AttentionFunction) =>
      workingBytes(gpu, () => noGrad(() => fn(inputs.q, inputs.k, inputs.v)).release());
    report[`mem@${length} fused/composed`] = `${mebibytes(measure(fused))} / ${mebibytes(measure(composed))}`;
    inputs.release();
  }
  return report;
}

/** Working memory of one forward + backward, fused and composed, at each length (8 heads of 64). */
function trainingMemoryReport(
  gpu: Gpu,
  lengths: number[],
  fusedCall: AttentionFunction,
): Record<string, string> {
  const report: Record<string, string> = {};
  for (const length of lengths) {
    const shape = { batch: 1, heads: 8, queryLength: length, keyLength: length, headDim: 64 };
    const inputs = inputsFor(gpu, shape, true);
    const gradOutput = Tensor.upload(gpu, benchValues(8 * length * 64, 19), inputs.q.shape);
    const measure = (fn: AttentionFunction) => workingBytes(gpu, () => trainingStep(fn, inputs, gradOutput));
    report[`mem fwd+bwd@${length} fused/composed`] =
      `${mebibytes(measure(fusedCall))} / ${mebibytes(measure(composed))}`;
    inputs.release();
    gradOutput.release();
  }
  return report;
}

interface AttentionBenchSpec {
  shape: AttentionShape;
  /** Force the fused op's backward (to time the old one next to the default). */
  backward?: AttentionBackward;
  context: string;
  /** Time forward and backward together (a training step of the op) instead of forward alone. */
  withBackward?: boolean;
  targetSpeedup?: number;
  /** Lengths (B1 H8 D64) at which `extra()` measures working memory of both paths; else this shape's. */
  memoryLengths?: number[];
  /** Also report process CPU time of both paths, interleaved (`cpuTimeReport`). */
  cpuTime?: boolean;
}

function describeShape({ batch, heads, queryLength, keyLength, headDim }: AttentionShape): string {
  const lengths = queryLength === keyLength ? `${queryLength}` : `${queryLength}x${keyLength}`;
  return `B${batch} H${heads} L${lengths} D${headDim} fp32`;
}

function attentionCase(spec: AttentionBenchSpec): BenchCase {
  const cost = attentionCost(spec.shape);
  return {
    op: spec.withBackward ? "attentionBackward" : "attention",
    shape: `${describeShape(spec.shape)}${spec.withBackward ? ` fwd+bwd${spec.backward ? ` (${spec.backward})` : ""}` : ""}`,
    context: spec.context,
    targetSpeedup: spec.targetSpeedup,
    flops: cost.forwardFlops + (spec.withBackward ? cost.backwardFlops : 0),
    bytes: cost.forwardBytes + (spec.withBackward ? cost.backwardBytes : 0),
    async setup(gpu: Gpu): Promise<BenchInstance> {
      const inputs = inputsFor(gpu, spec.shape, spec.withBackward ?? false);
      const { batch, heads, queryLength, headDim } = spec.shape;
      const gradOutput = spec.withBackward
        ? Tensor.upload(gpu, benchValues(batch * heads * queryLength * headDim, 19), inputs.q.shape)
        : null;
      const call = (fn: AttentionFunction) => () => {
        if (gradOutput) trainingStep(fn, inputs, gradOutput);
        else fn(inputs.q, inputs.k, inputs.v).release();
      };
      const fusedCall = fusedWith(spec.backward);
      const variant = chooseAttentionVariant(gpu, spec.shape);
      const chosen = `fused variant chosen: ${variant}${
        spec.withBackward
          ? `, backward ${spec.backward ?? chooseAttentionBackward(gpu, spec.shape, variant)}`
          : ""
      }`;
      return {
        run: call(fusedCall),
        naive: call(composed),
        naiveLabel: `${COMPOSED_LABEL}; ${chosen}`,
        extra: async (): Promise<Record<string, string>> => {
          const cpu = spec.cpuTime ? await cpuTimeReport(gpu, call(fusedCall), call(composed)) : {};
          if (!gradOutput) {
            return { ...cpu, ...(spec.memoryLengths ? forwardMemoryReport(gpu, spec.memoryLengths) : {}) };
          }
          if (spec.memoryLengths)
            return { ...cpu, ...trainingMemoryReport(gpu, spec.memoryLengths, fusedCall) };
          const measure = (fn: AttentionFunction) =>
            workingBytes(gpu, () => trainingStep(fn, inputs, gradOutput));
          return {
            ...cpu,
            "mem fwd+bwd fused/composed": `${mebibytes(measure(fusedCall))} / ${mebibytes(measure(composed))}`,
          };
        },
        dispose: () => {
          inputs.release();
          gradOutput?.release();
        },
      };
    },
  };
}

export const ATTENTION_BENCH_CASES: BenchCase[] = [
  attentionCase({
    shape: { batch: 1, heads: 8, queryLength: 1024, keyLength: 1024, headDim: 64 },
    context: "issue target: self-attention, 8 heads x 1024 tokens x 64",
    targetSpeedup: 1,
    memoryLengths: [1024, 2048],
  }),
  attentionCase({
    shape: { batch: 1, heads: 8, queryLength: 1024, keyLength: 1024, headDim: 64 },
    context: "the same, forward and backward (one training step of the op), default backward",
    withBackward: true,
    targetSpeedup: 1.5,
    memoryLengths: [1024, 2048],
    cpuTime: true,
  }),
  attentionCase({
    shape: { batch: 1, heads: 8, queryLength: 2048, keyLength: 2048, headDim: 64 },
    context: "the same at 2048 tokens, forward and backward, default backward",
    withBackward: true,
    targetSpeedup: 1.5,
    cpuTime: true,
  }),
  attentionCase({
    shape: { batch: 1, heads: 8, queryLength: 1024, keyLength: 1024, headDim: 64 },
    context: "the same with the chunked-scores backward (the CPU default before chunked-gemm)",
    withBackward: true,
    backward: "chunked-scores",
    cpuTime: true,
  }),
  attentionCase({
    shape: { batch: 1, heads: 8, queryLength: 1024, keyLength: 1024, headDim: 64 },
    context: "the same with the old backward that recomputes the scores in both passes",
    withBackward: true,
    backward: "recompute",
  }),
  attentionCase({
    shape: { batch: 2, heads: 2, queryLength: 1024, keyLength: 1024, headDim: 64 },
    context:
      "UNet block self-attention (`cxr bench kernels --models`): 32x32 latent, 2 heads of 64, batch 2, fwd+bwd",
    withBackward: true,
    cpuTime: true,
  }),
  attentionCase({
    shape: { batch: 2, heads: 2, queryLength: 1024, keyLength: 77, headDim: 64 },
    context: "UNet block cross-attention: 32x32 latent x 77 text tokens, 2 heads of 64, batch 2, fwd+bwd",
    withBackward: true,
    cpuTime: true,
  }),
  attentionCase({
    shape: { batch: 2, heads: 5, queryLength: 4096, keyLength: 77, headDim: 64 },
    context: "UNet cross-attention: 64x64 latent tokens x 77 CLIP tokens, CFG batch 2",
  }),
  attentionCase({
    shape: { batch: 2, heads: 5, queryLength: 4096, keyLength: 77, headDim: 64 },
    context: "the same, forward and backward (training at a 64x64 latent)",
    withBackward: true,
    cpuTime: true,
  }),
];
