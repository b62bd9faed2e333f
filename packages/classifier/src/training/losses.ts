/**
 * The training objective: masked BCE over the finding labels (uncertain labels masked under
 * U-Ignore), plus, for a DenseNet with attribute heads, BCE for sex (1 = male), masked MSE for age
 * (in units of AGE_SCALE years) and softmax cross-entropy for race over RACE_CLASSES. Records without
 * a value for an attribute are masked out of that attribute's loss; each term is a mean over the
 * rows that count, weighted by `LossWeights`.
 */
import type { CxrRecord } from "@cxr/data";
import {
  add,
  bceWithLogitsLoss,
  type Gpu,
  mseLoss,
  mul,
  scale,
  softmaxCrossEntropy,
  Tensor,
} from "@cxr/kernels";
import { AGE_SCALE, DenseNet, RACE_CLASSES } from "./densenet.ts";
import type { ImageClassifier } from "./models.ts";
import type { DeviceBatch } from "./train.ts";

export interface LossWeights {
  findings: number;
  sex: number;
  age: number;
  race: number;
}

export interface HeadSelection {
  findings: boolean;
  sex: boolean;
  age: boolean;
  race: boolean;
}

export interface AttributeTargets {
  tensors: {
    sex: Tensor;
    sexMask: Tensor;
    age: Tensor;
    ageMask: Tensor;
    race: Tensor;
    raceMask: Tensor;
  };
  /** Rows with a known value, per attribute (host-side counts; no read-back needed). */
  counts: { sex: number; age: number; race: number };
}

/** Host-side targets of the attribute heads for a batch's records, uploaded once. */
export function attributeTargets(gpu: Gpu, records: readonly CxrRecord[]): AttributeTargets {
  const rows = records.length;
  const sex = new Float32Array(rows);
  const sexMask = new Float32Array(rows);
  const age = new Float32Array(rows);
  const ageMask = new Float32Array(rows);
  const race = new Array<number>(rows).fill(0);
  const raceMask = new Float32Array(rows);
  records.forEach((record, row) => {
    if (record.sex !== null) {
      sex[row] = record.sex === "male" ? 1 : 0;
      sexMask[row] = 1;
    }
    if (record.age !== null) {
      age[row] = record.age / AGE_SCALE;
      ageMask[row] = 1;
    }
    if (record.race !== null) {
      race[row] = RACE_CLASSES.indexOf(record.race);
      raceMask[row] = 1;
    }
  });
  const count = (values: Float32Array) => values.reduce((sum, value) => sum + value, 0);
  return {
    tensors: {
      sex: Tensor.upload(gpu, sex, [rows, 1]),
      sexMask: Tensor.upload(gpu, sexMask, [rows, 1]),
      age: Tensor.upload(gpu, age, [rows, 1]),
      ageMask: Tensor.upload(gpu, ageMask, [rows, 1]),
      race: Tensor.upload(gpu, race, [rows], "u32"),
      raceMask: Tensor.upload(gpu, raceMask, [rows]),
    },
    counts: { sex: count(sexMask), age: count(ageMask), race: count(raceMask) },
  };
}

/** The weighted sum of the selected losses for one batch (a [1] tensor on the tape). */
export function trainingLoss(
  model: ImageClassifier,
  batch: DeviceBatch & { attributes: AttributeTargets | null },
  heads: HeadSelection,
  weights: LossWeights,
): Tensor {
  const terms: Tensor[] = [];
  const wantsAttributes = heads.sex || heads.age || heads.race;
  if (!wantsAttributes) {
    return bceWithLogitsLoss(model.forward(batch.images), batch.labels, batch.mask);
  }
  if (!(model instanceof DenseNet)) throw new Error("attribute heads need a DenseNet");
  const outputs = model.forwardAll(batch.images);
  const targets = batch.attributes;
  if (!targets) throw new Error("trainingLoss: the batch has no attribute targets");
  const weighted = (loss: Tensor, weight: number) => (weight === 1 ? loss : scale(loss, weight));
  if (heads.findings)
    terms.push(weighted(bceWithLogitsLoss(outputs.findings, batch.labels, batch.mask), weights.findings));
  if (heads.sex && outputs.sex && targets.counts.sex > 0) {
    terms.push(
      weighted(bceWithLogitsLoss(outputs.sex, targets.tensors.sex, targets.tensors.sexMask), weights.sex),
    );
  }
  if (heads.age && outputs.age && targets.counts.age > 0) {
    // Masked mean of squared error: mask the prediction (the target is already 0 where unknown).
    const squared = mseLoss(mul(outputs.age, targets.tensors.ageMask), targets.tensors.age, "sum");
    terms.push(scale(squared, weights.age / targets.counts.age));
  }
  if (heads.race && outputs.race && targets.counts.race > 0) {
    terms.push(
      weighted(
        softmaxCrossEntropy(outputs.race, targets.tensors.race, targets.tensors.raceMask),
        weights.race,
      ),
    );
  }
  if (terms.length === 0) {
    throw new Error(
      "trainingLoss: no selected head has a target in this batch (sex, age and race all unknown?)",
    );
  }
  return terms.reduce((total, term) => add(total, term));
}
