/**
 * Turns a model's probabilities on dataset records into the evaluation toolkit's prediction table,
 * so training and `cxr evaluate` share one code path. Records without the demographics the
 * fairness analysis needs (sex, age, race) are counted and left out, never silently.
 */
import { CHEXPERT_LABELS, type ChexpertLabel, type CxrRecord } from "@cxr/data";
import { createPredictionTable, type PredictionTable } from "../evaluation/predictions.ts";

export interface RecordPredictions {
  table: PredictionTable;
  /** Records left out because sex, age or race is unknown. */
  excluded: number;
}

export function predictionTableFromRecords(
  source: string,
  records: readonly CxrRecord[],
  probabilities: Float32Array,
  labels: readonly ChexpertLabel[] = CHEXPERT_LABELS,
): RecordPredictions {
  if (probabilities.length !== records.length * labels.length) {
    throw new Error(
      `${source}: ${probabilities.length} probabilities for ${records.length} records x ${labels.length} labels`,
    );
  }
  const kept: number[] = [];
  records.forEach((record, index) => {
    if (record.sex !== null && record.age !== null && record.race !== null) kept.push(index);
  });
  const rows = kept.map((index) => {
    const record = records[index];
    return {
      patientId: record.patientId,
      imageId: record.imagePath,
      sex: record.sex!,
      age: record.age!,
      race: record.race!,
      institution: record.institution,
    };
  });
  const columns: Partial<Record<ChexpertLabel, { truth: (number | null)[]; probability: number[] }>> = {};
  labels.forEach((label, labelIndex) => {
    columns[label] = {
      truth: kept.map((index) => records[index].labels[label]),
      probability: kept.map((index) => probabilities[index * labels.length + labelIndex]),
    };
  });
  return {
    table: createPredictionTable({ source, rows, labels: columns }),
    excluded: records.length - kept.length,
  };
}
