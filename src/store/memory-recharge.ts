import type { Money } from '../money.js';
import type {
  AutoRechargeSettings,
  AutoRechargeState,
  RechargeBegin,
  RechargeFinish,
  RechargeFinished,
  RechargeStart,
} from './types.js';

/** A customer's auto-recharge as MemoryStore keeps it: the same fields as RedisStore's hash. */
export interface RechargeRecord {
  settings: AutoRechargeSettings | undefined;
  failures: number;
  disabled: boolean;
  /** The month `recharged` counts, and what it counted. */
  month: string;
  recharged: Money;
  /** The month whose limit was last reported, so it is reported once. */
  limitNoted: string;
  attempt: { attemptId: string; amount: Money; month: string; leaseUntil: number } | undefined;
  /** No attempt starts before this (ms): the last success's cooldown. */
  coolUntil: number;
}

export function newRechargeRecord(): RechargeRecord {
  return {
    settings: undefined,
    failures: 0,
    disabled: false,
    month: '',
    recharged: 0n,
    limitNoted: '',
    attempt: undefined,
    coolUntil: 0,
  };
}

export function setRecharge(record: RechargeRecord, settings: AutoRechargeSettings | undefined): void {
  record.settings = settings && { ...settings };
  record.failures = 0;
  record.disabled = false;
}

export function rechargeState(
  record: RechargeRecord | undefined,
  month: string,
): AutoRechargeState | undefined {
  if (!record?.settings) return undefined;
  const { attempt } = record;
  return {
    ...record.settings,
    month,
    recharged: record.month === month ? record.recharged : 0n,
    failures: record.failures,
    disabled: record.disabled,
    ...(attempt
      ? { inFlight: { attemptId: attempt.attemptId, amount: attempt.amount, leaseUntil: attempt.leaseUntil } }
      : {}),
  };
}

export function beginRecharge(
  record: RechargeRecord | undefined,
  start: RechargeStart,
  now: number,
): RechargeBegin {
  const settings = record?.settings;
  if (!record || !settings) return { status: 'off' };
  if (record.disabled) return { status: 'disabled' };
  if (start.available >= settings.threshold) return { status: 'above_threshold' };
  const { attempt } = record;
  if (attempt) {
    if (attempt.leaseUntil > now) return { status: 'in_flight' };
    attempt.leaseUntil = now + start.leaseMs;
    return { status: 'resume', attemptId: attempt.attemptId, amount: attempt.amount };
  }
  if (record.coolUntil > now) return { status: 'cooling' };
  if (record.month !== start.month) {
    record.month = start.month;
    record.recharged = 0n;
  }
  if (record.recharged + settings.amount > settings.monthlyLimit) {
    const first = record.limitNoted !== start.month;
    record.limitNoted = start.month;
    return {
      status: 'monthly_limit',
      recharged: record.recharged,
      monthlyLimit: settings.monthlyLimit,
      first,
    };
  }
  record.recharged += settings.amount;
  record.attempt = {
    attemptId: start.attemptId,
    amount: settings.amount,
    month: start.month,
    leaseUntil: now + start.leaseMs,
  };
  return { status: 'started', attemptId: start.attemptId, amount: settings.amount };
}

export function finishRecharge(
  record: RechargeRecord | undefined,
  finish: RechargeFinish,
  now: number,
): RechargeFinished {
  const attempt = record?.attempt;
  if (!record || !attempt || attempt.attemptId !== finish.attemptId) {
    return { applied: false, failures: record?.failures ?? 0, disabled: record?.disabled ?? false };
  }
  record.attempt = undefined;
  if (finish.outcome === 'succeeded') {
    record.failures = 0;
    record.coolUntil = now + finish.cooldownMs;
  } else {
    // A failed charge took nothing: its amount goes back to the month it was counted in.
    if (finish.outcome === 'failed' && attempt.month === record.month) record.recharged -= attempt.amount;
    record.failures += 1;
    if (record.failures >= finish.maxFailures) record.disabled = true;
  }
  return { applied: true, failures: record.failures, disabled: record.disabled };
}
