/**
 * The generator the endpoint tests run on. Today: StepGenerator (helpers.ts), because
 * @cxr/diffusion's createPipeline has not landed; this file is where the phantom-tiny model saved
 * into a temporary models root takes its place.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { ImageGenerator } from "../../packages/server/src/generation.ts";
import { StepGenerator, temporaryRoot } from "./helpers.ts";

export interface GeneratorSetup {
  generator: ImageGenerator;
  dataRoot: string;
  model: string;
  /** Steps that keep a test short. */
  steps: number;
  /** Image side in pixels. */
  size: number;
  remove(): void;
}

export async function setupGenerator(): Promise<GeneratorSetup> {
  const { root, remove } = temporaryRoot();
  mkdirSync(join(root, "models", "tiny"), { recursive: true });
  return {
    generator: new StepGenerator({ tiny: { name: "tiny", kind: "diffusion", size: 16 } }, 5),
    dataRoot: root,
    model: "tiny",
    steps: 3,
    size: 16,
    remove,
  };
}
