/**
 * The soft-tissue and air pass: body outline, neck, shoulders, arms, breasts, abdomen, lungs, heart,
 * mediastinum, trachea and bronchi, gastric bubble, pulmonary vessels and hila.
 *
 * Attenuation units: 1 is roughly the antero-posterior soft-tissue thickness of an average adult chest.
 * Projected path lengths come from elliptical cross-sections (a chord through an ellipse), which is
 * what makes the centre of the body brighter than its edges.
 */
import type { Acquisition, Anatomy, Habitus } from "../types.ts";
import type { Layers } from "./canvas.ts";
import type { BodyFrame } from "./frame.ts";
import {
  CARINA_DEPTH,
  cavityDistance,
  diaphragmDepth,
  type Hemithorax,
  HILUM_DEPTH,
  HILUM_LATERAL,
  lungDepthDistance,
  mediastinumHalfWidth,
  ramp,
  smoothstep,
} from "./geometry.ts";
import { valueNoise } from "./texture.ts";

/** Share of a lung's depth that is air (the rest is parenchyma and blood). */
export const LUNG_AIR_FRACTION = 0.8;
/** Antero-posterior body thickness: a fixed part (skeleton, organs) and a part that grows with soft tissue. */
export const BODY_DEPTH_BASE = 0.78;
export const BODY_DEPTH_PER_SOFT_TISSUE = 0.22;
const HEART_DENSITY = 0.18;
const MEDIASTINUM_DENSITY = 0.2;
const CHEST_WALL_DENSITY = 0.22;
const BREAST_DENSITY = 0.2;
const TRACHEA_AIR = 0.2;
const BRONCHUS_AIR = 0.12;
const VESSEL_DENSITY = 0.22;
const HILUM_DENSITY = 0.2;
/** Angular frequencies of three generations of vessels fanning out from each hilum. */
const VESSEL_ORDERS = [7, 13, 23];
const VESSEL_WEIGHTS = [1, 0.75, 0.5];
/** exp(-12) is 6e-6: below a 16-bit step. */
const VESSEL_CUTOFF = 12;

function distanceToSegment(px: number, py: number, ax: number, ay: number, bx: number, by: number): number {
  const dx = bx - ax;
  const dy = by - ay;
  let t = ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy);
  t = t < 0 ? 0 : Math.min(t, 1);
  const ex = px - (ax + t * dx);
  const ey = py - (ay + t * dy);
  return Math.sqrt(ex * ex + ey * ey);
}

/** Vessels radiating from a hilum at polar position (radius, angle), tapering and branching outwards. */
function vesselTree(radius: number, angle: number, seed: number): number {
  let total = 0;
  for (let order = 0; order < VESSEL_ORDERS.length; order++) {
    const frequency = VESSEL_ORDERS[order];
    // Each generation starts a little further out and wanders with distance, so the fans interleave.
    const start = 0.08 + 0.12 * order;
    if (radius < start) continue;
    const wander = 1.6 * (valueNoise(radius * 3.5, order * 5.3, seed) - 0.5);
    const phase = (seed % 1000) * 0.013 * (order + 1);
    const alignment = 1 - Math.cos(frequency * angle + phase + wander);
    const halfWidth = 0.022 * (1 - 0.55 * Math.min(radius, 1.1)) * (1 - 0.15 * order);
    const angularWidth = (frequency * halfWidth) / radius;
    const exponent = (2 * alignment) / (angularWidth * angularWidth);
    // Most pixels lie between vessels, where the profile is below what an image can show.
    if (exponent > VESSEL_CUTOFF) continue;
    const fade = smoothstep(start, start + 0.1, radius) * Math.exp(-radius / 0.55);
    total += VESSEL_WEIGHTS[order] * Math.exp(-exponent) * fade;
  }
  return total;
}

export interface AnatomyPassInputs {
  anatomy: Anatomy;
  habitus: Habitus;
  acquisition: Acquisition;
  right: Hemithorax;
  left: Hemithorax;
  /** Multiplier of the upper mediastinal width (1 without a widening finding). */
  mediastinalWidening: number;
}

