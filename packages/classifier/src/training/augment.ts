/**
 * Light augmentation that respects chest anatomy: a small rotation and scale about the centre,
 * brightness and contrast; never a left-right flip (the heart is on the left; a flipped film is a
 * different anatomy, dextrocardia). Runs on the host on the decoded batch, before upload; seeded per
 * (seed, epoch, batch), so a resumed run sees the same augmented images.
 */

export interface AugmentConfig {
  /** Largest rotation either way, degrees. */
  rotationDegrees: number;
  /** Largest relative zoom either way (0.05 = 95% to 105%). */
  scale: number;
  /** Largest shift added to intensities in [-1, 1]. */
  brightness: number;
  /** Largest relative change of contrast about the image mean. */
  contrast: number;
}

export const DEFAULT_AUGMENT: AugmentConfig = {
  rotationDegrees: 5,
  scale: 0.05,
  brightness: 0.05,
  contrast: 0.1,
};
export const NO_AUGMENT: AugmentConfig = { rotationDegrees: 0, scale: 0, brightness: 0, contrast: 0 };

/** mulberry32: a small seeded generator, enough for augmentation draws. */
export function augmentRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Augments `count` square images of side `size` ([count, size, size], values in [-1, 1]) in place.
 * Geometry: bilinear resampling of the inverse rotation/zoom; pixels from outside the image are -1
 * (black, the padding of a radiograph). Intensities are clamped to [-1, 1].
 */
export function augmentImages(
  images: Float32Array,
  count: number,
  size: number,
  config: AugmentConfig,
  seed: number,
): void {
  const area = size * size;
  if (images.length !== count * area) {
    throw new Error(`augmentImages: ${images.length} values are not ${count} images of ${size}x${size}`);
  }
  const random = augmentRandom(seed);
  const symmetric = (limit: number) => (2 * random() - 1) * limit;
  const source = new Float32Array(area);
  const centre = (size - 1) / 2;
  for (let image = 0; image < count; image++) {
    const angle = (symmetric(config.rotationDegrees) * Math.PI) / 180;
    const zoom = 1 + symmetric(config.scale);
    const brightness = symmetric(config.brightness);
    const contrast = 1 + symmetric(config.contrast);
    const offset = image * area;
    const pixels = images.subarray(offset, offset + area);
    if (angle !== 0 || zoom !== 1) {
      source.set(pixels);
      const cos = Math.cos(angle) / zoom;
      const sin = Math.sin(angle) / zoom;
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          const dx = x - centre;
          const dy = y - centre;
          const sx = cos * dx + sin * dy + centre;
          const sy = -sin * dx + cos * dy + centre;
          pixels[y * size + x] = bilinear(source, size, sx, sy);
        }
      }
    }
    if (brightness !== 0 || contrast !== 1) {
      let mean = 0;
      for (let index = 0; index < area; index++) mean += pixels[index];
      mean /= area;
      for (let index = 0; index < area; index++) {
        const value = (pixels[index] - mean) * contrast + mean + brightness;
        pixels[index] = Math.max(-1, Math.min(value, 1));
      }
    }
  }
}

function bilinear(source: Float32Array, size: number, x: number, y: number): number {
  const x0 = Math.floor(x);
  const y0 = Math.floor(y);
  const fx = x - x0;
  const fy = y - y0;
  const at = (xi: number, yi: number) =>
    xi < 0 || yi < 0 || xi >= size || yi >= size ? -1 : source[yi * size + xi];
  const top = at(x0, y0) * (1 - fx) + at(x0 + 1, y0) * fx;
  const bottom = at(x0, y0 + 1) * (1 - fx) + at(x0 + 1, y0 + 1) * fx;
  return top * (1 - fy) + bottom * fy;
}
