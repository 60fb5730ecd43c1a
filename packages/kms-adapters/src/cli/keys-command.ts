import { isKosError, type KeyManager, type KeyRecord, KosError } from '@kos/core';
import { Command } from 'commander';
import { fail, globalOptions, print, withRuntime } from './context.js';

/** What `kos keys retire` did (or, with `--dry-run`, would do) to one key. */
interface RetireResult {
  readonly kid: string;
  readonly primary: number;
  /** The minimum decryption version before and after. */
  readonly minDecryptVersionBefore: number;
  readonly minDecryptVersion: number;
  /** Versions moved to `retired` by this run. */
  readonly retired: number[];
  /** Versions destroyed by this run (their shares deleted on every node). */
  readonly destroyed: number[];
  readonly versions: Array<{ version: number; state: string }>;
}

function parseVersion(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const version = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(version) || version < 1) {
    throw new KosError('ERR_INVALID_ARGUMENT', `version must be a positive integer (got ${JSON.stringify(value)})`);
  }
  return version;
}

function versionsOf(record: KeyRecord): Array<{ version: number; state: string }> {
  return record.versions.map((entry) => ({ version: entry.version, state: entry.state }));
}

/**
 * Retires `upTo` and every older version of `kid` (the minimum decryption version becomes
 * `upTo + 1`, never lower than it was), and with `destroy` destroys them: marked destroyed,
 * every share of them deleted on every node. The primary version is never retired.
 */
async function retireKey(
  keys: KeyManager,
  kid: string,
  upTo: number | 'old',
  options: { readonly destroy: boolean; readonly dryRun: boolean },
): Promise<RetireResult> {
  const before = await keys.getKey(kid);
  const target = upTo === 'old' ? before.primaryVersion - 1 : upTo;
  if (upTo !== 'old') {
    if (!before.versions.some((entry) => entry.version === target)) {
      throw new KosError('ERR_KEY_VERSION_NOT_FOUND', `${kid} has no version ${target}`, {
        details: { kid, version: target },
      });
    }
    if (target >= before.primaryVersion) {
      throw new KosError(
        'ERR_KEY_VERSION_STATE',
        `${kid} v${target} is the primary version (new data is sealed under it) and cannot be retired: rotate first (kos rotate ${kid}), rewrap the data (kos rewrap), then retire v${target}`,
        { details: { kid, version: target, primary: before.primaryVersion } },
      );
    }
  }
  // Only ever raised: a lower minimum would make retired versions decrypt again.
  const minimum = Math.max(before.minDecryptVersion, target + 1);
  const retired = before.versions
    .filter((entry) => entry.version < minimum && (entry.state === 'active' || entry.state === 'decrypt-only'))
    .map((entry) => entry.version);
  const toDestroy = options.destroy
    ? before.versions
        .filter((entry) => entry.version <= target && entry.version < minimum && entry.state !== 'active')
        .map((entry) => entry.version)
    : [];
  if (options.dryRun) {
    return {
      kid,
      primary: before.primaryVersion,
      minDecryptVersionBefore: before.minDecryptVersion,
      minDecryptVersion: minimum,
      retired,
      destroyed: toDestroy,
      versions: versionsOf(before),
    };
  }
  let after = before;
  if (minimum > before.minDecryptVersion) after = await keys.setMinDecryptVersion(kid, minimum, { onlyRaise: true });
  const destroyed: number[] = [];
  for (const version of toDestroy) {
    after = await keys.destroyVersion(kid, version);
    destroyed.push(version);
  }
  return {
    kid,
    primary: after.primaryVersion,
    minDecryptVersionBefore: before.minDecryptVersion,
    minDecryptVersion: after.minDecryptVersion,
    retired,
    destroyed,
    versions: versionsOf(after),
  };
}