export function drawAnatomy(layers: Layers, frame: BodyFrame, inputs: AnatomyPassInputs): void {
  const { anatomy, habitus, acquisition, right, left, mediastinalWidening } = inputs;
  const { size, pixel } = frame;
  const { tissue, air, markings } = layers;
  const edge = Math.max(pixel, 0.012);
  const lungHeight = Math.max(right.height, left.height);
  const bodyDepth = BODY_DEPTH_BASE + BODY_DEPTH_PER_SOFT_TISSUE * habitus.softTissue;
  const chestHalfWidth = 1.08 + 0.13 * habitus.softTissue;
  const heart = anatomy.heart;
  const carinaY = CARINA_DEPTH * lungHeight;
  const hilumY = HILUM_DEPTH * lungHeight;
  const tracheaHalfWidth = 0.05;
  const tracheaX = -0.015;
  const bubble = anatomy.gastricBubble;
  const seed = anatomy.textureSeed;
  const breastCenterY = lungHeight * 0.78;
  for (let row = 0; row < size; row++) {
    let x = frame.x0 + row * frame.dxdRow;
    let y = frame.y0 + row * frame.dydRow;
    for (let col = 0; col < size; col++, x += frame.dxdCol, y += frame.dydCol) {
      const index = row * size + col;
      const side = x < 0 ? right : left;
      const u = x < 0 ? -x : x;

      // Body outline: chest, widening into the shoulders, narrowing into the neck and the waist.
      const shoulder = 0.34 * Math.exp(-(((y + 0.1) / 0.2) ** 2));
      const neckBlend = smoothstep(-0.2, -0.42, y);
      const waist = 0.1 * smoothstep(lungHeight + 0.3, lungHeight + 1.2, y);
      const skin =
        (chestHalfWidth + shoulder - waist) * (1 - neckBlend) + (0.4 + 0.06 * habitus.softTissue) * neckBlend;
      const depth = bodyDepth * (1 - 0.4 * neckBlend);
      const across = u / skin;
      // The torso's cross-section is a rounded rectangle rather than an ellipse (a superellipse of
      // order 3): the chest wall stays thick almost out to the skin.
      let soft = across < 1 ? depth * Math.cbrt(1 - across * across * across) : 0;

      if (acquisition.armsAtSides && y > -0.15) {
        const armOffset = (u - (skin + 0.2)) / 0.19;
        if (armOffset > -1 && armOffset < 1) soft += 0.55 * bodyDepth * Math.sqrt(1 - armOffset * armOffset);
      }
      if (habitus.breast > 0) {
        const bx = (u - 0.66) / (0.5 + 0.12 * habitus.breast);
        const by = (y - breastCenterY) / (y > breastCenterY ? 0.22 + 0.1 * habitus.breast : 0.7);
        const e = bx * bx + by * by;
        // Thickest just above the inframammary fold, fading upwards into the chest wall.
        const weight = 0.6 + 0.4 * smoothstep(breastCenterY - 0.4, breastCenterY + 0.05, y);
        if (e < 1) soft += BREAST_DENSITY * habitus.breast * Math.sqrt(1 - e) * weight;
      }

      // Lungs, carved out of the thorax by the mediastinum and the heart.
      const diaphragm = diaphragmDepth(side, u);
      const belowDiaphragm = ramp(y - diaphragm, edge);
      // The liver under the right hemidiaphragm is a little denser than the rest of the abdomen.
      soft += 0.06 * belowDiaphragm * smoothstep(0.1, -0.3, x) * smoothstep(1.15, 0.6, u);
      const cavity = cavityDistance(side, u, y);
      // Chest wall muscles, the ribs seen end-on and the apical soft tissue make a bright rim around the
      // lungs.
      if (cavity < 0 && cavity > -0.22 && u > 0.3) {
        // Medially the band stops at the diaphragm; laterally it runs on past the costophrenic angle.
        const aboveAbdomen = Math.max(1 - belowDiaphragm, smoothstep(0.85, 1, u));
        soft +=
          CHEST_WALL_DENSITY * smoothstep(-0.22, -0.05, cavity) * smoothstep(0.3, 0.5, u) * aboveAbdomen;
      }
      const mediastinum = mediastinumHalfWidth(anatomy, side.sign, y, mediastinalWidening, lungHeight);
      const inMediastinum =
        ramp(mediastinum - u, edge * 1.5) * smoothstep(-0.3, 0.05, y) * (1 - belowDiaphragm);
      const heartY = y - heart.centerY;
      const heartX = (x - heart.centerX - heart.shear * heartY) / heart.halfWidth;
      const heartE = heartX * heartX + (heartY / heart.halfHeight) ** 2;
      let inHeart = 0;
      if (heartE < 1.6) {
        inHeart = ramp((1 - Math.sqrt(heartE)) * heart.halfWidth, edge) * (1 - belowDiaphragm);
        soft += HEART_DENSITY * inHeart * (0.6 + 0.4 * Math.sqrt(Math.max(0, 1 - heartE)));
      }
      soft += MEDIASTINUM_DENSITY * inMediastinum * (1 - inHeart);

      let lungAir = 0;
      let lungVisible = 0;
      if (cavity > -edge) {
        lungVisible = ramp(cavity, edge) * (1 - inMediastinum) * (1 - 0.7 * inHeart);
        const thickness = Math.sqrt(Math.min(1, Math.max(0, lungDepthDistance(side, u, y)) / 0.3));
        lungAir = bodyDepth * 0.62 * (0.25 + 0.75 * thickness) * lungVisible * LUNG_AIR_FRACTION;
      }

      // Trachea and main bronchi.
      if (y < carinaY + 0.02 && y > -1.5) {
        const offset = (x - tracheaX) / tracheaHalfWidth;
        if (offset > -1.3 && offset < 1.3) {
          const wall = ramp((1 - Math.abs(offset)) * tracheaHalfWidth, pixel);
          lungAir += TRACHEA_AIR * wall * smoothstep(carinaY + 0.02, carinaY - 0.04, y);
        }
      }
      if (y > carinaY - 0.05 && y < hilumY + 0.12 && u < HILUM_LATERAL + 0.05) {
        const distance = distanceToSegment(u, y, 0, carinaY, HILUM_LATERAL - 0.06, hilumY + 0.05);
        lungAir += BRONCHUS_AIR * ramp(0.032 - distance, pixel);
      }
      if (bubble !== null && x > 0) {
        const bx = (x - bubble.x) / bubble.radius;
        const by = (y - bubble.y) / (bubble.radius * 0.8);
        const e = bx * bx + by * by;
        // Dome-shaped: gas above a flat fluid level.
        if (e < 1 && by < 0.25) lungAir += 0.3 * Math.sqrt(1 - e) * ramp((0.25 - by) * bubble.radius, pixel);
      }

      // Vessels and hila, only where there is aerated lung to see them against.
      let vessels = 0;
      if (lungVisible > 0 || inMediastinum > 0) {
        const hx = u - HILUM_LATERAL;
        const hy = y - hilumY;
        const radius = Math.sqrt(hx * hx + hy * hy);
        const hilum = HILUM_DENSITY * Math.exp(-((radius / 0.11) ** 2));
        if (lungVisible > 0) {
          const angle = Math.atan2(hy, hx);
          const texture = valueNoise(x * 11, y * 11, seed) - 0.5;
          vessels =
            (VESSEL_DENSITY * vesselTree(radius, angle, seed + (x < 0 ? 0 : 7919)) + 0.03 * texture) *
            lungVisible;
        }
        vessels += hilum * Math.max(lungVisible, 0.5 * inMediastinum);
      }

      tissue[index] = soft;
      air[index] = lungAir;
      markings[index] = vessels;
    }
  }
}
