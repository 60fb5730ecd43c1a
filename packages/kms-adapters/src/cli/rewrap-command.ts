import { Command } from 'commander';
import { rewrapRecords } from '../operations/rewrap-records.js';
import { fail, globalOptions, print, withRuntime } from './context.js';
import { createProgress } from './progress.js';

/** `kos rewrap`: move sealed records to the primary version of their keys. */
export function rewrapCommand(): Command {
  const command = new Command('rewrap')
    .description(
      're-encrypt every envelope in a JSON-lines file or a folder of JSON records under the primary key versions',
    )
    .argument('<input>', 'a .jsonl file (one record per line) or a folder of .json records')
    .argument('<output>', 'where to write the rewrapped records (a file, or a folder)')
    .option('--resume', 'continue an interrupted run')
    .option('--batch <n>', 'records per batch (memory bound and checkpoint interval)', (value) => Number(value), 512);
  command.action(async (input: string, output: string) => {
    const options = globalOptions(command) as ReturnType<typeof globalOptions> & { resume?: boolean; batch: number };
    try {
      await withRuntime(options, async (runtime) => {
        const progress = createProgress('rewrap');
        const started = Date.now();
        const result = await rewrapRecords({
          keys: runtime.kos.keys,
          input,
          output,
          ...(options.resume ? { resume: true } : {}),
          batchSize: options.batch,
          onProgress: (p) => progress.update(p.bytes, p.totalBytes, p.records),
        });
        progress.update(result.bytes, result.totalBytes, result.records, true);
        const seconds = (Date.now() - started) / 1000;
        print(
          options,
          { ...result, seconds },
          () =>
            `rewrapped ${result.envelopes} envelope(s) in ${result.records} record(s) in ${seconds.toFixed(1)} s → ${output}`,
        );
      });
    } catch (error) {
      fail(error);
    }
  });
  return command;
}
