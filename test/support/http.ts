/** Real HTTP for the Koa and Express suites: a listening server on a free port, and fetch. */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

interface Listens {
  listen(port: number, host: string, callback: () => void): Server;
}

export interface Served {
  url: string;
  close(): Promise<void>;
}

export async function serve(app: Listens): Promise<Served> {
  let server!: Server;
  await new Promise<void>((resolve) => {
    server = app.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A response with its body read as JSON when it is JSON, else as text. */
export async function request(url: string, init?: RequestInit) {
  const response = await fetch(url, init);
  const text = await response.text();
  const isJson = response.headers.get('content-type')?.includes('json');
  return { status: response.status, headers: response.headers, body: isJson ? JSON.parse(text) : text };
}
