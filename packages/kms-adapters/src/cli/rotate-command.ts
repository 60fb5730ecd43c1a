import { Command } from 'commander';
import { fail, globalOptions, print, withRuntime } from './context.js';
import { createProgress } from './progress.js';

/** `kos rotate`: one or more keys, or every key that is due, or all keys. */
export function rotateCommand(): Command {
  const command = new Command('rotate')
    .description('rotate keys to a fresh DEK (old versions keep decrypting)')
    .argument('[kids...]', 'key ids to rotate')
    .option('--due', 'rotate every key that is due (schedule or wear-out)')
    .option('--all', 'rotate every key')
    .option('--create', 'create the named keys if they do not exist')
    .option('--concurrency <n>', 'rotations in flight', (value) => Number(value), 16);
  command.action(async (kids: string[]) => {
    const options = globalOptions(command) as ReturnType<typeof globalOptions> & {
      due?: boolean;
      all?: boolean;
      create?: boolean;
      concurrency: number;
    };
    try {
      await withRuntime(options, async (runtime) => {
        const keys = runtime.kos.keys;
        // Keys created here start at version 1 and are not rotated again in the same run.
        const created = new Set<string>();
        if (options.create) {
          const existing = new Set(await keys.listKeys());
          for (const kid of kids) {
            if (!existing.has(kid)) {
              await keys.createKey(kid);
              created.add(kid);
            }
          }
        }
        const targets = (options.due || options.all ? await keys.listKeys() : kids).filter((kid) => !created.has(kid));
        if (targets.length === 0 && created.size === 0) throw new Error('name keys to rotate, or use --due or --all');
        const progress = options.json ? undefined : createProgress('rotate');
        const result = await keys.rotateMany(targets, {
          concurrency: options.concurrency,
          reason: options.due ? 'scheduled' : 'manual',
          ...(options.due ? { onlyDue: true } : {}),
          onProgress: (done, total) => progress?.update(done, total, done, done === total),
        });
        print(options, { ...result, created: [...created] }, () =>
          [
            `created ${created.size} and rotated ${result.rotated.length} key(s)`,
            ...result.failed.map((f) => `  FAILED ${f.kid}: ${f.code}`),
          ].join('\n'),
        );
        if (result.failed.length > 0) process.exitCode = 1;
      });
    } catch (error) {
      fail(error);
    }
  });
  return command;
}
