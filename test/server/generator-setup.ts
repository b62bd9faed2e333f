/**
 * The real generator for the endpoint tests: an untrained phantom-tiny model (@cxr/diffusion's test
 * configuration, 16 px) saved by the setup into a temporary models root as "tiny", served by
 * DiffusionGenerator on a device with the profiler on.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createDiffusionModel, DIFFUSION_CONFIGS, promptFromFields, WordTokenizer } from "@cxr/diffusion";
import { DiffusionGenerator, serverGpu } from "../../packages/server/src/diffusion-generator.ts";
import { temporaryRoot } from "./helpers.ts";

export interface GeneratorSetup {
  generator: DiffusionGenerator;
  dataRoot: string;
  model: string;
  /** Steps that keep a test short. */
  steps: number;
  /** Image side in pixels. */
  size: number;
  remove(): void;
}

/** Saves an untrained phantom-tiny model as `<root>/<name>`. */
export async function saveTinyModel(modelsRoot: string, name = "tiny", seed = 11): Promise<string> {
  const config = structuredClone(DIFFUSION_CONFIGS["phantom-tiny"]);
  const prompts = [
    promptFromFields({ sex: "female", age: 70, race: "WHITE", findings: ["Cardiomegaly"] }),
    promptFromFields({ sex: "male", age: 55, race: "BLACK", findings: ["Cardiomegaly", "Pleural Effusion"] }),
    promptFromFields({ sex: "male", age: 40, findings: [] }),
  ];
  const tokenizer = WordTokenizer.fromPrompts(prompts, { maxLength: config.textEncoder.maxPositions });
  const model = createDiffusionModel(await serverGpu(), config, tokenizer, seed);
  const dir = join(modelsRoot, name);
  await model.save(dir);
  model.dispose();
  return dir;
}

export async function setupGenerator(): Promise<GeneratorSetup> {
  const { root, remove } = temporaryRoot();
  const modelsRoot = join(root, "models");
  mkdirSync(modelsRoot, { recursive: true });
  await saveTinyModel(modelsRoot);
  return {
    generator: new DiffusionGenerator({ modelsRoot, gpu: serverGpu }),
    dataRoot: root,
    model: "tiny",
    steps: 3,
    size: DIFFUSION_CONFIGS["phantom-tiny"].resolution,
    remove,
  };
}
