/**
 * The one pool of rgba32float scratch textures that the CPU-adapter variants pack their operands into
 * (matmul's cpu-register-blocked, conv2d's cpu-texture), one pool per device. Textures are reused by
 * exact size, like the buffer pool: a texture may be acquired again as soon as it is released, because
 * later writes are queued after the earlier reads. Idle textures beyond `TEXTURE_POOL.idleBytesLimit`
 * are destroyed, least recently released first.
 */
import type { Gpu } from "../../runtime/device.ts";

/** Limits of the scratch texture pool. */
export const TEXTURE_POOL = {
  /** Idle textures kept for reuse beyond this many bytes are destroyed, least recently released first. */
  idleBytesLimit: 512 * 2 ** 20,
} as const;

/** Every pooled texture can be written by a shader or the copy engine and read with textureLoad. */
const USAGE = GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST;

/** A pooled rgba32float texture: `layers` layers of `width` x `height` texels. */
export interface ScratchTexture {
  texture: GPUTexture;
  width: number;
  height: number;
  layers: number;
  bytes: number;
  /** Size class: `${width}x${height}x${layers}`. */
  key: string;
  lastUse: number;
}

export class TexturePool {
  private readonly idle = new Map<string, ScratchTexture[]>();
  private idleBytes = 0;
  private clock = 0;
  constructor(private readonly gpu: Gpu) {}

  /** A texture of exactly this size, from the pool or new. */
  acquire(width: number, height: number, layers = 1): ScratchTexture {
    const key = `${width}x${height}x${layers}`;
    const reused = this.idle.get(key)?.pop();
    if (reused) {
      this.idleBytes -= reused.bytes;
      return reused;
    }
    const texture = this.gpu.device.createTexture({
      label: `scratch texture ${key}`,
      size: [width, height, layers],
      format: "rgba32float",
      usage: USAGE,
    });
    return { texture, width, height, layers, bytes: 16 * width * height * layers, key, lastUse: 0 };
  }

  /** Returns a texture for reuse once the dispatches that use it are recorded. */
  release(scratch: ScratchTexture): void {
    scratch.lastUse = ++this.clock;
    let list = this.idle.get(scratch.key);
    if (!list) this.idle.set(scratch.key, (list = []));
    list.push(scratch);
    this.idleBytes += scratch.bytes;
    if (this.idleBytes > TEXTURE_POOL.idleBytesLimit) this.trim(TEXTURE_POOL.idleBytesLimit);
  }

  /** Destroys idle textures, least recently released first, until at most `keepBytes` remain. */
  trim(keepBytes: number): void {
    if (this.idleBytes <= keepBytes) return;
    this.gpu.flush(); // recorded dispatches may still reference the textures about to go
    const byAge = [...this.idle.values()].flat().sort((x, y) => x.lastUse - y.lastUse);
    for (const oldest of byAge) {
      if (this.idleBytes <= keepBytes) break;
      const siblings = this.idle.get(oldest.key)!;
      siblings.splice(siblings.indexOf(oldest), 1);
      if (siblings.length === 0) this.idle.delete(oldest.key);
      this.idleBytes -= oldest.bytes;
      oldest.texture.destroy();
    }
  }

  /** Bytes held by idle textures (tests, diagnostics). */
  get idleBytesHeld(): number {
    return this.idleBytes;
  }
}

const pools = new WeakMap<Gpu, TexturePool>();

/** The device's scratch texture pool. */
export function texturePool(gpu: Gpu): TexturePool {
  let pool = pools.get(gpu);
  if (!pool) pools.set(gpu, (pool = new TexturePool(gpu)));
  return pool;
}

/** Destroys every idle scratch texture of the device (e.g. between training and sampling). */
export function releaseScratchTextures(gpu: Gpu): void {
  pools.get(gpu)?.trim(0);
}
