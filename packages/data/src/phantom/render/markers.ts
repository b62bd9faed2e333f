/**
 * Lead laterality markers and burnt-in text tags ("R", "L", "PORTABLE"). They matter for the study:
 * classifiers are known to learn such institution-specific marks as shortcuts, and the phantom's
 * institutions differ in them on purpose.
 */
import type { Marker } from "../types.ts";

/** A 5x7 bitmap font, one string of 5 characters per row, "#" = lit. */
const GLYPHS: Readonly<Record<string, readonly string[]>> = {
  A: [".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
  B: ["####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."],
  C: [".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."],
  D: ["####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."],
  E: ["#####", "#....", "#....", "####.", "#....", "#....", "#####"],
  I: [".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."],
  L: ["#....", "#....", "#....", "#....", "#....", "#....", "#####"],
  N: ["#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"],
  O: [".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."],
  P: ["####.", "#...#", "#...#", "####.", "#....", "#....", "#...."],
  R: ["####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"],
  S: [".####", "#....", "#....", ".###.", "....#", "....#", "####."],
  T: ["#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."],
  U: ["#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."],
  " ": [".....", ".....", ".....", ".....", ".....", ".....", "....."],
};
const GLYPH_COLUMNS = 5;
const GLYPH_ROWS = 7;
/** Lead and burnt-in text saturate the detector response. */
const MARKER_DENSITY = 4;

export function markerAlphabet(): string {
  return Object.keys(GLYPHS).join("");
}

/** Adds `value` times the area of [x0, x1) x [y0, y1) (pixel units) that each pixel covers. */
function fillRectangle(
  target: Float32Array,
  size: number,
  x0: number,
  y0: number,
  x1: number,
  y1: number,
  value: number,
) {
  const firstCol = Math.max(0, Math.floor(x0));
  const lastCol = Math.min(size - 1, Math.ceil(x1) - 1);
  const firstRow = Math.max(0, Math.floor(y0));
  const lastRow = Math.min(size - 1, Math.ceil(y1) - 1);
  for (let row = firstRow; row <= lastRow; row++) {
    const coverY = Math.min(row + 1, y1) - Math.max(row, y0);
    if (coverY <= 0) continue;
    for (let col = firstCol; col <= lastCol; col++) {
      const coverX = Math.min(col + 1, x1) - Math.max(col, x0);
      if (coverX > 0) target[row * size + col] += value * coverX * coverY;
    }
  }
}

/** Draws each marker's text into `target` (an attenuation layer), left-aligned at (x, y) in image fractions. */
export function drawMarkers(target: Float32Array, size: number, markers: readonly Marker[]): void {
  for (const marker of markers) {
    const cell = (marker.height * size) / GLYPH_ROWS;
    let left = marker.x * size;
    const top = marker.y * size;
    for (const character of marker.text) {
      const glyph = GLYPHS[character];
      if (glyph === undefined) {
        throw new Error(
          `marker text "${marker.text}" has "${character}", which has no glyph (have: ${markerAlphabet()})`,
        );
      }
      for (let row = 0; row < GLYPH_ROWS; row++) {
        for (let col = 0; col < GLYPH_COLUMNS; col++) {
          if (glyph[row][col] !== "#") continue;
          const x0 = left + col * cell;
          const y0 = top + row * cell;
          fillRectangle(target, size, x0, y0, x0 + cell, y0 + cell, MARKER_DENSITY);
        }
      }
      left += (GLYPH_COLUMNS + 1) * cell;
    }
  }
}

/** Width of a marker's text as a fraction of the image, for placing it against a right edge. */
export function markerWidth(text: string, height: number): number {
  return (text.length * (GLYPH_COLUMNS + 1) - 1) * (height / GLYPH_ROWS);
}
