/**
 * The affine map between image pixels and the body frame (see ../types.ts). Render passes walk the
 * pixels row by row and step the body coordinates by constant increments, so no per-pixel transform
 * call is needed.
 */
import type { Acquisition } from "../types.ts";

export interface BodyFrame {
  size: number;
  /** Body coordinates of the centre of pixel (0, 0). */
  x0: number;
  y0: number;
  /** Change of the body coordinates per pixel step in x (column) and y (row). */
  dxdCol: number;
  dydCol: number;
  dxdRow: number;
  dydRow: number;
  /** Side of one pixel in body units: the width of an anti-aliased edge. */
  pixel: number;
  originX: number;
  originY: number;
  unit: number;
  cos: number;
  sin: number;
}

export function bodyFrame(acquisition: Acquisition, size: number): BodyFrame {
  const { originX, originY, unit, tilt } = acquisition.placement;
  const cos = Math.cos(tilt);
  const sin = Math.sin(tilt);
  const half = 0.5 / size;
  const scale = 1 / (size * unit);
  return {
    size,
    x0: (cos * (half - originX) + sin * (half - originY)) / unit,
    y0: (-sin * (half - originX) + cos * (half - originY)) / unit,
    dxdCol: cos * scale,
    dydCol: -sin * scale,
    dxdRow: sin * scale,
    dydRow: cos * scale,
    pixel: scale,
    originX,
    originY,
    unit,
    cos,
    sin,
  };
}

/** Body coordinates to continuous pixel coordinates (pixel centres at integers). */
export function bodyToPixel(frame: BodyFrame, x: number, y: number): [number, number] {
  const imageX = frame.originX + frame.unit * (frame.cos * x - frame.sin * y);
  const imageY = frame.originY + frame.unit * (frame.sin * x + frame.cos * y);
  return [imageX * frame.size - 0.5, imageY * frame.size - 0.5];
}
