/**
 * Standalone probe: kernel shapes of the subgroup-broadcast attention (shared rows per block x rows per
 * invocation, forward and backward separately) timed side by side in one process at B1 H8 L D64, next
 * to the composition: forward, and forward + backward (chunked-scores), wall and process CPU time
 * (all of llvmpipe's threads: far less sensitive to other jobs), round-robin, each candidate's output
 * and dK checked against cpu-rows first.
 *
 *   nice -n 10 bun packages/kernels/scripts/probe-attention.ts [length=1024] [rounds=5] [candidates]
 *
 * A candidate is `FBxFR/BBxBR` (forward block x rows, backward block x rows; `FBxFR` alone uses the
 * same for both), comma-separated; default `32x4/16x2` (cpu-subgroup's shapes).
 */
import { chunkedScoresKernels } from "../src/ops/attention/chunked-scores.ts";
import { type AttentionVariantSpec, attentionKernels } from "../src/ops/attention/common.ts";
import { CPU_ROWS_SPEC } from "../src/ops/attention/cpu-rows.ts";
import {
  ATTENTION_KERNELS,
  ATTENTION_SPECS,
  attention,
  attentionComposed,
} from "../src/ops/attention/index.ts";
import { backward } from "../src/runtime/autograd.ts";
import { createGpu } from "../src/runtime/device.ts";
import { Tensor } from "../src/runtime/tensor.ts";

const length = Number(process.argv[2] ?? 1024);
const rounds = Number(process.argv[3] ?? 5);
const shapeOf = (text: string) => {
  const [block, rowsPerInvocation] = text.split("x").map(Number);
  if (!(block % 8 === 0 && rowsPerInvocation >= 1)) throw new Error(`bad candidate shape "${text}"`);
  return { block, rowsPerInvocation };
};
const candidates = (process.argv[4] ?? "32x4/16x2").split(",").map((text) => {
  const [forward, backward = forward] = text.split("/");
  return { name: text, spec: { ...CPU_ROWS_SPEC, forward: shapeOf(forward), backward: shapeOf(backward) } };
});
const gpu = await createGpu({ backend: "vulkan" });
const D = 64;
const H = 8;
const values = (n: number, seed: number) =>
  Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + seed));
const make = (seed: number) =>
  Tensor.upload(gpu, values(H * length * D, seed), [1, H, length, D]).trainable();
const q = make(1);
const k = make(2);
const v = make(3);
// The probe swaps cpu-rows' kernels and shapes in place (one process, one pipeline cache).
const kernels = ATTENTION_KERNELS as Record<string, unknown>;
const specs = ATTENTION_SPECS as Record<string, AttentionVariantSpec>;
const original = { kernels: kernels["cpu-rows"], spec: specs["cpu-rows"] };
const use = (spec: AttentionVariantSpec | null) => {
  kernels["cpu-rows"] = spec
    ? { ...attentionKernels(spec), ...chunkedScoresKernels(spec) }
    : original.kernels;
  specs["cpu-rows"] = spec ?? original.spec;
};
async function run(withBackward: boolean, composed = false) {
  const out = composed ? attentionComposed(q, k, v) : attention(q, k, v, { variant: "cpu-rows" });
  if (withBackward) backward(out, Tensor.upload(gpu, values(H * length * D, 9), [1, H, length, D]));
  const result = await out.download();
  const grad = withBackward ? await k.grad!.download() : null;
  for (const t of [q, k, v]) {
    t.grad?.release();
    (t as { grad: unknown }).grad = null;
  }
  out.release();
  return { result, grad };
}
const largest = (a: Float32Array, b: Float32Array) =>
  a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
const reference = await run(true);
for (const c of candidates) {
  use(c.spec);
  const t0 = performance.now();
  const got = await run(true);
  console.log(
    `${c.name}: first run (compile) ${(performance.now() - t0).toFixed(0)} ms, max |diff| from cpu-rows: output ${largest(got.result, reference.result).toExponential(2)}, dK ${largest(got.grad!, reference.grad!).toExponential(2)}`,
  );
}
use(null);
await run(true, true);
const rows = [{ name: "cpu-rows", spec: null }, ...candidates, { name: "composed", spec: null }];
const times = new Map<string, { fw: number[]; fwCpu: number[]; fb: number[]; fbCpu: number[] }>();
for (let round = 0; round < rounds; round++) {
  for (const c of rows) {
    use(c.spec);
    const entry = times.get(c.name) ?? { fw: [], fwCpu: [], fb: [], fbCpu: [] };
    for (const withBackward of [false, true]) {
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await run(withBackward, c.name === "composed");
      const wall = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      (withBackward ? entry.fb : entry.fw).push(wall);
      (withBackward ? entry.fbCpu : entry.fwCpu).push((cpu.user + cpu.system) / 1000);
    }
    times.set(c.name, entry);
  }
}
const median = (x: number[]) => [...x].sort((a, b) => a - b)[Math.floor(x.length / 2)];
for (const [name, e] of times) {
  console.log(
    `${name.padEnd(12)} fwd ${median(e.fw).toFixed(1)} ms (CPU ${median(e.fwCpu).toFixed(0)})  fwd+bwd ${median(e.fb).toFixed(1)} ms (CPU ${median(e.fbCpu).toFixed(0)})`,
  );
}
process.exit(0);
