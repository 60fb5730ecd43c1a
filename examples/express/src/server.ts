// `npm start`: the Express example on the embedded default ($KOS_DIR or ./.kos), with instructions.
import type { AddressInfo } from 'node:net';
import { printInstructions, stopOnSignals } from '@kos/example-shared';
import { createApp } from './app.js';

const port = Number(process.env.PORT ?? 3000);
const { app, kos, runtime, records } = await createApp();
const server = app.listen(port, '127.0.0.1', () => {
  const { port: actual } = server.address() as AddressInfo;
  printInstructions('Express', `http://127.0.0.1:${actual}`, runtime.mode, records.description);
});
stopOnSignals(server, kos, records);
