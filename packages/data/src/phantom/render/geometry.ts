/**
 * Analytic shapes of the thorax in the body frame, shared by the render passes and the sampler.
 * All functions take the lateral coordinate `u` (0 on the midline, 1 at the inner chest wall of the
 * side in question) and the depth `y` (0 at the apices, growing downwards), and return approximate
 * signed distances in body units (positive inside), which the passes turn into anti-aliased masks.
 */
import type { Anatomy, Side } from "../types.ts";

/** Where the diaphragm dome is highest, as a lateral coordinate. */
export const DOME_LATERAL = 0.45;
/** Where the lung apex is highest. */
export const APEX_LATERAL = 0.42;
/** How quickly the apex curves down medially and laterally. */
const APEX_CURVATURE = 1.6;
/** How far the chest wall tapers in towards the apex (the upper thorax is narrower). */
const LATERAL_TAPER = 0.36;
/** The carina (tracheal bifurcation) and the hila, relative to the lung height. */
export const CARINA_DEPTH = 0.34;
export const HILUM_DEPTH = 0.43;
export const HILUM_LATERAL = 0.27;

/** The numbers one hemithorax needs, flattened for the pixel loops. */
export interface Hemithorax {
  /** -1 for the patient's right (image left), +1 for the patient's left. */
  sign: number;
  height: number;
  domeRise: number;
  /** Curvature of the diaphragm so that it reaches the costophrenic angle at u = 1. */
  domeCurvature: number;
}

export function hemithorax(anatomy: Anatomy, side: Side): Hemithorax {
  const height = anatomy.lungHeight[side];
  const domeRise = anatomy.domeRise[side];
  return {
    sign: side === "right" ? -1 : 1,
    height,
    domeRise,
    domeCurvature: domeRise / ((1 - DOME_LATERAL) * (1 - DOME_LATERAL)),
  };
}

/** Lateral inner margin of the chest wall at depth y. */
export function lateralMargin(side: Hemithorax, y: number): number {
  const t = y <= 0 ? 0 : y >= side.height ? 1 : y / side.height;
  const rest = 1 - t;
  return 1 - LATERAL_TAPER * rest * rest;
}

/** Depth of the diaphragm surface at lateral coordinate u. */
export function diaphragmDepth(side: Hemithorax, u: number): number {
  const offset = u - DOME_LATERAL;
  return side.height - side.domeRise + side.domeCurvature * offset * offset;
}

/** Signed distance to the boundary of the pleural cavity (apex, chest wall, diaphragm, midline). */
export function cavityDistance(side: Hemithorax, u: number, y: number): number {
  const offset = u - APEX_LATERAL;
  const top = (y - APEX_CURVATURE * offset * offset) * 0.8;
  const lateral = lateralMargin(side, y) - u;
  const bottom = (diaphragmDepth(side, u) - y) * 0.9;
  const medial = u - 0.02;
  let distance = Math.min(top, lateral);
  if (bottom < distance) distance = bottom;
  if (medial < distance) distance = medial;
  return distance;
}

/**
 * Distance from the apex and the lateral chest wall only: where the lung thins out in projection.
 * (Above the diaphragm and beside the mediastinum the lung stays deep: the posterior recesses reach
 * below the dome, and the lung wraps around the heart.)
 */
export function lungDepthDistance(side: Hemithorax, u: number, y: number): number {
  const offset = u - APEX_LATERAL;
  const top = (y - APEX_CURVATURE * offset * offset) * 0.8;
  const lateral = lateralMargin(side, y) - u;
  return Math.min(top, lateral);
}

/** 0 outside, 1 inside, a linear ramp one `width` wide across the edge (analytic anti-aliasing). */
export function ramp(distance: number, width: number): number {
  const value = 0.5 + distance / width;
  return value <= 0 ? 0 : Math.min(value, 1);
}

export function smoothstep(edge0: number, edge1: number, x: number): number {
  const t = (x - edge0) / (edge1 - edge0);
  const clamped = t <= 0 ? 0 : Math.min(t, 1);
  return clamped * clamped * (3 - 2 * clamped);
}

/** Half-width of the mediastinum at depth y on one side, including the aortic knob and thymus. */
export function mediastinumHalfWidth(
  anatomy: Anatomy,
  sign: number,
  y: number,
  widening: number,
  lungHeight: number,
): number {
  const upper = 1 - smoothstep(lungHeight * 0.45, lungHeight * 0.7, y);
  let width = anatomy.mediastinumHalfWidth * (1 + (widening - 1) * upper);
  if (sign > 0) {
    const knobDepth = lungHeight * 0.22;
    const distance = (y - knobDepth) / 0.09;
    width += anatomy.aorticKnob * widening * Math.exp(-distance * distance);
  }
  if (anatomy.thymus > 0) {
    const distance = (y - lungHeight * 0.25) / 0.2;
    width += 0.18 * anatomy.thymus * Math.exp(-distance * distance);
  }
  return width;
}
