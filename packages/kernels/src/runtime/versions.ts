/**
 * Write versions of GPU buffers, for caches of data derived from a tensor (conv2d's packed weight
 * textures). Nothing here intercepts WebGPU calls: every write path of ours says that it writes.
 *
 * - `Tensor.bufferFor("write")` is how our code gets a tensor's buffer for a command that writes it;
 *   it counts the write. `launch` takes that path for every binding its WGSL declares
 *   `var<storage, read_write>`; the Tensor write helpers (`zeros`, `upload`, `write`, `writeBytes`,
 *   `copyFrom`) take it too. Optimiser steps, `loadState` and checkpoint loads are kernels or those
 *   helpers, so they count without code of their own.
 * - The conservative fallback: a tensor's plain `buffer` getter hands the buffer to code that may
 *   write it in ways we cannot see (a raw `queue.writeBuffer`, an encoder of its own), so it marks
 *   the buffer unversioned: `bufferVersion` returns null and caches miss on every call until the
 *   buffer goes back to the pool. A write path that forgot to count costs a re-pack, never a stale
 *   result. test/kernels/write-funnel.test.ts fails when a raw buffer write appears outside the
 *   runtime's funnels.
 * - Returning a buffer to the pool counts as a write (the next tensor that gets it has other
 *   contents) and makes it versioned again.
 *
 * Commands run in the order they are recorded, so a cache entry made at version v is valid for every
 * command recorded while the version is still v.
 */
import "./webgpu.ts";

const versions = new WeakMap<GPUBuffer, number>();
const unversioned = new WeakSet<GPUBuffer>();

/**
 * The buffer's current write version (0 until something writes it), or null when its buffer was
 * handed out raw (`Tensor.buffer`) since it last left the pool: writes may then go uncounted.
 */
export function bufferVersion(buffer: GPUBuffer): number | null {
  return unversioned.has(buffer) ? null : (versions.get(buffer) ?? 0);
}

/** Records that commands recorded from now on may see other contents in `buffer`. */
export function markWritten(buffer: GPUBuffer): void {
  versions.set(buffer, (versions.get(buffer) ?? 0) + 1);
}

/** Records that `buffer` may be written without `markWritten` from now on (caches must miss). */
export function markUnversioned(buffer: GPUBuffer): void {
  markWritten(buffer);
  unversioned.add(buffer);
}

/** A buffer back in the pool: its next tensor holds other contents, written through our paths. */
export function markReturned(buffer: GPUBuffer): void {
  markWritten(buffer);
  unversioned.delete(buffer);
}

const writableBindings = new Map<string, ReadonlySet<number>>();

/**
 * Binding indices of the storage buffers a WGSL module may write: every `var<storage, ...>` whose
 * access mode is not `read` (parsed once per source). The attributes before each declaration must
 * name its binding; a declaration this parser cannot place is an error, not a binding taken as read.
 */
export function writableBindingsOf(code: string): ReadonlySet<number> {
  let found = writableBindings.get(code);
  if (!found) {
    const writable = new Set<number>();
    for (const match of code.matchAll(/((?:@\w+\s*\([^)]*\)\s*)*)var\s*<\s*storage\s*(?:,\s*(\w+)\s*)?>/g)) {
      const binding = /@binding\s*\(\s*(\d+)\s*\)/.exec(match[1]);
      if (!binding) throw new Error(`writableBindingsOf: no @binding(n) before "${match[0]}"`);
      if ((match[2] ?? "read") !== "read") writable.add(Number(binding[1]));
    }
    writableBindings.set(code, (found = writable));
  }
  return found;
}
