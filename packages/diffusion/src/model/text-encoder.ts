/**
 * The CLIP text transformer (transformers' CLIPTextModel) in its layout and parameter names:
 *
 *   text_model.embeddings.token_embedding.weight        [vocab, hidden]
 *   text_model.embeddings.position_embedding.weight     [maxPositions, hidden]
 *   text_model.encoder.layers.N.self_attn.{q,k,v,out}_proj.{weight,bias}
 *   text_model.encoder.layers.N.layer_norm1/2.{weight,bias}
 *   text_model.encoder.layers.N.mlp.fc1/fc2.{weight,bias}
 *   text_model.final_layer_norm.{weight,bias}
 *
 * Pre-norm layers: x += out_proj(attention(layer_norm1(x))) with a causal mask (each token sees itself
 * and the tokens before it, as CLIP's text model), x += fc2(act(fc1(layer_norm2(x)))), then the final
 * layer norm gives `last_hidden_state` [B, L, hidden], the UNet's cross-attention context.
 *
 * The fused attention kernel has key masks but no causal mask, so causal self-attention is composed
 * from matmul and softmax: the scores [B, H, L, L] are permuted to [L, B, H, L] so that softmax's
 * per-leading-index mask [L, L] is the lower triangle. Contexts are short (tens of tokens), so the
 * quadratic scores cost nothing here.
 *
 * Built inside `withParameterDtype("f16", ...)` the model runs in half precision (inference only):
 * f16 weights and stored activations, f32 arithmetic in every kernel, an f32 causal mask, f32 output.
 */
import {
  add,
  cast,
  embedding,
  type Gpu,
  gelu,
  LayerNorm,
  Linear,
  Module,
  ModuleList,
  matmul,
  mul,
  OpError,
  type ParameterInit,
  permute,
  reshape,
  scale,
  sigmoidOp,
  softmax,
  Tensor,
} from "@cxr/kernels";
import type { TextEncoderConfig } from "./config.ts";

/** An embedding table [rows, dim] drawn N(0, std) (CLIP: 0.02 for tokens, 0.01 for positions). */
export class EmbeddingTable extends Module {
  readonly weight: Tensor;
  constructor(gpu: Gpu, rows: number, dim: number, init: ParameterInit, std: number) {
    super(gpu);
    this.weight = this.parameter("weight", [rows, dim], init.normal(rows * dim, std));
  }
}

/** quick_gelu (CLIP ViT-L/14, SD 1.x): x * sigmoid(1.702 x); gelu (OpenCLIP ViT-H, SD 2.x): erf form. */
export function hiddenActivation(kind: TextEncoderConfig["hiddenAct"], x: Tensor): Tensor {
  if (kind === "gelu") return gelu(x);
  return mul(x, sigmoidOp(scale(x, 1.702)));
}

/** Lower-triangular keep-mask [L, L]: row i keeps keys 0..i. */
export function causalMaskValues(length: number): Float32Array {
  const mask = new Float32Array(length * length);
  for (let i = 0; i < length; i++) for (let j = 0; j <= i; j++) mask[i * length + j] = 1;
  return mask;
}

/**
 * softmax(scale q k^T + causal) v for q, k, v [B, H, L, D], composed from matmul and softmax.
 * `mask` is `causalMaskValues(L)` on the GPU.
 */
export function causalSelfAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  mask: Tensor,
  scaleFactor: number,
): Tensor {
  const length = q.shape[2];
  if (mask.rank !== 2 || mask.shape[0] !== length || mask.shape[1] !== length) {
    throw new OpError("causalSelfAttention", `mask must be [${length}, ${length}]`, { q, mask });
  }
  const scores = matmul(q, k, { transposeB: true }); // [B, H, L, L]
  const byQuery = permute(scores, [2, 0, 1, 3]); // [L, B, H, L]
  const probabilities = softmax(byQuery, -1, { scale: scaleFactor, mask });
  const back = permute(probabilities, [1, 2, 0, 3]); // [B, H, L, L]
  return matmul(back, v);
}

