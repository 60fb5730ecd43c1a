#!/usr/bin/env node
// kos: operate KOS — init, status, rotate, keys retire, rewrap, clients, audit verify, token, kms serve. `kos --help`.
import { Command } from 'commander';
import { kmsServeCommand } from '../kms-node/serve-command.js';
import { auditCommand } from './audit-command.js';
import { clientsCommand } from './clients-command.js';
import { initCommand } from './init-command.js';
import { keysCommand } from './keys-command.js';
import { rewrapCommand } from './rewrap-command.js';
import { rotateCommand } from './rotate-command.js';
import { statusCommand } from './status-command.js';
import { tokenCommand } from './token-command.js';

const program = new Command('kos')
  .description('Operate KOS: keys, rotation, retirement, rewrap, clients, audit, KMS nodes.')
  .option('--config <file>', 'KOS configuration (default: $KOS_CONFIG); without one, the embedded folder is used')
  .option('--dir <path>', 'the embedded / init folder (default: $KOS_DIR or .kos)')
  .option('--json', 'machine-readable output')
  .showHelpAfterError()
  .addCommand(initCommand())
  .addCommand(statusCommand())
  .addCommand(rotateCommand())
  .addCommand(keysCommand())
  .addCommand(rewrapCommand())
  .addCommand(clientsCommand())
  .addCommand(auditCommand())
  .addCommand(tokenCommand())
  .addCommand(new Command('kms').description('KMS nodes').addCommand(kmsServeCommand('serve')));

await program.parseAsync();
