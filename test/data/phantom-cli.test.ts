import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Command } from "commander";
import { describe, expect, it, vi } from "vitest";
import { parseInstitutions, registerPhantomCommands } from "../../packages/data/src/cli-phantom.ts";
import { institutionIds } from "../../packages/data/src/phantom/institutions.ts";
import { scratchFolder } from "./helpers.ts";

const scratch = scratchFolder("phantom-cli");

/** Runs `cxr <args>` in this process and returns what it printed. */
async function cxr(args: string[]): Promise<string> {
  const program = new Command("cxr")
    .exitOverride()
    .configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerPhantomCommands(program);
  let printed = "";
  const log = vi.spyOn(console, "log").mockImplementation((...parts: unknown[]) => {
    printed += `${parts.join(" ")}\n`;
  });
  try {
    await program.parseAsync(["node", "cxr", ...args]);
  } finally {
    log.mockRestore();
  }
  return printed;
}

describe("cxr phantom", () => {
  it("writes a dataset for several institutions and reports prevalence and images per second", async () => {
    const out = join(scratch, "two-sites");
    const printed = await cxr([
      "phantom",
      "--out",
      out,
      "--n",
      "24",
      "--size",
      "64",
      "--institution",
      "highland,valley",
      "--seed",
      "5",
      "--bits",
      "16",
    ]);
    expect(printed).toMatch(/wrote 24 images \(\d+ patients\), 64x64 16-bit/);
    expect(printed).toMatch(/highland\s+12\s/);
    expect(printed).toMatch(/valley\s+12\s/);
    expect(printed).toMatch(/Cardiomegaly/);
    expect(printed).toMatch(/[\d.]+ images\/s/);
    const manifest = JSON.parse(readFileSync(join(out, "manifest.json"), "utf8"));
    expect(manifest).toMatchObject({ institutions: ["highland", "valley"], bitDepth: 16, seed: 5 });
    expect(existsSync(join(out, "train.csv"))).toBe(true);
  });

  it("lists the institutions", async () => {
    const printed = await cxr(["phantom", "--list-institutions"]);
    for (const id of institutionIds()) expect(printed).toContain(id);
  });

  it("accepts all, commas and repeats for --institution, and rejects unknown names", async () => {
    expect(parseInstitutions(["all"])).toEqual(institutionIds());
    expect(parseInstitutions(["harbor,valley", "harbor"])).toEqual(["harbor", "valley"]);
    await expect(
      cxr(["phantom", "--out", join(scratch, "x"), "--n", "2", "--institution", "mars"]),
    ).rejects.toThrow(/unknown phantom institution "mars"/);
  });

  it("rejects a bad size, count, seed or missing --out with a clear message", async () => {
    await expect(cxr(["phantom", "--out", join(scratch, "y"), "--size", "100"])).rejects.toThrow(/--size/);
    await expect(cxr(["phantom", "--out", join(scratch, "y"), "--n", "ten"])).rejects.toThrow(/--n must be/);
    await expect(cxr(["phantom", "--out", join(scratch, "y"), "--seed", "-3"])).rejects.toThrow(/--seed/);
    await expect(cxr(["phantom", "--n", "3"])).rejects.toThrow(/--out <dir> is required/);
    await expect(cxr(["phantom", "--out", join(scratch, "y"), "--split", "0.5,0.5"])).rejects.toThrow(
      /--split/,
    );
    expect(existsSync(join(scratch, "y"))).toBe(false);
  });
});
