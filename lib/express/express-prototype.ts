/**
 * Express's own request and response prototypes: right above Node's
 * `IncomingMessage.prototype` and `ServerResponse.prototype` in a request's
 * chain, shared by every app and sub-app (each app's own prototype sits below
 * them). aftercommit defines what it adds there once, instead of on each
 * request: Express gives every `req` and `res` a shape of their own, so a
 * property added to one costs V8 a new shape.
 */
export function expressPrototype(object: object, node: object): object | undefined {
  let below: object | undefined;
  for (let proto = Object.getPrototypeOf(object) as object | null; proto; proto = Object.getPrototypeOf(proto) as object | null) {
    if (proto === node) return below;
    below = proto;
  }
  return undefined;
}
