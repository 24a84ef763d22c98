import type { ClsNamespaceLike, ContextBridge } from '../interfaces.js';

/**
 * Mirrors each transaction's `db` into an existing cls-hooked namespace under
 * `key` (default `transaction`, the key Sequelize and most cls-hooked code use),
 * for apps that already look their transaction up there. The value is hidden
 * again when the transaction's function settles, so callbacks that outlive it
 * do not find a finished transaction.
 */
export function clsBridge(namespace: ClsNamespaceLike, key = 'transaction'): ContextBridge {
  return {
    run(tx, fn) {
      return namespace.runAndReturn(async () => {
        const context = namespace.active as Record<string, unknown>;
        namespace.set(key, tx.db);
        try {
          return await fn();
        } finally {
          context[key] = undefined;
        }
      });
    },
  };
}
