/**
 * `cxr bench kernels` end to end (spawned with bun, short shapes): the roofline comes first and
 * every case carries its fraction of it; `--models` runs the model cases the CLI passes down from
 * the classifier and diffusion packages, prints our time with the per-kernel breakdown, and
 * PyTorch's time beside it when torch is there (or says why not).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "../..");
const dir = mkdtempSync(join(tmpdir(), "cxr-bench-kernels-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const HAS_TORCH = spawnSync("/usr/bin/python3", ["-c", "import torch, torchvision"]).status === 0;

function cxr(args: string[]) {
  const result = spawnSync("bun", ["packages/cli/src/main.ts", ...args], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 15 * 60_000,
  });
  if (result.error) throw result.error;
  return result;
}

describe("cxr bench kernels", () => {
  it("prints the roofline first and every case as a fraction of it (table and JSON)", () => {
    const out = join(dir, "kernels.json");
    const result = cxr([
      "bench",
      "kernels",
      "--quick",
      "--filter",
      "4x65536",
      "--repeats",
      "1",
      "--out",
      out,
    ]);
    expect(result.stderr).not.toMatch(/Error/);
    expect(result.status).toBe(0);
    const lines = result.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^roofline: [0-9.]+ GFLOP\/s peak f32 FMA .* result checked against the CPU\)$/);
    expect(lines[2]).toMatch(/GFLOP\/s\s+of roof\s+GB\/s/);
    expect(lines[4]).toMatch(/^softmax\s+\[4x65536\].*\s[0-9.]+%\s/);
    const document = JSON.parse(readFileSync(out, "utf8"));
    expect(document.roofline.gflopsPerSecond).toBeGreaterThan(0);
    expect(document.results).toHaveLength(1);
    const [row] = document.results;
    expect(row.rooflineFraction).toBeCloseTo(row.gflopsPerSecond / document.roofline.gflopsPerSecond, 10);
  });

  it("--models: our time, the per-kernel breakdown and PyTorch's time for each model step", () => {
    const result = cxr(["bench", "kernels", "--models", "--quick", "--steps", "1"]);
    expect(result.status).toBe(0);
    const text = result.stdout;
    expect(text).toMatch(/^roofline: /);
    for (const name of ["SmallCnn training step", "DenseNet dense block", "UNet block"]) {
      const row = text.split("\n").find((line) => line.startsWith(`| ${name} |`));
      expect(row, name).toBeDefined();
      const cells = (row ?? "").split("|").map((cell) => cell.trim());
      expect(Number(cells[5]), `${name} ms/step`).toBeGreaterThan(0);
      expect(cells[7], `${name} of roof`).toMatch(/%$/);
      if (HAS_TORCH) expect(Number(cells[8]), `${name} PyTorch ms/step`).toBeGreaterThan(0);
      else expect(cells[8]).toBe("unavailable");
      expect(text).toContain(`${name} (`);
    }
    expect(text.match(/per-kernel breakdown of one step/g)).toHaveLength(3);
    expect(text).toMatch(/\nconv2d\s+\S+\s+\d/); // SmallCnn and the dense block convolve
    expect(text).toMatch(/\nmatmul\s+\S+\s+\d/); // the UNet block's projections
    if (HAS_TORCH) expect(text.match(/PyTorch 1\.\S+ \(CPU, \d+ threads\), same step/g)).toHaveLength(3);
    else expect(text.match(/PyTorch column unavailable: /g)).toHaveLength(3);
  });

  it("--models without a usable Python: PyTorch's column says why, the run still succeeds", () => {
    const result = cxr([
      "bench",
      "kernels",
      "--models",
      "--quick",
      "--steps",
      "1",
      "--filter",
      "dense",
      "--python",
      "/nonexistent/python3",
    ]);
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/\| DenseNet dense block \| classifier \|.*\| unavailable \| - \|/);
    expect(result.stdout).toContain("PyTorch column unavailable: /nonexistent/python3 not found");
    expect(result.stdout).not.toContain("UNet block");
  });

  it("names a filter that matches no model case", () => {
    const result = cxr(["bench", "kernels", "--models", "--filter", "resnet50"]);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain("bench kernels --models: no model case matches --filter resnet50");
  });
});
