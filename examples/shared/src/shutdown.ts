/**
 * On SIGINT or SIGTERM: stop accepting connections, then close KOS and the record store, then
 * exit — the same for every example server.
 */
export function stopOnSignals(
  server: { close(callback: () => void): unknown },
  kos: { close(): Promise<void> },
  records: { close(): Promise<void> },
): void {
  const stop = () =>
    server.close(
      () =>
        void kos
          .close()
          .then(() => records.close())
          .then(() => process.exit(0)),
    );
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
