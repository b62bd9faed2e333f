/**
 * `cxr quickstart`: the main job on built-in defaults, end to end on whatever adapter is present.
 * Writes a multi-institution phantom dataset, trains a small CNN with our kernels on one
 * (deliberately skewed) institution, and evaluates it in distribution and on the other
 * institutions with the fairness toolkit. Last, the shipped generator draws films for a few prompts,
 * laid out next to real test films of the same description in one contact sheet.
 */
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  DEFAULT_TRAIN_CONFIG,
  type EvaluationDocument,
  evaluatePredictions,
  type PredictionTable,
  predictionTableFromRecords,
  predictProbabilities,
  renderSummary,
  SmallCnn,
  trainClassifier,
  writeEvaluationOutputs,
} from "@cxr/classifier";
import {
  type CxrRecord,
  decodeImage,
  frontalOnly,
  generatePhantomDataset,
  institutionIds,
  loadDataset,
  resizeBilinear,
} from "@cxr/data";
import { type ContactSheetRow, createPipeline, type PromptFields, writeContactSheet } from "@cxr/diffusion";
import { createGpu, type Gpu } from "@cxr/kernels";
import type { Command } from "commander";

export interface QuickstartOptions {
  out: string;
  images: number;
  /** Phantom institutions to generate; the training institution must be one of them. */
  institutions: string[];
  size: number;
  epochs: number;
  trainInstitution: string;
  seed: number;
  bootstrap: number;
  /** A generator model folder for the generated-vs-real contact sheet; null skips that step. */
  generator: string | null;
}

/** The generator shipped in the repository (trained on phantom training splits only). */
export const SHIPPED_GENERATOR = resolve(
  dirname(fileURLToPath(import.meta.url)),
  "../../../models/phantom-diffusion",
);

const DEFAULTS: QuickstartOptions = {
  out: "runs/quickstart",
  images: 8000,
  institutions: institutionIds(),
  size: 64,
  epochs: 8,
  trainInstitution: "highland",
  seed: 7,
  bootstrap: 200,
  generator: SHIPPED_GENERATOR,
};

/** The contact sheet's rows: generated films for each description, then real test films like it. */
const SHEET_PROMPTS: readonly PromptFields[] = [
  { sex: "female", age: 70, findings: ["Cardiomegaly"] },
  { sex: "male", age: 70, findings: ["Cardiomegaly"] },
  { sex: "female", age: 40, findings: [] },
  { sex: "male", age: 40, findings: [] },
];
const SHEET_COLUMNS = 4;

function matchesPrompt(record: CxrRecord, fields: PromptFields): boolean {
  if (record.sex !== fields.sex) return false;
  if (fields.findings.length === 0) return record.labels["No Finding"] === 1;
  return fields.findings.every((finding) => record.labels[finding as keyof CxrRecord["labels"]] === 1);
}

/** Real films matching each description (any age), decoded and resized to the generator's size. */
async function realRows(records: readonly CxrRecord[], size: number): Promise<ContactSheetRow[]> {
  const rows: ContactSheetRow[] = [];
  for (const fields of SHEET_PROMPTS) {
    const chosen = records.filter((record) => matchesPrompt(record, fields)).slice(0, SHEET_COLUMNS);
    const images = [];
    for (const record of chosen) {
      const decoded = await decodeImage(record.imagePath);
      images.push({ pixels: resizeBilinear(decoded, size, size).pixels, size });
    }
    const what = fields.findings.length === 0 ? "No Finding" : fields.findings.join(", ");
    rows.push({ label: `real test films: ${fields.sex}, ${what}`, images });
  }
  return rows;
}

