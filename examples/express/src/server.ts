// `npm start`: the Express example on the embedded default (./.kos), with instructions.
import { printInstructions } from '@kos/example-shared';
import { createApp } from './app.js';

const port = Number(process.env.PORT ?? 3000);
const { app, kos, runtime } = await createApp();
const server = app.listen(port, '127.0.0.1', () =>
  printInstructions('Express', `http://127.0.0.1:${port}`, runtime.mode),
);
const stop = () => server.close(() => void kos.close().then(() => process.exit(0)));
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