/** `kos keys retire` and `kos keys reinstate`: the end of a key version's life, from the command line. */
export function keysCommand(): Command {
  const command = new Command('keys').description('key versions: retire (and destroy) old ones, reinstate');

  const retire = new Command('retire')
    .description(
      'retire a version and every older one: they no longer decrypt (ERR_KEY_VERSION_RETIRED). Rewrap the data first',
    )
    .argument('[kid]', 'key id')
    .argument('[version]', 'the newest version to retire (older ones go too); must be older than the primary')
    .option('--old', 'retire every version older than the primary')
    .option('--all', 'with --old: every key')
    .option('--destroy', 'also destroy the retired versions: delete all their shares on every node (cannot be undone)')
    .option('--dry-run', 'show what would change, change nothing')
    .addHelpText(
      'after',
      `
Examples:
  kos keys retire records 2              versions 1 and 2 of "records" stop decrypting
  kos keys retire records --old          every version but the primary
  kos keys retire --all --old --destroy  every key: old versions retired, their shares deleted
A retired version can be reinstated (kos keys reinstate); a destroyed one is gone for good.`,
    );
  retire.action(async (kid: string | undefined, versionText: string | undefined) => {
    const options = globalOptions(retire) as ReturnType<typeof globalOptions> & {
      old?: boolean;
      all?: boolean;
      destroy?: boolean;
      dryRun?: boolean;
    };
    try {
      const version = parseVersion(versionText);
      if (options.all && !options.old) throw new KosError('ERR_INVALID_ARGUMENT', '--all goes with --old');
      if (options.all && kid !== undefined)
        throw new KosError('ERR_INVALID_ARGUMENT', 'give a key id or --all, not both');
      if (!options.all && kid === undefined)
        throw new KosError('ERR_INVALID_ARGUMENT', 'name a key id (or --all --old)');
      if (version !== undefined && options.old) {
        throw new KosError('ERR_INVALID_ARGUMENT', 'give a version or --old, not both');
      }
      if (version === undefined && !options.old) {
        throw new KosError(
          'ERR_INVALID_ARGUMENT',
          'name the newest version to retire, or --old for all but the primary',
        );
      }
      await withRuntime(options, async (runtime) => {
        const keys = runtime.kos.keys;
        const kids = options.all ? (await keys.listKeys()).sort() : [kid as string];
        const upTo = version ?? 'old';
        const flags = { destroy: Boolean(options.destroy), dryRun: Boolean(options.dryRun) };
        const results: RetireResult[] = [];
        const failed: Array<{ kid: string; code: string; message: string }> = [];
        for (const each of kids) {
          try {
            results.push(await retireKey(keys, each, upTo, flags));
          } catch (error) {
            // One key alone: its failure is the command's. Several: report it and go on.
            if (!options.all) throw error;
            failed.push({
              kid: each,
              code: isKosError(error) ? error.code : 'ERR_INTERNAL',
              message: (error as Error)?.message ?? String(error),
            });
          }
        }
        print(options, { dryRun: flags.dryRun, keys: results, failed }, () => {
          const lines: string[] = [];
          for (const result of results) {
            const retiredText = result.retired.length > 0 ? `v${result.retired.join(', v')}` : 'nothing new';
            const destroyedText = result.destroyed.length > 0 ? `; destroyed v${result.destroyed.join(', v')}` : '';
            lines.push(
              `${flags.dryRun ? 'would retire' : 'retired'} ${result.kid}: ${retiredText}${destroyedText} (primary v${result.primary}, min decrypt v${result.minDecryptVersionBefore} → v${result.minDecryptVersion})`,
            );
          }
          for (const failure of failed) lines.push(`  FAILED ${failure.kid}: ${failure.code}: ${failure.message}`);
          if (results.length === 0 && failed.length === 0) lines.push('no keys');
          return lines.join('\n');
        });
        if (failed.length > 0) process.exitCode = 1;
      });
    } catch (error) {
      fail(error);
    }
  });

  const reinstate = new Command('reinstate')
    .description('let a retired (not destroyed) version and every newer one decrypt again')
    .argument('<kid>', 'key id')
    .argument('<version>', 'the oldest version that should decrypt again');
  reinstate.action(async (kid: string, versionText: string) => {
    const options = globalOptions(reinstate);
    try {
      const version = parseVersion(versionText) as number;
      await withRuntime(options, async (runtime) => {
        const keys = runtime.kos.keys;
        const before = await keys.getKey(kid);
        const entry = before.versions.find((candidate) => candidate.version === version);
        if (!entry) {
          throw new KosError('ERR_KEY_VERSION_NOT_FOUND', `${kid} has no version ${version}`, {
            details: { kid, version },
          });
        }
        if (entry.state === 'destroyed') {
          throw new KosError('ERR_KEY_VERSION_DESTROYED', `${kid} v${version} was destroyed and cannot come back`, {
            details: { kid, version },
          });
        }
        const destroyedNewer = before.versions.filter((v) => v.version > version && v.state === 'destroyed');
        const after = version < before.minDecryptVersion ? await keys.setMinDecryptVersion(kid, version) : before;
        print(
          options,
          {
            kid,
            minDecryptVersionBefore: before.minDecryptVersion,
            minDecryptVersion: after.minDecryptVersion,
            versions: versionsOf(after),
          },
          () =>
            `${kid}: min decrypt v${before.minDecryptVersion} → v${after.minDecryptVersion}${destroyedNewer.length > 0 ? ` (destroyed stay destroyed: v${destroyedNewer.map((v) => v.version).join(', v')})` : ''}`,
        );
      });
    } catch (error) {
      fail(error);
    }
  });

  return command.addCommand(retire).addCommand(reinstate);
}
