import { readFile } from 'node:fs/promises';
import { build } from 'esbuild';

/** The browser page and its script, bundled once (the client opener uses Web APIs only). */
export interface BrowserAssets {
  readonly html: string;
  readonly script: string;
}

let bundled: Promise<BrowserAssets> | undefined;

export function browserAssets(): Promise<BrowserAssets> {
  bundled ??= (async () => {
    const result = await build({
      entryPoints: [new URL('../../browser/src/page.ts', import.meta.url).pathname],
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      conditions: ['kos-source'],
      write: false,
      minify: true,
      logLevel: 'silent',
    });
    const script = result.outputFiles[0]?.text ?? '';
    const html = await readFile(new URL('../../browser/src/index.html', import.meta.url), 'utf8');
    return { html, script };
  })();
  return bundled;
}
