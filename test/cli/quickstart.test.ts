/**
 * The main job, end to end at a small size: phantom -> SmallCnn trained with our kernels ->
 * prediction -> fairness evaluation. Checks that the outputs exist and parse against the schema,
 * that the trained model beats chance in distribution (macro AUROC interval above 0.5), and that
 * every gap's point estimate lies inside its interval with the rounds it used.
 *
 * Last, the shipped generator (models/phantom-diffusion) draws 16 films next to real ones.
 *
 * Size: 800 phantom images of one institution (northgate: 641 for training, 79 in its test split),
 * 3 epochs at 64 px; in-distribution macro AUROC 0.698 (0.588 to 0.810) with seed 7. Measured
 * alternatives are listed in packages/classifier/README.md ("The main job under test").
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { afterAll, describe, expect, it } from "vitest";
import { evaluationDocumentSchema } from "../../packages/classifier/src/evaluation/report-schema.ts";
import { quickstart } from "../../packages/cli/src/quickstart.ts";

const out = mkdtempSync(join(tmpdir(), "cxr-quickstart-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

const ROUNDS = 200;
const SIZE = { images: 800, epochs: 3 };

describe("cxr quickstart at a small size", () => {
  it("names a bad institution before doing any work", async () => {
    const nowhere = join(out, "never-written");
    await expect(quickstart({ out: nowhere, institutions: ["nowhere"] }, () => {})).rejects.toThrow(
      'quickstart: unknown institution "nowhere" (choose from northgate, riverside, highland, harbor, valley)',
    );
    await expect(
      quickstart({ out: nowhere, institutions: ["northgate"], trainInstitution: "highland" }, () => {}),
    ).rejects.toThrow('the training institution "highland" is not among --institutions northgate');
    await expect(
      quickstart({ out: nowhere, institutions: ["northgate"], generator: join(out, "no-model") }, () => {}),
    ).rejects.toThrow("quickstart: no generator model at");
    expect(existsSync(nowhere)).toBe(false);
  });

  it("trains a model that beats chance in distribution and writes schema-valid reports", async () => {
    const lines: string[] = [];
    const started = performance.now();
    const result = await quickstart(
      {
        out,
        images: SIZE.images,
        institutions: ["northgate"],
        trainInstitution: "northgate",
        epochs: SIZE.epochs,
        bootstrap: ROUNDS,
        seed: 7,
      },
      (line) => lines.push(line),
    );
    const seconds = (performance.now() - started) / 1000;
    console.log(`quickstart (${SIZE.images} images, ${SIZE.epochs} epochs) took ${seconds.toFixed(1)} s`);

    expect(existsSync(join(out, "small-cnn.safetensors"))).toBe(true);
    for (const file of ["train.csv", "valid.csv", "test.csv", "manifest.json"]) {
      expect(existsSync(join(out, "phantom", file)), file).toBe(true);
    }
    const reportDir = join(out, "report-in-distribution");
    for (const file of ["evaluation.json", "report.md"]) expect(existsSync(join(reportDir, file))).toBe(true);
    expect(
      readdirSync(join(reportDir, "plots")).filter((name) => name.endsWith(".png")).length,
    ).toBeGreaterThan(0);
    // One institution: nothing out of distribution.
    expect(result.outOfDistribution).toBeNull();
    // The shipped generator's films next to real test films: 4 generated rows, then 4 real rows.
    expect(result.contactSheet).toBe(join(out, "generated-vs-real.png"));
    const sheet = await sharp(result.contactSheet!).metadata();
    expect(sheet.height).toBe(8 * (128 + 4) + 4);
    expect(lines.some((line) => line.includes("films generated"))).toBe(true);

    const document = evaluationDocumentSchema.parse(
      JSON.parse(readFileSync(join(reportDir, "evaluation.json"), "utf8")),
    );
    expect(document).toEqual(result.inDistribution);
    const macro = document.overall.macroAuroc;
    expect(document.overall.macroLabels.length).toBeGreaterThan(0);
    expect(macro.roundsUsed).toBeGreaterThanOrEqual(0.95 * ROUNDS);
    expect(macro.value!).toBeGreaterThan(0.5);
    expect(macro.lower!).toBeGreaterThan(0.5);

    // Gaps: every point estimate inside its interval, which carries the rounds it used.
    let gaps = 0;
    for (const gap of document.gaps) {
      for (const estimate of [gap.headline.gap, ...gap.pairs.map((pair) => pair.difference)]) {
        if (estimate.value === null || estimate.lower === null) continue;
        expect(estimate.lower).toBeLessThanOrEqual(estimate.value);
        expect(estimate.upper!).toBeGreaterThanOrEqual(estimate.value);
        expect(estimate.roundsUsed).toBeGreaterThanOrEqual(0.95 * ROUNDS);
        gaps++;
      }
    }
    expect(gaps).toBeGreaterThan(0);
    const report = readFileSync(join(reportDir, "report.md"), "utf8");
    expect(report).toContain("## Headline gaps (worst-off minus best-off subgroup)");
    expect(report).toMatch(new RegExp(`\\| \\d+/${ROUNDS} \\|`));
    expect(lines.join("\n")).toContain("quickstart finished in");
  }, 600_000); // about 30 s of CPU; 100-120 s wall on two shared cores at load 15-20
});
