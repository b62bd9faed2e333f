/**
 * Standalone probe: candidate WGSL forms of the CPU-adapter matmul core timed side by side, in one
 * process, against today's `cpu-register-blocked` variant (the real op, packing included). Every
 * candidate packs both operands the same way (4 consecutive k per rgba32float texel, by the copy
 * engine) and is checked against a float64 product on sampled outputs before it is timed.
 *
 *   nice -n 19 bun packages/kernels/scripts/probe-matmul.ts [size=1024] [rounds=3] [filter]
 */

import { benchValues } from "../src/bench/values.ts";
import { matmul } from "../src/ops/matmul/index.ts";
import { createGpu } from "../src/runtime/device.ts";
import { launch } from "../src/runtime/kernel.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { Params } from "../src/runtime/uniforms.ts";

const size = Number(process.argv[2] ?? 1024);
const rounds = Number(process.argv[3] ?? 3);
const filter = process.argv[4] ?? "";
const M = size;
const N = size;
const K = size;
const KT = K / 4;

interface Candidate {
  name: string;
  /** rows per lane, columns per workgroup (uniform across lanes), workgroup size */
  rows: number;
  columns: number;
  workgroup: number;
  bFrom: "texture" | "buffer" | "subgroup";
  form: "dot" | "fma";
  unroll: number;
}

/** Straight-line WGSL: lane owns `rows` rows; the workgroup's `columns` columns are uniform loads. */
function source(c: Candidate): string {
  const lines: string[] = [];
  if (c.bFrom === "subgroup") lines.push("enable subgroups;");
  lines.push("@group(0) @binding(0) var A: texture_2d<f32>;");
  lines.push(
    c.bFrom !== "buffer"
      ? "@group(0) @binding(1) var B: texture_2d<f32>;"
      : "@group(0) @binding(1) var<storage, read> B: array<vec4<f32>>;",
  );
  lines.push("@group(0) @binding(2) var<storage, read_write> out: array<f32>;");
  lines.push("struct P { M: u32, N: u32, KT: u32, pad: u32 }");
  lines.push("@group(0) @binding(3) var<uniform> p: P;");
  lines.push(`@compute @workgroup_size(${c.workgroup})`);
  lines.push(
    "fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32, @builtin(subgroup_invocation_id) sgLane: u32) {".replace(
      c.bFrom === "subgroup" ? "" : ", @builtin(subgroup_invocation_id) sgLane: u32",
      "",
    ),
  );
  lines.push(`  let row0 = (wid.y * ${c.workgroup}u + lane) * ${c.rows}u;`);
  lines.push(`  let col0 = wid.x * ${c.columns}u;`);
  for (let i = 0; i < c.rows; i++)
    for (let j = 0; j < c.columns; j++) lines.push(`  var acc_${i}_${j} = 0.0;`);
  lines.push(`  for (var k0 = 0u; k0 < p.KT; k0 += ${c.unroll}u) {`);
  for (let u = 0; u < c.unroll; u++) {
    lines.push(`    let k${u} = k0 + ${u}u;`);
    for (let i = 0; i < c.rows; i++)
      lines.push(`    let a${u}_${i} = textureLoad(A, vec2<u32>(k${u}, row0 + ${i}u), 0);`);
    if (c.bFrom === "subgroup")
      for (let s = 0; s < c.columns / 8; s++)
        lines.push(
          `    let own${u}_${s} = textureLoad(B, vec2<u32>(k${u}, col0 + ${s * 8}u + sgLane % 8u), 0);`,
        );
    for (let j = 0; j < c.columns; j++) {
      lines.push(
        c.bFrom === "subgroup"
          ? `    let b${u}_${j} = subgroupBroadcast(own${u}_${Math.floor(j / 8)}, ${j % 8}u);`
          : c.bFrom === "texture"
            ? `    let b${u}_${j} = textureLoad(B, vec2<u32>(k${u}, col0 + ${j}u), 0);`
            : `    let b${u}_${j} = B[(col0 + ${j}u) * p.KT + k${u}];`,
      );
      for (let i = 0; i < c.rows; i++) {
        const a = `a${u}_${i}`;
        const b = `b${u}_${j}`;
        const acc = `acc_${i}_${j}`;
        lines.push(
          c.form === "dot"
            ? `    ${acc} += dot(${a}, ${b});`
            : `    ${acc} = fma(${a}.w, ${b}.w, fma(${a}.z, ${b}.z, fma(${a}.y, ${b}.y, fma(${a}.x, ${b}.x, ${acc}))));`,
        );
      }
    }
  }
  lines.push("  }");
  for (let i = 0; i < c.rows; i++)
    for (let j = 0; j < c.columns; j++)
      lines.push(`  out[(row0 + ${i}u) * p.N + col0 + ${j}u] = acc_${i}_${j};`);
  lines.push("}");
  return lines.join("\n");
}

