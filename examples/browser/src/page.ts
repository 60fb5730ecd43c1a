// Runs in the browser: the client side of KOS's three tiers. Bundled by assets.ts.
import { createOpener, generateClientKeyPair } from '@kos/core/client';

const SECRET = { patient: 'Ada Lovelace', diagnosis: 'analytical engine fever', notes: 'seen in the browser' };
const CLIENTS = [
  { row: 'result-high', score: 92 },
  { row: 'result-medium', score: 65 },
  { row: 'result-low', score: 30 },
] as const;

async function devToken(clientId: string, score: number, publicJwk: JsonWebKey): Promise<string> {
  const response = await fetch('/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ clientId, score, publicJwk }),
  });
  if (!response.ok) throw new Error(`dev token: ${response.status}`);
  return ((await response.json()) as { token: string }).token;
}

function show(row: string, cells: { tier?: string; where?: string; value?: string }, status: 'ok' | 'error') {
  const element = document.getElementById(row) as HTMLElement;
  for (const [name, text] of Object.entries(cells))
    (element.querySelector(`.${name}`) as HTMLElement).textContent = text ?? '';
  element.dataset.status = status;
}

async function run(): Promise<void> {
  const state = document.getElementById('state') as HTMLElement;
  state.textContent = 'running…';
  const clientKey = await generateClientKeyPair();
  const writer = await devToken('browser-writer', 95, clientKey.publicJwk);
  const created = await fetch('/records', {
    method: 'POST',
    headers: { authorization: `Bearer ${writer}`, 'content-type': 'application/json' },
    body: JSON.stringify(SECRET),
  });
  const { id } = (await created.json()) as { id: string };
  for (const client of CLIENTS) {
    try {
      const token = await devToken(`browser-${client.score}`, client.score, clientKey.publicJwk);
      const response = await fetch(`/records/${id}`, { headers: { authorization: `Bearer ${token}` } });
      const body = (await response.json()) as { data: { kosTier?: string } };
      const where = body.data.kosTier ? 'browser' : 'server';
      const opener = createOpener({ clientKey });
      const opened = (await opener.openBody(body)) as { data: unknown };
      opener.dispose();
      show(
        client.row,
        { tier: response.headers.get('kos-tier') ?? '?', where, value: JSON.stringify(opened.data) },
        'ok',
      );
    } catch (error) {
      show(client.row, { value: String((error as Error).message ?? error) }, 'error');
    }
  }
  state.textContent = 'done';
  document.body.dataset.done = 'true';
}

(document.getElementById('run') as HTMLButtonElement).addEventListener('click', () => void run());
if (new URLSearchParams(location.search).has('auto')) void run();
