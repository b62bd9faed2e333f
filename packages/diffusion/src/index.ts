export * from "./schedule/betas.ts";
export * from "./schedule/guidance.ts";
export * from "./schedule/noising.ts";
export * from "./schedule/samplers.ts";
