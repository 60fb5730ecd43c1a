// `npm run token -- --client alice --score 65`: prints a development identity token that the
// embedded default (./.kos) accepts. Development only: a configured deployment trusts your
// identity provider instead.
import { createDevTokenMinter } from '@kos/kms-adapters';
import { Command, InvalidArgumentError } from 'commander';

function score(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0 || parsed > 100)
    throw new InvalidArgumentError('must be a number from 0 to 100');
  return parsed;
}

function seconds(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1 || parsed > 86_400) throw new InvalidArgumentError('must be 1–86400');
  return parsed;
}

const options = new Command()
  .name('token')
  .description('Mint a development identity token for the embedded KOS default')
  .requiredOption('--client <id>', 'client id (the token subject)')
  .requiredOption('--score <score>', 'trust score, 0–100', score)
  .option('--ttl <seconds>', 'lifetime in seconds', seconds, 3600)
  .option('--dir <path>', 'the embedded folder', process.env.KOS_DIR ?? '.kos')
  .showHelpAfterError()
  .parse()
  .opts<{ client: string; score: number; ttl: number; dir: string }>();

const mint = await createDevTokenMinter(options.dir);
console.log(await mint({ clientId: options.client, score: options.score, ttlSeconds: options.ttl }));
