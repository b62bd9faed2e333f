/**
 * Two more pixel measurements on the lungs that `measureCardiothoracicRatio` segments, for judging
 * images (the phantom's, a generator's) without knowing how they were made:
 *
 * - Lateral lung depth (pleural effusion): how far each lung reaches down along the chest wall, from its
 *   apex to the lowest row where at least half of the lateral fifth of its width is lung, in thorax
 *   widths. Fluid fills the
 *   costophrenic angle first and climbs the lateral wall (the meniscus), so an effusion makes that
 *   lung's lateral base shallower; the image's value is the shallower of the two lungs.
 * - Lower-zone ratio (sex): mean brightness of the lateral half of each lung's lower zone (60-85% of the
 *   lung's height) over its upper zone (15-35%), averaged over both lungs. Breast soft tissue lies over
 *   the lower lateral lung fields, so adult women's lower zones are brighter relative to their upper
 *   zones than men's.
 *
 * Both use the CTR measurement's lung mask and thorax width, so an image whose lungs cannot be
 * segmented has neither.
 */
import { type CardiothoracicMeasurement, measureCardiothoracicRatio } from "./measure.ts";

/** Share of a lung's width, from its outermost pixel inwards, searched for the lateral base. */
const LATERAL_BAND = 0.2;
/** Share of a lung's width, from its outermost pixel inwards, in which the zones are averaged. */
const ZONE_BAND = 0.5;
/** Rows of each zone as fractions of the lung's height below its apex. */
const UPPER_ZONE: readonly [number, number] = [0.15, 0.35];
const LOWER_ZONE: readonly [number, number] = [0.6, 0.85];

export interface LungZones {
  /** First and last row of the lung's mask. */
  apexRow: number;
  baseRow: number;
  /** Lowest row where at least half of the lateral fifth of the lung's width is lung (-1: none). */
  lateralBaseRow: number;
  /** (lateralBaseRow - apexRow + 1) / thorax width; 0 without a lateral base row. */
  lateralDepth: number;
  /** Mean pixel value of the lung's lateral half in the upper and lower zones (null: no lung pixel there). */
  upperZoneMean: number | null;
  lowerZoneMean: number | null;
  /** lowerZoneMean / upperZoneMean, or null. */
  lowerZoneRatio: number | null;
}

export interface LungZoneMeasurement {
  /** The patient's right lung (image left) and left lung (image right). */
  right: LungZones;
  left: LungZones;
  /** The shallower lung's lateral depth: lower with a pleural effusion on either side. */
  lateralDepth: number;
  /** Both lungs' lower-zone ratios averaged (the one lung that has one, if only one has): higher in women. */
  lowerZoneRatio: number | null;
  thoraxWidth: number;
}

const RIGHT_LUNG = 1;
const LEFT_LUNG = 2;

