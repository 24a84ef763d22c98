// knex builds the query-builder function of its own transactions with this
// module; aftercommit does the same for its lazily-begun transactions.
declare module 'knex/lib/knex-builder/make-knex.js' {
  import type { Knex } from 'knex';
  export default function makeKnex(client: Knex.Client): Knex;
}
