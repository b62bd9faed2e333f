/**
 * Reverse-mode autograd over a tape. Ops call `record()` when an input needs a gradient; `backward()`
 * walks the tape from the loss in reverse order, accumulates parameter gradients into `.grad`, and
 * releases each intermediate (op output) as soon as its own backward has run.
 */
import type { Gpu } from "./device.ts";
import { grid, LINEAR_INDEX_WGSL, launch } from "./kernel.ts";
import { OpError, Tensor, tidy } from "./tensor.ts";
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
/** While a checkpoint recomputes, the nodes it records (to check that it read only its inputs). */
let capturedNodes: Set<TapeNode> | null = null;

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
  capturedNodes?.add(node);
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
  return new Tensor(gpu, tensor.shape, tensor.dtype).copyFrom(tensor);
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

/** Whether a checkpointed function runs for the forward pass or again inside backward(). */
export interface CheckpointPass {
  /**
   * True in the second run inside backward(). Anything with side effects beyond its output must
   * not repeat them here: a training-mode batch norm must not fold its batch statistics into the
   * running buffers a second time (pass momentum 0, which leaves them bit-identical).
   */
  recomputing: boolean;
}

function withGrad<T>(fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

/**
 * Gradient checkpointing (recomputation). `fn(inputs)` runs now without recording and its
 * intermediates are released at once; only `inputs` and the output stay referenced by one tape node.
 * When backward() reaches that node it runs `fn` again on detached aliases of `inputs` (same
 * buffers) with recording on, back-propagates the output's gradient through that private tape,
 * hands the inputs' gradients to the outer tape, and releases the recomputed intermediates. The
 * memory of `fn`'s intermediates is traded for running `fn` twice (the memory-efficient DenseNet of
 * Pleiss et al. 2017 does this for concatenation + batch norm + ReLU + 1x1 convolution).
 *
 * `parameters`: the trainable leaves `fn` reads besides `inputs` (module weights it closes over).
 * The recomputation accumulates their gradients into `.grad` directly; listing them makes the node
 * recorded even when no input needs a gradient. `fn` must read no other recorded (non-leaf)
 * tensor: the recomputation checks this and throws an OpError naming the op that read one.
 * `fn` must be deterministic, so the second run reproduces the first. Without gradients
 * (noGrad, or nothing trainable) it is `tidy(() => fn(inputs, { recomputing: false }))`.
 */
export function checkpoint(
  fn: (inputs: Tensor[], pass: CheckpointPass) => Tensor,
  inputs: Tensor[],
  parameters: Tensor[] = [],
): Tensor {
  for (const parameter of parameters) {
    if (parameter.node) {
      throw new OpError(
        "checkpoint",
        `parameters must be leaves; tensor #${parameter.id} was produced by "${parameter.node.op}" (pass it in inputs)`,
        { parameter },
      );
    }
  }
  const forward = () => tidy(() => fn(inputs, { recomputing: false }));
  if (!needsGrad(...inputs, ...parameters)) return forward();
  const output = noGrad(forward);
  if (output.node || inputs.some((input) => input.owner === output.owner)) {
    throw new OpError("checkpoint", "fn must return a new tensor, not one of its inputs", { output });
  }
  record("checkpoint", [...inputs, ...parameters], [output], ([gradOutput]) => {
    const aliases = inputs.map((input) => {
      const alias = input.reshapeView(input.shape);
      alias.requiresGrad = input.requiresGrad;
      return alias;
    });
    const captured = new Set<TapeNode>();
    const outer = capturedNodes;
    capturedNodes = captured;
    let recomputed: Tensor;
    try {
      recomputed = withGrad(() => fn(aliases, { recomputing: true }));
    } finally {
      capturedNodes = outer;
    }
    // Frees the private tape: saved tensors and intermediates (those backward already freed are
    // no-ops), including any branch of fn that does not reach its output.
    const releaseTape = () => {
      for (const node of captured) {
        for (const tensor of node.saved) tensor.release();
        for (const tensor of node.outputs) tensor.release();
        node.saved = [];
        node.inputs = [];
      }
      recomputed.release();
    };
    let problem: OpError | null = null;
    for (const node of captured) {
      const stray = node.inputs.find((input) => input.node && !captured.has(input.node));
      if (stray) {
        problem = new OpError(
          "checkpoint",
          `fn's "${node.op}" read tensor #${stray.id}, which is recorded on the outer tape but is not among the checkpoint's inputs`,
          { input: stray },
        );
        break;
      }
    }
    if (!problem && recomputed.size !== output.size) {
      problem = new OpError("checkpoint", "the recomputation's output differs in size from the forward's", {
        output,
        recomputed,
      });
    }
    if (problem) {
      releaseTape();
      throw problem;
    }
    if (recomputed.requiresGrad) backward(recomputed, gradOutput!);
    releaseTape();
    const grads: (Tensor | null)[] = aliases.map((alias) => {
      const grad = alias.grad;
      alias.grad = null;
      return grad;
    });
    return [...grads, ...parameters.map(() => null)];
  });
  return output;
}
