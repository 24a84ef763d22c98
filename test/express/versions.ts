/** The Express majors the adapter's suites run on: the devDependencies `express` (5) and `express4`. */
import express5 from 'express';
import express4 from 'express4';
import type { Express, Router } from 'express';

export interface ExpressVersion {
  readonly name: string;
  app(): Express;
  router(): Router;
  json(): ReturnType<typeof express5.json>;
}

export const EXPRESS_VERSIONS: ExpressVersion[] = [
  { name: 'express 5', app: () => express5(), router: () => express5.Router(), json: () => express5.json() },
  {
    name: 'express 4',
    app: () => express4(),
    router: () => express4.Router(),
    json: () => express4.json(),
  },
];
