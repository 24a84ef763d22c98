/** What test/express/edges.test.ts needs beyond the shared Express helpers: a request body sent in two parts. */
import http from 'node:http';

/**
 * POSTs `first`, waits for `between()` (e.g. until the server has read it), then sends `rest` and
 * ends the request; resolves with the response's status and body (JSON when it is JSON).
 */
export function postInTwoParts(url: string, first: string, rest: string, between: () => Promise<void>): Promise<{ status: number; body: unknown }> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(Buffer.byteLength(first + rest)) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('error', reject);
        res.on('end', () => {
          const isJson = res.headers['content-type']?.includes('json');
          resolve({ status: res.statusCode ?? 0, body: isJson ? JSON.parse(text) : text });
        });
      },
    );
    req.on('error', reject);
    req.setTimeout(5_000, () => req.destroy(new Error('no answer within 5 s')));
    req.write(first);
    between().then(
      () => req.end(rest),
      (err: unknown) => req.destroy(err as Error),
    );
  });
}
