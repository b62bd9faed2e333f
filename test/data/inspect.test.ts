import { join } from "node:path";
import { Command } from "commander";
import { describe, expect, it, vi } from "vitest";
import { registerCommands } from "../../packages/data/src/cli.ts";
import { DataInputError } from "../../packages/data/src/errors.ts";
import { formatSummary } from "../../packages/data/src/inspect/format.ts";
import { inspectDataset } from "../../packages/data/src/inspect/inspect.ts";
import { summarizeDataset } from "../../packages/data/src/inspect/summary.ts";
import { fixtures, makeRecord } from "./helpers.ts";

const chexpert = join(fixtures, "chexpert/CheXpert-v1.0-small");
const demographicsCsv = join(fixtures, "chexpert/demographics.csv");
const chexpertBad = join(fixtures, "chexpert-bad");

/** Runs `cxr data ...` in-process and returns what it printed. */
async function runCli(args: string[]): Promise<string> {
  const program = new Command("cxr").exitOverride();
  registerCommands(program);
  let output = "";
  const write = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    output += String(chunk);
    return true;
  });
  try {
    await program.parseAsync(["data", ...args], { from: "user" });
  } finally {
    write.mockRestore();
  }
  return output;
}

describe("inspectDataset", () => {
  it("counts images per split, view, sex, age bin, race, institution and label value", async () => {
    const { summary } = await inspectDataset("chexpert", chexpert, { loader: { demographicsCsv } });
    expect([summary.images, summary.patients, summary.studies]).toEqual([7, 5, 6]);
    expect(summary.split).toEqual({ train: 5, valid: 2, test: 0 });
    expect(summary.view).toEqual({ AP: 4, PA: 2, LATERAL: 1 });
    expect(summary.sex).toEqual({ female: 3, male: 4 });
    expect(summary.ageBin).toEqual({ "0-20": 0, "20-40": 0, "40-60": 1, "60-80": 4, "80+": 2 });
    expect(summary.race).toEqual({ WHITE: 2, BLACK: 2, ASIAN: 1, HISPANIC: 1, unknown: 1 });
    expect(summary.institution).toEqual({ unknown: 7 });
    expect(summary.labels["No Finding"]).toEqual({ positive: 2, negative: 2, uncertain: 0, blank: 3 });
    expect(summary.labels.Cardiomegaly).toEqual({ positive: 1, negative: 1, uncertain: 1, blank: 4 });
    expect(summary.problems).toEqual({ total: 0, skipped: 0, byKind: {}, first: [] });
  });

  it("lists the first problems and counts all of them, images included", async () => {
    const { summary } = await inspectDataset("chexpert", chexpertBad, { images: "decode", maxProblems: 3 });
    expect(summary.images).toBe(2);
    expect(summary.problems.total).toBe(8);
    expect(summary.problems.skipped).toBe(8);
    expect(summary.problems.byKind).toEqual({
      "malformed-row": 2,
      "unknown-label-value": 1,
      "age-out-of-range": 1,
      "invalid-value": 2,
      "unreadable-image": 1,
      "missing-image": 1,
    });
    expect(summary.problems.first.map((issue) => issue.row)).toEqual([5, 6, 7]);
    const withoutImages = await inspectDataset("chexpert", chexpertBad, { images: "none" });
    expect(withoutImages.summary.problems.total).toBe(6);
  });

  it("stops at the first problem in fail mode", async () => {
    await expect(inspectDataset("chexpert", chexpertBad, { onError: "fail" })).rejects.toThrow(
      DataInputError,
    );
  });

  it("warns about patients found in several splits", () => {
    const summary = summarizeDataset(
      [makeRecord({ patientId: "a", split: "train" }), makeRecord({ patientId: "a", split: "valid" })],
      [],
      0,
      20,
    );
    expect(summary.patientsInSeveralSplits).toBe(1);
    expect(formatSummary(summary, "x")).toContain("warning: 1 patients have images in more than one split");
  });
});

describe("cxr data inspect", () => {
  it("prints the tables and the problems with file:row", async () => {
    const output = await runCli(["inspect", "--format", "chexpert", chexpertBad, "--images", "exists"]);
    expect(output).toContain("images 3, patients 3, studies 3");
    expect(output).toContain("institution Stanford 3");
    expect(output).toMatch(/No Finding\s+1\s+0\s+0\s+2\n/);
    expect(output).toContain(
      "problems: 7 (malformed-row 2, unknown-label-value 1, age-out-of-range 1, invalid-value 2, missing-image 1); 7 rows or images skipped",
    );
    expect(output).toContain(
      `${join(chexpertBad, "train.csv")}:7: column "Age": age 130 is outside 0-120 years`,
    );
  });

  it("prints JSON with --json", async () => {
    const output = await runCli([
      "inspect",
      "--format",
      "mimic",
      join(fixtures, "mimic"),
      "--json",
      "--images",
      "none",
    ]);
    const report = JSON.parse(output);
    expect(report.format).toBe("mimic");
    expect(report.summary.images).toBe(7);
    expect(report.summary.split).toEqual({ train: 5, valid: 1, test: 1 });
    expect(report.summary.problems.byKind).toEqual({
      "unknown-label-value": 1,
      "age-out-of-range": 1,
      "malformed-row": 1,
      "unmatched-row": 3,
    });
  });

  it("--on-error fail throws the first problem for main.ts to print", async () => {
    await expect(
      runCli(["inspect", "--format", "folder", join(fixtures, "folder"), "--on-error", "fail"]),
    ).rejects.toThrow(`${join(fixtures, "folder/lonely.txt")}: prompt has no image beside it`);
  });

  it("rejects an unknown format", async () => {
    const stderr = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    try {
      await expect(runCli(["inspect", "--format", "dicom", chexpert])).rejects.toThrow(
        /Allowed choices are chexpert, mimic, folder/,
      );
    } finally {
      stderr.mockRestore();
    }
  });
});
