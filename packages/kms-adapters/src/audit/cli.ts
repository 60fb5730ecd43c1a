#!/usr/bin/env node
// kos-audit: check a KOS audit log. `kos-audit verify <file> [--public-key kos-public.jwk.json] [--json]`
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import type { JWK } from 'jose';
import { verifyAuditLog } from './verify-audit-log.js';

const program = new Command()
  .name('kos-audit')
  .description('Check KOS audit logs (hash chain, signed checkpoints, truncation).');

program
  .command('verify')
  .description('verify a hash-chained audit log; exit 0 when intact, 1 when tampered or truncated')
  .argument('<file>', 'the JSON-lines audit log')
  .option('--public-key <file>', 'JWK (or JWKS) with the Ed25519 public key that signs checkpoints')
  .option('--require-signatures', 'fail when checkpoints cannot be checked against a key')
  .option('--json', 'print the result as JSON')
  .action(async (file: string, options: { publicKey?: string; requireSignatures?: boolean; json?: boolean }) => {
    let publicKey: JWK | undefined;
    if (options.publicKey) {
      const parsed = JSON.parse(readFileSync(options.publicKey, 'utf8')) as JWK & { keys?: JWK[] };
      const { d: _private, ...jwk } = (parsed.keys?.[0] ?? parsed) as JWK;
      publicKey = jwk;
    }
    const result = await verifyAuditLog(file, {
      ...(publicKey ? { publicKey } : {}),
      ...(options.requireSignatures ? { requireSignatures: true } : {}),
    });
    if (options.json) console.log(JSON.stringify(result));
    else if (result.ok) console.log(`OK: ${result.records} records, ${result.checkpoints} checkpoints, chain intact`);
    else console.log(`TAMPERED: line ${result.problem?.line}: ${result.problem?.reason}`);
    process.exitCode = result.ok ? 0 : 1;
  });

await program.parseAsync();
