/**
 * The owner of a job: who may poll it. It is `tx.meta.user` of the scheduling
 * transaction, and it must identify someone: a string or a finite number.
 * Anything else is refused at schedule(), so that a user object the library
 * cannot read never makes a job readable by everyone.
 */
import type { TransactionMeta } from '../interfaces.js';
import { JobOwnerError } from '../errors.js';

/** The owner column keeps 191 characters (a utf8mb4 index prefix). */
const MAX_OWNER_LENGTH = 191;

/**
 * Stands for a request user from which no owner could be read (an object with
 * neither `id` nor `sub`): the request itself works, scheduling from it is refused.
 */
export class UnidentifiedUser {
  constructor(
    /** Where the user came from and what it looked like (its keys, never its values). */
    readonly description: string,
  ) {}
}

/** The owner of jobs scheduled in a transaction with `meta`: null for none (readable by anyone holding the id). */
export function jobOwner(meta: TransactionMeta): string | number | null {
  const user = meta.user as unknown;
  if (user === undefined || user === null) return null;
  if (user instanceof UnidentifiedUser) {
    throw new JobOwnerError(
      `${user.description} gives no owner for the job: aftercommit reads the owner from the request’s user (ctx.state.user in Koa, req.user in Express) when it is a ` +
        'string or number, else from its `id`, else from its `sub`. Pass aftercommit({ user: (ctx) => … }) (Express: (req) => …) returning ' +
        'the id of the request’s user (or undefined for none)',
    );
  }
  if (typeof user === 'number' && Number.isFinite(user)) return user;
  if (typeof user === 'string' && user.length > 0 && user.length <= MAX_OWNER_LENGTH) return user;
  const what = typeof user === 'string' ? `a string of ${user.length} characters` : typeof user === 'number' ? String(user) : `a value of type ${typeof user}`;
  throw new JobOwnerError(
    `tx.meta.user is ${what}: the owner of a job must be a non-empty string of at most ${MAX_OWNER_LENGTH} characters ` +
      'or a finite number (the id of the user the transaction runs for), or be left out for none',
  );
}
