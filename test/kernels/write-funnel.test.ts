/**
 * Buffer writes go through the runtime's funnels (runtime/versions.ts): a kernel launch, or a Tensor
 * write helper that takes the buffer with `bufferFor("write")`. A raw WebGPU buffer write anywhere
 * else in our sources would change a tensor without a new write version, so this test reads every
 * source file and fails on one. (A raw write through `Tensor.buffer` would still be safe, only slow:
 * that buffer loses its version and caches of it miss.)
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { writableBindingsOf } from "../../packages/kernels/src/runtime/versions.ts";

const ROOT = resolve(import.meta.dirname, "../..");

/** WebGPU commands that write a buffer: encoder copies and clears, queue writes. */
const RAW_WRITE = /\b(copyBufferToBuffer|copyTextureToBuffer|clearBuffer|writeBuffer)\s*\(/g;

/**
 * Files allowed to record raw buffer writes, and what each line must show: the runtime's Tensor
 * helpers write tensors through `bufferFor("write")` or into their own download staging buffer; the
 * uniform arena and the profiler write buffers of their own that no tensor holds.
 */
const ALLOWED: Record<string, RegExp> = {
  "packages/kernels/src/runtime/tensor.ts":
    /^(clearBuffer\(\w+\.bufferFor\("write"\)|writeBuffer\( ?this\.bufferFor\("write"\)|copyBufferToBuffer\(\w+(\.bufferFor\("read"\))?, 0, this\.bufferFor\("write"\)|copyBufferToBuffer\(this\.bufferFor\("read"\), 0, staging,)/,
  "packages/kernels/src/runtime/uniforms.ts": /^writeBuffer\(this\.buffer,/,
  "packages/kernels/src/runtime/profiler.ts": /^copyBufferToBuffer\(this\.resolveBuffer, 0, readback,/,
};

function sources(directory: string): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) return entry.name === "node_modules" ? [] : sources(path);
    return /\.ts$/.test(entry.name) ? [path] : [];
  });
}

/** Statements with a raw buffer write, comments left out (whitespace collapsed), with their line. */
function rawWrites(): { file: string; line: number; text: string }[] {
  const packages = join(ROOT, "packages");
  const found: { file: string; line: number; text: string }[] = [];
  for (const name of readdirSync(packages)) {
    for (const directory of ["src", "scripts"]) {
      let files: string[];
      try {
        files = sources(join(packages, name, directory));
      } catch {
        continue; // the package has no such folder
      }
      for (const path of files) {
        // Comments blanked character for character, so offsets still give line numbers.
        const code = readFileSync(path, "utf8").replace(/\/\*[\s\S]*?\*\/|(?<=^|\s)\/\/.*$/gm, (comment) =>
          comment.replace(/[^\n]/g, " "),
        );
        for (const match of code.matchAll(RAW_WRITE)) {
          const end = code.indexOf(";", match.index);
          found.push({
            file: relative(ROOT, path),
            line: code.slice(0, match.index).split("\n").length,
            text: code.slice(match.index, end < 0 ? undefined : end).replace(/\s+/g, " "),
          });
        }
      }
    }
  }
  return found;
}

describe("buffer write funnel", () => {
  it("finds raw buffer writes only in the runtime's funnels", () => {
    const writes = rawWrites();
    // The scan sees the funnels themselves (so it is looking at the right files).
    expect(writes.some((write) => write.file.endsWith("runtime/tensor.ts"))).toBe(true);
    const outside = writes
      .filter((write) => !ALLOWED[write.file]?.test(write.text))
      .map((write) => `${write.file}:${write.line}: ${write.text}`);
    expect(outside).toEqual([]);
  });

  it("takes every storage binding not declared read as written", () => {
    const code = `
      @group(0) @binding(0) var<storage, read> a: array<f32>;
      @binding(1) @group(0) var<storage, read_write> b: array<f32>;
      @group(0)
      @binding(2)
      var<storage> c: array<f32>;
      @group(0) @binding(3) var<uniform> p: vec4<f32>;
      @group(0) @binding(4) var <storage,read_write> d: array<u32>;`;
    expect([...writableBindingsOf(code)].sort()).toEqual([1, 4]);
    expect(() => writableBindingsOf("var<storage, read_write> e: array<f32>;")).toThrow(
      'no @binding(n) before "var<storage, read_write>"',
    );
  });
});
