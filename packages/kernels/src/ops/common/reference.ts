/**
 * The one interface of an op's float64 CPU reference, shared by every op family in the per-op
 * layout (ops/<op>/reference.ts) and used by the table-driven test helper (test/kernels/check-op.ts).
 * Inputs and outputs are row-major `Float64Array`s; `params` carries shapes and options.
 */
export interface OpReference<P> {
  /** The op's output for these inputs. */
  forward(inputs: readonly Float64Array[], params: P): Float64Array;
  /**
   * The gradient of sum(gradOutput * forward(inputs)) with respect to each input, in input order;
   * null for an input that takes no gradient (indices, masks).
   */
  backward(inputs: readonly Float64Array[], gradOutput: Float64Array, params: P): (Float64Array | null)[];
}
