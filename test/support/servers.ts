// Where the test suites find their database servers, and how to tell whether one answers.
import { createConnection } from 'mysql2/promise';
import pg from 'pg';

export type ServerName = 'mysql' | 'postgres';

export interface Server {
  name: ServerName;
  label: string;
  url: string;
}

export const servers: Server[] = [
  {
    name: 'mysql',
    label: 'MariaDB/MySQL',
    url: process.env.AFTERCOMMIT_TEST_MYSQL ?? 'mysql://root@127.0.0.1:3306/test',
  },
  {
    name: 'postgres',
    label: 'PostgreSQL',
    url: process.env.AFTERCOMMIT_TEST_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432/test',
  },
];

/** Resolves to undefined when the server answers, else to why it does not. */
export async function probe(server: Server): Promise<string | undefined> {
  try {
    if (server.name === 'mysql') {
      const connection = await createConnection({ uri: server.url, connectTimeout: 3000 });
      await connection.query('SELECT 1');
      await connection.end();
    } else {
      const client = new pg.Client({ connectionString: server.url, connectionTimeoutMillis: 3000 });
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
    }
    return undefined;
  } catch (err) {
    const e = err as { code?: string; message?: string };
    return e.code ?? e.message ?? String(err);
  }
}
