// Packages the compatibility suite loads that ship no types of their own.
declare module 'koa2' {
  import Koa from 'koa';
  export default Koa;
}
declare module 'koa-router' {
  import Router from '@koa/router';
  export default Router;
}
declare module 'koa-bodyparser' {
  import type { Middleware } from 'koa';
  export default function bodyParser(options?: Record<string, unknown>): Middleware;
}
