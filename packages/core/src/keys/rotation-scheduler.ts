import { KosError } from '../errors.js';
import type { KeyManager } from './key-manager.js';

export interface RotationSchedulerOptions {
  /** How often to look for keys that are due (default 60 000 ms). */
  readonly intervalMs?: number;
  /** Called with each failure (the scheduler keeps running). */
  readonly onError?: (error: unknown) => void;
  /** Called with the key ids rotated in one pass. */
  readonly onRotated?: (kids: readonly string[]) => void;
}

export interface RotationScheduler {
  /** Runs one pass now (also what the timer runs). */
  runOnce(): Promise<string[]>;
  stop(): void;
}

/**
 * Scheduled rotation: every `intervalMs`, rotates each key whose primary version is older
 * than the manager's `rotationPeriodMs` or worn out. Passes never overlap; the timer does
 * not keep the process alive. Safe with several instances (rotation is locked and skips a
 * key another instance already rotated).
 */
export function startRotationScheduler(keys: KeyManager, options: RotationSchedulerOptions = {}): RotationScheduler {
  const intervalMs = options.intervalMs ?? 60_000;
  if (!Number.isFinite(intervalMs) || intervalMs < 10) {
    throw new KosError('ERR_INVALID_OPTIONS', 'rotation scheduler: intervalMs must be >= 10');
  }
  let running: Promise<string[]> | undefined;
  const runOnce = () => {
    running ??= keys.rotateDue().finally(() => {
      running = undefined;
    });
    return running;
  };
  const timer = setInterval(() => {
    runOnce().then(
      (kids) => {
        if (kids.length > 0) options.onRotated?.(kids);
      },
      (error: unknown) => options.onError?.(error),
    );
  }, intervalMs);
  (timer as { unref?: () => void }).unref?.();
  return {
    runOnce,
    stop: () => clearInterval(timer),
  };
}
