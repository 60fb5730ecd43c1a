import { Command } from 'commander';
import { fail, globalOptions, print, withRuntime } from './context.js';

/** `kos clients grant|revoke|list`. */
export function clientsCommand(): Command {
  const command = new Command('clients').description('client access rights');
  const grant = new Command('grant')
    .description('let a client read a key (or * for every key)')
    .argument('<client>', 'client id')
    .argument('<kid>', 'key id or *');
  grant.action(async (client: string, kid: string) => {
    const options = globalOptions(grant);
    try {
      await withRuntime(options, async (runtime) => {
        await runtime.access.grant(client, kid);
        print(options, { granted: { client, kid } }, () => `granted ${client} → ${kid}`);
      });
    } catch (error) {
      fail(error);
    }
  });
  const revoke = new Command('revoke')
    .description('revoke one key, or (without a key) everything: access, share sets on every node, outstanding grants')
    .argument('<client>', 'client id')
    .argument('[kid]', 'key id (omit to revoke the client entirely)');
  revoke.action(async (client: string, kid?: string) => {
    const options = globalOptions(revoke);
    try {
      await withRuntime(options, async (runtime) => {
        if (kid) {
          await runtime.access.revoke(client, kid);
          await runtime.kos.keys.deleteClientSets(client, { kid });
        } else {
          await runtime.kos.revokeClient(client);
        }
        print(
          options,
          { revoked: { client, kid: kid ?? '*' } },
          () => `revoked ${client}${kid ? ` → ${kid}` : ' (all keys; share sets deleted)'}`,
        );
      });
    } catch (error) {
      fail(error);
    }
  });
  const list = new Command('list').description('access records');
  list.action(async () => {
    const options = globalOptions(list);
    try {
      await withRuntime(options, async (runtime) => {
        const records = await runtime.access.list();
        print(options, { defaultDeny: runtime.access.defaultDeny, clients: records }, () =>
          [
            `default: ${runtime.access.defaultDeny ? 'deny' : 'allow'}`,
            ...records.map((r) => `  ${r.clientId}: allow [${r.allow.join(', ')}] deny [${r.deny.join(', ')}]`),
          ].join('\n'),
        );
      });
    } catch (error) {
      fail(error);
    }
  });
  return command.addCommand(grant).addCommand(revoke).addCommand(list);
}