async function generatedVersusReal(
  gpu: Gpu,
  modelDir: string,
  records: readonly CxrRecord[],
  out: string,
  seed: number,
  log: (message: string) => void,
): Promise<string> {
  const started = performance.now();
  const pipeline = await createPipeline(modelDir, { gpu });
  try {
    const size = pipeline.model.config.resolution;
    // The model's own sampler and steps (its config.json "sampling": DDPM, 20 steps, for the
    // shipped model, whose deterministic samplers leave speckle and broken films).
    const { sampler, steps } = pipeline.defaults;
    const { path } = await writeContactSheet(pipeline, {
      prompts: SHEET_PROMPTS,
      perPrompt: SHEET_COLUMNS,
      out: join(out, "generated-vs-real.png"),
      guidance: 3,
      seed,
      extraRows: await realRows(records, size),
    });
    log(
      `  ${SHEET_PROMPTS.length * SHEET_COLUMNS} films generated (${size} px, ${steps} ${sampler} steps, guidance 3) in ${((performance.now() - started) / 1000).toFixed(0)} s -> ${path}`,
    );
    return path;
  } finally {
    pipeline.dispose();
  }
}

function describeSplit(name: string, records: readonly CxrRecord[]): string {
  const patients = new Set(records.map((record) => record.patientId)).size;
  return `${name}: ${records.length} images of ${patients} patients`;
}

/** What one quickstart run produced: the two evaluation documents and where everything went. */
export interface QuickstartResult {
  out: string;
  inDistribution: EvaluationDocument;
  outOfDistribution: EvaluationDocument | null;
  seconds: number;
  /** The generated-vs-real contact sheet, when a generator was given. */
  contactSheet: string | null;
}

export async function quickstart(
  overrides: Partial<QuickstartOptions> = {},
  log: (message: string) => void = console.log,
): Promise<QuickstartResult> {
  const options = { ...DEFAULTS, ...overrides };
  const started = performance.now();
  for (const id of [...options.institutions, options.trainInstitution]) {
    if (!institutionIds().includes(id)) {
      throw new Error(`quickstart: unknown institution "${id}" (choose from ${institutionIds().join(", ")})`);
    }
  }
  if (options.generator !== null && !existsSync(join(options.generator, "config.json"))) {
    throw new Error(
      `quickstart: no generator model at ${options.generator} (config.json missing); pass --no-generate to skip`,
    );
  }
  if (!options.institutions.includes(options.trainInstitution)) {
    throw new Error(
      `quickstart: the training institution "${options.trainInstitution}" is not among --institutions ${options.institutions.join(",")}`,
    );
  }
  const out = resolve(options.out);
  mkdirSync(out, { recursive: true });

  const gpu = await createGpu();
  log(
    `adapter: ${gpu.adapter.description || gpu.adapter.device} (${gpu.adapter.kind}, ${gpu.adapter.backend})`,
  );

  log(
    `\n[1/5] phantom dataset: ${options.images} images at ${options.size}px from ${options.institutions.length} institutions`,
  );
  const dataDir = join(out, "phantom");
  const summary = await generatePhantomDataset({
    outDir: dataDir,
    count: options.images,
    size: options.size as 64,
    institutions: options.institutions,
    seed: options.seed,
    overwrite: true,
  });
  log(
    `  wrote ${summary.images} images of ${summary.patients} patients in ${summary.seconds.toFixed(1)} s -> ${dataDir}`,
  );

  const loaded = loadDataset("chexpert", dataDir, { onError: "fail" });
  const records = frontalOnly(loaded.records);
  const at = (split: string, inside: boolean) =>
    records.filter(
      (record) => record.split === split && (record.institution === options.trainInstitution) === inside,
    );
  const train = at("train", true);
  const valid = at("valid", true);
  const testIn = at("test", true);
  const testOut = at("test", false);
  log(`\n[2/5] train on "${options.trainInstitution}" only`);
  for (const [name, split] of [
    ["train", train],
    ["valid", valid],
    ["test (same institution)", testIn],
    ["test (other institutions)", testOut],
  ] as const) {
    log(`  ${describeSplit(name, split)}`);
  }

  const model = new SmallCnn(gpu, { widths: [16, 32, 64, 64], labels: 14, seed: options.seed });
  log(
    `  SmallCnn: ${model.parameterCount()} parameters, ${options.epochs} epochs, batch ${DEFAULT_TRAIN_CONFIG.batchSize}`,
  );
  await trainClassifier(
    model,
    train,
    { epochs: options.epochs, imageSize: options.size, seed: options.seed },
    (epoch) =>
      log(
        `  epoch ${epoch.epoch}: mean masked BCE ${epoch.meanLoss.toFixed(4)}, ${(epoch.images / epoch.seconds).toFixed(0)} images/s`,
      ),
  );
  await model.save(join(out, "small-cnn.safetensors"), { trainInstitution: options.trainInstitution });

  log("\n[3/5] predict");
  const predict = async (name: string, split: CxrRecord[]) => {
    const probabilities = await predictProbabilities(model, split, options.size);
    const { table, excluded } = predictionTableFromRecords(name, split, probabilities);
    if (excluded > 0)
      log(`  ${name}: ${excluded} images without sex, age or race left out of the evaluation`);
    return table;
  };
  const validation = await predict("valid", valid);
  const inDistribution = await predict(`test-${options.trainInstitution}`, testIn);
  const outOfDistribution = testOut.length > 0 ? await predict("test-other-institutions", testOut) : null;

  log("\n[4/5] evaluate (thresholds: F1-optimal on the validation split)");
  const config = { bootstrapRounds: options.bootstrap, seed: options.seed, minimumDenominator: 20 };
  const evaluate = async (name: string, predictions: PredictionTable) => {
    const document = evaluatePredictions({ predictions, validation }, config);
    const reportDir = join(out, `report-${name}`);
    await writeEvaluationOutputs(document, reportDir);
    log(`\n## ${name} (${reportDir})\n`);
    log(renderSummary(document));
    return document;
  };
  const inDocument = await evaluate("in-distribution", inDistribution);
  // With a single institution there is nothing out of distribution to evaluate.
  const outDocument = outOfDistribution ? await evaluate("out-of-distribution", outOfDistribution) : null;

  let contactSheet: string | null = null;
  if (options.generator !== null) {
    log(`\n[5/5] generate with ${options.generator}, next to real test films`);
    contactSheet = await generatedVersusReal(
      gpu,
      options.generator,
      [...testIn, ...testOut],
      out,
      options.seed,
      log,
    );
  }
  const seconds = (performance.now() - started) / 1000;
  log(`\nquickstart finished in ${seconds.toFixed(0)} s; outputs in ${out}`);
  gpu.destroy();
  return { out, inDistribution: inDocument, outOfDistribution: outDocument, seconds, contactSheet };
}

