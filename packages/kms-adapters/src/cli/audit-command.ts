import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import type { JWK } from 'jose';
import { verifyAuditLog } from '../audit/verify-audit-log.js';

/** `audit verify`: the hash chain, signed checkpoints and truncation of an audit log (exit 1 when tampered). */
export function auditCommand(name = 'audit'): Command {
  const command = new Command(name).description('audit logs');
  const verify = new Command('verify')
    .description('verify a hash-chained audit log; exit 0 when intact, 1 when tampered or truncated')
    .argument('<file>', 'the JSON-lines audit log')
    .option('--public-key <file>', 'JWK, JWKS or private JWK file of the Ed25519 key that signs checkpoints')
    .option('--require-signatures', 'fail when checkpoints cannot be checked against a key');
  verify.action(async (file: string) => {
    const options = verify.optsWithGlobals<{ publicKey?: string; requireSignatures?: boolean; json?: boolean }>();
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
  return command.addCommand(verify);
}
