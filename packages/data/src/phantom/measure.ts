/**
 * Measuring the cardiothoracic ratio from pixels alone, the way a radiologist does on a PA film: the
 * widest transverse diameter of the cardiac silhouette over the widest inner diameter of the thorax.
 * It knows nothing about the phantom's parameters, so it can check both the phantom (does the drawn
 * heart match its label?) and, later, images a generator produced from a prompt.
 *
 * Method: smooth mostly vertically (averaging ribs and intercostal spaces into the lung's grey); find
 * each lung as the largest dark basin around a seed that stays enclosed by brighter tissue (bisecting
 * the threshold); then per row, the gap between the lungs' innermost pixels is mediastinum or heart and
 * the span between their outermost pixels is the thorax.
 */

export interface CardiothoracicMeasurement {
  ratio: number;
  /** Pixels between the innermost lung pixels, at the widest heart row. */
  heartWidth: number;
  /** Pixels between the outermost lung pixels, at the widest thorax row. */
  thoraxWidth: number;
  heartRow: number;
  thoraxRow: number;
  threshold: number;
  /** Per pixel: 1 right lung, 2 left lung, 0 elsewhere (the lungs as segmented for the measurement). */
  lungMask: Uint8Array;
}

/** Box filter along one axis via running sums; clamps at the borders. */
function boxFilter(source: Float32Array, size: number, radius: number, vertical: boolean): Float32Array {
  const target = new Float32Array(source.length);
  const width = 2 * radius + 1;
  const line = new Float32Array(size);
  const last = size - 1;
  for (let index = 0; index < size; index++) {
    for (let position = 0; position < size; position++) {
      line[position] = vertical ? source[position * size + index] : source[index * size + position];
    }
    let sum = 0;
    for (let k = -radius; k <= radius; k++) sum += line[k < 0 ? 0 : Math.min(k, last)];
    for (let position = 0; position < size; position++) {
      target[vertical ? position * size + index : index * size + position] = sum / width;
      const entering = position + radius + 1;
      const leaving = position - radius;
      sum += line[Math.min(entering, last)] - line[Math.max(leaving, 0)];
    }
  }
  return target;
}

/**
 * Flood fill of pixels darker than `threshold` from a seed. It leaks when it reaches the image edge or
 * pixels darker than `background` (air outside the body).
 */
function growRegion(
  image: Float32Array,
  size: number,
  seed: number,
  threshold: number,
  mask: Uint8Array,
  label: number,
  queue: Int32Array,
  background: number,
): { leaks: boolean; touchesOther: boolean } {
  let head = 0;
  let tail = 0;
  let leaks = false;
  let touchesOther = false;
  // Within this margin of the border a dark region is background or a collimator's edge, not lung.
  const margin = Math.max(1, Math.round(size * EDGE_MARGIN));
  mask[seed] = label;
  queue[tail++] = seed;
  while (head < tail) {
    const index = queue[head++];
    const row = Math.floor(index / size);
    const col = index - row * size;
    if (
      row < margin ||
      col < margin ||
      row >= size - margin ||
      col >= size - margin ||
      image[index] < background
    ) {
      leaks = true;
    }
    const neighbours = [index - 1, index + 1, index - size, index + size];
    for (let k = 0; k < 4; k++) {
      const next = neighbours[k];
      if ((k === 0 && col === 0) || (k === 1 && col === size - 1) || next < 0 || next >= image.length)
        continue;
      if (image[next] >= threshold) continue;
      if (mask[next] === label) continue;
      if (mask[next] !== 0) {
        touchesOther = true;
        continue;
      }
      mask[next] = label;
      queue[tail++] = next;
    }
  }
  return { leaks, touchesOther };
}

/**
 * The highest point of a hemidiaphragm that is not hidden by the heart. Walking the lung's columns
 * from the chest wall inwards, the lung's lowest pixel rises over the dome; where the heart begins, it
 * jumps up to the heart's upper contour. The highest lowest-pixel before that jump is the dome top (or,
 * when the heart covers the dome, the cardiophrenic angle).
 */
function diaphragmRow(mask: Uint8Array, size: number, label: number, inward: 1 | -1): number {
  const jump = Math.max(2, Math.round(size * 0.05));
  let highest = size;
  let previous = -1;
  for (let step = 0; step < size; step++) {
    const col = inward === 1 ? step : size - 1 - step;
    let lowest = -1;
    for (let row = size - 1; row >= 0; row--) {
      if (mask[row * size + col] === label) {
        lowest = row;
        break;
      }
    }
    if (lowest < 0) {
      if (previous >= 0) break;
      continue;
    }
    if (previous >= 0 && previous - lowest > jump) break;
    if (lowest < highest) highest = lowest;
    previous = lowest;
  }
  return highest;
}

