import { Command } from 'commander';
import { fail, globalOptions, print, withRuntime } from './context.js';

/** Why a node is down, in words an operator can act on. */
function downReason(node: { readonly code?: string | undefined; readonly nodeCode?: string | undefined }): string {
  const code = node.nodeCode ?? node.code ?? 'ERR_INTERNAL';
  const where = node.nodeCode ? ` at the node (${node.code})` : '';
  if (code === 'ERR_STORE_IO') return `${code}${where}: its share store is unreachable`;
  if (code === 'ERR_STORE_CORRUPT') return `${code}${where}: its share store holds damaged data`;
  if (code === 'ERR_KMS_UNREACHABLE') return `${code}: no connection`;
  if (code === 'ERR_KMS_TIMEOUT') return `${code}: no answer in time`;
  return `${code}${where}`;
}

/** `kos status`: keys, versions, states, operation counters; nodes and their health; Redis persistence. */
export function statusCommand(): Command {
  const command = new Command('status').description('keys and versions, node health, Redis persistence');
  command.action(async () => {
    const options = globalOptions(command);
    try {
      await withRuntime(options, async (runtime) => {
        const keys = runtime.kos.keys;
        const kids = (await keys.listKeys()).sort();
        const keyRows: Array<{
          kid: string;
          primary: number;
          minDecryptVersion: number;
          due: boolean;
          versions: Array<{ version: number; state: string; alg: string; createdAt: string; ops: number }>;
        }> = [];
        for (const kid of kids) {
          const record = await keys.getKey(kid);
          const versions = [];
          for (const version of record.versions) {
            versions.push({
              version: version.version,
              state: version.state,
              alg: version.alg,
              createdAt: new Date(version.createdAt).toISOString(),
              ops: await keys.getOps(kid, version.version),
            });
          }
          keyRows.push({
            kid,
            primary: record.primaryVersion,
            minDecryptVersion: record.minDecryptVersion,
            due: await keys.isDue(kid),
            versions,
          });
        }
        const nodes = await Promise.all(
          runtime.nodes.map(async (node) => {
            const started = performance.now();
            try {
              // A read of an id no share has: a healthy node answers "not found" quickly.
              await node.store.get('kos-health-probe', { signal: AbortSignal.timeout(3000) });
              return {
                nodeId: node.nodeId,
                kind: node.kind,
                url: node.publicUrl,
                healthy: true,
                ms: Math.round(performance.now() - started),
              };
            } catch (error) {
              // A remote node that answered names its own failure (ERR_STORE_IO: its store is down).
              const nodeCode = (error as { details?: { nodeCode?: unknown } }).details?.nodeCode;
              return {
                nodeId: node.nodeId,
                kind: node.kind,
                url: node.publicUrl,
                healthy: false,
                code: (error as { code?: string }).code ?? 'ERR_INTERNAL',
                ...(typeof nodeCode === 'string' ? { nodeCode } : {}),
              };
            }
          }),
        );
        const check = (runtime.metadata as { checkPersistence?: () => Promise<unknown> }).checkPersistence;
        const persistence = check ? await check().catch(() => ({ state: 'unknown' })) : undefined;
        const result = {
          mode: runtime.mode,
          metadata: runtime.metadataKind,
          keys: keyRows,
          nodes,
          ...(persistence ? { redisPersistence: persistence } : {}),
        };
        print(options, result, () => {
          const lines = [`KOS (${runtime.mode}), metadata: ${runtime.metadataKind}`, '', 'keys:'];
          if (keyRows.length === 0) lines.push('  (none)');
          for (const key of keyRows) {
            lines.push(
              `  ${key.kid}: primary v${key.primary}, min decrypt v${key.minDecryptVersion}${key.due ? ', DUE for rotation' : ''}`,
            );
            for (const v of key.versions)
              lines.push(`    v${v.version} ${v.state.padEnd(12)} ${v.alg} created ${v.createdAt} ops ${v.ops}`);
          }
          lines.push('', 'nodes:');
          for (const node of nodes) {
            lines.push(
              `  ${node.nodeId.padEnd(10)} ${node.kind.padEnd(6)} ${node.healthy ? `healthy (${node.ms} ms)` : `DOWN (${'code' in node ? downReason(node) : 'ERR_INTERNAL'})`} ${node.url}`,
            );
          }
          if (persistence) lines.push('', `redis persistence: ${JSON.stringify(persistence)}`);
          return lines.join('\n');
        });
        if (nodes.some((node) => !node.healthy)) process.exitCode = 2;
      });
    } catch (error) {
      fail(error);
    }
  });
  return command;
}
