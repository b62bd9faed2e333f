export * from "./clip-tokenizer.ts";
export * from "./configs.ts";
export * from "./folder.ts";
export * from "./latent-pipeline.ts";
export * from "./safetensors-stream.ts";
export * from "./vae.ts";
export * from "./wire.ts";
