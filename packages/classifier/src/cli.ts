/**
 * `cxr evaluate` and `cxr bench evaluate`. Both call the library (`evaluatePredictions`), the same
 * code path classifier training uses.
 */
import { readFileSync } from "node:fs";
import { CHEXPERT_LABELS } from "@cxr/data";
import { type Command, InvalidArgumentError } from "commander";
import * as z from "zod";
import { DEFAULT_EVALUATION_BENCH, formatEvaluationBench, runEvaluationBench } from "./evaluation/bench.ts";
import { DEFAULT_EVALUATION_CONFIG, evaluatePredictions, type ModelInput } from "./evaluation/evaluate.ts";
import { evaluationJson, writeEvaluationOutputs } from "./evaluation/outputs.ts";
import { readPredictionsCsv } from "./evaluation/predictions.ts";
import { renderSummary } from "./evaluation/report.ts";
import { evaluationDocumentSchema } from "./evaluation/report-schema.ts";
import { parseThresholdsJson } from "./evaluation/thresholds.ts";
import { registerTrainingCommands } from "./training/cli.ts";

interface EvaluateFlags {
  predictions?: string;
  validation?: string;
  thresholds?: string;
  baseline?: string;
  baselineValidation?: string;
  baselineThresholds?: string;
  out?: string;
  json?: boolean;
  schema?: boolean;
  minDenominator: number;
  bootstrapRounds: number;
  seed: number;
  confidence: number;
}

function parseInteger(minimum: number) {
  return (value: string): number => {
    const number = Number(value);
    if (!Number.isSafeInteger(number) || number < minimum) {
      throw new InvalidArgumentError(`expected an integer >= ${minimum}, got "${value}"`);
    }
    return number;
  };
}

function parseConfidence(value: string): number {
  const number = Number(value);
  if (!(number > 0 && number < 1))
    throw new InvalidArgumentError(`expected a number in (0, 1), got "${value}"`);
  return number;
}

function readThresholds(path: string): ReadonlyMap<string, number> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new Error(`cannot read thresholds file ${path}: ${error instanceof Error ? error.message : error}`);
  }
  return parseThresholdsJson(text, path, CHEXPERT_LABELS);
}

function modelInput(predictions: string, validation?: string, thresholds?: string): ModelInput {
  if (validation && thresholds) {
    throw new Error(`give either a validation file or a thresholds file for ${predictions}, not both`);
  }
  return {
    predictions: readPredictionsCsv(predictions),
    validation: validation ? readPredictionsCsv(validation) : null,
    thresholds: thresholds ? readThresholds(thresholds) : null,
    thresholdsSource: thresholds ?? null,
  };
}

async function runEvaluate(flags: EvaluateFlags): Promise<void> {
  if (flags.schema) {
    console.log(JSON.stringify(z.toJSONSchema(evaluationDocumentSchema), null, 2));
    return;
  }
  if (!flags.predictions) throw new Error("--predictions FILE.csv is required");
  if ((flags.baselineValidation || flags.baselineThresholds) && !flags.baseline) {
    throw new Error("--baseline-validation and --baseline-thresholds need --baseline");
  }
  const input = {
    ...modelInput(flags.predictions, flags.validation, flags.thresholds),
    baseline: flags.baseline
      ? modelInput(flags.baseline, flags.baselineValidation, flags.baselineThresholds)
      : null,
  };
  const document = evaluatePredictions(input, {
    minimumDenominator: flags.minDenominator,
    bootstrapRounds: flags.bootstrapRounds,
    seed: flags.seed,
    confidenceLevel: flags.confidence,
  });
  if (flags.out) {
    const written = await writeEvaluationOutputs(document, flags.out);
    console.error(`wrote ${written.length} files to ${flags.out} (evaluation.json, report.md, plots/)`);
  }
  process.stdout.write(flags.json ? evaluationJson(document) : renderSummary(document));
}

/** `groups.bench` is the shared `cxr bench` group, built by the CLI and passed down. */
export function registerCommands(program: Command, groups: { bench: Command }): void {
  program
    .command("evaluate")
    .description(
      "AUROC, F1-optimal thresholds, subgroup underdiagnosis and its gaps, with patient-level bootstrap intervals",
    )
    .option("--predictions <file>", "predictions CSV (format: packages/classifier/README.md)")
    .option("--validation <file>", "validation predictions CSV: thresholds maximise F1 on it")
    .option("--thresholds <file>", "JSON of label -> threshold (e.g. an earlier evaluation.json)")
    .option(
      "--baseline <file>",
      "another model's predictions on the same images, compared by paired bootstrap",
    )
    .option("--baseline-validation <file>", "validation predictions of the baseline model")
    .option("--baseline-thresholds <file>", "thresholds JSON of the baseline model")
    .option("--out <dir>", "write evaluation.json, report.md and plots/*.png here")
    .option("--json", "print the evaluation JSON instead of the summary")
    .option("--schema", "print the JSON Schema of the evaluation document and exit")
    .option(
      "--min-denominator <count>",
      "a subgroup enters gaps only when the rate's own denominator reaches this (No Finding negatives for underdiagnosis, positives for overdiagnosis, the smaller class for AUROC)",
      parseInteger(1),
      DEFAULT_EVALUATION_CONFIG.minimumDenominator,
    )
    .option(
      "--bootstrap-rounds <rounds>",
      "patient-level bootstrap rounds (0: no intervals)",
      parseInteger(0),
      DEFAULT_EVALUATION_CONFIG.bootstrapRounds,
    )
    .option("--seed <seed>", "bootstrap seed", parseInteger(0), DEFAULT_EVALUATION_CONFIG.seed)
    .option(
      "--confidence <level>",
      "interval confidence level",
      parseConfidence,
      DEFAULT_EVALUATION_CONFIG.confidenceLevel,
    )
    .action(runEvaluate);

  registerTrainingCommands(program, groups);

  groups.bench
    .command("evaluate")
    .description(
      "time a full evaluation of synthetic predictions (default 100,000 images x 14 labels, 1,000 rounds)",
    )
    .option("--images <count>", "predictions rows", parseInteger(2), DEFAULT_EVALUATION_BENCH.images)
    .option("--patients <count>", "distinct patients", parseInteger(1), DEFAULT_EVALUATION_BENCH.patients)
    .option("--rounds <count>", "bootstrap rounds", parseInteger(0), DEFAULT_EVALUATION_BENCH.rounds)
    .option("--seed <seed>", "synthesis and bootstrap seed", parseInteger(0), DEFAULT_EVALUATION_BENCH.seed)
    .action((flags: { images: number; patients: number; rounds: number; seed: number }) => {
      if (flags.patients > flags.images) throw new Error("--patients cannot exceed --images");
      const validationImages = Math.max(1, Math.round(flags.images / 5));
      const result = runEvaluationBench({ ...DEFAULT_EVALUATION_BENCH, ...flags, validationImages });
      console.log(formatEvaluationBench(result));
    });
}
