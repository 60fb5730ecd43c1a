import { Command, InvalidArgumentError } from 'commander';
import { createDevTokenMinter } from '../runtime/kos-runtime.js';
import { fail, globalOptions } from './context.js';

function score(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0 || parsed > 100)
    throw new InvalidArgumentError('must be a number from 0 to 100');
  return parsed;
}

/** `kos token`: a development identity token the embedded default (and `kos init` configurations) accept. */
export function tokenCommand(): Command {
  const command = new Command('token')
    .description(
      'mint a development identity token (development keys only; production tokens come from your identity provider)',
    )
    .requiredOption('--client <id>', 'client id (the token subject)')
    .requiredOption('--score <score>', 'trust score, 0–100', score)
    .option('--ttl <seconds>', 'lifetime in seconds', (value) => Number(value), 3600);
  command.action(async () => {
    const options = globalOptions(command) as ReturnType<typeof globalOptions> & {
      client: string;
      score: number;
      ttl: number;
    };
    try {
      const mint = await createDevTokenMinter(options.dir ?? process.env.KOS_DIR ?? '.kos');
      console.log(await mint({ clientId: options.client, score: options.score, ttlSeconds: options.ttl }));
    } catch (error) {
      fail(error);
    }
  });
  return command;
}
