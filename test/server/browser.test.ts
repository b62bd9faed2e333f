/**
 * The web page in a real headless Chromium (Debian's `chromium`, driven by playwright-core): fill
 * the form, generate, watch the images appear in the gallery. The screenshot is kept under
 * runs/server-browser/ (a CI artifact). Without /usr/bin/chromium the test is skipped, except under
 * CI (CI=true), where it fails: CI must install it (`apt-get install chromium`).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { type GeneratorSetup, setupGenerator } from "./generator-setup.ts";
import { startTestServer } from "./helpers.ts";

/** The part of playwright-core's API used here (its types resolve from packages/server only). */
interface Locator {
  count(): Promise<number>;
  allTextContents(): Promise<string[]>;
  textContent(): Promise<string | null>;
}
interface Page {
  on(event: "pageerror", listener: (error: Error) => void): void;
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

test.skipIf(!available)("fill the form, generate, see the images appear", async () => {
  const token = "browser-token-0123456789abcdef";
  const s = await startTestServer({
    generator: setup.generator,
    dataRoot: setup.dataRoot,
    defaultModel: setup.model,
    tokens: [token],
  });
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
    const width = await page.$eval("#gallery img", (image) => image.naturalWidth as number);
    expect(width).toBe(setup.size);
    await expect.poll(() => page.locator("#jobs").textContent()).toContain("succeeded");
    const folder = join(process.cwd(), "runs", "server-browser");
    mkdirSync(folder, { recursive: true });
    await page.screenshot({ path: join(folder, "page.png"), fullPage: true });
    expect(consoleErrors).toEqual([]);
    const jobs = s.server.store.list({ limit: 5, kind: "generation" });
    expect(jobs[0].params).toMatchObject({
      structured: { sex: "male", age: 55, race: "BLACK", findings: ["Cardiomegaly", "Pleural Effusion"] },
      n: 2,
      seed: 42,
    });
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
    await s.close();
  }
});