/** The darkest pixel of a rectangle (fractions of the image). */
function darkestIn(
  image: Float32Array,
  size: number,
  cols: [number, number],
  rows: [number, number],
): number {
  let best = -1;
  for (let row = Math.round(rows[0] * size); row < Math.round(rows[1] * size); row++) {
    for (let col = Math.round(cols[0] * size); col < Math.round(cols[1] * size); col++) {
      const index = row * size + col;
      if (best < 0 || image[index] < image[best]) best = index;
    }
  }
  return best;
}

/** Bisection steps for the lung threshold (each halves the interval). */
const THRESHOLD_BISECTIONS = 9;
/** Anything darker than this share of the lung seed's value is outside the body. */
const BACKGROUND_SHARE = 0.4;
/** Lungs never come this close (as a fraction of the image) to the image border. */
const EDGE_MARGIN = 0.035;
const RIGHT_LUNG = 1;
const LEFT_LUNG = 2;

/** Whether both lungs, grown at `threshold`, stay enclosed by brighter tissue and apart from each other. */
function lungsEnclosed(
  smooth: Float32Array,
  size: number,
  seeds: readonly [number, number],
  threshold: number,
  background: number,
  mask: Uint8Array,
  queue: Int32Array,
): boolean {
  mask.fill(0);
  const right = growRegion(smooth, size, seeds[0], threshold, mask, RIGHT_LUNG, queue, background);
  if (right.leaks || mask[seeds[1]] === RIGHT_LUNG) return false;
  const left = growRegion(smooth, size, seeds[1], threshold, mask, LEFT_LUNG, queue, background);
  return !left.leaks && !left.touchesOther;
}

function percentile(values: Float32Array, fraction: number): number {
  const sorted = Float32Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))];
}

export function measureCardiothoracicRatio(
  image: Float32Array,
  size: number,
): CardiothoracicMeasurement | null {
  if (image.length !== size * size)
    throw new Error(`image has ${image.length} pixels, expected ${size}x${size}`);
  const vertical = boxFilter(image, size, Math.max(1, Math.round(size * 0.03)), true);
  const smooth = boxFilter(vertical, size, Math.max(1, Math.round(size * 0.006)), false);
  // Seeds in each lung: the darkest pixel where a lung lies in every phantom and nearly every film.
  const seeds: [number, number] = [
    darkestIn(smooth, size, [0.25, 0.45], [0.3, 0.55]),
    darkestIn(smooth, size, [0.55, 0.75], [0.3, 0.55]),
  ];
  const central: number[] = [];
  for (let row = Math.round(size * 0.35); row < Math.round(size * 0.65); row++) {
    for (let col = Math.round(size * 0.45); col < Math.round(size * 0.55); col++)
      central.push(smooth[row * size + col]);
  }
  const heartLevel = percentile(Float32Array.from(central), 0.75);
  const seedLevel = Math.max(smooth[seeds[0]], smooth[seeds[1]]);
  const background = BACKGROUND_SHARE * Math.min(smooth[seeds[0]], smooth[seeds[1]]);
  const mask = new Uint8Array(size * size);
  const queue = new Int32Array(size * size);
  // The lungs are the largest dark basins still enclosed by brighter tissue: bisect for the highest
  // threshold at which neither lung leaks into the background nor into the other lung.
  let low = seedLevel + 1e-4;
  let high = heartLevel;
  if (!(low < high) || !lungsEnclosed(smooth, size, seeds, low, background, mask, queue)) return null;
  for (let step = 0; step < THRESHOLD_BISECTIONS; step++) {
    const middle = (low + high) / 2;
    if (lungsEnclosed(smooth, size, seeds, middle, background, mask, queue)) low = middle;
    else high = middle;
  }
  const threshold = low;
  lungsEnclosed(smooth, size, seeds, threshold, background, mask, queue);

  // Per row: the gap between the lungs' innermost pixels, and the span between their outermost pixels.
  const gaps = new Int32Array(size).fill(-1);
  let thoraxWidth = 0;
  let thoraxRow = -1;
  let firstRow = -1;
  let lastRow = -1;
  for (let row = 0; row < size; row++) {
    let rightOuter = -1;
    let rightInner = -1;
    let leftInner = -1;
    let leftOuter = -1;
    for (let col = 0; col < size; col++) {
      const label = mask[row * size + col];
      if (label === RIGHT_LUNG) {
        if (rightOuter < 0) rightOuter = col;
        rightInner = col;
      } else if (label === LEFT_LUNG) {
        if (leftInner < 0) leftInner = col;
        leftOuter = col;
      }
    }
    if (rightOuter < 0 || leftInner < 0) continue;
    gaps[row] = leftInner - rightInner - 1;
    if (firstRow < 0) firstRow = row;
    lastRow = row;
    const thorax = leftOuter - rightOuter + 1;
    if (thorax > thoraxWidth) {
      thoraxWidth = thorax;
      thoraxRow = row;
    }
  }
  if (firstRow < 0) return null;
  // The heart is measured below the narrowest mediastinum (above it, the gap is between the apices) and
  // above the diaphragm (below it, the gap widens because the lung bases part around the domes).
  let narrowestRow = firstRow;
  const upperEnd = firstRow + Math.floor((lastRow - firstRow) * 0.5);
  for (let row = firstRow; row <= upperEnd; row++) {
    if (gaps[row] >= 0 && gaps[row] < gaps[narrowestRow]) narrowestRow = row;
  }
  const lowestHeartRow = Math.min(
    diaphragmRow(mask, size, RIGHT_LUNG, 1),
    diaphragmRow(mask, size, LEFT_LUNG, -1),
    lastRow,
  );
  let heartWidth = 0;
  let heartRow = -1;
  for (let row = narrowestRow; row <= lowestHeartRow; row++) {
    if (gaps[row] > heartWidth) {
      heartWidth = gaps[row];
      heartRow = row;
    }
  }
  if (heartRow < 0 || thoraxRow < 0) return null;
  // The mask's edges sit where the smoothed image crosses a threshold tuned to keep the lungs
  // enclosed; the borders themselves are placed more precisely at half contrast on the image.
  const heartEdges = innerEdges(mask, size, heartRow);
  const thoraxEdges = outerEdges(mask, size, thoraxRow);
  const heartProfile = rowProfile(image, size, heartRow);
  const thoraxProfile = rowProfile(image, size, thoraxRow);
  // The right lung lies at smaller columns than the heart, the left lung at larger ones.
  const preciseHeart =
    halfContrastEdge(heartProfile, heartEdges.left, -1) - halfContrastEdge(heartProfile, heartEdges.right, 1);
  const preciseThorax =
    halfContrastEdge(thoraxProfile, thoraxEdges.left, 1) -
    halfContrastEdge(thoraxProfile, thoraxEdges.right, -1);
  return {
    ratio: preciseHeart / preciseThorax,
    heartWidth: preciseHeart,
    thoraxWidth: preciseThorax,
    heartRow,
    thoraxRow,
    threshold,
    lungMask: mask,
  };
}

