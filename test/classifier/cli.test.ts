import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Command } from "commander";
import sharp from "sharp";
import { describe, expect, it, vi } from "vitest";
import { registerCommands } from "../../packages/classifier/src/cli.ts";
import { formatPredictionsCsv } from "../../packages/classifier/src/evaluation/predictions.ts";
import { evaluationDocumentSchema } from "../../packages/classifier/src/evaluation/report-schema.ts";
import { synthesizePredictions } from "../../packages/classifier/src/evaluation/synthetic.ts";
import { fixtures, repositoryRoot, scratchFolder } from "./helpers.ts";

/** Runs `cxr <args>` in this process and returns what it printed to stdout. */
async function cxr(args: string[]): Promise<string> {
  const program = new Command("cxr").exitOverride();
  registerCommands(program, { bench: program.command("bench") });
  let printed = "";
  const write = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    printed += String(chunk);
    return true;
  });
  const log = vi.spyOn(console, "log").mockImplementation((...parts: unknown[]) => {
    printed += `${parts.join(" ")}\n`;
  });
  const error = vi.spyOn(console, "error").mockImplementation(() => {});
  try {
    await program.parseAsync(["node", "cxr", ...args]);
  } finally {
    write.mockRestore();
    log.mockRestore();
    error.mockRestore();
  }
  return printed;
}

