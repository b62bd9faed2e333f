/**
 * `cxr phantom`: writes a seeded procedural chest-radiograph dataset in the CheXpert layout, then prints
 * the per-institution demographic mix and label prevalence, and the images per second it achieved.
 */
import { type Command, InvalidArgumentError, Option } from "commander";
import { BIT_DEPTHS, type BitDepth } from "./images/encode.ts";
import { generatePhantomDataset, type PhantomDatasetSummary } from "./phantom/dataset.ts";
import { INSTITUTIONS, institutionIds } from "./phantom/institutions.ts";
import { PHANTOM_SIZES, type PhantomSize } from "./phantom/render/index.ts";
import type { GroupStatistics } from "./phantom/statistics.ts";
import { CHEXPERT_LABELS, RACES } from "./records.ts";

interface PhantomFlags {
  out?: string;
  n: number;
  size: string;
  institution: string[];
  seed: number;
  bits: string;
  split: string;
  force?: boolean;
  concurrency: number;
  listInstitutions?: boolean;
}

function parseNonNegativeInteger(name: string) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(parsed)) {
      throw new InvalidArgumentError(`${name} must be a non-negative integer, got "${value}"`);
    }
    return parsed;
  };
}

function parseSplit(value: string): { train: number; valid: number; test: number } {
  const parts = value.split(",").map((part) => Number(part.trim()));
  if (parts.length !== 3 || parts.some((part) => !Number.isFinite(part) || part < 0)) {
    throw new Error(`--split must be three non-negative numbers "train,valid,test", got "${value}"`);
  }
  return { train: parts[0], valid: parts[1], test: parts[2] };
}

/** `--institution all`, `--institution a,b` and `--institution a --institution b` all work. */
export function parseInstitutions(values: readonly string[]): string[] {
  const names = values
    .flatMap((value) => value.split(","))
    .map((name) => name.trim())
    .filter((name) => name.length > 0);
  if (names.length === 0) throw new Error("--institution needs at least one name (or all)");
  if (names.includes("all")) return institutionIds();
  return [...new Set(names)];
}

function percent(share: number): string {
  return `${(100 * share).toFixed(1)}%`;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  return rows
    .map((row) =>
      row
        .map((cell, column) => (column === 0 ? cell.padEnd(widths[column]) : cell.padStart(widths[column])))
        .join("  "),
    )
    .join("\n");
}

export function formatPhantomSummary(summary: PhantomDatasetSummary): string {
  const { statistics } = summary;
  const groups: [string, GroupStatistics][] = [
    ...Object.entries(statistics.byInstitution),
    ["all", statistics.overall],
  ];
  const demographics = [
    ["institution", "images", "patients", "female", "age 60+", "female 60+", ...RACES, "AP"],
    ...groups.map(([name, group]) => [
      name,
      String(group.images),
      String(group.patients),
      percent(group.femaleShare),
      percent(group.olderShare),
      percent(group.olderFemaleShare),
      ...RACES.map((race) => percent(group.raceShare[race])),
      percent(group.apShare),
    ]),
  ];
  const labels = [
    ["label: positive (uncertain)", ...groups.map(([name]) => name)],
    ...CHEXPERT_LABELS.map((label) => [
      label,
      ...groups.map(
        ([, group]) => `${percent(group.positiveShare[label])} (${percent(group.uncertainShare[label])})`,
      ),
    ]),
  ];
  const splits = Object.entries(statistics.bySplit)
    .map(([split, group]) => `${split} ${group.images} images / ${group.patients} patients`)
    .join(", ");
  return [
    `wrote ${summary.images} images (${summary.patients} patients), ${summary.size}x${summary.size} ${summary.bitDepth}-bit, to ${summary.outDir}`,
    `splits: ${splits}`,
    "",
    table(demographics),
    "",
    table(labels),
    "",
    `cardiothoracic ratio not measurable from the pixels in ${summary.unmeasuredCardiothoracicRatio} images`,
    `${summary.seconds.toFixed(2)} s, ${summary.imagesPerSecond.toFixed(1)} images/s`,
  ].join("\n");
}

function listInstitutions(): string {
  return INSTITUTIONS.map(
    (institution) => `${institution.id.padEnd(10)} ${institution.name}: ${institution.description}`,
  ).join("\n");
}

export function registerPhantomCommands(program: Command): void {
  program
    .command("phantom")
    .description(
      "write a seeded procedural chest-radiograph dataset in the CheXpert layout (train/valid/test CSVs, PNGs, phantom.jsonl)",
    )
    .option("--out <dir>", "output directory; its name starts every CSV Path, like CheXpert-v1.0-small")
    .option(
      "--n <count>",
      "number of images (one frontal view per study)",
      parseNonNegativeInteger("--n"),
      1000,
    )
    .addOption(
      new Option("--size <pixels>", "image width and height")
        .choices(PHANTOM_SIZES.map(String))
        .default("128"),
    )
    .option(
      "--institution <names...>",
      `institution ids, comma-separated or repeated, or all (${institutionIds().join(", ")})`,
      ["all"],
    )
    .option(
      "--seed <seed>",
      "random seed: the same seed gives byte-identical files",
      parseNonNegativeInteger("--seed"),
      0,
    )
    .addOption(new Option("--bits <depth>", "PNG bit depth").choices(BIT_DEPTHS.map(String)).default("8"))
    .option("--split <fractions>", "train,valid,test fractions of the patients", "0.8,0.1,0.1")
    .option("--force", "replace the output directory if it exists and is not empty")
    .option("--concurrency <count>", "PNG encodes in flight", parseNonNegativeInteger("--concurrency"), 8)
    .option("--list-institutions", "print the institutions and exit")
    .action(async (flags: PhantomFlags) => {
      if (flags.listInstitutions) {
        console.log(listInstitutions());
        return;
      }
      if (flags.out === undefined) throw new Error("phantom: --out <dir> is required");
      if (flags.n < 1) throw new Error("phantom: --n must be at least 1");
      const showProgress = process.stderr.isTTY === true;
      const summary = await generatePhantomDataset({
        outDir: flags.out,
        count: flags.n,
        size: Number(flags.size) as PhantomSize,
        institutions: parseInstitutions(flags.institution),
        seed: flags.seed,
        bitDepth: Number(flags.bits) as BitDepth,
        splitFractions: parseSplit(flags.split),
        overwrite: flags.force === true,
        concurrency: Math.max(1, flags.concurrency),
        onProgress: showProgress
          ? (done, total) => {
              if (done % 250 === 0 || done === total) process.stderr.write(`\r${done}/${total} images`);
              if (done === total) process.stderr.write("\n");
            }
          : undefined,
      });
      console.log(formatPhantomSummary(summary));
    });
}