/** Last right-lung pixel and first left-lung pixel of a row (the lungs' borders with the heart). */
function innerEdges(mask: Uint8Array, size: number, row: number): { right: number; left: number } {
  let right = -1;
  let left = -1;
  for (let col = 0; col < size; col++) {
    const label = mask[row * size + col];
    if (label === RIGHT_LUNG) right = col;
    if (label === LEFT_LUNG && left < 0) left = col;
  }
  return { right, left };
}

/** First right-lung pixel and last left-lung pixel of a row (the lungs' borders with the chest wall). */
function outerEdges(mask: Uint8Array, size: number, row: number): { right: number; left: number } {
  let right = -1;
  let left = -1;
  for (let col = 0; col < size; col++) {
    const label = mask[row * size + col];
    if (label === RIGHT_LUNG && right < 0) right = col;
    if (label === LEFT_LUNG) left = col;
  }
  return { right, left };
}

/** A row averaged with its neighbours above and below, to quiet the noise without blurring across. */
function rowProfile(image: Float32Array, size: number, row: number): Float32Array {
  const profile = new Float32Array(size);
  let rows = 0;
  for (let r = Math.max(0, row - 1); r <= Math.min(size - 1, row + 1); r++, rows++) {
    for (let col = 0; col < size; col++) profile[col] += image[r * size + col];
  }
  for (let col = 0; col < size; col++) profile[col] /= rows;
  return profile;
}

function meanOver(profile: Float32Array, from: number, to: number): number {
  const low = Math.max(0, Math.min(from, to));
  const high = Math.min(profile.length - 1, Math.max(from, to));
  let sum = 0;
  for (let col = low; col <= high; col++) sum += profile[col];
  return sum / (high - low + 1);
}

/**
 * Sub-pixel position of a lung border near `lungPixel` (the mask's last lung pixel), where the profile
 * crosses halfway between the lung's level and the tissue's level beyond. `outward` points from the
 * lung into the tissue (+1: tissue at larger columns). Returns the border between pixel centres.
 */
function halfContrastEdge(profile: Float32Array, lungPixel: number, outward: 1 | -1): number {
  const near = Math.max(2, Math.round(profile.length * 0.02));
  const far = Math.max(4, Math.round(profile.length * 0.05));
  const lungLevel = meanOver(profile, lungPixel - outward * far, lungPixel - outward * near);
  const tissueLevel = meanOver(profile, lungPixel + outward * near, lungPixel + outward * far);
  const half = (lungLevel + tissueLevel) / 2;
  if (!(tissueLevel > lungLevel)) return lungPixel + outward * 0.5;
  for (let step = -near; step <= far; step++) {
    const inside = lungPixel + outward * step;
    const outside = inside + outward;
    if (inside < 0 || outside < 0 || inside >= profile.length || outside >= profile.length) continue;
    if (profile[inside] < half && profile[outside] >= half) {
      const fraction = (half - profile[inside]) / (profile[outside] - profile[inside]);
      return inside + outward * fraction;
    }
  }
  return lungPixel + outward * 0.5;
}
