/**
 * Measures the longest event-loop block of a training's first optimizer steps in a fresh process
 * (cold shader caches, as a worker that has just taken a training): a 10 ms interval records the
 * largest gap between its ticks while trainDiffusion (default phantom-small, the server's default)
 * or trainClassifierRun (densenet-bc-phantom) runs `--steps` steps on a generated phantom dataset.
 * What BullMQ's lock duration for trainings must outlast: lock renewal is a timer on that loop.
 *
 *   bun packages/server/scripts/loop-block.ts diffusion [--config phantom-small] [--steps 3]
 *   bun packages/server/scripts/loop-block.ts classifier [--config densenet-bc-phantom] [--steps 3]
 *   bun packages/server/scripts/loop-block.ts generation [--models models] [--model phantom-diffusion] [--steps 3]
 *
 * `generation` times the first image of a fresh DiffusionGenerator instead (model load and shader
 * compilation), what a worker does when it takes its first generation or shard.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { trainClassifierRun } from "@cxr/classifier";
import { generatePhantomDataset } from "@cxr/data";
import { TRAIN_DEFAULTS, trainDiffusion } from "@cxr/diffusion";
import { defaultGpu } from "@cxr/kernels";
import { DiffusionGenerator } from "../src/diffusion-generator.ts";

const args = process.argv.slice(2);
const kind = args[0];
const flag = (name: string, fallback: string) => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : fallback;
};
if (kind !== "diffusion" && kind !== "classifier" && kind !== "generation")
  throw new Error("usage: loop-block.ts diffusion|classifier|generation");
const steps = Number(flag("--steps", "3"));
const root = mkdtempSync(join(tmpdir(), "cxr-loop-block-"));
try {
  const data = join(root, "phantom");
  await generatePhantomDataset({ outDir: data, count: 96, size: 64, institutions: ["northgate"], seed: 3 });
  let last = performance.now();
  let longest = 0;
  const gaps: number[] = [];
  const timer = setInterval(() => {
    const now = performance.now();
    const gap = now - last;
    if (gap > 1000) gaps.push(Math.round(gap));
    longest = Math.max(longest, gap);
    last = now;
  }, 10);
  const loadBefore = loadavg()[0];
  const started = performance.now();
  if (kind === "generation") {
    const generator = new DiffusionGenerator({ modelsRoot: flag("--models", "models") });
    await generator.generate(
      {
        model: flag("--model", "phantom-diffusion"),
        prompt: "60 year old female.",
        steps,
        guidance: 3,
        sampler: "ddim",
        seed: 1,
        bitDepth: 8,
      },
      () => undefined,
    );
  } else if (kind === "diffusion") {
    const config = flag("--config", "phantom-small");
    await trainDiffusion({
      ...TRAIN_DEFAULTS,
      data,
      config,
      out: join(root, "run"),
      steps,
      batchSize: 4,
      checkpointEvery: steps,
      logEvery: 1,
      log: () => undefined,
    });
  } else {
    const config = flag("--config", "densenet-bc-phantom");
    const gpu = await defaultGpu();
    let step = 0;
    const controller = new AbortController();
    await trainClassifierRun(gpu, {
      train: data,
      format: "chexpert",
      synthetic: null,
      syntheticFormat: "chexpert",
      strategy: "real",
      mixRatio: 0.5,
      config,
      out: join(root, "run"),
      resume: false,
      institution: null,
      imageSize: null,
      batchSize: 8,
      epochs: 1,
      learningRate: 1e-3,
      pretrainEpochs: 1,
      pretrainLearningRate: 1e-3,
      seed: 1,
      bootstrapRounds: 0,
      progress: false,
      stopAfterEpochs: null,
      signal: controller.signal,
      onStep: () => {
        step++;
        if (step >= steps) controller.abort();
      },
      log: () => undefined,
    });
  }
  clearInterval(timer);
  const now = performance.now();
  longest = Math.max(longest, now - last);
  console.log(
    JSON.stringify({
      kind,
      steps,
      runtime: typeof (globalThis as { Bun?: unknown }).Bun !== "undefined" ? "bun" : "node",
      seconds: Number(((now - started) / 1000).toFixed(1)),
      longestBlockSeconds: Number((longest / 1000).toFixed(2)),
      blocksOver1s: gaps,
      loadAverageBefore: loadBefore,
      loadAverageAfter: loadavg()[0],
    }),
  );
} finally {
  rmSync(root, { recursive: true, force: true });
}
