/**
 * The adapter's roofline for f32 arithmetic, measured in the same run as the kernel benchmarks: a
 * register-only WGSL kernel in which every invocation runs a long chain of independent vec4 `fma`s
 * on registers (no memory traffic but one final store), with enough invocations to fill the
 * adapter. The peak over a few accumulator counts is the adapter's f32 FMA rate in GFLOP/s; every
 * kernel case is then also printed as a fraction of it.
 *
 * The chain cannot be optimised away silently: multiplier and addend come from a uniform (the
 * compiler cannot fold them), the stored sum depends on every iteration, and the result is checked
 * against `fmaChainReference` on the CPU after each measurement. With multiplier 1 and an integer
 * addend every value is an integer below 2^24, so the check is exact whether or not the adapter
 * fuses the multiply-add.
 */
import type { Gpu } from "../runtime/device.ts";
import { grid, LINEAR_INDEX_WGSL, launch, wgsl } from "../runtime/kernel.ts";
import { Tensor } from "../runtime/tensor.ts";
import { Params } from "../runtime/uniforms.ts";

const WORKGROUP_SIZE = 64;
/** Statements per loop trip: each accumulator gets this many fmas in a row before the branch. */
export const ROOFLINE_UNROLL = 8;
/** Keeps every value an exact integer in f32: start (< 512) + steps * addend * accumulators < 2^24. */
const MAX_CHAIN = 2 ** 18;

const ROOFLINE_WGSL = `
struct Params { iterations: u32, invocations: u32, multiplier: f32, addend: f32 }
@group(0) @binding(0) var<storage, read_write> result: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}

@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, ${WORKGROUP_SIZE}u);
  if (index >= params.invocations) { return; }
  let m = vec4<f32>(params.multiplier);
  let c = vec4<f32>(params.addend);
  let base = f32(index % 256u);
{{declare}}
  for (var i = 0u; i < params.iterations; i++) {
{{body}}
  }
  result[index] = {{sum}};
}`;

/** The exact WGSL of the roofline kernel with `accumulators` independent vec4 chains. */
export function rooflineSource(accumulators: number): string {
  if (!Number.isInteger(accumulators) || accumulators < 1 || accumulators > 16) {
    throw new RangeError(`roofline: accumulators must be an integer in 1..16, got ${accumulators}`);
  }
  const names = Array.from({ length: accumulators }, (_, j) => `a${j}`);
  const declare = names
    .map(
      (name, j) =>
        `  var ${name} = vec4<f32>(base + ${4 * j}.0, base + ${4 * j + 1}.0, base + ${4 * j + 2}.0, base + ${4 * j + 3}.0);`,
    )
    .join("\n");
  const step = names.map((name) => `${name} = fma(${name}, m, c);`).join(" ");
  const body = Array.from({ length: ROOFLINE_UNROLL }, () => `    ${step}`).join("\n");
  return wgsl(ROOFLINE_WGSL, { declare, body, sum: names.join(" + ") });
}

export interface FmaChain {
  accumulators: number;
  /** Loop trips; each runs ROOFLINE_UNROLL fmas per accumulator. */
  iterations: number;
  multiplier: number;
  addend: number;
}

/** One lane's chain: `steps` times x = x * multiplier + addend in f32 (a multiply and an add, each rounded). */
function chainEnd(start: number, steps: number, multiplier: number, addend: number): number {
  const m = Math.fround(multiplier);
  const c = Math.fround(addend);
  let x = Math.fround(start);
  for (let step = 0; step < steps; step++) x = Math.fround(Math.fround(x * m) + c);
  return x;
}

/**
 * The CPU value one invocation stores: every accumulator lane starts at (index mod 256) + 4 x its
 * accumulator + its lane, runs iterations * ROOFLINE_UNROLL steps of the chain, and the
 * accumulators are summed in order. `ends` caches chain ends by start value.
 */
export function fmaChainReference(
  index: number,
  chain: FmaChain,
  ends: Map<number, number> = new Map(),
): [number, number, number, number] {
  const base = index % 256;
  const steps = chain.iterations * ROOFLINE_UNROLL;
  const out: [number, number, number, number] = [0, 0, 0, 0];
  for (let lane = 0; lane < 4; lane++) {
    let sum = 0;
    for (let j = 0; j < chain.accumulators; j++) {
      const start = base + 4 * j + lane;
      let x = ends.get(start);
      if (x === undefined) {
        x = chainEnd(start, steps, chain.multiplier, chain.addend);
        ends.set(start, x);
      }
      sum = j === 0 ? x : Math.fround(sum + x);
    }
    out[lane] = sum;
  }
  return out;
}

/** FLOPs of one dispatch: 2 per lane per fma (the final sum is not counted). */
export function rooflineFlops(invocations: number, chain: FmaChain): number {
  return invocations * chain.iterations * ROOFLINE_UNROLL * chain.accumulators * 4 * 2;
}

/** Records one dispatch of the roofline kernel into `out` ([invocations, 4]). */
export function dispatchRoofline(gpu: Gpu, out: Tensor, chain: FmaChain): void {
  const invocations = out.shape[0];
  if (chain.iterations * ROOFLINE_UNROLL > MAX_CHAIN) {
    throw new RangeError(`roofline: at most ${MAX_CHAIN / ROOFLINE_UNROLL} iterations keep the check exact`);
  }
  launch(
    gpu,
    { name: "roofline-fma", variant: `${chain.accumulators}xvec4`, code: rooflineSource(chain.accumulators) },
    {
      bindings: [out],
      params: new Params().u32(chain.iterations, invocations).f32(chain.multiplier, chain.addend),
      workgroups: grid(invocations, WORKGROUP_SIZE),
      flops: rooflineFlops(invocations, chain),
      bytes: invocations * 16,
    },
  );
}

