/**
 * Loads Dawn's node bindings and installs the WebGPU globals (GPUBufferUsage, GPUMapMode, ...).
 * Every runtime module imports this first, so the globals exist before any module body runs.
 */
import { create, globals } from "webgpu";

Object.assign(globalThis, globals);

export { create };