const integer = (name: string) => (value: string) => {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0)
    throw new Error(`--${name} must be a non-negative integer, got ${value}`);
  return parsed;
};

export function registerQuickstart(program: Command): void {
  program
    .command("quickstart")
    .description(
      "phantom dataset -> small CNN trained with our WebGPU kernels -> fairness evaluation (the main job)",
    )
    .option("--out <dir>", "output folder", DEFAULTS.out)
    .option("--images <n>", "phantom images across all institutions", integer("images"), DEFAULTS.images)
    .option(
      "--institutions <ids>",
      "comma-separated phantom institutions to generate",
      (value: string) => value.split(",").map((id) => id.trim()),
      DEFAULTS.institutions,
    )
    .option("--size <px>", "image size (64, 128, 256 or 512)", integer("size"), DEFAULTS.size)
    .option("--epochs <n>", "training epochs", integer("epochs"), DEFAULTS.epochs)
    .option("--train-institution <id>", "institution to train on", DEFAULTS.trainInstitution)
    .option("--seed <n>", "seed for data, initialisation and bootstrap", integer("seed"), DEFAULTS.seed)
    .option("--bootstrap <n>", "bootstrap rounds for the intervals", integer("bootstrap"), DEFAULTS.bootstrap)
    .option("--generator <dir>", "generator model folder for the generated-vs-real sheet", SHIPPED_GENERATOR)
    .option("--no-generate", "skip the generated-vs-real contact sheet")
    .action(
      async (flags: Omit<QuickstartOptions, "generator"> & { generator: string; generate: boolean }) => {
        const { generate, ...options } = flags;
        await quickstart({ ...options, generator: generate ? options.generator : null });
      },
    );
}
