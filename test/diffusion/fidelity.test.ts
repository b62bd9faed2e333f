/**
 * Conditioning fidelity (CTR AUROC of generated Cardiomegaly vs No Finding images, beside real films)
 * and the diffusion bench, on an untrained phantom-tiny model: the figures are what they are, the test
 * checks the measurement plumbing and the AUROC arithmetic. (What the lung-zone measures read on films
 * with and without a finding is tested in test/data/phantom-lung-zones.test.ts.)
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generatePhantomDataset, loadChexpert } from "@cxr/data";
import {
  auroc,
  aurocBootstrapInterval,
  aurocDifference,
  compareFidelityReports,
  createDiffusionModel,
  createPipeline,
  DIFFUSION_CONFIGS,
  type FidelityReport,
  fidelityPhraseAt,
  formatDiffusionBench,
  formatFidelity,
  formatFidelityComparison,
  lungsByWording,
  meanShift,
  measureFidelity,
  measureRealFilms,
  type Pipeline,
  pairedAurocDifference,
  parseFidelityPhrases,
  poolFidelityReports,
  runDiffusionBench,
  WordTokenizer,
} from "@cxr/diffusion";
import { Command } from "commander";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { registerCommands } from "../../packages/diffusion/src/cli.ts";
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

/** Runs `cxr diffusion ARGS` in-process and returns what it printed (errors reject). */
async function runDiffusionCommand(args: string[]): Promise<string> {
  const program = new Command("cxr").exitOverride();
  program.configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerCommands(program, { bench: program.command("bench") });
  let printed = "";
  const log = vi.spyOn(console, "log").mockImplementation((...parts: unknown[]) => {
    printed += `${parts.join(" ")}\n`;
  });
  try {
    await program.parseAsync(["node", "cxr", "diffusion", ...args]);
  } finally {
    log.mockRestore();
  }
  return printed;
}

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

  it("a lung's shift is a difference of means with a seeded bootstrap interval about it", () => {
    const shift = meanShift([0.6, 0.62, null, 0.64], [0.7, 0.72, 0.74, null]);
    expect(shift.positive).toBeCloseTo(0.62, 12);
    expect(shift.negative).toBeCloseTo(0.72, 12);
    expect(shift.difference).toBeCloseTo(-0.1, 12);
    const [low, high] = shift.interval!;
    expect(low).toBeLessThanOrEqual(-0.1);
    expect(high).toBeGreaterThanOrEqual(-0.1);
    // Resampling three values a class reaches the extremes: 0.60 - 0.74 and 0.64 - 0.70 bound it.
    expect(low).toBeGreaterThanOrEqual(-0.14 - 1e-12);
    expect(high).toBeLessThanOrEqual(-0.06 + 1e-12);
    expect(high).toBeLessThan(0);
    expect(meanShift([0.6, 0.62, 0.64], [0.7, 0.72, 0.74])).toEqual(
      meanShift([0.6, 0.62, 0.64], [0.7, 0.72, 0.74]),
    );
    // Overlapping classes: the interval reaches past 0.
    const overlap = meanShift([0.5, 0.7, 0.9, 0.6, 0.8], [0.55, 0.75, 0.85, 0.65]);
    expect(overlap.interval![0]).toBeLessThan(0);
    expect(overlap.interval![1]).toBeGreaterThan(0);
    expect(meanShift([null], [0.7])).toEqual({
      positive: null,
      negative: 0.7,
      difference: null,
      interval: null,
    });
    // Grouped by wording: each wording's images against every negative image.
    const positive = { right: [0.6, 0.7, 0.6, 0.7], left: [0.8, 0.6, 0.8, 0.6] };
    const negative = { right: [0.75, 0.75], left: [0.75, 0.75] };
    const groups = lungsByWording(positive, negative, ["left", "right"], (index) =>
      index % 2 === 0 ? "right" : "left",
    );
    expect(groups.map((group) => [group.wording, group.images])).toEqual([
      ["left", 2],
      ["right", 2],
    ]);
    expect(groups[0].lungs.right.difference).toBeCloseTo(-0.05, 12);
    expect(groups[0].lungs.left.difference).toBeCloseTo(-0.15, 12);
    expect(groups[1].lungs.right.difference).toBeCloseTo(-0.15, 12);
    expect(groups[1].lungs.left.difference).toBeCloseTo(0.05, 12);
  });

  it("the generated-minus-real AUROC difference has an interval that decides only when it should", () => {
    const make = (n: number, shift: number, phase = 0) =>
      Array.from({ length: n }, (_, i) => shift + Math.sin(i * 2.399963 + phase) * Math.cos(i * 0.7));
    // Worked by hand: AUROC([3, 4], [1, 2]) = 1 and AUROC([2], [1, 2, 3]) = 0.5.
    const exact = aurocDifference(
      { positives: [3, 4], negatives: [1, 2] },
      { positives: [2], negatives: [1, 2, 3] },
    );
    expect(exact!.difference).toBeCloseTo(0.5, 12);
    // A well separated pair against a barely separated one, 200 images a class: decided.
    const strong = { positives: make(200, 1), negatives: make(200, 0, 1) };
    const weak = { positives: make(200, 0.1, 2), negatives: make(200, 0, 3) };
    const decided = aurocDifference(strong, weak)!;
    expect(decided.difference).toBeCloseTo(
      auroc(strong.positives, strong.negatives)! - auroc(weak.positives, weak.negatives)!,
      12,
    );
    expect(decided.interval[0]).toBeGreaterThan(0);
    expect(decided.interval[0]).toBeLessThanOrEqual(decided.difference);
    expect(decided.interval[1]).toBeGreaterThanOrEqual(decided.difference);
    expect(aurocDifference(weak, strong)!.interval[1]).toBeLessThan(0);
    // The same separation drawn twice (different points, same shift), 24 images a class: not decided.
    const again = aurocDifference(
      { positives: make(24, 0.4), negatives: make(24, 0, 1) },
      { positives: make(24, 0.4, 2), negatives: make(24, 0, 3) },
    )!;
    expect(again.interval[0]).toBeLessThan(0);
    expect(again.interval[1]).toBeGreaterThan(0);
    // Seeded, and wider with fewer images.
    expect(aurocDifference(strong, weak)).toEqual(decided);
    expect(aurocDifference(strong, weak, 2000, 2)!.interval).not.toEqual(decided.interval);
    expect(again.interval[1] - again.interval[0]).toBeGreaterThan(
      2 * (decided.interval[1] - decided.interval[0]),
    );
    expect(aurocDifference({ positives: [], negatives: [1] }, weak)).toBeNull();
  });

  it("two models' images pair up: the paired interval decides what unpaired intervals cannot", () => {
    // Worked by hand, nulls left out per model: A [3, 4] vs [1, 2] -> 1; B [0, 4] vs [1, 2] -> 0.5.
    const exact = pairedAurocDifference(
      { positives: [3, null, 4], negatives: [1, 2] },
      { positives: [0, 5, null], negatives: [1, 2] },
    )!;
    expect(exact.aurocA).toBe(1);
    // B: positives [0, 5] against [1, 2]: (0 + 0) + (1 + 1) wins of 4 pairs.
    expect(exact.aurocB).toBe(0.5);
    expect(exact.difference).toBe(0.5);
    // Two models drawing the same images (same noise), B's findings a little stronger in every pair:
    // the image-to-image spread is shared, so pairing removes it.
    const spread = (n: number, phase: number) =>
      Array.from({ length: n }, (_, i) => Math.sin(i * 2.399963 + phase) * Math.cos(i * 0.7));
    const base = { positives: spread(96, 0).map((v) => v + 0.3), negatives: spread(96, 1) };
    const stronger = {
      positives: base.positives.map((v) => v + 0.05),
      negatives: base.negatives.map((v) => v - 0.05),
    };
    const paired = pairedAurocDifference(stronger, base)!;
    expect(paired.difference).toBeGreaterThan(0);
    expect(paired.interval[0]).toBeGreaterThan(0);
    const unpaired = aurocDifference(stronger, base)!;
    expect(unpaired.difference).toBeCloseTo(paired.difference, 12);
    expect(unpaired.interval[0]).toBeLessThan(0);
    // The same model against itself: exactly zero in every round.
    expect(pairedAurocDifference(base, base)!.interval).toEqual([0, 0]);
    expect(() => pairedAurocDifference(base, { positives: [1], negatives: [0] })).toThrow(
      "paired AUROC: the classes hold 96 and 96 images in one report, 1 and 1 in the other; pairs need the same counts",
    );
    expect(
      pairedAurocDifference({ positives: [null], negatives: [1] }, { positives: [2], negatives: [1] }),
    ).toBeNull();
  });

  it("cxr diffusion fidelity-compare pairs two reports of the same settings and refuses others", async () => {
    const report = await measureFidelity(pipeline, { n: 4, steps: 2, measures: ["pleural-effusion"] });
    expect(report.generated.normal.byImage).toHaveLength(4);
    expect(report.generated.normal.byImage.filter((value) => value !== null)).toEqual(
      report.generated.normal.ratios,
    );
    expect(report.measures[0].generated.positive.byImage).toHaveLength(4);
    const self = compareFidelityReports(report, report);
    expect(self.rows.map((row) => row.name)).toEqual(["cardiomegaly", "pleural-effusion"]);
    for (const row of self.rows) if (row.comparison) expect(row.comparison.interval).toEqual([0, 0]);
    expect(formatFidelityComparison(self)).toMatch(
      /A - B \+0\.000 \(95% paired bootstrap interval \+0\.000 to \+0\.000, 2000 rounds\): no difference decided|undefined/,
    );
    expect(self.samplerDifferences).toEqual([]);
    expect(formatFidelityComparison(self)).toContain("sampled alike");
    const other = { ...report, settings: { ...report.settings, seed: 2, n: 5 } };
    expect(() => compareFidelityReports(report, other, ["A.json", "B.json"])).toThrow(
      "A.json and B.json were not measured on paired images: n 4 vs 5; seed 1 vs 2",
    );
    // One model sampled two ways pairs up (same starting noise and prompt); the differences are named.
    // A report written before spacing was recorded sampled with "leading".
    const {
      spacing: _spacing,
      guidanceRescale: _rescale,
      negativePrompt: _negative,
      negativeGuidance: _negativeGuidance,
      ...oldSettings
    } = report.settings;
    const resampled = {
      ...report,
      settings: {
        ...report.settings,
        guidance: 7,
        spacing: "trailing" as const,
        guidanceRescale: 0.7,
        negativePrompt: "{patient}",
        negativeGuidance: 3,
      },
    };
    const ways = compareFidelityReports(
      { ...report, settings: oldSettings as typeof report.settings },
      resampled,
    );
    expect(ways.samplerDifferences).toEqual([
      'spacing "leading" vs "trailing"',
      "guidance 3 vs 7",
      "guidanceRescale 0 vs 0.7",
      'negativePrompt "" vs "{patient}"',
      "negativeGuidance 1 vs 3",
    ]);
    expect(formatFidelityComparison(ways)).toContain(
      'sampled differently: spacing "leading" vs "trailing"; guidance 3 vs 7; guidanceRescale 0 vs 0.7; negativePrompt "" vs "{patient}"; negativeGuidance 1 vs 3 (the difference measured is of model and sampling together)',
    );
    expect(report.settings.spacing).toBe("leading");
    expect(report.settings.guidanceRescale).toBe(0);
    expect(report.settings.negativePrompt).toBe("");
    const old = JSON.parse(JSON.stringify(report));
    delete old.generated.normal.byImage;
    expect(() => compareFidelityReports(report, old, ["A.json", "old.json"])).toThrow(
      "old.json: generated.normal: no per-image values (byImage); the report was written before they were recorded, measure it again",
    );

    const run = (args: string[]) => runDiffusionCommand(["fidelity-compare", ...args]);
    const folder = join(root, "compare-a");
    mkdirSync(folder, { recursive: true });
    writeFileSync(join(folder, "fidelity.json"), JSON.stringify(report));
    const file = join(root, "compare-b.json");
    writeFileSync(file, JSON.stringify(report));
    expect(await run([folder, file])).toMatch(
      /paired comparison of generated images .*A = .*compare-a, B = .*compare-b\.json/,
    );
    expect(JSON.parse(await run([folder, file, "--json"])).rows).toHaveLength(2);
    const broken = join(root, "compare-broken.json");
    writeFileSync(broken, "{ not json");
    await expect(run([folder, broken])).rejects.toThrow(/compare-broken\.json is not valid JSON/);
    writeFileSync(broken, JSON.stringify({ size: 32, measures: {} }));
    await expect(run([folder, broken])).rejects.toThrow(
      /compare-broken\.json is not a fidelity report of a model/,
    );
    await expect(run([folder, join(root, "missing.json")])).rejects.toThrow(
      /cannot read the fidelity report .*missing\.json/,
    );
  }, 300_000);

  it("cxr diffusion fidelity-pool pools reports that differ only in seed against every real film", async () => {
    const options = { n: 4, steps: 2, realData: data, split: "train" as const };
    const one = await measureFidelity(pipeline, { ...options, seed: 1 });
    const two = await measureFidelity(pipeline, { ...options, seed: 2 });
    const real = await measureRealFilms({
      realData: data,
      split: "train",
      n: 10_000,
      seed: 1,
      size: one.resolution,
      measureSize: one.settings.measureSize,
      measures: one.settings.measures,
    });
    const pooled = poolFidelityReports([one, two], { real, realData: data, names: ["one", "two"] });
    // The generated images of both seeds, in order; AUROCs and gaps computed as for one report.
    const joined = (pick: (report: FidelityReport) => (number | null)[]) => [...pick(one), ...pick(two)];
    expect(pooled.generated.cardiomegaly.byImage).toEqual(joined((r) => r.generated.cardiomegaly.byImage));
    expect(pooled.generated.normal.images).toBe(8);
    const ratios = (values: (number | null)[]) => values.filter((value): value is number => value !== null);
    expect(pooled.generated.auroc).toBe(
      auroc(ratios(pooled.generated.cardiomegaly.byImage), ratios(pooled.generated.normal.byImage)),
    );
    for (const [index, measure] of pooled.measures.entries()) {
      expect(measure.name).toBe(one.measures[index].name);
      expect(measure.generated.positive.byImage).toEqual(
        joined((r) => r.measures[index].generated.positive.byImage),
      );
      expect(measure.real).toBe(real.measures[measure.name]);
      expect(measure.generated.positive.lungs).toEqual(
        measure.name === "pleural-effusion"
          ? {
              right: joined((r) => r.measures[index].generated.positive.lungs!.right),
              left: joined((r) => r.measures[index].generated.positive.lungs!.left),
            }
          : undefined,
      );
    }
    // A report written before the per-lung depths pools without them.
    const before = JSON.parse(JSON.stringify(two));
    delete before.measures[0].generated.positive.lungs;
    expect(poolFidelityReports([one, before]).measures[0].generated.lungs).toBeUndefined();
    // Every film of the split, not a draw of n: as many as the split holds.
    const films = loadChexpert(data, { onError: "skip" }).records.filter(
      (record) => record.split === "train" && record.frontal && record.labels.Cardiomegaly === 1,
    );
    expect(pooled.real!.cardiomegaly.images).toBe(films.length);
    expect(films.length).toBeGreaterThan(one.real!.cardiomegaly.images);
    if (pooled.generated.auroc !== null && pooled.real!.auroc !== null) {
      expect(pooled.versusReal!.difference).toBeCloseTo(pooled.generated.auroc - pooled.real!.auroc, 12);
    }
    expect(pooled.pooled).toEqual({ reports: ["one", "two"], seeds: [1, 2] });
    expect(pooled.settings.realData).toBe(data);
    expect(formatFidelity(pooled)).toContain("seeds 1, 2 pooled, 4 images a prompt each");
    expect(formatFidelity(pooled)).toContain("real films (every film of the train split");
    // Without real films: the generated side alone.
    const alone = poolFidelityReports([one, two]);
    expect(alone.real).toBeNull();
    expect(alone.versusReal).toBeNull();
    expect(alone.settings.realData).toBeUndefined();

    // What cannot be pooled is refused with each difference named.
    expect(() => poolFidelityReports([one])).toThrow("fidelity pool: needs at least two reports, got 1");
    expect(() => poolFidelityReports([one, one], { names: ["a.json", "b.json"] })).toThrow(
      "b.json has seed 1 like a.json: the same images would count twice",
    );
    const other = { ...two, model: "elsewhere", settings: { ...two.settings, steps: 5, n: 6 } };
    expect(() => poolFidelityReports([one, other], { names: ["a.json", "b.json"] })).toThrow(
      "fidelity pool: b.json differs from a.json: model elsewhere vs " +
        one.model +
        "; n 6 vs 4; steps 5 vs 2",
    );
    const old = JSON.parse(JSON.stringify(two));
    delete old.measures[0].generated.negative.byImage;
    expect(() => poolFidelityReports([one, old], { names: ["a.json", "old.json"] })).toThrow(
      `old.json: ${one.measures[0].name} negative: no per-image values (byImage)`,
    );

    expect(() =>
      poolFidelityReports([one, { ...two, measures: [] }], { names: ["a.json", "b.json"] }),
    ).toThrow(
      `b.json: lists ${one.measures[0].name} in its settings but holds no ${one.measures[0].name} measure`,
    );

    // The command: files or folders, real films measured anew, --out writes the pooled report.
    const run = (args: string[]) => runDiffusionCommand(["fidelity-pool", ...args]);
    const fileOne = join(root, "pool-one.json");
    const folderTwo = join(root, "pool-two");
    writeFileSync(fileOne, JSON.stringify(one));
    mkdirSync(folderTwo, { recursive: true });
    writeFileSync(join(folderTwo, "fidelity.json"), JSON.stringify(two));
    const out = join(root, "pooled");
    expect(await run([fileOne, folderTwo, "--out", out])).toContain("seeds 1, 2 pooled");
    const written = JSON.parse(readFileSync(join(out, "fidelity.json"), "utf8")) as FidelityReport;
    expect(written.pooled?.reports).toEqual([fileOne, folderTwo]);
    expect(written.real!.cardiomegaly.images).toBe(films.length);
    expect(written.versusReal).toEqual(pooled.versusReal);
    writeFileSync(fileOne, JSON.stringify({ ...one, settings: { ...one.settings, realData: "/elsewhere" } }));
    await expect(run([fileOne, folderTwo])).rejects.toThrow(
      /the reports measured different real films .*choose one with --data DIR/,
    );
    expect(JSON.parse(await run([fileOne, folderTwo, "--data", data, "--json"])).settings.realData).toBe(
      data,
    );
    await expect(run([fileOne, fileOne])).rejects.toThrow(/has seed 1 like/);
    // Two pooled reports of the same seeds pair up image by image (192 pairs at n 96, seeds 1 and 2);
    // a pooled report against a single one, or pools of other seeds, do not.
    const self = compareFidelityReports(pooled, alone);
    expect(self.rows[0].comparison?.interval).toEqual([0, 0]);
    expect(() => compareFidelityReports(pooled, one, ["pooled", "one"])).toThrow(
      "pooled and one were not measured on paired images: pooled seeds [1,2] vs none",
    );
    const three = { ...two, settings: { ...two.settings, seed: 3 } };
    expect(() => compareFidelityReports(pooled, poolFidelityReports([one, three]), ["A", "B"])).toThrow(
      "A and B were not measured on paired images: pooled seeds [1,2] vs [1,3]",
    );
  }, 300_000);

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
    // The gap to the real films, generated minus real, on the same values the two AUROCs read.
    if (report.generated.auroc !== null && real.auroc !== null) {
      expect(report.versusReal!.difference).toBeCloseTo(report.generated.auroc - real.auroc, 12);
      expect(formatFidelity(report)).toMatch(
        /AUROC generated minus real films: [+-][\d.]+ \(95% bootstrap interval [+-][\d.]+ to [+-][\d.]+, 2000 rounds\): (no difference|the generated images separate (less|more))/,
      );
    }
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

    // The measures beside the CTR: effusion prompts vs the same No Finding images, and sex from the No
    // Finding images generated again with the other sex (every noise once as each sex).
    expect(report.measures.map((measure) => measure.name)).toEqual(["pleural-effusion", "sex"]);
    const [effusion, sex] = report.measures;
    expect(effusion.higherMeansPositive).toBe(false);
    expect(sex.higherMeansPositive).toBe(true);
    expect(effusion.generated.positive).toMatchObject({ label: "Pleural Effusion", images: 4 });
    expect(effusion.generated.negative).toMatchObject({ label: "No Finding", images: 4 });
    expect(sex.generated.positive).toMatchObject({ label: "female", images: 4 });
    expect(sex.generated.negative).toMatchObject({ label: "male", images: 4 });
    for (const measure of report.measures) {
      const real = measure.real!;
      expect(real).not.toBeNull();
      for (const group of [
        measure.generated.positive,
        measure.generated.negative,
        real.positive,
        real.negative,
      ]) {
        expect(group.measured).toBe(group.values.length);
        expect(group.measured).toBeLessThanOrEqual(group.images);
      }
      expect(real.positive.images).toBeGreaterThan(0);
      expect(real.negative.images).toBeGreaterThan(0);
      // The AUROC is oriented by the measure: lower lateral depth reads as effusion.
      const orient = (values: number[]) => (measure.higherMeansPositive ? values : values.map((v) => -v));
      expect(real.auroc).toBe(auroc(orient(real.positive.values), orient(real.negative.values)));
      if (real.auroc !== null) {
        expect(real.aurocInterval![0]).toBeLessThanOrEqual(real.auroc);
        expect(real.aurocInterval![1]).toBeGreaterThanOrEqual(real.auroc);
      }
      if (real.auroc !== null && measure.generated.auroc !== null) {
        expect(measure.versusReal!.difference).toBeCloseTo(measure.generated.auroc - real.auroc, 12);
      }
    }
    // Real effusion films are compared with the CTR's No Finding films, measured once.
    expect(effusion.real!.negative.images).toBe(real.normal.images);
    // Each lung's own depth, image by image: the measure is the shallower of the two.
    for (const group of [effusion.generated.positive, effusion.real!.positive, effusion.real!.negative]) {
      const lungs = group.lungs!;
      expect(lungs.right).toHaveLength(group.images);
      expect(lungs.left).toHaveLength(group.images);
      group.byImage.forEach((depth, index) => {
        const [right, left] = [lungs.right[index], lungs.left[index]];
        expect(depth).toBe(right === null || left === null ? null : Math.min(right, left));
      });
    }
    expect(effusion.real!.positive.measured).toBeGreaterThan(0);
    for (const side of ["right", "left"] as const) {
      const shift = effusion.real!.lungs![side];
      const depths = (values: (number | null)[]) => values.filter((value): value is number => value !== null);
      const meanOf = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
      expect(shift.positive).toBeCloseTo(meanOf(depths(effusion.real!.positive.lungs![side])), 12);
      expect(shift.difference).toBeCloseTo(shift.positive! - shift.negative!, 12);
      expect(shift.interval![0]).toBeLessThanOrEqual(shift.difference!);
      expect(shift.interval![1]).toBeGreaterThanOrEqual(shift.difference!);
    }
    expect(sex.real!.positive.lungs).toBeUndefined();
    expect(sex.real!.lungs).toBeUndefined();
    expect(effusion.generated.byWording).toBeUndefined();
    expect(formatFidelity(report)).toMatch(
      /each lung's mean depth, Pleural Effusion minus No Finding: right (undefined|[+-][\d.]+ \(95% bootstrap interval [+-][\d.]+ to [+-][\d.]+\)), left /,
    );
    expect(formatFidelity(report)).toMatch(/measured, mean [\d.]+ \(right lung [\d.]+, left lung [\d.]+\)/);
    for (const depth of effusion.real!.positive.values) {
      expect(depth).toBeGreaterThanOrEqual(0);
      expect(depth).toBeLessThan(1.5);
    }
    const text = formatFidelity(report);
    expect(text).toMatch(/pleural-effusion: lateral lung depth .*, Pleural Effusion vs No Finding/);
    expect(text).toMatch(/AUROC \(Pleural Effusion lower\): /);
    expect(text).toMatch(/sex: lower-zone ratio .*, female vs male/);
    expect(text).toMatch(/AUROC \(female higher\): /);
    expect(JSON.parse(JSON.stringify(report)).measures[1].real.positive.label).toBe("female");

    // Without extra measures only the two CTR prompt sets are generated.
    const ctrOnly = await measureFidelity(pipeline, { n: 2, steps: 1, measures: [] });
    expect(ctrOnly.measures).toEqual([]);
    expect(formatFidelity(ctrOnly)).not.toMatch(/pleural-effusion/);
    await expect(
      measureFidelity(pipeline, { n: 2, steps: 1, measures: ["pneumothorax" as "sex"] }),
    ).rejects.toThrow('fidelity: unknown measure "pneumothorax" (known: pleural-effusion, sex)');
    await expect(measureFidelity(pipeline, { n: 2, steps: 1, measures: ["sex", "sex"] })).rejects.toThrow(
      'fidelity: measure "sex" is listed twice',
    );
  }, 300_000);

  it("--negative-prompt: {patient} is each image's own patient; a No Finding prompt's own text leaves it unguided", async () => {
    /** The report, and what each generate call drew (Cardiomegaly, then No Finding) and was asked. */
    const drawn = async (input: Parameters<typeof measureFidelity>[1]) => {
      const spy = vi.spyOn(pipeline, "generate");
      try {
        const report = await measureFidelity(pipeline, input);
        const results = await Promise.all(spy.mock.results.map((result) => result.value));
        return {
          report,
          pixels: results.map((result) =>
            result.images.map((image: { pixels: Float32Array }) => image.pixels),
          ),
          negatives: spy.mock.calls.map(([options]) => options.negativePrompt),
        };
      } finally {
        spy.mockRestore();
      }
    };
    const options = { n: 4, steps: 2, measures: [] };
    const negativePrompt = "{patient} No acute cardiopulmonary abnormality.";
    const away = await drawn({ ...options, guidance: 3, negativePrompt });
    const unguided = await drawn({ ...options, guidance: 1 });
    const plain = await drawn({ ...options, guidance: 3 });
    expect(away.report.settings.negativePrompt).toBe(negativePrompt);
    expect(formatFidelity(away.report)).toContain(`guidance 3 away from "${negativePrompt}"`);
    expect(formatFidelity(plain.report)).not.toContain("away from");
    const split = await drawn({ ...options, guidance: 3, negativePrompt: "{patient}", negativeGuidance: 2 });
    expect(formatFidelity(split.report)).toContain(
      'guidance 3 away from "{patient}" guided 2 over the empty prompt',
    );
    expect(split.report.settings.negativeGuidance).toBe(2);
    expect(away.report.settings.negativeGuidance).toBe(1);
    expect(away.negatives[1]).toEqual([
      "70 year old WHITE female. No acute cardiopulmonary abnormality.",
      "65 year old BLACK male. No acute cardiopulmonary abnormality.",
      "55 year old ASIAN female. No acute cardiopulmonary abnormality.",
      "75 year old HISPANIC male. No acute cardiopulmonary abnormality.",
    ]);
    expect(plain.negatives[1]).toEqual(["", "", "", ""]);
    // A No Finding image's negative prompt is its own prompt, so eps_u = eps_c: guidance 3 draws what 1 does.
    expect(away.pixels[1]).toEqual(unguided.pixels[1]);
    expect(away.pixels[1]).not.toEqual(plain.pixels[1]);
    // A Cardiomegaly image is guided away from its patient's normal film instead of from the empty prompt.
    expect(away.pixels[0]).not.toEqual(plain.pixels[0]);
    expect(away.pixels[0]).not.toEqual(unguided.pixels[0]);
  }, 120_000);

  it("--phrase words a finding of the generated prompts as asked; the settings record it", async () => {
    expect(parseFidelityPhrases([])).toEqual({});
    expect(
      parseFidelityPhrases([
        "pleural effusion = large left pleural effusion",
        "Cardiomegaly=moderate cardiomegaly",
      ]),
    ).toEqual({ "Pleural Effusion": "large left pleural effusion", Cardiomegaly: "moderate cardiomegaly" });
    expect(() => parseFidelityPhrases(["Pleural Effusion"])).toThrow(
      '--phrase: expected FINDING=WORDS or FINDING=WORDS|WORDS..., got "Pleural Effusion"',
    );
    expect(() => parseFidelityPhrases(["Cardiomegaly= "])).toThrow("expected FINDING=WORDS");
    // "|" separates wordings the images take in turn, four images (one demographic cycle) each.
    const sides = parseFidelityPhrases(["Pleural Effusion=right pleural effusion | left pleural effusion"]);
    expect(sides).toEqual({ "Pleural Effusion": ["right pleural effusion", "left pleural effusion"] });
    expect(
      Array.from({ length: 10 }, (_, index) => fidelityPhraseAt(sides, "Pleural Effusion", index)),
    ).toEqual([
      ...Array(4).fill("right pleural effusion"),
      ...Array(4).fill("left pleural effusion"),
      "right pleural effusion",
      "right pleural effusion",
    ]);
    expect(fidelityPhraseAt(sides, "Cardiomegaly", 5)).toBe("Cardiomegaly");
    expect(fidelityPhraseAt(undefined, "Pleural Effusion", 0)).toBe("Pleural Effusion");
    expect(() => parseFidelityPhrases(["Pleural Effusion=left pleural effusion|"])).toThrow(
      '--phrase: expected FINDING=WORDS or FINDING=WORDS|WORDS..., got "Pleural Effusion=left pleural effusion|"',
    );
    expect(() => parseFidelityPhrases(["Edema=mild edema"])).toThrow(
      '--phrase: unknown finding "Edema" (one of Cardiomegaly, Pleural Effusion)',
    );
    expect(() => parseFidelityPhrases(["Cardiomegaly=a", "cardiomegaly=b"])).toThrow(
      "--phrase: Cardiomegaly is worded twice",
    );
    const messages: string[] = [];
    const phrases = { "Pleural Effusion": "large left pleural effusion" };
    const report = await measureFidelity(pipeline, {
      n: 2,
      steps: 1,
      measures: ["pleural-effusion"],
      phrases,
      onProgress: (message) => messages.push(message),
    });
    expect(report.settings.phrases).toEqual(phrases);
    expect(messages).toContain('generating 2 "large left pleural effusion" images (ddim, 1 steps)');
    expect(messages).toContain('generating 2 "Cardiomegaly" images (ddim, 1 steps)');
    expect(formatFidelity(report)).toContain('Pleural Effusion prompts worded "large left pleural effusion"');
    const turns = await measureFidelity(pipeline, {
      n: 6,
      steps: 1,
      measures: ["pleural-effusion"],
      phrases: sides,
      onProgress: (message) => messages.push(message),
    });
    expect(turns.settings.phrases).toEqual(sides);
    expect(messages).toContain(
      'generating 6 "right pleural effusion | left pleural effusion" images (ddim, 1 steps)',
    );
    expect(formatFidelity(turns)).toContain(
      'Pleural Effusion prompts worded "right pleural effusion", in turn, "left pleural effusion"',
    );
    // Each wording's images lung by lung: images 0-3 and then 4-5 of the six.
    const byWording = turns.measures[0].generated.byWording!;
    expect(byWording.map((group) => [group.wording, group.images])).toEqual([
      ["right pleural effusion", 4],
      ["left pleural effusion", 2],
    ]);
    expect(formatFidelity(turns)).toMatch(/ {6}"left pleural effusion" \(2 images\): right /);
    expect(report.measures[0].generated.byWording).toBeUndefined();
  }, 120_000);

  it("measures real films alone, and names what a split lacks", async () => {
    const options = {
      realData: data,
      split: "train" as const,
      n: 50,
      seed: 3,
      size: 32,
      measureSize: 64,
      measures: ["pleural-effusion", "sex"] as const,
    };
    const real = await measureRealFilms(options);
    expect(real.cardiomegaly.cardiomegaly.images).toBeGreaterThan(0);
    expect(Object.keys(real.measures)).toEqual(["pleural-effusion", "sex"]);
    // Seeded: the same films and figures again.
    expect(await measureRealFilms(options)).toEqual(real);
    await expect(measureRealFilms({ ...options, size: 0 })).rejects.toThrow(
      "fidelity: size must be an integer in [8, 4096], got 0",
    );
    await expect(measureRealFilms({ ...options, realData: join(root, "missing") })).rejects.toThrow(
      /no CheXpert CSV in .*missing/,
    );
    await expect(measureRealFilms({ ...options, split: "test" })).rejects.toThrow(
      /fidelity: .*phantom \(test split\) has 0 Cardiomegaly and \d+ No Finding films; need both/,
    );
  }, 120_000);

  it("cxr diffusion fidelity --real-only prints, writes fidelity.json and refuses bad flags", async () => {
    const run = (args: string[]) => runDiffusionCommand(["fidelity", ...args]);
    const out = join(root, "fidelity-real");
    const text = await run(["--real-only", "--data", data, "--split", "train", "--size", "32", "--out", out]);
    expect(text).toMatch(
      /pixel measures on real films of .* \(train split, up to 32 per class, resized to 32 px, measured at 128 px\)/,
    );
    expect(text).toMatch(/AUROC \(Pleural Effusion lower\): /);
    const written = JSON.parse(readFileSync(join(out, "fidelity.json"), "utf8"));
    expect(written.size).toBe(32);
    expect(Object.keys(written.measures)).toEqual(["pleural-effusion", "sex"]);
    expect(
      await run(["--real-only", "--data", data, "--split", "train", "--size", "32", "--measures", "sex"]),
    ).not.toMatch(/pleural-effusion/);
    await expect(run(["--real-only", "--data", data])).rejects.toThrow(
      "--real-only needs --data DIR and --size PX",
    );
    await expect(run(["--data", data])).rejects.toThrow(
      "--model DIR is required (or --real-only with --data)",
    );
    await expect(
      run(["--real-only", "--data", data, "--size", "32", "--measures", "effusion"]),
    ).rejects.toThrow('--measures: unknown measure "effusion" (known: pleural-effusion, sex, or none)');
    await expect(
      run(["--real-only", "--data", data, "--size", "32", "--measures", "sex,sex"]),
    ).rejects.toThrow('--measures: "sex,sex" lists a measure twice');
    await expect(run(["--model", "m", "--phrase", "Heart=big heart"])).rejects.toThrow(
      /option '--phrase <finding=words>' argument 'Heart=big heart' is invalid. unknown finding "Heart" \(one of Cardiomegaly, Pleural Effusion\)/,
    );
    await expect(
      run(["--real-only", "--data", data, "--size", "32", "--phrase", "Cardiomegaly=moderate cardiomegaly"]),
    ).rejects.toThrow("--phrase words generated prompts: --real-only generates none");
  }, 120_000);
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
