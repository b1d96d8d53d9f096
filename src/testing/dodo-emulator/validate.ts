import { type CreditUnits, describe, readCredits } from './amounts.js';
import { invalid } from './errors.js';

/** Small readers for request bodies: each throws a 422 naming the field. */
export type Body = Record<string, unknown>;

export function object(value: unknown, field: string): Body {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalid(`${field} must be a JSON object.`);
  }
  return value as Body;
}

export function string(body: Body, field: string): string {
  const value = body[field];
  if (typeof value !== 'string' || value.trim() === '')
    throw invalid(`${field} is required and must be a non-empty string.`);
  return value;
}

export function optionalString(body: Body, field: string): string | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw invalid(`${field} must be a string (got ${describe(value)}).`);
  return value;
}

export function optionalBoolean(body: Body, field: string): boolean | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw invalid(`${field} must be a boolean (got ${describe(value)}).`);
  return value;
}

export function integer(
  body: Body,
  field: string,
  { min = 0, fallback }: { min?: number; fallback?: number } = {},
): number {
  const value = body[field] ?? fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw invalid(`${field} must be an integer >= ${min} (got ${describe(body[field])}).`);
  }
  return value;
}

export function array(body: Body, field: string): unknown[] {
  const value = body[field];
  if (!Array.isArray(value)) throw invalid(`${field} is required and must be an array.`);
  return value;
}

export function credits(value: unknown, field: string, maxDecimals?: number): CreditUnits {
  const units = readCredits(value, maxDecimals);
  if (typeof units === 'string') throw invalid(`${field}: ${units}.`);
  return units;
}

/** Metadata: a flat object of string, number or boolean values. */
export function metadata(value: unknown, field = 'metadata'): Record<string, string | number | boolean> {
  if (value === undefined || value === null) return {};
  const body = object(value, field);
  for (const [key, entry] of Object.entries(body)) {
    if (!['string', 'number', 'boolean'].includes(typeof entry)) {
      throw invalid(`${field}.${key} must be a string, number or boolean (objects and arrays are rejected).`);
    }
  }
  return body as Record<string, string | number | boolean>;
}
