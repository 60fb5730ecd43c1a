import { describe, expect, it } from 'vitest';
import { ERROR_STATUS, httpStatusFor, KosError, toErrorBody } from '../src/index.js';

describe('the error model', () => {
  it('maps every code to an HTTP status', () => {
    for (const [code, status] of Object.entries(ERROR_STATUS)) {
      expect(code).toMatch(/^ERR_[A-Z_]+$/);
      expect(status).toBeGreaterThanOrEqual(400);
      expect(httpStatusFor(code)).toBe(status);
    }
    expect(httpStatusFor('ERR_UNKNOWN')).toBe(500);
    expect(httpStatusFor('toString')).toBe(500);
  });

  it('gives decryption failures one fixed message and no cause', () => {
    const error = new KosError('ERR_DECRYPTION_FAILED', 'tag mismatch at byte 7', { cause: new Error('inner') });
    expect(error.message).toBe('decryption failed');
    expect(error.cause).toBeUndefined();
    expect(error.status).toBe(500);
  });

  it('shows clients only { error: { code, message } }, and hides unknown errors', () => {
    expect(toErrorBody(new KosError('ERR_ACCESS_DENIED', 'client may not read this key'))).toEqual({
      error: { code: 'ERR_ACCESS_DENIED', message: 'client may not read this key' },
    });
    expect(toErrorBody(new Error('database password is hunter2'))).toEqual({
      error: { code: 'ERR_INTERNAL', message: 'internal error' },
    });
  });
});
