/**
 * The web page in a real headless Chromium (Debian's `chromium`, driven by playwright-core): fill
 * the form, generate, watch the images appear in the gallery. The screenshot is kept under
 * runs/server-browser/ (a CI artifact). Without /usr/bin/chromium the test is skipped, except under
 * CI (CI=true), where it fails: CI must install it (`apt-get install chromium`).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { formatPredictionsCsv, synthesizePredictions } from "@cxr/classifier";
import { afterAll, beforeAll, expect, test } from "vitest";
import { type GeneratorSetup, setupGenerator } from "./generator-setup.ts";
import { startTestServer, writeTestPhantom } from "./helpers.ts";

/** The part of playwright-core's API used here (its types resolve from packages/server only). */
interface Locator {
  count(): Promise<number>;
  allTextContents(): Promise<string[]>;
  textContent(): Promise<string | null>;
}
interface Request {
  method(): string;
  url(): string;
  postDataJSON(): any;
}
interface Page {
  on(event: "pageerror", listener: (error: Error) => void): void;
  on(event: "request", listener: (request: Request) => void): void;
  goto(url: string): Promise<unknown>;
  fill(selector: string, value: string): Promise<void>;
  check(selector: string): Promise<void>;
  click(selector: string): Promise<void>;
  selectOption(selector: string, value: string): Promise<unknown>;
  inputValue(selector: string): Promise<string>;
  textContent(selector: string): Promise<string | null>;
  locator(selector: string): Locator;
  waitForFunction(body: () => boolean, arg: undefined, options: { timeout: number }): Promise<unknown>;
  $eval<T>(selector: string, body: (element: any) => T): Promise<T>;
  screenshot(options: { path: string; fullPage: boolean }): Promise<unknown>;
}
interface Chromium {
  launchPersistentContext(
    userDataDir: string,
    options: {
      executablePath: string;
      headless: boolean;
      args: string[];
      viewport: { width: number; height: number };
    },
  ): Promise<{ newPage(): Promise<Page>; close(): Promise<void> }>;
}

// playwright-core is a dev dependency of @cxr/server: resolve it from there.
const { chromium } = createRequire(new URL("../../packages/server/package.json", import.meta.url))(
  "playwright-core",
) as { chromium: Chromium };

const CHROMIUM = process.env.CXR_CHROMIUM ?? "/usr/bin/chromium";
const available = existsSync(CHROMIUM);
if (!available && process.env.CI)
  throw new Error(`${CHROMIUM} is missing: CI must install Debian's chromium`);

const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

let setup: GeneratorSetup;
beforeAll(async () => {
  if (available) setup = await setupGenerator();
});
afterAll(async () => setup?.remove());