function lungZones(
  image: Float32Array,
  mask: Uint8Array,
  size: number,
  label: number,
  thoraxWidth: number,
): LungZones | null {
  // The right lung's chest wall is at small columns, the left lung's at large ones.
  const right = label === RIGHT_LUNG;
  let apexRow = -1;
  let baseRow = -1;
  let outer = right ? size : -1;
  let inner = right ? -1 : size;
  for (let row = 0; row < size; row++) {
    for (let col = 0; col < size; col++) {
      if (mask[row * size + col] !== label) continue;
      if (apexRow < 0) apexRow = row;
      baseRow = row;
      if (right) {
        outer = Math.min(outer, col);
        inner = Math.max(inner, col);
      } else {
        outer = Math.max(outer, col);
        inner = Math.min(inner, col);
      }
    }
  }
  if (apexRow < 0) return null;
  const width = Math.abs(inner - outer) + 1;
  const height = baseRow - apexRow + 1;
  const inward = right ? 1 : -1;
  const columnsFromWall = (share: number) => {
    const columns: number[] = [];
    for (let k = 0; k <= Math.round(share * width) && k < width; k++) columns.push(outer + inward * k);
    return columns;
  };
  // A row counts when at least half of the lateral band is lung: a thin dark seam along the chest wall
  // beside fluid is not an aerated costophrenic angle.
  let lateralBaseRow = -1;
  const lateral = columnsFromWall(LATERAL_BAND);
  const needed = Math.ceil(lateral.length / 2);
  for (let row = baseRow; row >= apexRow && lateralBaseRow < 0; row--) {
    let lung = 0;
    for (const col of lateral) if (mask[row * size + col] === label) lung++;
    if (lung >= needed) lateralBaseRow = row;
  }
  const zoneColumns = columnsFromWall(ZONE_BAND);
  const zoneMean = (zone: readonly [number, number]): number | null => {
    let sum = 0;
    let count = 0;
    const first = apexRow + Math.round(zone[0] * height);
    const last = apexRow + Math.round(zone[1] * height);
    for (let row = first; row <= last; row++) {
      for (const col of zoneColumns) {
        const index = row * size + col;
        if (mask[index] !== label) continue;
        sum += image[index];
        count++;
      }
    }
    return count > 0 ? sum / count : null;
  };
  const upperZoneMean = zoneMean(UPPER_ZONE);
  const lowerZoneMean = zoneMean(LOWER_ZONE);
  return {
    apexRow,
    baseRow,
    lateralBaseRow,
    // No row with a lateral lung share at all: the angle is filled to the apex.
    lateralDepth: lateralBaseRow < 0 ? 0 : (lateralBaseRow - apexRow + 1) / thoraxWidth,
    upperZoneMean,
    lowerZoneMean,
    lowerZoneRatio:
      upperZoneMean !== null && lowerZoneMean !== null && upperZoneMean > 0
        ? lowerZoneMean / upperZoneMean
        : null,
  };
}

/**
 * Lateral lung depth and lower-zone ratio of a square grey image (0 black .. 1 white, row-major), or null
 * when the lungs cannot be segmented. Pass the image's CTR measurement to reuse its lung mask.
 */
export function measureLungZones(
  image: Float32Array,
  size: number,
  cardiothoracic?: CardiothoracicMeasurement | null,
): LungZoneMeasurement | null {
  if (!Number.isSafeInteger(size) || size < 8) {
    throw new RangeError(`measureLungZones: size must be an integer of at least 8 pixels, got ${size}`);
  }
  if (image.length !== size * size) {
    throw new RangeError(
      `measureLungZones: image has ${image.length} pixels, expected ${size}x${size} = ${size * size}`,
    );
  }
  for (let index = 0; index < image.length; index++) {
    if (!Number.isFinite(image[index])) {
      throw new RangeError(
        `measureLungZones: pixel ${index} (row ${Math.floor(index / size)}, column ${index % size}) is ${image[index]}`,
      );
    }
  }
  if (cardiothoracic && cardiothoracic.lungMask.length !== image.length) {
    throw new RangeError(
      `measureLungZones: the CTR measurement's lung mask has ${cardiothoracic.lungMask.length} pixels, the image ${image.length}`,
    );
  }
  const ctr = cardiothoracic === undefined ? measureCardiothoracicRatio(image, size) : cardiothoracic;
  if (!ctr || !(ctr.thoraxWidth > 0)) return null;
  const right = lungZones(image, ctr.lungMask, size, RIGHT_LUNG, ctr.thoraxWidth);
  const left = lungZones(image, ctr.lungMask, size, LEFT_LUNG, ctr.thoraxWidth);
  if (!right || !left) return null;
  const ratios = [right.lowerZoneRatio, left.lowerZoneRatio].filter(
    (value): value is number => value !== null,
  );
  return {
    right,
    left,
    lateralDepth: Math.min(right.lateralDepth, left.lateralDepth),
    lowerZoneRatio: ratios.length > 0 ? ratios.reduce((a, b) => a + b, 0) / ratios.length : null,
    thoraxWidth: ctr.thoraxWidth,
  };
}
