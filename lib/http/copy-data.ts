/**
 * Copies arrays and plain objects (recursively, cycles kept as cycles) so that an
 * attempt changing `ctx.state.list`, `res.locals.trail` or a parsed body in
 * place does not change what the next attempt starts from; class instances (a
 * user model, a logger) are kept as they are.
 */
export function copyData<T>(value: T, copies?: Map<object, unknown>): T {
  if (typeof value !== 'object' || value === null) return value;
  const proto = Object.getPrototypeOf(value);
  const isArray = Array.isArray(value);
  if (!isArray && proto !== Object.prototype && proto !== null) return value;
  if (copies?.has(value)) return copies.get(value) as T;
  copies ??= new Map(); // only for data with something in it: most res.locals and ctx.state are empty
  const copy: Record<string | number, unknown> = isArray ? [] : Object.create(proto);
  copies.set(value, copy);
  // defineProperty: a key named __proto__ (from parsed JSON) must stay a key, not become the prototype.
  for (const [key, item] of Object.entries(value)) {
    Object.defineProperty(copy, key, { value: copyData(item, copies), writable: true, enumerable: true, configurable: true });
  }
  return copy as T;
}

/** Makes `target` (whose identity code outside may hold) a copy of `source` again. */
export function refill(target: Record<string, unknown>, source: Record<string, unknown>): void {
  for (const key of Object.keys(target)) delete target[key];
  const copy = copyData(source);
  for (const key of Object.keys(copy)) {
    Object.defineProperty(target, key, { value: copy[key], writable: true, enumerable: true, configurable: true });
  }
}