/**
 * Runs the chain on the GPU and compares every stored vec4 with `fmaChainReference`; returns the
 * first mismatch as text, or null when all agree exactly.
 */
export async function checkRoofline(gpu: Gpu, invocations: number, chain: FmaChain): Promise<string | null> {
  const out = Tensor.empty(gpu, [invocations, 4]);
  try {
    dispatchRoofline(gpu, out, chain);
    return compareRooflineOutput(await out.download(), chain);
  } finally {
    out.release();
  }
}

/**
 * Compares one dispatch's output ([invocations, 4]) with the CPU chain, every invocation exactly;
 * returns the first mismatch as text, or null. Each distinct start value's chain is run once.
 */
export function compareRooflineOutput(values: Float32Array, chain: FmaChain): string | null {
  const invocations = values.length / 4;
  const ends = new Map<number, number>();
  const expected = Array.from({ length: Math.min(256, invocations) }, (_, base) =>
    fmaChainReference(base, chain, ends),
  );
  for (let index = 0; index < invocations; index++) {
    const want = expected[index % 256];
    for (let lane = 0; lane < 4; lane++) {
      const got = values[index * 4 + lane];
      if (got !== want[lane]) {
        return `invocation ${index} lane ${lane}: GPU ${got}, CPU ${want[lane]} (${chain.accumulators} accumulators, ${chain.iterations} iterations)`;
      }
    }
  }
  return null;
}

export interface RooflineVariant {
  accumulators: number;
  iterations: number;
  invocations: number;
  milliseconds: number;
  gflopsPerSecond: number;
}

export interface Roofline {
  /** The best variant's rate: the adapter's measured peak f32 FMA rate. */
  gflopsPerSecond: number;
  variants: RooflineVariant[];
}

export interface RooflineOptions {
  /** Independent vec4 chains per invocation to try; the best is the roofline. */
  accumulators?: number[];
  /** Invocations per dispatch (default: 64 Ki on a CPU adapter, 4 Mi on a GPU). */
  invocations?: number;
  /** Grow the chain until one dispatch takes at least this long (ms). */
  targetMs?: number;
  repeats?: number;
}

async function timeDispatch(gpu: Gpu, out: Tensor, chain: FmaChain, repeats: number): Promise<number> {
  const samples: number[] = [];
  for (let run = 0; run < repeats; run++) {
    const begin = performance.now();
    dispatchRoofline(gpu, out, chain);
    await gpu.sync();
    samples.push(performance.now() - begin);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)];
}

async function fastest(gpu: Gpu, out: Tensor, chain: FmaChain): Promise<number> {
  return Math.min(await timeDispatch(gpu, out, chain, 1), await timeDispatch(gpu, out, chain, 1));
}

/** Measures the roofline; throws if the kernel's result disagrees with the CPU chain. */
export async function measureRoofline(gpu: Gpu, options: RooflineOptions = {}): Promise<Roofline> {
  const accumulatorCounts = options.accumulators ?? [2, 4, 8];
  const invocations = options.invocations ?? (gpu.kind === "cpu" ? 65536 : 4 * 2 ** 20);
  const targetMs = options.targetMs ?? 150;
  const repeats = options.repeats ?? 3;
  const out = Tensor.empty(gpu, [invocations, 4]);
  const variants: RooflineVariant[] = [];
  try {
    for (const accumulators of accumulatorCounts) {
      const maxIterations = Math.floor(MAX_CHAIN / ROOFLINE_UNROLL);
      // At least 1024 fmas per chain, so the final store and the dispatch are a small part.
      let chain: FmaChain = { accumulators, iterations: 1024 / ROOFLINE_UNROLL, multiplier: 1, addend: 1 };
      dispatchRoofline(gpu, out, chain);
      await gpu.sync(); // compile
      // Grow the chain until a dispatch takes targetMs; the faster of two samples, so one
      // scheduling hiccup on a loaded machine does not stop the growth early.
      let milliseconds = await fastest(gpu, out, chain);
      while (milliseconds < targetMs && chain.iterations < maxIterations) {
        const factor = Math.min(16, Math.max(2, Math.ceil(targetMs / Math.max(milliseconds, 0.05))));
        chain = { ...chain, iterations: Math.min(maxIterations, chain.iterations * factor) };
        milliseconds = await fastest(gpu, out, chain);
      }
      milliseconds = await timeDispatch(gpu, out, chain, repeats);
      const mismatch = compareRooflineOutput(await out.download(), chain);
      if (mismatch) throw new Error(`roofline kernel disagrees with the CPU chain: ${mismatch}`);
      variants.push({
        accumulators,
        iterations: chain.iterations,
        invocations,
        milliseconds,
        gflopsPerSecond: rooflineFlops(invocations, chain) / milliseconds / 1e6,
      });
    }
  } finally {
    out.release();
    await gpu.sync();
  }
  return { gflopsPerSecond: Math.max(...variants.map((variant) => variant.gflopsPerSecond)), variants };
}

export function formatRoofline(roofline: Roofline): string {
  const best = roofline.variants.find((variant) => variant.gflopsPerSecond === roofline.gflopsPerSecond);
  const tried = roofline.variants
    .map((variant) => `${variant.accumulators}xvec4 ${variant.gflopsPerSecond.toFixed(1)}`)
    .join(", ");
  return `roofline: ${roofline.gflopsPerSecond.toFixed(1)} GFLOP/s peak f32 FMA (register-only vec4 fma chains, ${best?.invocations ?? 0} invocations x ${(best?.iterations ?? 0) * ROOFLINE_UNROLL} fmas; ${tried}; result checked against the CPU)`;
}
