/**
 * Records the WGSL the device compiles while `body` runs, so a test can prove that what
 * `cxr kernels dump` prints (ops/sources.ts) is what runs. Every launch asks the device for its
 * pipeline (the cache is inside), so each launch shows up once.
 */
import type { Gpu } from "@cxr/kernels";
import { gpu } from "./helpers.ts";

/** Every `code` passed to `device.pipeline` while `body` runs (cache hits included), in order. */
export async function compiledWhile(body: (device: Gpu) => Promise<void>): Promise<string[]> {
  const device = await gpu();
  const compiled: string[] = [];
  const pipeline = device.pipeline.bind(device);
  const spy: Gpu["pipeline"] = (code, label, entryPoint) => {
    compiled.push(code);
    return pipeline(code, label, entryPoint);
  };
  device.pipeline = spy;
  try {
    await body(device);
  } finally {
    delete (device as Partial<Pick<Gpu, "pipeline">>).pipeline; // back to the class's method
  }
  return compiled;
}
