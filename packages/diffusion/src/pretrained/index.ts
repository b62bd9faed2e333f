export * from "./configs.ts";
export * from "./folder.ts";
export * from "./safetensors-stream.ts";
