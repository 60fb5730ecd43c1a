/** Progress of a long operation: a bar with rate and ETA on a terminal, plain lines otherwise. */
export function createProgress(label: string, options: { stream?: NodeJS.WriteStream; intervalMs?: number } = {}) {
  const stream = options.stream ?? process.stderr;
  const tty = Boolean(stream.isTTY);
  const started = Date.now();
  let lastLine = 0;
  const interval = options.intervalMs ?? (tty ? 100 : 2000);
  const format = (seconds: number) =>
    Number.isFinite(seconds) ? `${Math.floor(seconds / 60)}:${String(Math.round(seconds % 60)).padStart(2, '0')}` : '?';

  return {
    update(done: number, total: number, records: number, final = false) {
      const now = Date.now();
      if (!final && now - lastLine < interval) return;
      lastLine = now;
      const elapsed = (now - started) / 1000;
      const fraction = total > 0 ? Math.min(1, done / total) : 1;
      const rate = elapsed > 0 ? records / elapsed : 0;
      const eta = fraction > 0 ? (elapsed / fraction) * (1 - fraction) : Number.NaN;
      const percent = `${(fraction * 100).toFixed(1)}%`;
      const stats = `${records} records, ${Math.round(rate)} rec/s, ETA ${format(eta)}`;
      if (tty) {
        const width = 30;
        const filled = Math.round(fraction * width);
        stream.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${percent} ${stats}   `);
        if (final) stream.write('\n');
      } else {
        stream.write(`${label}: ${percent} ${stats}\n`);
      }
    },
  };
}
