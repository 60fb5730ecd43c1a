import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApp } from '@kos/example-express';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  if (process.env.CI === 'true')
    throw new Error(`BROWSER TESTS CANNOT RUN: ${CHROMIUM} is missing (CI installs chromium)`);
  console.warn(`BROWSER TESTS SKIPPED: ${CHROMIUM} not installed (apt-get install -y chromium)`);
}

/**
 * The browser page of the examples, driven in a real headless Chromium: high- and medium-tier
 * data is decrypted in the page (medium after fetching k shares from the mounted KMS nodes),
 * low-tier data arrives as plaintext from the server.
 */
describe.runIf(haveChromium)('the example browser page in headless Chromium', () => {
  let dir: string;
  let server: Server;
  let close: () => Promise<void>;
  let base: string;
  let browser: Browser;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kos-browser-'));
    const { app, kos } = await createApp({ dir, env: {} });
    server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    close = () => kos.close();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    server?.close();
    await close?.();
    await rm(dir, { recursive: true, force: true });
  });

  it('decrypts high and medium tier in the page and shows low tier as server plaintext', async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    const shareRequests: string[] = [];
    page.on('request', (request) => {
      if (request.url().includes('/kos/kms/')) shareRequests.push(request.url());
    });
    await page.goto(`${base}/?auto`);
    await page.waitForSelector('body[data-done="true"]', { timeout: 30_000 });
    const rows = await page.$$eval('tbody tr', (trs) =>
      trs.map((tr) => ({
        id: tr.id,
        status: (tr as HTMLElement).dataset.status,
        tier: tr.querySelector('.tier')?.textContent,
        where: tr.querySelector('.where')?.textContent,
        value: tr.querySelector('.value')?.textContent,
      })),
    );
    const secret = { patient: 'Ada Lovelace', diagnosis: 'analytical engine fever', notes: 'seen in the browser' };
    expect(errors).toEqual([]);
    expect(rows).toEqual([
      { id: 'result-high', status: 'ok', tier: 'high', where: 'browser', value: JSON.stringify(secret) },
      { id: 'result-medium', status: 'ok', tier: 'medium', where: 'browser', value: JSON.stringify(secret) },
      { id: 'result-low', status: 'ok', tier: 'low', where: 'server', value: JSON.stringify(secret) },
    ]);
    // The medium-tier client fetched its shares itself: at least k requests to KMS nodes from the page.
    expect(shareRequests.length).toBeGreaterThanOrEqual(3);
    await page.close();
  });
});
