/**
 * One error model for all of KOS: a single class, a closed set of stable string codes and
 * one table from code to HTTP status. Messages never contain key, share or token bytes.
 */

/** Every code KOS can raise, with the HTTP status an adapter answers with. */
export const ERROR_STATUS = {
  ERR_INVALID_OPTIONS: 500,
  ERR_INVALID_ARGUMENT: 400,
  ERR_INVALID_ID: 400,
  ERR_ENVELOPE_MALFORMED: 400,
  ERR_ENVELOPE_UNSUPPORTED_VERSION: 400,
  ERR_ENVELOPE_TOO_LARGE: 413,
  ERR_ALG_NOT_ALLOWED: 400,
  ERR_INVALID_KEY: 500,
  ERR_DECRYPTION_FAILED: 500,
  ERR_DATA_ID_MISMATCH: 409,
  ERR_KEY_NOT_FOUND: 404,
  ERR_KEY_EXISTS: 409,
  ERR_KEY_VERSION_NOT_FOUND: 404,
  ERR_KEY_VERSION_RETIRED: 410,
  ERR_KEY_VERSION_DESTROYED: 410,
  ERR_KEY_VERSION_STATE: 409,
  ERR_KEY_CHECK_FAILED: 502,
  ERR_SHARE_INVALID: 502,
  ERR_SHARES_INSUFFICIENT: 503,
  ERR_NOT_ENOUGH_NODES: 503,
  ERR_ROTATION_FAILED: 503,
  ERR_ROTATION_IN_PROGRESS: 409,
  ERR_STORE_IO: 503,
  ERR_STORE_CORRUPT: 500,
  ERR_STORE_CONFLICT: 409,
  ERR_UNAUTHENTICATED: 401,
  ERR_TOKEN_INVALID: 401,
  ERR_TOKEN_EXPIRED: 401,
  ERR_SCORE_INVALID: 401,
  ERR_SCORE_BELOW_FLOOR: 403,
  ERR_ACCESS_DENIED: 403,
  ERR_GRANT_INVALID: 401,
  ERR_GRANT_EXPIRED: 401,
  ERR_GRANT_REPLAYED: 409,
  ERR_GRANT_WRONG_AUDIENCE: 403,
  ERR_GRANT_WRONG_SHARE: 403,
  ERR_GRANT_WRONG_KEY: 403,
  ERR_GRANT_WRONG_VERSION: 403,
  ERR_GRANT_WRONG_CLIENT: 403,
  ERR_SERVICE_TOKEN_INVALID: 401,
  ERR_SERVICE_TOKEN_EXPIRED: 401,
  ERR_TOKEN_WRONG_TYPE: 401,
  ERR_DPOP_REQUIRED: 401,
  ERR_DPOP_INVALID: 401,
  ERR_DPOP_REPLAYED: 409,
  ERR_SHARE_NOT_FOUND: 404,
  ERR_KMS_UNREACHABLE: 502,
  ERR_KMS_TIMEOUT: 504,
  ERR_KMS_BAD_STATUS: 502,
  ERR_KMS_BAD_BODY: 502,
  ERR_KMS_BODY_TOO_LARGE: 502,
  ERR_INSECURE_TRANSPORT: 500,
  ERR_REQUEST_TOO_LARGE: 413,
  ERR_ROUTE_NOT_FOUND: 404,
  ERR_METHOD_NOT_ALLOWED: 405,
  ERR_RESPONSE_ENVELOPE_INVALID: 500,
  ERR_AUDIT_UNAVAILABLE: 503,
  ERR_INTERNAL: 500,
} as const satisfies Record<string, number>;

export type KosErrorCode = keyof typeof ERROR_STATUS;

/** The one message every decryption failure carries, whatever the cause (no oracle). */
export const DECRYPTION_FAILED_MESSAGE = 'decryption failed';

/** Non-secret facts that help an operator: node ids, reasons, option names. */
export type KosErrorDetails = Readonly<Record<string, string | number | boolean | readonly unknown[]>>;

export interface KosErrorOptions {
  details?: KosErrorDetails;
  cause?: unknown;
}

/**
 * The only error class KOS throws. `code` is stable and safe to switch on; `message` is
 * safe to show; `details` holds non-secret context (which node, which option).
 */
export class KosError extends Error {
  override readonly name = 'KosError';
  readonly code: KosErrorCode;
  readonly status: number;
  readonly details: KosErrorDetails | undefined;

  constructor(code: KosErrorCode, message: string, options: KosErrorOptions = {}) {
    super(
      code === 'ERR_DECRYPTION_FAILED' ? DECRYPTION_FAILED_MESSAGE : message,
      // A decryption failure never carries its cause: the cause could tell an attacker which check failed.
      code === 'ERR_DECRYPTION_FAILED' || options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.details = options.details;
  }
}

/** Whether `value` is a KosError, optionally with the given code. */
export function isKosError(value: unknown, code?: KosErrorCode): value is KosError {
  return value instanceof KosError && (code === undefined || value.code === code);
}

/** HTTP status for a code (500 for anything unknown). */
export function httpStatusFor(code: string): number {
  return Object.hasOwn(ERROR_STATUS, code) ? ERROR_STATUS[code as KosErrorCode] : 500;
}

/** The client-visible body: `{ error: { code, message } }`; unknown errors become ERR_INTERNAL. */
export function toErrorBody(error: unknown): { error: { code: KosErrorCode; message: string } } {
  if (error instanceof KosError) {
    return { error: { code: error.code, message: error.message } };
  }
  return { error: { code: 'ERR_INTERNAL', message: 'internal error' } };
}
