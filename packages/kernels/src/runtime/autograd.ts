/**
 * Reverse-mode autograd over a tape. Ops call `record()` when an input needs a gradient; `backward()`
 * walks the tape from the loss in reverse order, accumulates parameter gradients into `.grad`, and
 * releases each intermediate (op output) as soon as its own backward has run.
 */
import type { Gpu } from "./device.ts";
import { grid, LINEAR_INDEX_WGSL, launch } from "./kernel.ts";
import { OpError, Tensor } from "./tensor.ts";
import { Params } from "./uniforms.ts";

/** Receives the gradients of the node's outputs (null where an output got none) and returns one per input. */
export type BackwardFn = (gradOutputs: (Tensor | null)[]) => (Tensor | null)[];

export interface TapeNode {
  op: string;
  inputs: Tensor[];
  outputs: Tensor[];
  backward: BackwardFn;
  /** Extra tensors kept only for backward (e.g. softmax statistics); released with the node. */
  saved: Tensor[];
}

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording anything (inference, optimizer updates). */
export function noGrad<T>(fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

/** True when an op on these inputs must be recorded. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  return gradEnabled && inputs.some((input) => input?.requiresGrad);
}

/** Records an op so that backward() can differentiate through it. Returns the outputs for chaining. */
export function record(
  op: string,
  inputs: Tensor[],
  outputs: Tensor[],
  backward: BackwardFn,
  saved: Tensor[] = [],
): void {
  if (!needsGrad(...inputs)) {
    for (const tensor of saved) tensor.release();
    return;
  }
  const node: TapeNode = { op, inputs, outputs, backward, saved };
  for (const output of outputs) {
    output.requiresGrad = true;
    output.node = node;
  }
}

const ACCUMULATE_WGSL = `
@group(0) @binding(0) var<storage, read_write> total: array<f32>;
@group(0) @binding(1) var<storage, read> source: array<f32>;
struct Params { size: u32 }
@group(0) @binding(2) var<uniform> params: Params;
${LINEAR_INDEX_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let index = linearIndex(gid, groups, 256u);
  if (index < params.size) { total[index] = total[index] + source[index]; }
}`;

/** target += source, same shape. The one op autograd itself needs. */
export function accumulateInto(target: Tensor, source: Tensor): void {
  if (target.size !== source.size) {
    throw new OpError("accumulate", "gradient shape differs from its tensor", { target, source });
  }
  launch(
    target.gpu,
    { name: "accumulate", code: ACCUMULATE_WGSL },
    {
      bindings: [target, source],
      params: new Params().u32(target.size),
      workgroups: grid(target.size, 256),
      flops: target.size,
      bytes: target.size * 12,
    },
  );
}

function copyOf(gpu: Gpu, tensor: Tensor): Tensor {
  const copy = new Tensor(gpu, tensor.shape, tensor.dtype);
  gpu.commandEncoder().copyBufferToBuffer(tensor.buffer, 0, copy.buffer, 0, tensor.byteLength);
  return copy;
}

/** Nodes reachable from `root`, producers after consumers (the order backward runs them). */
function reverseTopologicalOrder(root: Tensor): TapeNode[] {
  const order: TapeNode[] = [];
  const visited = new Set<TapeNode>();
  // Iterative post-order DFS: UNet graphs are deep enough to overflow a recursive walk.
  const stack: { node: TapeNode; next: number }[] = [];
  if (root.node) stack.push({ node: root.node, next: 0 });
  if (root.node) visited.add(root.node);
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    if (top.next < top.node.inputs.length) {
      const input = top.node.inputs[top.next++];
      const producer = input.node;
      if (producer && !visited.has(producer)) {
        visited.add(producer);
        stack.push({ node: producer, next: 0 });
      }
    } else {
      order.push(top.node);
      stack.pop();
    }
  }
  return order.reverse();
}

/**
 * Backpropagates from `root` (a scalar loss unless `gradRoot` is given). Leaves that require a gradient
 * get it added to `.grad` (so gradients accumulate across calls until zeroed). Intermediates are
 * released as their backward completes unless `retain()`ed; `root` itself is kept.
 */
export function backward(root: Tensor, gradRoot?: Tensor): void {
  const gpu = root.gpu;
  if (!root.requiresGrad) throw new OpError("backward", "the tensor does not depend on any trainable tensor");
  if (!gradRoot && root.size !== 1) {
    throw new OpError("backward", "needs a scalar, or an explicit output gradient", { root });
  }
  if (gradRoot && gradRoot.size !== root.size) {
    throw new OpError("backward", "output gradient shape differs from the tensor", { root, gradRoot });
  }
  const grads = new Map<Tensor, Tensor>();
  grads.set(root, gradRoot ? copyOf(gpu, gradRoot) : Tensor.upload(gpu, [1], root.shape));
  const addGrad = (tensor: Tensor, grad: Tensor) => {
    if (!tensor.requiresGrad) {
      grad.release();
      return;
    }
    if (grad.size !== tensor.size) {
      throw new OpError("backward", "an op returned a gradient of the wrong size", { tensor, grad });
    }
    const existing = grads.get(tensor);
    if (existing) {
      accumulateInto(existing, grad);
      grad.release();
    } else {
      grads.set(tensor, grad);
    }
  };
  const nodes = reverseTopologicalOrder(root);
  // Backward kernels are ops too; they must not record onto the tape they are consuming.
  noGrad(() => runNodes(nodes, grads, addGrad, root));
  // Whatever is left belongs to leaves: parameters and inputs marked trainable.
  for (const [tensor, grad] of grads) {
    if (tensor.grad) {
      accumulateInto(tensor.grad, grad);
      grad.release();
    } else {
      tensor.grad = grad;
    }
  }
  root.node = null;
}

function runNodes(
  nodes: TapeNode[],
  grads: Map<Tensor, Tensor>,
  addGrad: (tensor: Tensor, grad: Tensor) => void,
  root: Tensor,
): void {
  for (const node of nodes) {
    const gradOutputs = node.outputs.map((output) => grads.get(output) ?? null);
    const inputGrads = gradOutputs.some((grad) => grad !== null) ? node.backward(gradOutputs) : [];
    if (inputGrads.length > 0 && inputGrads.length !== node.inputs.length) {
      throw new OpError(
        node.op,
        `backward returned ${inputGrads.length} gradients for ${node.inputs.length} inputs`,
      );
    }
    inputGrads.forEach((grad, index) => {
      if (grad) addGrad(node.inputs[index], grad);
    });
    for (const output of node.outputs) {
      grads.get(output)?.release();
      grads.delete(output);
      output.node = null;
      if (output !== root && !output.retained) output.release();
    }
    for (const tensor of node.saved) tensor.release();
    node.inputs = [];
    node.saved = [];
  }
}
