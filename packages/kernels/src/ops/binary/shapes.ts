/** NumPy broadcasting of two shapes, shared by the launch (index.ts) and the reference. */
import { OpError, type Shape } from "../../runtime/tensor.ts";

/** The broadcast kernel's uniform holds shapes and strides of up to this rank. */
export const MAX_BINARY_RANK = 8;

/** NumPy broadcasting of two shapes; throws OpError naming `op` when they are incompatible. */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  const rank = Math.max(a.length, b.length);
  const shape: number[] = [];
  for (let axis = 0; axis < rank; axis++) {
    const da = a[a.length - rank + axis] ?? 1;
    const db = b[b.length - rank + axis] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new OpError(op, `shapes cannot be broadcast together (axis ${axis}: ${da} vs ${db})`, { a, b });
    }
    shape.push(Math.max(da, db));
  }
  if (rank > MAX_BINARY_RANK) {
    throw new OpError(op, `rank ${rank} exceeds the maximum ${MAX_BINARY_RANK}`, { a, b });
  }
  return shape;
}

/** Row-major strides of `shape` read as broadcast to `outShape` (0 on expanded axes). */
export function broadcastStrides(shape: Shape, outShape: Shape): number[] {
  const strides = new Array<number>(outShape.length).fill(0);
  let stride = 1;
  for (let axis = shape.length - 1; axis >= 0; axis--) {
    const outAxis = outShape.length - shape.length + axis;
    strides[outAxis] = shape[axis] === 1 ? 0 : stride;
    stride *= shape[axis];
  }
  return strides;
}
