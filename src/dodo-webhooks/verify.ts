import { type Webhook, WebhookVerificationError } from 'standardwebhooks';

/** Why a delivery was refused before anything ran. */
export class WebhookRejection extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'WebhookRejection';
  }
}

const REQUIRED_HEADERS = ['webhook-id', 'webhook-timestamp', 'webhook-signature'] as const;

/**
 * Verifies a Standard Webhooks signature over the exact raw bytes against each secret in turn
 * (several during key rotation), with the standard's 5-minute timestamp tolerance. Throws a
 * `WebhookRejection` saying what is wrong.
 */
export function verifySignature(
  verifiers: readonly Webhook[],
  rawBody: Buffer,
  headers: Record<string, string | string[] | undefined>,
): void {
  const signed: Record<string, string> = {};
  for (const name of REQUIRED_HEADERS) {
    const value = headers[name];
    if (typeof value !== 'string' || value === '') {
      throw new WebhookRejection(
        400,
        'missing_webhook_headers',
        `The \`${name}\` header is missing: this is not a signed Dodo webhook.`,
      );
    }
    signed[name] = value;
  }
  let lastError: unknown;
  for (const verifier of verifiers) {
    try {
      // Parsing is ours: a validly signed body that is not JSON is malformed, not a bad signature.
      verifier.verify(rawBody, signed, { jsonParse: false });
      return;
    } catch (error) {
      lastError = error;
    }
  }
  const reason =
    lastError instanceof WebhookVerificationError ? lastError.message : 'the signature could not be checked';
  if (/timestamp/i.test(reason)) {
    throw new WebhookRejection(
      401,
      'webhook_timestamp_out_of_tolerance',
      `Webhook refused: ${reason} (tolerance is 5 minutes).`,
    );
  }
  throw new WebhookRejection(401, 'invalid_webhook_signature', `Webhook refused: ${reason}.`);
}