const values = benchValues;

const gpu = await createGpu({});
const aData = values(M * K, 3);
const bData = values(N * K, 5); // b is [N, K]: product a b^T
const a = Tensor.upload(gpu, aData, [M, K]);
const b = Tensor.upload(gpu, bData, [N, K]);
const usage = GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST;
const texA = gpu.device.createTexture({ size: [KT, M], format: "rgba32float", usage });
const texB = gpu.device.createTexture({ size: [KT, N], format: "rgba32float", usage });
const out = Tensor.upload(gpu, new Float32Array(M * N), [M, N]);

function packBoth(): void {
  const encoder = gpu.commandEncoder();
  encoder.copyBufferToTexture({ buffer: a.bufferFor("read"), bytesPerRow: 4 * K }, { texture: texA }, [
    KT,
    M,
  ]);
  encoder.copyBufferToTexture({ buffer: b.bufferFor("read"), bytesPerRow: 4 * K }, { texture: texB }, [
    KT,
    N,
  ]);
}

function runCandidate(c: Candidate, code: string): void {
  packBoth();
  launch(
    gpu,
    { name: "probe", variant: c.name, code },
    {
      bindings: [texA.createView(), c.bFrom !== "buffer" ? texB.createView() : b, out],
      params: new Params().u32(M, N, KT, 0),
      workgroups: [N / c.columns, M / (c.rows * c.workgroup), 1],
      flops: 2 * M * N * K,
      bytes: 0,
    },
  );
}

async function check(name: string): Promise<void> {
  const got = await out.download();
  let worst = 0;
  for (let s = 0; s < 64; s++) {
    const i = (s * 977) % M;
    const j = (s * 613 + 5) % N;
    let sum = 0;
    for (let k = 0; k < K; k++) sum += aData[i * K + k] * bData[j * K + k];
    worst = Math.max(worst, Math.abs(sum - got[i * N + j]));
  }
  if (!(worst < 1e-3)) throw new Error(`${name}: wrong result, max error ${worst}`);
  out.write(new Float32Array(M * N));
}