class ClipAttention extends Module {
  readonly qProj: Linear;
  readonly kProj: Linear;
  readonly vProj: Linear;
  readonly outProj: Linear;
  constructor(
    gpu: Gpu,
    readonly config: TextEncoderConfig,
    init: ParameterInit,
  ) {
    super(gpu);
    const hidden = config.hiddenSize;
    this.qProj = this.child("q_proj", new Linear(gpu, hidden, hidden, init));
    this.kProj = this.child("k_proj", new Linear(gpu, hidden, hidden, init));
    this.vProj = this.child("v_proj", new Linear(gpu, hidden, hidden, init));
    this.outProj = this.child("out_proj", new Linear(gpu, hidden, hidden, init));
  }

  private heads(x: Tensor): Tensor {
    const [batch, length] = x.shape;
    const { numHeads, hiddenSize } = this.config;
    return permute(reshape(x, [batch, length, numHeads, hiddenSize / numHeads]), [0, 2, 1, 3]);
  }

  forward(x: Tensor, mask: Tensor): Tensor {
    const [batch, length, hidden] = x.shape;
    const headDim = hidden / this.config.numHeads;
    const q = this.heads(this.qProj.forward(x));
    const k = this.heads(this.kProj.forward(x));
    const v = this.heads(this.vProj.forward(x));
    const attended = causalSelfAttention(q, k, v, mask, 1 / Math.sqrt(headDim));
    const merged = reshape(permute(attended, [0, 2, 1, 3]), [batch, length, hidden]);
    return this.outProj.forward(merged);
  }
}

class ClipMlp extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(
    gpu: Gpu,
    readonly config: TextEncoderConfig,
    init: ParameterInit,
  ) {
    super(gpu);
    this.fc1 = this.child("fc1", new Linear(gpu, config.hiddenSize, config.intermediateSize, init));
    this.fc2 = this.child("fc2", new Linear(gpu, config.intermediateSize, config.hiddenSize, init));
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(hiddenActivation(this.config.hiddenAct, this.fc1.forward(x)));
  }
}

class ClipEncoderLayer extends Module {
  readonly selfAttn: ClipAttention;
  readonly layerNorm1: LayerNorm;
  readonly mlp: ClipMlp;
  readonly layerNorm2: LayerNorm;
  constructor(gpu: Gpu, config: TextEncoderConfig, init: ParameterInit) {
    super(gpu);
    this.selfAttn = this.child("self_attn", new ClipAttention(gpu, config, init));
    this.layerNorm1 = this.child("layer_norm1", new LayerNorm(gpu, config.hiddenSize, config.layerNormEps));
    this.mlp = this.child("mlp", new ClipMlp(gpu, config, init));
    this.layerNorm2 = this.child("layer_norm2", new LayerNorm(gpu, config.hiddenSize, config.layerNormEps));
  }
  forward(x: Tensor, mask: Tensor): Tensor {
    const attended = add(x, this.selfAttn.forward(this.layerNorm1.forward(x), mask));
    return add(attended, this.mlp.forward(this.layerNorm2.forward(attended)));
  }
}

class ClipEmbeddings extends Module {
  readonly tokenEmbedding: EmbeddingTable;
  readonly positionEmbedding: EmbeddingTable;
  constructor(gpu: Gpu, config: TextEncoderConfig, init: ParameterInit) {
    super(gpu);
    this.tokenEmbedding = this.child(
      "token_embedding",
      new EmbeddingTable(gpu, config.vocabSize, config.hiddenSize, init, 0.02),
    );
    this.positionEmbedding = this.child(
      "position_embedding",
      new EmbeddingTable(gpu, config.maxPositions, config.hiddenSize, init, 0.01),
    );
  }
}

class ClipEncoder extends Module {
  readonly layers: ModuleList<ClipEncoderLayer>;
  constructor(gpu: Gpu, config: TextEncoderConfig, init: ParameterInit) {
    super(gpu);
    this.layers = this.child("layers", new ModuleList<ClipEncoderLayer>(gpu));
    for (let index = 0; index < config.numLayers; index++) {
      this.layers.push(new ClipEncoderLayer(gpu, config, init));
    }
  }
}

