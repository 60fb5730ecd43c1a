#!/usr/bin/env node
// kos-kms: run a KMS node as a process. See docs/kms-api.md and `kos-kms --help`.
import { isKosError } from '@kos/core';
import { kmsServeCommand } from './serve-command.js';

kmsServeCommand('kos-kms')
  .parseAsync()
  .catch((error: unknown) => {
    const code = isKosError(error) ? error.code : 'ERR_INTERNAL';
    console.error(JSON.stringify({ event: 'fatal', code, message: (error as Error)?.message ?? String(error) }));
    process.exit(1);
  });
