/**
 * The classifiers training can build, described by a small JSON spec (`model.json` beside the
 * weights) so `cxr predict` rebuilds exactly the network that was trained.
 */
import type { Gpu, Module, Tensor } from "@cxr/kernels";
import {
  type AttributeHeads,
  DENSENET_CONFIGS,
  DenseNet,
  type DenseNetConfig,
  denseNetConfig,
} from "./densenet.ts";
import { DEFAULT_SMALL_CNN, SmallCnn, type SmallCnnConfig } from "./model.ts";

/** Any network that maps images [N, 1, S, S] to finding logits [N, labels]. */
export interface ImageClassifier extends Module {
  forward(images: Tensor): Tensor;
}

export type ModelSpec =
  | { kind: "small-cnn"; config: SmallCnnConfig; imageSize: number }
  | { kind: "densenet"; config: DenseNetConfig; imageSize: number };

/** Names `--config` accepts: the DenseNet configs and the small CNN. */
export const MODEL_CONFIG_NAMES = [...Object.keys(DENSENET_CONFIGS), "small-cnn"] as const;

export function modelSpec(
  name: string,
  options: { imageSize?: number; seed?: number; attributes?: AttributeHeads; memoryEfficient?: boolean } = {},
): ModelSpec {
  if (name === "small-cnn") {
    if (options.attributes && Object.values(options.attributes).some(Boolean)) {
      throw new Error("attribute heads (sex, age, race) need a DenseNet config, not small-cnn");
    }
    if (options.memoryEfficient) {
      throw new Error(
        "--memory-efficient (memory-efficient dense blocks) needs a DenseNet config, not small-cnn",
      );
    }
    return {
      kind: "small-cnn",
      config: { ...DEFAULT_SMALL_CNN, seed: options.seed ?? DEFAULT_SMALL_CNN.seed },
      imageSize: options.imageSize ?? 64,
    };
  }
  const config = denseNetConfig(name, {
    ...(options.seed === undefined ? {} : { seed: options.seed }),
    ...(options.attributes ? { attributes: { ...options.attributes } } : {}),
    // Only when asked: model.json and run.json of plain runs stay as before (resume compares them).
    ...(options.memoryEfficient ? { memoryEfficient: true } : {}),
  });
  return { kind: "densenet", config, imageSize: options.imageSize ?? config.imageSize };
}

export function createModel(gpu: Gpu, spec: ModelSpec): ImageClassifier {
  return spec.kind === "small-cnn" ? new SmallCnn(gpu, spec.config) : new DenseNet(gpu, spec.config);
}

/** Checks a spec read from a file (model.json) before building anything from it. */
export function parseModelSpec(text: string, source: string): ModelSpec {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`${source}: not JSON (${error instanceof Error ? error.message : error})`);
  }
  const spec = value as Partial<ModelSpec>;
  if (!spec || (spec.kind !== "small-cnn" && spec.kind !== "densenet")) {
    throw new Error(`${source}: "kind" must be "small-cnn" or "densenet"`);
  }
  if (!Number.isInteger(spec.imageSize) || (spec.imageSize ?? 0) < 8) {
    throw new Error(`${source}: "imageSize" must be an integer >= 8`);
  }
  if (!spec.config || typeof spec.config !== "object") throw new Error(`${source}: "config" is missing`);
  return spec as ModelSpec;
}

export function attributesOf(spec: ModelSpec): AttributeHeads {
  return spec.kind === "densenet" ? spec.config.attributes : { sex: false, age: false, race: false };
}
