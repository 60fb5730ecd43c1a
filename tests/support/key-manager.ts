import { KeyManager, type KeyManagerEvent } from '@kos/core';
import { createMemoryMetadataStore } from '@kos/kms-adapters';
import { memoryNodes } from './nodes.js';

/** A KeyManager on memory metadata and five memory nodes, recording its events. */
export function memoryKeyManager(options: Partial<ConstructorParameters<typeof KeyManager>[0]> = {}) {
  const metadata = createMemoryMetadataStore();
  const events: KeyManagerEvent[] = [];
  const keys = new KeyManager({ metadata, nodes: memoryNodes(5), onEvent: (e) => events.push(e), ...options });
  return { keys, metadata, events };
}

/** Decoded bytes (UTF-8), for comparing opened plaintexts with strings. */
export const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);
