/**
 * Writing a phantom dataset in the CheXpert layout:
 *
 *   DIR/train.csv, valid.csv, test.csv   CheXpert columns + Race, Institution, Prompt
 *   DIR/{train,valid,test}/patient00001/study1/view1_frontal.png
 *   DIR/phantom.jsonl                     ground truth: one object per image (parameters, labels, CTR)
 *   DIR/manifest.json                     options and counts, enough to regenerate the dataset
 *
 * `Path` in the CSVs starts with DIR's own name, as CheXpert's starts with "CheXpert-v1.0-small".
 * Everything is written into a staging directory beside DIR and renamed into place at the end, so an
 * interrupted run never leaves a half-written dataset.
 */
import { existsSync } from "node:fs";
import { mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import Papa from "papaparse";
import * as z from "zod";
import { BIT_DEPTHS, type BitDepth, encodeGrayPng } from "../images/encode.ts";
import { CHEXPERT_LABELS, type LabelValue, SPLITS, type Split } from "../records.ts";
import { DEFAULT_SPLIT_FRACTIONS, type PhantomStudy, planPhantomCohort } from "./cohort.ts";
import { institutionIds } from "./institutions.ts";
import { measureCardiothoracicRatio } from "./measure.ts";
import { PHANTOM_SIZES, type PhantomSize, renderPhantom } from "./render/index.ts";
import { type CohortStatistics, cohortStatistics } from "./statistics.ts";

export const PHANTOM_FORMAT_VERSION = 1;

const splitFractionsSchema = z
  .object({
    train: z.number().min(0).max(1),
    valid: z.number().min(0).max(1),
    test: z.number().min(0).max(1),
  })
  .refine((fractions) => Math.abs(fractions.train + fractions.valid + fractions.test - 1) < 1e-6, {
    message: "split fractions must sum to 1",
  });

export const phantomDatasetOptionsSchema = z.object({
  outDir: z.string().min(1, "output directory is required"),
  count: z.number().int().positive().max(10_000_000),
  size: z.union(
    PHANTOM_SIZES.map((size) => z.literal(size)) as [
      z.ZodLiteral<PhantomSize>,
      ...z.ZodLiteral<PhantomSize>[],
    ],
  ),
  institutions: z.array(z.string().min(1)).min(1),
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  bitDepth: z
    .union(
      BIT_DEPTHS.map((depth) => z.literal(depth)) as [z.ZodLiteral<BitDepth>, ...z.ZodLiteral<BitDepth>[]],
    )
    .default(8),
  splitFractions: splitFractionsSchema.default(DEFAULT_SPLIT_FRACTIONS),
  /** Replace DIR if it exists and is not empty. */
  overwrite: z.boolean().default(false),
  /** PNG encodes in flight while the next image renders. */
  concurrency: z.number().int().min(1).max(64).default(8),
});
export type PhantomDatasetOptions = z.input<typeof phantomDatasetOptionsSchema> & {
  onProgress?: (done: number, total: number) => void;
};

export interface PhantomDatasetSummary {
  outDir: string;
  images: number;
  patients: number;
  size: PhantomSize;
  bitDepth: BitDepth;
  seconds: number;
  imagesPerSecond: number;
  statistics: CohortStatistics;
  /** Images whose cardiothoracic ratio could not be measured from the pixels (borders obscured). */
  unmeasuredCardiothoracicRatio: number;
}

export const CSV_COLUMNS = [
  "Path",
  "Sex",
  "Age",
  "Frontal/Lateral",
  "AP/PA",
  ...CHEXPERT_LABELS,
  "Race",
  "Institution",
  "Prompt",
] as const;

/** CheXpert writes labels as floats ("1.0", "0.0", "-1.0") and blanks for "not mentioned". */
function formatLabel(value: LabelValue): string {
  return value === null ? "" : value.toFixed(1);
}

export function csvRow(study: PhantomStudy): string[] {
  const { demographics, parameters, labels } = study;
  return [
    study.path,
    demographics.sex === "female" ? "Female" : "Male",
    String(demographics.age),
    "Frontal",
    parameters.acquisition.view,
    ...CHEXPERT_LABELS.map((label) => formatLabel(labels[label])),
    demographics.race,
    study.institution,
    study.prompt,
  ];
}

function parseOptions(options: PhantomDatasetOptions) {
  const parsed = phantomDatasetOptionsSchema.safeParse(options);
  if (!parsed.success) {
    const problems = parsed.error.issues.map(
      (issue) => `${issue.path.join(".") || "options"}: ${issue.message}`,
    );
    throw new Error(`invalid phantom options: ${problems.join("; ")}`);
  }
  const known = new Set(institutionIds());
  for (const institution of parsed.data.institutions) {
    if (!known.has(institution)) {
      throw new Error(
        `unknown phantom institution "${institution}" (known: ${[...known].join(", ")}, or "all")`,
      );
    }
  }
  return parsed.data;
}

async function isEmptyOrMissing(directory: string): Promise<boolean> {
  if (!existsSync(directory)) return true;
  try {
    return (await readdir(directory)).length === 0;
  } catch {
    throw new Error(`output path ${directory} exists and is not a directory`);
  }
}

/** Renders each image, measures its cardiothoracic ratio from the pixels into `measured`, and writes the PNG. */
async function writeImages(
  studies: readonly PhantomStudy[],
  staging: string,
  size: PhantomSize,
  bitDepth: BitDepth,
  concurrency: number,
  measured: Map<PhantomStudy, number | null>,
  onProgress?: (done: number, total: number) => void,
): Promise<void> {
  const inFlight = new Set<Promise<void>>();
  const created = new Set<string>();
  let done = 0;
  try {
    for (const study of studies) {
      const pixels = renderPhantom(study.parameters, size);
      const measurement = measureCardiothoracicRatio(pixels, size);
      measured.set(study, measurement === null ? null : Math.round(measurement.ratio * 1e4) / 1e4);
      const file = path.join(staging, ...study.path.split("/").slice(1));
      const directory = path.dirname(file);
      if (!created.has(directory)) {
        await mkdir(directory, { recursive: true });
        created.add(directory);
      }
      const task = encodeGrayPng({ width: size, height: size, pixels }, bitDepth)
        .then((png) => writeFile(file, png))
        .then(() => {
          done++;
          onProgress?.(done, studies.length);
        });
      inFlight.add(task);
      task.then(
        () => inFlight.delete(task),
        () => undefined,
      );
      if (inFlight.size >= concurrency) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
  } catch (error) {
    await Promise.allSettled(inFlight);
    throw error;
  }
}

function groundTruthLine(study: PhantomStudy, measuredRatio: number | null): string {
  return JSON.stringify({
    path: study.path,
    patientId: study.patientId,
    studyId: study.studyId,
    split: study.split,
    institution: study.institution,
    demographics: study.demographics,
    view: study.parameters.acquisition.view,
    labels: study.labels,
    impression: study.impression,
    prompt: study.prompt,
    conditions: study.conditions,
    pneumonia: study.pneumonia,
    cardiothoracicRatio: study.cardiothoracicRatio,
    drawnCardiothoracicRatio: study.parameters.anatomy.heart.halfWidth,
    measuredCardiothoracicRatio: measuredRatio,
    parameters: study.parameters,
  });
}

export async function generatePhantomDataset(options: PhantomDatasetOptions): Promise<PhantomDatasetSummary> {
  const started = performance.now();
  const config = parseOptions(options);
  const outDir = path.resolve(config.outDir);
  const rootName = path.basename(outDir);
  if (!config.overwrite && !(await isEmptyOrMissing(outDir))) {
    throw new Error(`output directory ${outDir} exists and is not empty (pass --force to replace it)`);
  }
  await mkdir(path.dirname(outDir), { recursive: true });
  const staging = `${outDir}.partial-${process.pid}`;
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging);
  try {
    const studies = planPhantomCohort({
      count: config.count,
      institutions: config.institutions,
      seed: config.seed,
      splitFractions: config.splitFractions,
      rootName,
    });
    const measured = new Map<PhantomStudy, number | null>();
    await writeImages(
      studies,
      staging,
      config.size,
      config.bitDepth,
      config.concurrency,
      measured,
      options.onProgress,
    );

    const rowsBySplit = new Map<Split, string[][]>(SPLITS.map((split) => [split, []]));
    for (const study of studies) rowsBySplit.get(study.split)!.push(csvRow(study));
    for (const split of SPLITS) {
      const csv = Papa.unparse(
        { fields: [...CSV_COLUMNS], data: rowsBySplit.get(split)! },
        { newline: "\n" },
      );
      await writeFile(path.join(staging, `${split}.csv`), `${csv}\n`);
    }
    const lines = studies.map((study) => groundTruthLine(study, measured.get(study) ?? null));
    await writeFile(path.join(staging, "phantom.jsonl"), `${lines.join("\n")}\n`);

    const statistics = cohortStatistics(studies);
    const manifest = {
      generator: "cxr phantom",
      formatVersion: PHANTOM_FORMAT_VERSION,
      seed: config.seed,
      count: config.count,
      size: config.size,
      bitDepth: config.bitDepth,
      institutions: config.institutions,
      splitFractions: config.splitFractions,
      rootName,
      images: studies.length,
      patients: statistics.overall.patients,
      splits: Object.fromEntries(
        SPLITS.map((split) => [
          split,
          { images: statistics.bySplit[split].images, patients: statistics.bySplit[split].patients },
        ]),
      ),
    };
    await writeFile(path.join(staging, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);

    if (existsSync(outDir)) {
      const previous = `${outDir}.replaced-${process.pid}`;
      await rename(outDir, previous);
      await rename(staging, outDir);
      await rm(previous, { recursive: true, force: true });
    } else {
      await rename(staging, outDir);
    }
    const seconds = (performance.now() - started) / 1000;
    return {
      outDir,
      images: studies.length,
      patients: statistics.overall.patients,
      size: config.size,
      bitDepth: config.bitDepth,
      seconds,
      imagesPerSecond: studies.length / seconds,
      statistics,
      unmeasuredCardiothoracicRatio: [...measured.values()].filter((ratio) => ratio === null).length,
    };
  } catch (error) {
    await rm(staging, { recursive: true, force: true });
    throw error;
  }
}
