/** Progress and table helpers the benchmark scripts share (progress goes to stderr). */

export function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

export function check(condition: boolean, what: string): void {
  if (!condition) throw new Error(`bench sanity check failed: ${what}`);
}

export function fixed(value: number | null, digits: number): string {
  return value === null || !Number.isFinite(value) ? '-' : value.toFixed(digits);
}

/** Aligned columns separated by two spaces; `rightAligned` holds the indexes of numeric columns. */
export function table(rows: readonly (readonly string[])[], rightAligned: ReadonlySet<number>): string {
  const widths = (rows[0] as readonly string[]).map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length)));
  return rows
    .map((row) =>
      row
        .map((cell, i) => (rightAligned.has(i) ? cell.padStart(widths[i] as number) : cell.padEnd(widths[i] as number)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