const candidates: Candidate[] = [];
for (const [rows, columns, workgroup] of [
  [1, 16, 16],
  [2, 8, 16],
  [2, 16, 16],
  [4, 8, 16],
  [1, 32, 16],
  [4, 4, 16],
  [2, 8, 64],
  [1, 16, 64],
] as const) {
  candidates.push({
    name: `r${rows}c${columns}w${workgroup}-tex-dot`,
    rows,
    columns,
    workgroup,
    bFrom: "texture",
    form: "dot",
    unroll: 1,
  });
}
for (const [rows, columns, workgroup] of [
  [2, 8, 16],
  [4, 8, 16],
  [2, 16, 16],
  [4, 16, 16],
  [8, 8, 16],
  [2, 32, 16],
  [4, 8, 64],
  [4, 8, 8],
  [1, 32, 16],
  [1, 64, 16],
  [2, 64, 16],
  [4, 32, 16],
  [2, 32, 32],
  [2, 32, 8],
  [2, 24, 16],
  [3, 32, 16],
  [4, 64, 16],
  [8, 32, 16],
  [8, 16, 16],
  [4, 32, 8],
  [4, 32, 32],
] as const) {
  candidates.push({
    name: `r${rows}c${columns}w${workgroup}-sg-dot`,
    rows,
    columns,
    workgroup,
    bFrom: "subgroup",
    form: "dot",
    unroll: 1,
  });
}
candidates.push({
  name: "r2c32w16-sg-dot-u2",
  rows: 2,
  columns: 32,
  workgroup: 16,
  bFrom: "subgroup",
  form: "dot",
  unroll: 2,
});
candidates.push({
  name: "r4c32w16-sg-fma",
  rows: 4,
  columns: 32,
  workgroup: 16,
  bFrom: "subgroup",
  form: "fma",
  unroll: 1,
});
candidates.push({
  name: "r4c32w16-sg-dot-u2",
  rows: 4,
  columns: 32,
  workgroup: 16,
  bFrom: "subgroup",
  form: "dot",
  unroll: 2,
});
candidates.push({
  name: "r2c32w16-sg-fma",
  rows: 2,
  columns: 32,
  workgroup: 16,
  bFrom: "subgroup",
  form: "fma",
  unroll: 1,
});
candidates.push({
  name: "r4c8w16-sg-fma",
  rows: 4,
  columns: 8,
  workgroup: 16,
  bFrom: "subgroup",
  form: "fma",
  unroll: 1,
});
candidates.push({
  name: "r2c8w16-buf-dot",
  rows: 2,
  columns: 8,
  workgroup: 16,
  bFrom: "buffer",
  form: "dot",
  unroll: 1,
});
candidates.push({
  name: "r1c16w16-buf-dot",
  rows: 1,
  columns: 16,
  workgroup: 16,
  bFrom: "buffer",
  form: "dot",
  unroll: 1,
});
candidates.push({
  name: "r2c8w16-tex-fma",
  rows: 2,
  columns: 8,
  workgroup: 16,
  bFrom: "texture",
  form: "fma",
  unroll: 1,
});
candidates.push({
  name: "r2c8w16-tex-dot-u2",
  rows: 2,
  columns: 8,
  workgroup: 16,
  bFrom: "texture",
  form: "dot",
  unroll: 2,
});
const chosen = candidates.filter(
  (c) =>
    filter.split(",").some((f) => c.name.includes(f)) &&
    M % (c.rows * c.workgroup) === 0 &&
    N % c.columns === 0,
);

type Runner = { name: string; run: () => void; verify: () => Promise<void> };
const runners: Runner[] = [
  {
    name: "baseline cpu-register-blocked (op)",
    run: () => matmul(a, b, { transposeB: true, variant: "cpu-register-blocked" }).release(),
    verify: async () => {
      const y = matmul(a, b, { transposeB: true, variant: "cpu-register-blocked" });
      const got = await y.download();
      y.release();
      await out.write(got);
      await check("baseline");
    },
  },
  ...chosen.map((c) => {
    const code = source(c);
    return {
      name: c.name,
      run: () => runCandidate(c, code),
      verify: async () => {
        runCandidate(c, code);
        await check(c.name);
      },
    };
  }),
];

for (const runner of runners) {
  const t0 = performance.now();
  await runner.verify();
  console.log(`${runner.name}: correct (compile + first run ${(performance.now() - t0).toFixed(0)} ms)`);
}
const times = new Map<string, number[]>(runners.map((r) => [r.name, []]));
const cpuTimes = new Map<string, number[]>(runners.map((r) => [r.name, []]));
for (let round = 0; round < rounds; round++) {
  for (const runner of runners) {
    await gpu.sync();
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    runner.run();
    await gpu.sync();
    times.get(runner.name)!.push(performance.now() - t0);
    const c1 = process.cpuUsage(c0);
    cpuTimes.get(runner.name)!.push((c1.user + c1.system) / 1000);
  }
}
const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const base = median(times.get(runners[0].name)!);
const cpuBase = median(cpuTimes.get(runners[0].name)!);
const load = (await Bun.file("/proc/loadavg").text()).trim();
console.log(`M=N=K=${size}, ${rounds} rounds, median wall ms; load ${load}`);
for (const runner of runners) {
  const ms = median(times.get(runner.name)!);
  const gflops = (2 * M * N * K) / ms / 1e6;
  const cpu = median(cpuTimes.get(runner.name)!);
  console.log(
    `${runner.name.padEnd(40)} ${ms.toFixed(1).padStart(8)} ms ${gflops.toFixed(2).padStart(7)} GFLOP/s ${(base / ms).toFixed(2)}x | cpu ${cpu.toFixed(0).padStart(6)} ms ${((2 * M * N * K) / cpu / 1e6).toFixed(2).padStart(6)} GFLOP/cpu-s ${(cpuBase / cpu).toFixed(2)}x`,
  );
}
process.exit(0);
