/**
 * Write versions of GPU buffers, for caches of data derived from a tensor (conv2d's packed weight
 * textures). A buffer's version goes up whenever a command that may change its contents is recorded:
 * a kernel that binds it read_write (`launch`), a copy or clear into it through the batch's command
 * encoder, a `queue.writeBuffer`, an upload or `write()`, and its return to the buffer pool (the next
 * tensor that gets it has other contents). Commands run in the order they are recorded, so a cache
 * entry made at version v is valid for every command recorded while the version is still v.
 */
import "./webgpu.ts";

const versions = new WeakMap<GPUBuffer, number>();

/** The buffer's current write version (0 until something writes it). */
export function bufferVersion(buffer: GPUBuffer): number {
  return versions.get(buffer) ?? 0;
}

/** Records that commands recorded from now on may see other contents in `buffer`. */
export function markWritten(buffer: GPUBuffer): void {
  versions.set(buffer, bufferVersion(buffer) + 1);
}

/** The destination of `copyBufferToBuffer(source, [sourceOffset,] destination, ...)`. */
function copyDestination(args: unknown[]): GPUBuffer {
  return (typeof args[1] === "number" ? args[2] : args[1]) as GPUBuffer;
}

/** Makes an encoder's copies and clears into buffers count as writes (once per encoder). */
export function trackEncoderWrites(encoder: GPUCommandEncoder): GPUCommandEncoder {
  const copy = encoder.copyBufferToBuffer.bind(encoder) as (...args: unknown[]) => void;
  const clear = encoder.clearBuffer.bind(encoder);
  encoder.copyBufferToBuffer = ((...args: unknown[]) => {
    markWritten(copyDestination(args));
    copy(...args);
  }) as GPUCommandEncoder["copyBufferToBuffer"];
  encoder.clearBuffer = (buffer, offset, size) => {
    markWritten(buffer);
    clear(buffer, offset, size);
  };
  return encoder;
}

/** Makes a queue's `writeBuffer` count as a write. */
export function trackQueueWrites(queue: GPUQueue): void {
  const write = queue.writeBuffer.bind(queue) as (...args: unknown[]) => void;
  queue.writeBuffer = ((buffer: GPUBuffer, ...rest: unknown[]) => {
    markWritten(buffer);
    write(buffer, ...rest);
  }) as GPUQueue["writeBuffer"];
}

const writableBindings = new Map<string, readonly number[]>();

/** Binding indices a WGSL module declares `var<storage, read_write>` (parsed once per source). */
export function writableBindingsOf(code: string): readonly number[] {
  let found = writableBindings.get(code);
  if (!found) {
    found = [...code.matchAll(/@binding\((\d+)\)\s*var\s*<\s*storage\s*,\s*read_write\s*>/g)].map((match) =>
      Number(match[1]),
    );
    writableBindings.set(code, found);
  }
  return found;
}