class ClipTextTransformer extends Module {
  readonly embeddings: ClipEmbeddings;
  readonly encoder: ClipEncoder;
  readonly finalLayerNorm: LayerNorm;
  constructor(gpu: Gpu, config: TextEncoderConfig, init: ParameterInit) {
    super(gpu);
    this.embeddings = this.child("embeddings", new ClipEmbeddings(gpu, config, init));
    this.encoder = this.child("encoder", new ClipEncoder(gpu, config, init));
    this.finalLayerNorm = this.child(
      "final_layer_norm",
      new LayerNorm(gpu, config.hiddenSize, config.layerNormEps),
    );
  }
}

/** transformers' CLIPTextModel: `forward(ids u32 [B, L])` -> last_hidden_state [B, L, hidden]. */
export class ClipTextModel extends Module {
  readonly textModel: ClipTextTransformer;
  /**
   * Per context length: the causal mask (f32 at either precision) and the position ids (not state:
   * not saved). The model's own context (maxPositions, what both tokenizers pad to) is built with the
   * model, so its bytes are part of the model's from the start and a first generation adds nothing
   * to the pool; another length is built at its first use and kept until dispose().
   */
  private readonly constants = new Map<number, { mask: Tensor; positions: Tensor }>();

  constructor(
    gpu: Gpu,
    readonly config: TextEncoderConfig,
    init: ParameterInit,
  ) {
    super(gpu);
    this.textModel = this.child("text_model", new ClipTextTransformer(gpu, config, init));
    this.constantsFor(config.maxPositions);
  }

  private constantsFor(length: number) {
    let entry = this.constants.get(length);
    if (!entry) {
      const positions = Uint32Array.from({ length }, (_, index) => index);
      entry = {
        mask: Tensor.upload(this.gpu, causalMaskValues(length), [length, length]).retain(),
        positions: Tensor.upload(this.gpu, positions, [length], "u32").retain(),
      };
      this.constants.set(length, entry);
    }
    return entry;
  }

  /** The dtype of the weights: "f16" when built inside `withParameterDtype("f16", ...)`. */
  get precision(): "f32" | "f16" {
    return this.textModel.embeddings.tokenEmbedding.weight.dtype === "f16" ? "f16" : "f32";
  }

  /**
   * ids u32 [B, L] -> last_hidden_state f32 [B, L, hidden]. With f16 weights (`precision` "f16",
   * inference only) every layer runs its f16 kernels (embeddings, layer norms, linears, the causal
   * softmax with its f32 mask; f32 arithmetic inside each) and the last hidden state is cast to f32:
   * the output is f32 at either precision.
   */
  forward(ids: Tensor): Tensor {
    const hidden = this.forwardIn(ids);
    if (hidden.dtype === "f32") return hidden;
    const result = cast(hidden, "f32");
    hidden.release(); // behind queued work: safe (queue order); nothing is on a tape in f16
    return result;
  }

  private forwardIn(ids: Tensor): Tensor {
    if (ids.dtype !== "u32" || ids.rank !== 2) {
      throw new OpError("ClipTextModel", "expects token ids as a u32 tensor [batch, length]", { ids });
    }
    const length = ids.shape[1];
    if (length > this.config.maxPositions) {
      throw new OpError(
        "ClipTextModel",
        `${length} tokens exceed the ${this.config.maxPositions} positions of the text encoder`,
        { ids },
      );
    }
    const { mask, positions } = this.constantsFor(length);
    const { embeddings, encoder, finalLayerNorm } = this.textModel;
    const tokens = embedding(embeddings.tokenEmbedding.weight, ids); // [B, L, H]
    const positional = embedding(embeddings.positionEmbedding.weight, positions); // [L, H]
    let hidden = add(tokens, positional);
    for (const layer of encoder.layers.items) hidden = layer.forward(hidden, mask);
    return finalLayerNorm.forward(hidden);
  }

  override dispose(): void {
    for (const { mask, positions } of this.constants.values()) {
      mask.retained = false;
      mask.release();
      positions.retained = false;
      positions.release();
    }
    this.constants.clear();
    super.dispose();
  }
}
