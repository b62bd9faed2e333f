/** A training option that cannot be used (a bad flag value, an impossible size); the message says which. */
export class TrainOptionsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TrainOptionsError";
  }
}
