/**
 * Loading DenseNet weights by name: our own checkpoints, and published torchvision-layout state dicts
 * converted to safetensors (`packages/classifier/scripts/convert_densenet.py`). PyTorch's
 * `num_batches_tracked` counters are dropped (our batch norm uses a fixed momentum, as torchvision's
 * DenseNet does), and torchvision's legacy names (`denselayer1.norm.1.weight`) are rewritten to the
 * current ones (`denselayer1.norm1.weight`) with torchvision's own pattern.
 * A file that does not fit is refused with every mismatched name and shape listed, before anything
 * is changed.
 */
import { readSafetensors } from "@cxr/kernels";
import type { DenseNet } from "./densenet.ts";

export interface NamedArray {
  shape: readonly number[];
  data: Float32Array;
}

/** torchvision `_load_state_dict`'s pattern for pre-0.2 names such as `denselayer1.norm.1.weight`. */
const LEGACY_NAME =
  /^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$/;

/** Drops `num_batches_tracked` and rewrites legacy names; other names pass through unchanged. */
export function normalizeTorchvisionNames(tensors: ReadonlyMap<string, NamedArray>): Map<string, NamedArray> {
  const result = new Map<string, NamedArray>();
  for (const [name, tensor] of tensors) {
    if (name.endsWith(".num_batches_tracked")) continue;
    const legacy = LEGACY_NAME.exec(name);
    result.set(legacy ? `${legacy[1]}${legacy[2]}` : name, tensor);
  }
  return result;
}

export interface DenseNetLoadOptions {
  /**
   * Attribute heads (and with `allowMissingClassifier`, the finding classifier) that the file lacks
   * keep their initial values: published weights have no sex/age/race heads.
   */
  allowMissingHeads?: boolean;
  /** Keep the initial classifier when the file's has another label count or is absent (ImageNet). */
  allowMissingClassifier?: boolean;
}

const HEAD_PREFIXES = ["sex_head.", "age_head.", "race_head."];

const shapeText = (shape: readonly number[]) => `[${shape.join(", ")}]`;

/** Every problem with loading `tensors` into `model`, one line each (empty when it fits). */
export function denseNetStateProblems(
  model: DenseNet,
  tensors: ReadonlyMap<string, NamedArray>,
  options: DenseNetLoadOptions = {},
): string[] {
  const own = model.stateTensors();
  const skippable = (name: string) =>
    (options.allowMissingHeads && HEAD_PREFIXES.some((prefix) => name.startsWith(prefix))) ||
    (options.allowMissingClassifier && name.startsWith("classifier."));
  const problems: string[] = [];
  for (const [name, tensor] of own) {
    const stored = tensors.get(name);
    if (!stored) {
      if (!skippable(name)) problems.push(`missing "${name}" ${shapeText(tensor.shape)}`);
      continue;
    }
    const same =
      stored.shape.length === tensor.shape.length &&
      stored.shape.every((dim, index) => dim === tensor.shape[index]);
    if (!same && !(skippable(name) && name.startsWith("classifier."))) {
      problems.push(
        `"${name}" is ${shapeText(stored.shape)} in the file, the model needs ${shapeText(tensor.shape)}`,
      );
    }
  }
  for (const name of tensors.keys()) if (!own.has(name)) problems.push(`unexpected "${name}"`);
  return problems;
}

/** Loads named tensors into the model, or throws listing every problem (nothing is changed then). */
export function loadDenseNetState(
  model: DenseNet,
  tensors: ReadonlyMap<string, NamedArray>,
  source: string,
  options: DenseNetLoadOptions = {},
): void {
  const normalized = normalizeTorchvisionNames(tensors);
  const problems = denseNetStateProblems(model, normalized, options);
  if (problems.length > 0) {
    throw new Error(
      `${source} does not fit DenseNet "${model.config.name}" (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n  ${problems.join("\n  ")}`,
    );
  }
  const own = model.stateTensors();
  const fitting = new Map<string, NamedArray>();
  for (const [name, tensor] of normalized) {
    const target = own.get(name);
    if (target && target.size === tensor.data.length) fitting.set(name, tensor);
  }
  model.loadState(fitting, false, source);
}

/** Reads a safetensors file (ours, or a converted torchvision/torchxrayvision state dict) into the model. */
export function loadDenseNetWeights(model: DenseNet, path: string, options: DenseNetLoadOptions = {}): void {
  const file = readSafetensors(path);
  loadDenseNetState(model, file.tensors, path, options);
}
