/**
 * The float64 CPU reference of batch norm (PyTorch's nn.BatchNorm2d: biased variance normalises,
 * the unbiased one enters running_var), forward in training (updating the running state) or eval,
 * and backward given the statistics the forward used. `batchNormOpReference` (y and the gradients of
 * x, gamma, beta) and `batchNormRunningOpReference` (the running buffers after a step) are the same
 * behind the shared op-reference interface the tests use.
 */
import type { Shape } from "../../runtime/tensor.ts";
import type { OpReference } from "../common/reference.ts";

export interface BatchNormReferenceState {
  runningMean: Float64Array;
  runningVar: Float64Array;
}

export const batchNormReference = {
  /** Returns y and the batch (training) or running (eval) statistics; updates `state` in training. */
  forward(
    x: Float64Array,
    shape: Shape,
    gamma: Float64Array,
    beta: Float64Array,
    state: BatchNormReferenceState,
    options: { training: boolean; momentum?: number; eps?: number },
  ): { y: Float64Array; mean: Float64Array; rstd: Float64Array } {
    const [samples, channels, height, width] = shape;
    const spatial = height * width;
    const count = samples * spatial;
    const momentum = options.momentum ?? 0.1;
    const eps = options.eps ?? 1e-5;
    const mean = new Float64Array(channels);
    const rstd = new Float64Array(channels);
    for (let channel = 0; channel < channels; channel++) {
      if (options.training) {
        let sum = 0;
        for (let n = 0; n < samples; n++) {
          for (let i = 0; i < spatial; i++) sum += x[(n * channels + channel) * spatial + i];
        }
        const mu = sum / count;
        let squares = 0;
        for (let n = 0; n < samples; n++) {
          for (let i = 0; i < spatial; i++) squares += (x[(n * channels + channel) * spatial + i] - mu) ** 2;
        }
        const variance = squares / count;
        mean[channel] = mu;
        rstd[channel] = 1 / Math.sqrt(variance + eps);
        state.runningMean[channel] = (1 - momentum) * state.runningMean[channel] + momentum * mu;
        state.runningVar[channel] =
          (1 - momentum) * state.runningVar[channel] + (momentum * squares) / (count - 1);
      } else {
        mean[channel] = state.runningMean[channel];
        rstd[channel] = 1 / Math.sqrt(state.runningVar[channel] + eps);
      }
    }
    const y = new Float64Array(x.length);
    for (let index = 0; index < x.length; index++) {
      const channel = Math.floor(index / spatial) % channels;
      y[index] = (x[index] - mean[channel]) * rstd[channel] * gamma[channel] + beta[channel];
    }
    return { y, mean, rstd };
  },
  /** Gradients given the statistics the forward used (batch in training, running in eval). */
  backward(
    x: Float64Array,
    shape: Shape,
    gamma: Float64Array,
    gradOutput: Float64Array,
    statistics: { mean: Float64Array; rstd: Float64Array },
    training: boolean,
  ): { gradInput: Float64Array; gradGamma: Float64Array; gradBeta: Float64Array } {
    const [samples, channels, height, width] = shape;
    const spatial = height * width;
    const count = samples * spatial;
    const { mean, rstd } = statistics;
    const gradGamma = new Float64Array(channels);
    const gradBeta = new Float64Array(channels);
    const channelOf = (index: number) => Math.floor(index / spatial) % channels;
    for (let index = 0; index < x.length; index++) {
      const channel = channelOf(index);
      gradBeta[channel] += gradOutput[index];
      gradGamma[channel] += gradOutput[index] * (x[index] - mean[channel]) * rstd[channel];
    }
    const gradInput = new Float64Array(x.length);
    for (let index = 0; index < x.length; index++) {
      const channel = channelOf(index);
      const normalized = (x[index] - mean[channel]) * rstd[channel];
      const through = training ? (gradBeta[channel] + normalized * gradGamma[channel]) / count : 0; // eval: the statistics are constants
      gradInput[index] = gamma[channel] * rstd[channel] * (gradOutput[index] - through);
    }
    return { gradInput, gradGamma, gradBeta };
  },
};

/** What a batch norm call is. Inputs: x, gamma, beta; the running buffers before the call are here. */
export interface BatchNormParams {
  shape: Shape;
  training: boolean;
  momentum?: number;
  eps?: number;
  runningMean: Float64Array;
  runningVar: Float64Array;
}

function state(params: BatchNormParams): BatchNormReferenceState {
  return { runningMean: params.runningMean.slice(), runningVar: params.runningVar.slice() };
}

/** `batchNormReference` behind the shared interface: y, and the gradients of x, gamma and beta. */
export const batchNormOpReference: OpReference<BatchNormParams> = {
  forward: ([x, gamma, beta], params) =>
    batchNormReference.forward(x, params.shape, gamma, beta, state(params), params).y,
  backward: ([x, gamma, beta], gradOutput, params) => {
    const statistics = batchNormReference.forward(x, params.shape, gamma, beta, state(params), params);
    const grads = batchNormReference.backward(
      x,
      params.shape,
      gamma,
      gradOutput,
      statistics,
      params.training,
    );
    return [grads.gradInput, grads.gradGamma, grads.gradBeta];
  },
};

/**
 * The running buffers [runningMean..., runningVar...] after one call per input (each input an x of
 * `shape`, in order; gamma 1, beta 0, which the buffers do not depend on). Not differentiable.
 */
export const batchNormRunningOpReference: OpReference<BatchNormParams> = {
  forward: (xs, params) => {
    const channels = params.shape[1];
    const running = state(params);
    const ones = new Float64Array(channels).fill(1);
    for (const x of xs)
      batchNormReference.forward(x, params.shape, ones, new Float64Array(channels), running, params);
    const result = new Float64Array(2 * channels);
    result.set(running.runningMean);
    result.set(running.runningVar, channels);
    return result;
  },
  backward: (xs) => xs.map(() => null),
};
