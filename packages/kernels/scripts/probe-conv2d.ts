/**
 * Standalone probe: conv2d's three passes on the CPU variants next to matmul 1024^3, round-robin in
 * one process, each timed by wall clock and by the process's CPU time (all of llvmpipe's threads; far
 * less sensitive to other jobs on a shared machine than wall time). Shapes: the 8x128->128
 * @64x64 3x3 pad 1 and DenseNet's 16x256->128 @28x28 1x1. Packing is included, weights come from the
 * packed weight cache after the warm-up round (as in a step).
 *
 *   nice -n 10 bun packages/kernels/scripts/probe-conv2d.ts [rounds=3] [variants=cpu-subgroup,cpu-texture]
 */
import {
  type Conv2dVariant,
  conv2d,
  conv2dBackwardInput,
  conv2dBackwardWeight,
} from "../src/ops/conv2d/index.ts";
import { matmul } from "../src/ops/matmul/index.ts";
import { createGpu } from "../src/runtime/device.ts";
import { sizeOf, Tensor } from "../src/runtime/tensor.ts";

const gpu = await createGpu({ backend: "vulkan", profile: true });
const rnd = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
const cases: Record<string, [number[], number[], number]> = {
  "1x1": [[16, 256, 28, 28], [128, 256, 1, 1], 0],
  "3x3": [[8, 128, 64, 64], [128, 128, 3, 3], 1],
};
const rounds = Number(process.argv[2] ?? 3);
const jobs: { name: string; run: () => void; flops: number }[] = [];
const a = Tensor.upload(gpu, rnd(1024 * 1024), [1024, 1024]);
const b = Tensor.upload(gpu, rnd(1024 * 1024), [1024, 1024]);
jobs.push({ name: "matmul1024", run: () => matmul(a, b).release(), flops: 2 * 1024 ** 3 });
for (const [key, [xs, ws, padding]] of Object.entries(cases)) {
  const x = Tensor.upload(gpu, rnd(sizeOf(xs)), xs);
  const w = Tensor.upload(gpu, rnd(sizeOf(ws)), ws);
  const oshape = [xs[0], ws[0], xs[2], xs[3]];
  const go = Tensor.upload(gpu, rnd(sizeOf(oshape)), oshape);
  const flops = 2 * xs[0] * ws[0] * ws[1] * ws[2] * ws[3] * xs[2] * xs[3];
  for (const variant of (process.argv[3] ?? "cpu-subgroup,cpu-texture").split(",")) {
    const o = { padding, variant: variant as Conv2dVariant };
    jobs.push({ name: `${key} ${variant} fwd`, run: () => conv2d(x, w, null, o).release(), flops });
    jobs.push({
      name: `${key} ${variant} bi`,
      run: () => conv2dBackwardInput(go, w, xs, o).release(),
      flops,
    });
    jobs.push({
      name: `${key} ${variant} bw`,
      run: () => conv2dBackwardWeight(go, x, ws, o).release(),
      flops,
    });
  }
}
const wall: Record<string, number[]> = {};
const cpu: Record<string, number[]> = {};
for (const j of jobs) {
  j.run();
  await gpu.sync();
}
gpu.profiler.reset();
for (let r = 0; r < rounds; r++)
  for (const j of jobs) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    j.run();
    await gpu.sync();
    const c1 = process.cpuUsage(c0);
    (wall[j.name] ??= []).push(performance.now() - t0);
    (cpu[j.name] ??= []).push((c1.user + c1.system) / 1000);
  }
const med = (v: number[]) => [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)];
for (const j of jobs)
  console.log(
    j.name.padEnd(24),
    "wall",
    (j.flops / med(wall[j.name]) / 1e6).toFixed(1).padStart(6),
    "GFLOP/s;",
    (j.flops / med(cpu[j.name]) / 1e6).toFixed(1).padStart(6),
    "GFLOP/cpu-s",
  );
console.log(gpu.profiler.table());
