/**
 * `cxr predict`: a trained model folder (model.json + model.safetensors, as `cxr train classifier`
 * writes it) applied to any dataset the data package loads, written in the evaluation toolkit's
 * predictions CSV format (so `cxr evaluate` reads it back).
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type DatasetFormat, frontalOnly, loadDataset, type Split } from "@cxr/data";
import type { Gpu } from "@cxr/kernels";
import { formatPredictionsCsv } from "../evaluation/predictions.ts";
import { DenseNet } from "./densenet.ts";
import { createModel, parseModelSpec } from "./models.ts";
import { predictionTableFromRecords } from "./predictions.ts";
import { predictProbabilities } from "./train.ts";
import { loadDenseNetWeights } from "./weights.ts";

export interface PredictOptions {
  /** Folder with model.json and model.safetensors. */
  model: string;
  data: string;
  format: DatasetFormat;
  /** Only this split; every frontal image when null. */
  split: Split | null;
  out: string;
  batchSize: number;
}

export interface PredictResult {
  images: number;
  /** Images left out because sex, age or race is unknown (the CSV format needs them). */
  excluded: number;
}

export async function predictDataset(gpu: Gpu, options: PredictOptions): Promise<PredictResult> {
  const specPath = join(options.model, "model.json");
  const weightsPath = join(options.model, "model.safetensors");
  for (const path of [specPath, weightsPath]) {
    if (!existsSync(path))
      throw new Error(
        `--model ${options.model}: ${path} is missing (a folder written by cxr train classifier)`,
      );
  }
  const spec = parseModelSpec(readFileSync(specPath, "utf8"), specPath);
  const loaded = loadDataset(options.format, options.data, { onError: "fail" });
  const records = frontalOnly(loaded.records).filter(
    (record) => options.split === null || record.split === options.split,
  );
  if (records.length === 0) {
    throw new Error(
      `--data ${options.data}: no frontal images${options.split ? ` in the ${options.split} split` : ""}`,
    );
  }
  const model = createModel(gpu, spec);
  try {
    if (model instanceof DenseNet) loadDenseNetWeights(model, weightsPath);
    else model.load(weightsPath);
    const probabilities = await predictProbabilities(model, records, spec.imageSize, options.batchSize);
    const { table, excluded } = predictionTableFromRecords(options.data, records, probabilities);
    const temporary = `${options.out}.tmp-${process.pid}`;
    writeFileSync(temporary, formatPredictionsCsv(table));
    renameSync(temporary, options.out);
    return { images: records.length - excluded, excluded };
  } finally {
    model.dispose();
  }
}
