/**
 * Float32 canvases for the renderer: the attenuation layers, thin-stroke rasterisation for tubes,
 * lines and septal lines, and a separable Gaussian blur. Everything works in place on typed arrays.
 */
import { type BodyFrame, bodyToPixel } from "./frame.ts";

/** Attenuation layers; the final image is a function of tissue - air + markings + bone + overlay. */
export interface Layers {
  size: number;
  /** Soft tissue: body, heart, mediastinum, breasts, abdomen, fluid. */
  tissue: Float32Array;
  /** Air in the lungs, trachea and stomach, as the soft tissue it displaces. */
  air: Float32Array;
  /** Pulmonary vessels and parenchymal texture; vanish beyond a pneumothorax's pleural line. */
  markings: Float32Array;
  bone: Float32Array;
  /** Devices, lines and other thin dense things drawn by strokes. */
  overlay: Float32Array;
  /** Scratch for strokes (max-composited, so overlapping segments of one line do not add up). */
  stroke: Float32Array;
}

export function createLayers(size: number): Layers {
  const pixels = size * size;
  return {
    size,
    tissue: new Float32Array(pixels),
    air: new Float32Array(pixels),
    markings: new Float32Array(pixels),
    bone: new Float32Array(pixels),
    overlay: new Float32Array(pixels),
    stroke: new Float32Array(pixels),
  };
}

/**
 * Draws one segment into `target` as coverage (0-1) with max compositing: each pixel takes the larger
 * of what it had and its coverage by a capsule of half-width `halfWidth` pixels around the segment.
 * Thin lines keep their total brightness by lowering the peak instead of vanishing.
 */
export function strokeSegmentPixels(
  target: Float32Array,
  size: number,
  ax: number,
  ay: number,
  bx: number,
  by: number,
  halfWidth: number,
): void {
  const effective = Math.max(halfWidth, 0.5);
  const peak = halfWidth < 0.5 ? halfWidth / 0.5 : 1;
  const reach = effective + 1;
  const minCol = Math.max(0, Math.floor(Math.min(ax, bx) - reach));
  const maxCol = Math.min(size - 1, Math.ceil(Math.max(ax, bx) + reach));
  const minRow = Math.max(0, Math.floor(Math.min(ay, by) - reach));
  const maxRow = Math.min(size - 1, Math.ceil(Math.max(ay, by) + reach));
  const dx = bx - ax;
  const dy = by - ay;
  const lengthSquared = dx * dx + dy * dy;
  for (let row = minRow; row <= maxRow; row++) {
    for (let col = minCol; col <= maxCol; col++) {
      let t = lengthSquared > 0 ? ((col - ax) * dx + (row - ay) * dy) / lengthSquared : 0;
      t = t < 0 ? 0 : Math.min(t, 1);
      const ex = col - (ax + t * dx);
      const ey = row - (ay + t * dy);
      const distance = Math.sqrt(ex * ex + ey * ey);
      let coverage = effective + 0.5 - distance;
      if (coverage <= 0) continue;
      if (coverage > 1) coverage = 1;
      coverage *= peak;
      const index = row * size + col;
      if (coverage > target[index]) target[index] = coverage;
    }
  }
}

/** Strokes a polyline given in body coordinates ([x0, y0, x1, y1, ...]) with a half-width in body units. */
export function strokePolyline(
  target: Float32Array,
  frame: BodyFrame,
  points: readonly number[],
  halfWidth: number,
): void {
  const halfWidthPixels = halfWidth / frame.pixel;
  let [previousX, previousY] = bodyToPixel(frame, points[0], points[1]);
  for (let i = 2; i + 1 < points.length; i += 2) {
    const [x, y] = bodyToPixel(frame, points[i], points[i + 1]);
    strokeSegmentPixels(target, frame.size, previousX, previousY, x, y, halfWidthPixels);
    previousX = x;
    previousY = y;
  }
}

/** Samples a cubic Bezier curve into a flat polyline with `segments` pieces. */
export function cubicBezier(
  p0: readonly [number, number],
  p1: readonly [number, number],
  p2: readonly [number, number],
  p3: readonly [number, number],
  segments: number,
): number[] {
  const points: number[] = [];
  for (let i = 0; i <= segments; i++) {
    const t = i / segments;
    const s = 1 - t;
    const a = s * s * s;
    const b = 3 * s * s * t;
    const c = 3 * s * t * t;
    const d = t * t * t;
    points.push(a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0], a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1]);
  }
  return points;
}

/** Adds `weight` times the stroke scratch layer to `target`, then clears the scratch. */
export function flushStroke(layers: Layers, target: Float32Array, weight: number): void {
  const stroke = layers.stroke;
  for (let i = 0; i < stroke.length; i++) {
    const value = stroke[i];
    if (value !== 0) {
      target[i] += weight * value;
      stroke[i] = 0;
    }
  }
}

function gaussianKernel(sigma: number): Float32Array {
  const radius = Math.max(1, Math.ceil(3 * sigma));
  const kernel = new Float32Array(2 * radius + 1);
  let sum = 0;
  for (let i = -radius; i <= radius; i++) {
    const value = Math.exp((-0.5 * i * i) / (sigma * sigma));
    kernel[i + radius] = value;
    sum += value;
  }
  for (let i = 0; i < kernel.length; i++) kernel[i] /= sum;
  return kernel;
}

/**
 * Separable Gaussian blur in place (sigma in pixels), clamping at the borders. `scratch` must have the
 * image's length.
 */
export function gaussianBlur(image: Float32Array, size: number, sigma: number, scratch: Float32Array): void {
  const kernel = gaussianKernel(sigma);
  const radius = (kernel.length - 1) >> 1;
  const last = size - 1;
  for (let row = 0; row < size; row++) {
    const base = row * size;
    for (let col = 0; col < size; col++) {
      let sum = 0;
      for (let k = -radius; k <= radius; k++) {
        let c = col + k;
        c = c < 0 ? 0 : Math.min(c, last);
        sum += kernel[k + radius] * image[base + c];
      }
      scratch[base + col] = sum;
    }
  }
  for (let row = 0; row < size; row++) {
    for (let col = 0; col < size; col++) {
      let sum = 0;
      for (let k = -radius; k <= radius; k++) {
        let r = row + k;
        r = r < 0 ? 0 : Math.min(r, last);
        sum += kernel[k + radius] * scratch[r * size + col];
      }
      image[row * size + col] = sum;
    }
  }
}
