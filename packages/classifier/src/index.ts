/** @cxr/classifier: evaluation and fairness toolkit (the classifier itself follows). */
export {
  auroc,
  rocCurve,
  TRUTH_BLANK,
  TRUTH_NEGATIVE,
  TRUTH_POSITIVE,
  TRUTH_UNCERTAIN,
} from "./evaluation/auroc.ts";
export { percentileInterval } from "./evaluation/bootstrap.ts";
export {
  DEFAULT_EVALUATION_CONFIG,
  type EvaluationConfig,
  type EvaluationInput,
  evaluatePredictions,
  type ModelInput,
  resolveThresholds,
} from "./evaluation/evaluate.ts";
export { evaluationJson, writeEvaluationOutputs } from "./evaluation/outputs.ts";
export { evaluationPlots, renderPng } from "./evaluation/plots.ts";
export {
  createPredictionTable,
  formatPredictionsCsv,
  type PredictionInput,
  type PredictionRow,
  type PredictionTable,
  parsePredictionsCsv,
  readPredictionsCsv,
} from "./evaluation/predictions.ts";
export { renderMarkdownReport, renderSummary } from "./evaluation/report.ts";
export {
  type Estimate,
  EVALUATION_SCHEMA_VERSION,
  type EvaluationDocument,
  evaluationDocumentSchema,
} from "./evaluation/report-schema.ts";
export { DIMENSIONS, type Dimension } from "./evaluation/subgroups.ts";
export { synthesizePredictions } from "./evaluation/synthetic.ts";
export { type FittedThreshold, fitF1Threshold, parseThresholdsJson } from "./evaluation/thresholds.ts";
export { type AugmentConfig, augmentImages, DEFAULT_AUGMENT, NO_AUGMENT } from "./training/augment.ts";
export {
  type ClassifierBenchCase,
  type ClassifierBenchResult,
  DEFAULT_CLASSIFIER_BENCH,
  formatClassifierBench,
  runClassifierBenchCase,
} from "./training/bench.ts";
export {
  AGE_SCALE,
  type AttributeHeads,
  DENSENET_CONFIGS,
  DenseNet,
  type DenseNetConfig,
  type DenseNetConfigName,
  type DenseNetOutputs,
  type DenseNetStem,
  denseNetConfig,
  minimumImageSize,
  NO_ATTRIBUTE_HEADS,
  RACE_CLASSES,
} from "./training/densenet.ts";
export {
  type AttributeTargets,
  attributeTargets,
  type LossWeights,
  trainingLoss,
} from "./training/losses.ts";
export { DEFAULT_SMALL_CNN, SmallCnn, type SmallCnnConfig } from "./training/model.ts";
export { modelBenchCases } from "./training/model-bench.ts";
export {
  attributesOf,
  createModel,
  type ImageClassifier,
  MODEL_CONFIG_NAMES,
  type ModelSpec,
  modelSpec,
  parseModelSpec,
} from "./training/models.ts";
export { type PredictOptions, type PredictResult, predictDataset } from "./training/predict.ts";
export { predictionTableFromRecords, type RecordPredictions } from "./training/predictions.ts";
export {
  attributePredictionsCsv,
  type ClassifierStepProgress,
  DEFAULT_TRAIN_RUN,
  datasetLabelColumns,
  type EpochMetrics,
  learningCurveSvg,
  macroAurocOf,
  STRATEGIES,
  type Strategy,
  type TrainRunOptions,
  type TrainRunResult,
  trainClassifierRun,
} from "./training/run.ts";
export {
  DEFAULT_TRAIN_CONFIG,
  type EpochReport,
  predictProbabilities,
  type TrainConfig,
  trainClassifier,
} from "./training/train.ts";
export {
  type DenseNetLoadOptions,
  denseNetStateProblems,
  loadDenseNetState,
  loadDenseNetWeights,
  type NamedArray,
  normalizeTorchvisionNames,
} from "./training/weights.ts";
