import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import { exportJWK } from 'jose';
import { loadOrCreateSalt } from '../audit/audit-setup.js';
import { loadOrCreateKeyPairFile } from '../runtime/key-files.js';
import { DEV_IDENTITY_AUDIENCE, DEV_IDENTITY_ISSUER } from '../runtime/kos-runtime.js';
import { fail, globalOptions, print } from './context.js';

/** `kos init`: keys (0600) and a configuration file for a chosen store. */
export function initCommand(): Command {
  const command = new Command('init')
    .description('create signing keys, an audit salt and a kos.config.json for the chosen store')
    .addOption(
      new Option('--store <kind>', 'where metadata and shares live').choices(['file', 'redis']).default('file'),
    )
    .option('--redis-url <url>', 'Redis URL (with --store redis)')
    .option('--nodes <count>', 'number of KMS nodes', (value) => Number(value), 5)
    .option('--issuer <iss>', 'issuer name of this KOS (iss of grants)', 'urn:kos:local')
    .option('--force', 'overwrite an existing kos.config.json');
  command.action(async () => {
    const options = globalOptions(command) as ReturnType<typeof globalOptions> & {
      store: 'file' | 'redis';
      redisUrl?: string;
      nodes: number;
      issuer: string;
      force?: boolean;
    };
    try {
      const dir = resolve(options.dir ?? process.env.KOS_DIR ?? '.kos');
      if (!Number.isInteger(options.nodes) || options.nodes < 3 || options.nodes > 64)
        throw new Error('--nodes must be 3–64');
      if (options.store === 'redis' && !options.redisUrl) throw new Error('--redis-url is required with --store redis');
      const configPath = join(dir, 'kos.config.json');
      if (
        !options.force &&
        (await stat(configPath).then(
          () => true,
          () => false,
        ))
      ) {
        throw new Error(`${configPath} exists (use --force to overwrite)`);
      }
      await mkdir(join(dir, 'keys'), { recursive: true, mode: 0o700 });
      const signing = await loadOrCreateKeyPairFile(join(dir, 'keys', 'kos-signing.jwk.json'), 'kos-signing');
      await writeFile(
        join(dir, 'keys', 'kos-public.jwks.json'),
        JSON.stringify({ keys: [{ ...signing.publicJwk, kid: 'kos-signing' }] }),
      );
      const identity = await loadOrCreateKeyPairFile(join(dir, 'keys', 'dev-identity.jwk.json'), 'kos-dev-identity');
      await writeFile(
        join(dir, 'keys', 'identity.jwks.json'),
        JSON.stringify({ keys: [{ ...(await exportJWK(identity.publicKey)), alg: 'EdDSA', kid: 'kos-dev-identity' }] }),
      );
      await loadOrCreateSalt(join(dir, 'keys', 'audit-salt'));
      const nodes = Array.from({ length: options.nodes }, (_, i) =>
        options.store === 'redis'
          ? { nodeId: `node-${i + 1}`, kind: 'redis', url: options.redisUrl }
          : { nodeId: `node-${i + 1}`, kind: 'file', dir: `nodes/node-${i + 1}` },
      );
      const config = {
        issuer: options.issuer,
        signingKeyFile: 'keys/kos-signing.jwk.json',
        identity: {
          issuer: DEV_IDENTITY_ISSUER,
          audience: DEV_IDENTITY_AUDIENCE,
          algorithms: ['EdDSA'],
          jwksFile: 'keys/identity.jwks.json',
        },
        metadata:
          options.store === 'redis' ? { kind: 'redis', url: options.redisUrl } : { kind: 'file', dir: 'metadata' },
        nodes,
        access: { defaultDeny: true },
        audit: { file: 'audit/kos-audit-{host}-{pid}.jsonl', saltFile: 'keys/audit-salt' },
      };
      await writeFile(configPath, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
      print(options, { config: configPath, dir, store: options.store, nodes: options.nodes }, () =>
        [
          `KOS initialised in ${dir}`,
          `  configuration: ${configPath} (store: ${options.store}, ${options.nodes} KMS nodes, default-deny access)`,
          `  signing key:   ${join(dir, 'keys', 'kos-signing.jwk.json')} (mode 0600); nodes trust keys/kos-public.jwks.json`,
          '  identity:      a development key (keys/identity.jwks.json) — point "identity" at your identity provider for production',
          `Create keys:   kos --config ${configPath} rotate --create <kid>`,
          `Use it:        KOS_CONFIG=${configPath} npm start`,
        ].join('\n'),
      );
    } catch (error) {
      fail(error);
    }
  });
  return command;
}
