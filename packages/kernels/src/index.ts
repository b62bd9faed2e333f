export * from "./ops/unary.ts";
export * from "./runtime/autograd.ts";
export * from "./runtime/device.ts";
export * from "./runtime/kernel.ts";
export * from "./runtime/pool.ts";
export * from "./runtime/profiler.ts";
export * from "./runtime/tensor.ts";
export * from "./runtime/uniforms.ts";
