/**
 * Keeps Dawn's known-harmless adapter warnings off the user's screen.
 *
 * On its first adapter enumeration, each Dawn instance clamps two limits and says so with a plain
 * `fprintf(stderr, ...)` from C++ ("Warning: maxDynamicUniformBuffersPerPipelineLayout artificially
 * reduced from 1000000 to 16 ..." and the same for storage buffers). Dawn has no toggle or log level
 * for these, and JavaScript cannot intercept a native write, so while an adapter is requested we
 * point file descriptor 2 at a temporary file (`dup`/`dup2` from libc), then put it back and replay
 * everything captured except those two lines. Nothing else is lost: other output written meanwhile,
 * including other Dawn messages, appears right after, in order.
 *
 * libc is reached through `bun:ffi` under Bun and through koffi (an FFI library with prebuilt
 * binaries in its npm package; Node has no built-in FFI) under Node, on Linux and macOS. Elsewhere
 * (Windows), or if libc cannot be loaded, stderr is left alone and the two lines print.
 * `CXR_VERBOSE=1`, `createGpu({ verbose: true })` or `cxr --verbose <command>` turns the filter off.
 */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The lines removed: exactly Dawn's two limit-clamping warnings. */
export const DAWN_LIMIT_WARNING =
  /^Warning: maxDynamic(?:Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.$/;

/** Removes Dawn's two limit warnings from captured text, keeping every other line as it was. */
export function withoutDawnLimitWarnings(text: string): string {
  return text
    .split(/(?<=\n)/)
    .filter((line) => !DAWN_LIMIT_WARNING.test(line.replace(/\r?\n$/, "")))
    .join("");
}

export function verboseFromEnvironment(): boolean {
  const value = process.env.CXR_VERBOSE;
  return value !== undefined && value !== "" && value !== "0";
}

interface Descriptors {
  dup(fd: number): number;
  dup2(from: number, to: number): number;
}

let descriptors: Descriptors | null | undefined;

/** The subset of koffi's API used here (https://koffi.dev). */
interface Koffi {
  load(path: string): { func(signature: string): (...args: number[]) => number };
}

function bunDescriptors(library: string): Descriptors {
  const ffi = createRequire(import.meta.url)("bun:ffi") as typeof import("bun:ffi");
  const { symbols } = ffi.dlopen(library, {
    dup: { args: [ffi.FFIType.i32], returns: ffi.FFIType.i32 },
    dup2: { args: [ffi.FFIType.i32, ffi.FFIType.i32], returns: ffi.FFIType.i32 },
  });
  return { dup: (fd) => symbols.dup(fd), dup2: (from, to) => symbols.dup2(from, to) };
}

function nodeDescriptors(library: string): Descriptors {
  const koffi = createRequire(import.meta.url)("koffi") as Koffi;
  const libc = koffi.load(library);
  const dup = libc.func("int dup(int fd)");
  const dup2 = libc.func("int dup2(int oldfd, int newfd)");
  return { dup: (fd) => dup(fd), dup2: (from, to) => dup2(from, to) };
}

function libcDescriptors(): Descriptors | null {
  if (descriptors !== undefined) return descriptors;
  descriptors = null;
  if (process.platform !== "linux" && process.platform !== "darwin") return null;
  const library = process.platform === "darwin" ? "libc.dylib" : "libc.so.6";
  try {
    descriptors = typeof Bun === "undefined" ? nodeDescriptors(library) : bunDescriptors(library);
  } catch {
    descriptors = null; // no FFI or no libc by that name: leave stderr alone
  }
  return descriptors;
}

let captures = 0;

/**
 * Runs `fn` (an adapter request) with Dawn's two limit warnings filtered from stderr, unless
 * `verbose` or the platform cannot redirect file descriptors.
 */
export async function withoutDawnNoise<T>(verbose: boolean, fn: () => Promise<T>): Promise<T> {
  const libc = verbose ? null : libcDescriptors();
  if (!libc) return fn();
  const path = join(tmpdir(), `cxr-dawn-stderr-${process.pid}-${captures++}.txt`);
  let file: number;
  try {
    file = openSync(path, "w+", 0o600);
  } catch {
    return fn(); // no writable temp directory: show the warnings rather than fail
  }
  const saved = libc.dup(2);
  if (saved < 0 || libc.dup2(file, 2) < 0) {
    if (saved >= 0) closeSync(saved);
    closeSync(file);
    unlinkSync(path);
    return fn();
  }
  try {
    return await fn();
  } finally {
    libc.dup2(saved, 2);
    closeSync(saved);
    closeSync(file);
    const captured = readFileSync(path, "utf8");
    unlinkSync(path);
    const kept = withoutDawnLimitWarnings(captured);
    if (kept) writeSync(2, kept);
  }
}
