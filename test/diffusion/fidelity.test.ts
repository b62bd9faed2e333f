/**
 * Conditioning fidelity (CTR AUROC of generated Cardiomegaly vs No Finding images, beside real films)
 * and the diffusion bench, on an untrained phantom-tiny model: the figures are what they are, the test
 * checks the measurement plumbing and the AUROC arithmetic.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generatePhantomDataset } from "@cxr/data";
import {
  auroc,
  aurocBootstrapInterval,
  createDiffusionModel,
  createPipeline,
  DIFFUSION_CONFIGS,
  formatDiffusionBench,
  formatFidelity,
  measureFidelity,
  type Pipeline,
  runDiffusionBench,
  WordTokenizer,
} from "@cxr/diffusion";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gpu } from "../kernels/helpers.ts";

let root: string;
let data: string;
let pipeline: Pipeline;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "cxr-diffusion-fidelity-"));
  data = join(root, "phantom");
  await generatePhantomDataset({ outDir: data, count: 120, size: 64, institutions: ["riverside"], seed: 4 });
  const config = structuredClone(DIFFUSION_CONFIGS["phantom-tiny"]);
  const tokenizer = WordTokenizer.fromPrompts(["70 year old WHITE female. Cardiomegaly."], {
    maxLength: config.textEncoder.maxPositions,
  });
  pipeline = await createPipeline(createDiffusionModel(await gpu(), config, tokenizer, 2));
}, 180_000);

afterAll(() => {
  pipeline?.model.dispose();
  rmSync(root, { recursive: true, force: true });
});

describe("conditioning fidelity", () => {
  it("AUROC is the Mann-Whitney probability with ties counted half", () => {
    expect(auroc([3, 4], [1, 2])).toBe(1);
    expect(auroc([1, 2], [3, 4])).toBe(0);
    // Pairs: (2 vs 1) win, (2 vs 2) tie, (2 vs 3) loss -> (1 + 0.5) / 3.
    expect(auroc([2], [1, 2, 3])).toBeCloseTo(0.5, 12);
    expect(auroc([5, 1], [3])).toBe(0.5);
    expect(auroc([], [1])).toBeNull();
  });

  it("the AUROC's bootstrap interval holds the estimate, narrows with more images and is seeded", () => {
    // Two overlapping classes (CTR-like values), the same shape at two sizes.
    const make = (n: number, shift: number) =>
      Array.from({ length: n }, (_, i) => 0.4 + shift + 0.1 * Math.sin(i * 2.399963) * Math.cos(i * 0.7));
    const small = [make(16, 0.03), make(16, 0)] as const;
    const large = [make(256, 0.03), make(256, 0)] as const;
    const smallInterval = aurocBootstrapInterval(...small)!;
    const largeInterval = aurocBootstrapInterval(...large)!;
    const estimate = auroc(...small)!;
    expect(smallInterval[0]).toBeLessThanOrEqual(estimate);
    expect(smallInterval[1]).toBeGreaterThanOrEqual(estimate);
    expect(largeInterval[1] - largeInterval[0]).toBeLessThan((smallInterval[1] - smallInterval[0]) / 2);
    expect(aurocBootstrapInterval(...small)).toEqual(smallInterval);
    expect(aurocBootstrapInterval(...small, 2000, 2)).not.toEqual(smallInterval);
    // Perfect separation: every resample separates too.
    expect(aurocBootstrapInterval([3, 4, 5], [1, 2])).toEqual([1, 1]);
    expect(aurocBootstrapInterval([], [1])).toBeNull();
  });

  it("measures generated and real films the same way and reports both", async () => {
    const report = await measureFidelity(pipeline, { n: 4, steps: 2, realData: data, split: "train" });
    expect(report.resolution).toBe(16);
    expect(report.generated.cardiomegaly.images).toBe(4);
    expect(report.generated.normal.images).toBe(4);
    expect(report.real).not.toBeNull();
    const real = report.real!;
    expect(real.cardiomegaly.images).toBeGreaterThan(0);
    expect(real.cardiomegaly.measured).toBe(real.cardiomegaly.ratios.length);
    expect(real.auroc === null || (real.auroc >= 0 && real.auroc <= 1)).toBe(true);
    for (const ratio of [...real.cardiomegaly.ratios, ...report.generated.normal.ratios]) {
      expect(ratio).toBeGreaterThan(0);
      expect(ratio).toBeLessThan(1);
    }
    expect(formatFidelity(report)).toMatch(/AUROC of the CTR \(cardiomegaly vs normal\)/);
    if (real.auroc !== null) {
      expect(real.aurocInterval![0]).toBeLessThanOrEqual(real.auroc);
      expect(real.aurocInterval![1]).toBeGreaterThanOrEqual(real.auroc);
      expect(formatFidelity(report)).toMatch(/95% bootstrap interval [\d.]+ to [\d.]+, 2000 rounds/);
    } else {
      expect(real.aurocInterval).toBeNull();
    }
    await expect(measureFidelity(pipeline, { n: 1 })).rejects.toThrow(
      "fidelity: n must be an integer in [2, 10000], got 1",
    );
    // The 12 test films of this small cohort hold no cardiomegaly: a clear error, not an undefined AUROC.
    await expect(
      measureFidelity(pipeline, { n: 2, steps: 1, realData: data, split: "test" }),
    ).rejects.toThrow(
      /fidelity: .*phantom \(test split\) has 0 Cardiomegaly and \d+ No Finding films; need both/,
    );
  }, 300_000);
});

describe("cxr bench diffusion", () => {
  it("reports training and sampling rates, kernels, peak memory and PyTorch's figure (or why not)", async () => {
    const result = await runDiffusionBench({
      config: "phantom-tiny",
      batch: 2,
      trainSteps: 1,
      sampleImages: 1,
      sampleSteps: 1,
    });
    expect(result.training.rate).toBeGreaterThan(0);
    expect(result.training.peakPoolBytes).toBeGreaterThan(0);
    expect(result.training.kernels.some((row) => row.name === "adamw")).toBe(true);
    expect(result.sampling.kernels.some((row) => row.name.startsWith("conv2d"))).toBe(true);
    expect(result.sampling.peakPoolBytes).toBeGreaterThan(0);
    if ("unavailable" in result.torch) {
      expect(result.torch.unavailable.length).toBeGreaterThan(0);
      expect(formatDiffusionBench(result)).toMatch(/PyTorch sampling: unavailable \(.+\)/);
    } else {
      expect(result.torch.secondsPerStep).toBeGreaterThan(0);
      expect(result.torch.sampling.seconds).toBeGreaterThan(0);
      expect(result.torch.sampling.imagesPerSecond).toBeCloseTo(1 / result.torch.sampling.seconds, 9);
      expect(formatDiffusionBench(result)).toMatch(
        /PyTorch sampling, same images.*: [\d.]+ s, [\d.]+ images\/s/,
      );
    }
    expect(formatDiffusionBench(result)).toMatch(/training, batch 2: .* steps\/s/);
  }, 600_000);
});