describe("cxr evaluate", () => {
  const folder = scratchFolder("cli");
  const predictions = join(folder, "predictions.csv");
  const validation = join(folder, "validation.csv");
  const baseline = join(folder, "baseline.csv");
  const institutions = ["north", "south"];
  writeFileSync(
    predictions,
    formatPredictionsCsv(synthesizePredictions({ images: 900, patients: 300, seed: 1, institutions })),
  );
  writeFileSync(
    validation,
    formatPredictionsCsv(synthesizePredictions({ images: 400, patients: 150, seed: 2, institutions })),
  );
  writeFileSync(
    baseline,
    formatPredictionsCsv(
      synthesizePredictions({ images: 900, patients: 300, seed: 1, institutions, separation: 1 }),
    ),
  );

  it("writes evaluation.json, report.md and PNG plots, and prints the summary", async () => {
    const out = join(folder, "out");
    const printed = await cxr([
      "evaluate",
      "--predictions",
      predictions,
      "--validation",
      validation,
      "--baseline",
      baseline,
      "--out",
      out,
      "--bootstrap-rounds",
      "50",
    ]);
    expect(printed).toContain(`# Evaluation of ${predictions}`);
    expect(printed).toContain(`Thresholds: F1-optimal on ${validation}.`);
    const document = evaluationDocumentSchema.parse(
      JSON.parse(readFileSync(join(out, "evaluation.json"), "utf8")),
    );
    expect(document.config.bootstrapRounds).toBe(50);
    expect(document.comparison?.baseline).toBe(baseline);
    expect(readFileSync(join(out, "report.md"), "utf8")).toContain("## Subgroups");
    const plots = readdirSync(join(out, "plots")).sort();
    expect(plots).toContain("roc-no-finding.png");
    expect(plots).toContain("underdiagnosis-sex-x-race.png");
    expect(plots).toContain("underdiagnosis-institution.png");
    expect(plots).toHaveLength(14 + 7);
    const metadata = await sharp(join(out, "plots", "underdiagnosis-race.png")).metadata();
    expect(metadata.format).toBe("png");
    expect(metadata.width).toBe(720);
    expect(readdirSync(out).filter((name) => name.includes(".tmp-"))).toEqual([]);
  });

  it("prints JSON with --json, and reuses an evaluation.json as --thresholds", async () => {
    const first = JSON.parse(
      await cxr(["evaluate", "--predictions", validation, "--json", "--bootstrap-rounds", "0"]),
    );
    const thresholdsFile = join(folder, "thresholds.json");
    writeFileSync(thresholdsFile, JSON.stringify(first));
    const second = JSON.parse(
      await cxr([
        "evaluate",
        "--predictions",
        predictions,
        "--thresholds",
        thresholdsFile,
        "--json",
        "--bootstrap-rounds",
        "0",
      ]),
    );
    expect(second.thresholds).toEqual(first.thresholds);
    expect(second.thresholdDetails[0].source).toBe("user");
    const viaValidation = JSON.parse(
      await cxr([
        "evaluate",
        "--predictions",
        predictions,
        "--validation",
        validation,
        "--json",
        "--bootstrap-rounds",
        "0",
      ]),
    );
    expect(viaValidation.overall).toEqual(second.overall);
  });

  it("runs the README example on the fixtures", async () => {
    const printed = await cxr([
      "evaluate",
      "--predictions",
      join(fixtures, "example-predictions.csv"),
      "--validation",
      join(fixtures, "example-validation.csv"),
      "--baseline",
      join(fixtures, "example-baseline.csv"),
      "--bootstrap-rounds",
      "20",
    ]);
    expect(printed).toContain("500 images of 200 patients; 14 labels.");
    expect(printed).toMatch(/\| sex \| Underdiagnosis rate \| 0\.1002 \(/);
    expect(printed).toContain("### Gap changes");
  });

  it("prints the JSON Schema of the document", async () => {
    const schema = JSON.parse(await cxr(["evaluate", "--schema"]));
    expect(schema.properties.schemaVersion.const).toBe(2);
    expect(schema.required).toContain("gaps");
  });

  it("fails with a clear message and writes nothing on bad input", async () => {
    const broken = join(folder, "broken.csv");
    const lines = readFileSync(predictions, "utf8").split("\n");
    const cells = lines[5].split(",");
    cells[cells.length - 1] = "1.7";
    lines[5] = cells.join(",");
    writeFileSync(broken, lines.join("\n"));
    const out = join(folder, "never");
    await expect(cxr(["evaluate", "--predictions", broken, "--out", out])).rejects.toThrow(
      `${broken} row 6, column "Support Devices_prob": probability 1.7 is outside [0, 1]`,
    );
    expect(existsSync(out)).toBe(false);
    await expect(
      cxr(["evaluate", "--predictions", predictions, "--baseline", broken, "--out", out]),
    ).rejects.toThrow(/probability 1\.7 is outside/);
    expect(existsSync(out)).toBe(false);
    await expect(
      cxr(["evaluate", "--predictions", predictions, "--validation", validation, "--thresholds", "x.json"]),
    ).rejects.toThrow(/either a validation file or a thresholds file/);
    await expect(cxr(["evaluate"])).rejects.toThrow(/--predictions FILE\.csv is required/);
  });

  it("rejects baseline rows that do not match, naming row and column", async () => {
    const mismatched = join(folder, "mismatched.csv");
    const lines = readFileSync(baseline, "utf8").split("\n");
    lines[3] = lines[3].replace(/^patient\d+/, "patient999999");
    writeFileSync(mismatched, lines.join("\n"));
    await expect(cxr(["evaluate", "--predictions", predictions, "--baseline", mismatched])).rejects.toThrow(
      /mismatched\.csv row 4, column "patient_id": "patient999999" does not match/,
    );
    const truthChanged = join(folder, "truth-changed.csv");
    const rows = readFileSync(baseline, "utf8").split("\n");
    const cells = rows[2].split(",");
    cells[6] = cells[6] === "1" ? "0" : "1";
    rows[2] = cells.join(",");
    writeFileSync(truthChanged, rows.join("\n"));
    await expect(cxr(["evaluate", "--predictions", predictions, "--baseline", truthChanged])).rejects.toThrow(
      /truth-changed\.csv row 3, column "No Finding_true": true value differs/,
    );
  });

  it("exits 1 with `cxr: <message>` from the real entry point", () => {
    const result = spawnSync(
      "bun",
      [
        join(repositoryRoot, "packages/cli/src/main.ts"),
        "evaluate",
        "--predictions",
        join(folder, "missing.csv"),
      ],
      { encoding: "utf8" },
    );
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`cxr: cannot read predictions file ${join(folder, "missing.csv")}`);
  });
});

describe("cxr bench evaluate", () => {
  it("runs a small benchmark and prints the measured times", async () => {
    const printed = await cxr([
      "bench",
      "evaluate",
      "--images",
      "2000",
      "--patients",
      "800",
      "--rounds",
      "5",
    ]);
    expect(printed).toMatch(/predictions: 2000 images of 800 patients x 14 labels/);
    expect(printed).toMatch(/evaluate with 5 rounds: \d+\.\d\d s wall, \d+\.\d\d s CPU/);
  });
});
