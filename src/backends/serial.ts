/**
 * Runs async operations one at a time, in call order. Backends use it so that a refresh never interleaves with
 * an apply or a clear (a refresh that read the held set before a remove must not re-add the removed bucket).
 */
export class Serial {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(op: () => Promise<T>): Promise<T> {
    const result = this.tail.then(op, op);
    this.tail = result.catch(() => undefined);
    return result;
  }
}