test.skipIf(!available)(
  "generate from the form; start a training and a batch and follow them; the latest evaluation",
  async () => {
    const token = "browser-token-0123456789abcdef";
    const s = await startTestServer({
      generator: setup.generator,
      dataRoot: setup.dataRoot,
      defaultModel: setup.model,
      tokens: [token],
    });
    const datasets = s.server.config.datasetsRoot;
    await writeTestPhantom(join(datasets, "real"), { count: 90, institution: "highland" });
    // Headline gaps need a validation file (worst and best subgroups are chosen on it).
    for (const [name, seed] of [
      ["preds.csv", 4],
      ["preds-valid.csv", 5],
    ] as const) {
      writeFileSync(
        join(datasets, name),
        formatPredictionsCsv(synthesizePredictions({ images: 1000, patients: 500, seed })),
      );
    }
    const evaluation = await fetch(`${s.url}/v1/evaluations`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ predictions: "preds.csv", validation: "preds-valid.csv", bootstrapRounds: 20 }),
    });
    expect(evaluation.status).toBe(202);
    const profile = mkdtempSync(join(tmpdir(), "cxr-chromium-"));
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: FLAGS,
      viewport: { width: 1280, height: 900 },
    });
    try {
      const page = await context.newPage();
      const consoleErrors: string[] = [];
      page.on("pageerror", (error) => consoleErrors.push(String(error)));
      await page.goto(s.url);
      await page.fill("#token", token);
      await expect.poll(() => page.locator("#model option").count(), { timeout: 20_000 }).toBeGreaterThan(0);
      expect(await page.inputValue("#model")).toBe(setup.model);
      await page.selectOption("#sex", "male");
      await page.fill("#age", "55");
      await page.selectOption("#race", "BLACK");
      await page.check('input[value="Cardiomegaly"]');
      await page.check('input[value="Pleural Effusion"]');
      await page.fill("#n", "2");
      await page.fill("#steps", String(setup.steps));
      await page.fill("#seed", "42");
      await page.selectOption("#spacing", "trailing");
      await page.fill("#guidanceRescale", "0.7");
      await page.fill("#negativePrompt", "{patient}");
      await page.fill("#negativeGuidance", "2");
      await page.selectOption("#precision", "f32");
      const posted: any[] = [];
      page.on("request", (request) => {
        if (request.method() === "POST" && request.url().endsWith("/v1/generations"))
          posted.push(request.postDataJSON());
      });
      await page.click("#go");
      await page.waitForFunction(
        () => {
          const images = [...(globalThis as any).document.querySelectorAll("#gallery figure img")] as any[];
          return images.length === 2 && images.every((image) => image.complete && image.naturalWidth > 0);
        },
        undefined,
        { timeout: 120_000 },
      );
      expect(await page.textContent("#status")).toBe("done");
      const captions = await page.locator("#gallery figcaption").allTextContents();
      expect(captions.join(" ")).toContain("BLACK male: Cardiomegaly, Pleural Effusion");
      expect(captions.join(" ")).toMatch(/seed 42/);
      expect(captions.join(" ")).toMatch(/seed 43/);
      expect(captions.join(" ")).toContain("(trailing)");
      expect(captions.join(" ")).toContain('guidance 3 rescaled by 0.7 away from "{patient}" at 2');
      expect(captions.join(" ")).toContain("8-bit f32");
      expect(posted).toHaveLength(1);
      expect(posted[0]).toMatchObject({
        spacing: "trailing",
        guidanceRescale: 0.7,
        negativePrompt: "{patient}",
        negativeGuidance: 2,
        precision: "f32",
        seed: 42,
        n: 2,
      });
      // Sampler "model's": none posted, the server takes the model's (this one names none: PNDM).
      expect(posted[0]).not.toHaveProperty("sampler");
      expect(captions.join(" ")).toContain(`${setup.steps} pndm steps`);
      const width = await page.$eval("#gallery img", (image) => image.naturalWidth as number);
      expect(width).toBe(setup.size);
      await expect.poll(() => page.locator("#jobs").textContent()).toContain("succeeded");

      // A classifier training from the form, then a batch of 2 structured cells x 2 seeds (its shards
      // outrank the training, which pauses for them); both followed to the end on the page.
      await expect
        .poll(() => page.locator("#train-dataset option").count(), { timeout: 20_000 })
        .toBeGreaterThan(0);
      await page.selectOption("#train-kind", "classifier");
      await page.selectOption("#train-config", "densenet-bc-tiny");
      await page.selectOption("#train-dataset", "real");
      await page.fill("#train-steps", "2");
      await page.fill("#train-batch", "8");
      await page.fill("#train-output", "page-classifier");
      await page.click("#train-go");
      await expect.poll(() => page.locator(".followed").count()).toBe(1);
      await page.fill("#batch-name", "page-grid");
      await page.fill("#batch-ages", "50");
      await page.fill("#batch-seeds", "7, 8");
      await page.fill("#batch-steps", String(setup.steps));
      expect(await page.textContent("#batch-size")).toBe("2 cells x 2 seeds = 4 images");
      await page.click("#batch-go");
      await expect.poll(() => page.locator(".followed").count()).toBe(2);
      const cards = page.locator(".followed .status");
      await expect
        .poll(async () => (await cards.allTextContents()).filter((text) => text.startsWith("done")).length, {
          timeout: 240_000,
          interval: 500,
        })
        .toBe(2);
      const texts = (await page.locator(".followed").allTextContents()).join(" | ");
      expect(texts).toContain("classifier training on real (densenet-bc-tiny)");
      expect(texts).toMatch(/model page-classifier/);
      expect(texts).toMatch(/batch page-grid: 2 cells x 2 seeds[\s\S]*images 4/);
      const progressed = await page.$eval(".followed progress", (bar) => [bar.value, bar.max] as number[]);
      expect(progressed[0]).toBe(progressed[1]);
      expect(progressed[1]).toBeGreaterThan(1);
      const csv = readFileSync(join(datasets, "page-grid", "train.csv"), "utf8")
        .trim()
        .split("\n");
      expect(csv.length).toBe(5);
      const training = s.server.store.list({ limit: 1, kind: "training" })[0];
      expect(training.params).toMatchObject({ kind: "classifier", dataset: "real", epochs: 2, batchSize: 8 });
      expect(training.state).toBe("succeeded");

      // The latest evaluation: macro AUROC and headline gaps with their intervals.
      await expect
        .poll(() => page.locator("#evaluation-auroc").count(), { timeout: 60_000, interval: 500 })
        .toBe(1);
      expect(await page.textContent("#evaluation-auroc")).toMatch(
        /Macro AUROC 0\.\d{3} \(0\.\d{3} to 0\.\d{3}\)/,
      );
      const gaps = await page.locator("#evaluation-gaps tr").allTextContents();
      expect(gaps.length).toBeGreaterThan(0);
      expect(
        gaps.some((row) => /^sexunderdiagnosisRate(fe)?male vs (fe)?male-?\d+\.\d% \(-?\d/.test(row)),
      ).toBe(true);
      const folder = join(process.cwd(), "runs", "server-browser");
      mkdirSync(folder, { recursive: true });
      await page.screenshot({ path: join(folder, "page.png"), fullPage: true });
      expect(consoleErrors).toEqual([]);
      const jobs = s.server.store.list({ limit: 5, kind: "generation" });
      expect(jobs[0].params).toMatchObject({
        structured: { sex: "male", age: 55, race: "BLACK", findings: ["Cardiomegaly", "Pleural Effusion"] },
        n: 2,
        seed: 42,
        sampler: "pndm",
      });
    } finally {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
      await s.close();
    }
  },
);
