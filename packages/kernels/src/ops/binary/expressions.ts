/** Each binary op as a WGSL expression of `a` and `b`, pasted into both variants' kernels. */
export type BinaryKind = "add" | "sub" | "mul" | "div";

export const BINARY_EXPRESSIONS: Readonly<Record<BinaryKind, string>> = {
  add: "a + b",
  sub: "a - b",
  mul: "a * b",
  div: "a / b",
};
