import type { DodoPayments } from 'dodopayments';
import { minorUnitDigits } from '../../currency.js';
import type { AmountStyle } from './credits.js';
import { DodoEmulatorError, notFound } from './errors.js';
import type { Payments } from './payments.js';
import type { Runtime } from './runtime.js';
import type { WebhookSender } from './webhooks.js';

type Dispute = DodoPayments.Dispute;
type DisputeStatus = DodoPayments.DisputeStatus;

/** How a dispute can end, as an admin method drives it. */
export type DisputeOutcome = 'challenged' | 'accepted' | 'won' | 'lost' | 'expired' | 'cancelled';

/** Statuses after which nothing moves a dispute any more. */
const FINAL: ReadonlySet<DisputeStatus> = new Set([
  'dispute_accepted',
  'dispute_won',
  'dispute_lost',
  'dispute_expired',
  'dispute_cancelled',
]);

/**
 * Disputes (chargebacks), opened and resolved by admin methods — a cardholder's bank drives
 * them, not the API. Each step sends its `dispute.*` webhook with the `Dispute` payload
 * (https://docs.dodopayments.com/developer-resources/webhooks/intents/dispute): `accepted`
 * ("the funds are returned to the cardholder") and `lost` end the same way for the merchant.
 * The emulator takes no credits back on a dispute: Dodo documents none.
 */
export class Disputes {
  private readonly disputes = new Map<string, Dispute>();

  constructor(
    private readonly runtime: Runtime,
    private readonly payments: Payments,
    private readonly webhooks: WebhookSender,
    private readonly amountStyle: AmountStyle,
  ) {}

  /** Opens a dispute on a payment for `amount` minor units of its currency (default: all of it). */
  open(paymentId: string, options: { amount?: number } = {}): Dispute {
    const payment = this.payments.find(paymentId);
    if (!payment) throw new DodoEmulatorError(`openDispute: unknown payment ${JSON.stringify(paymentId)}.`);
    const amount = options.amount ?? payment.total_amount;
    if (!Number.isSafeInteger(amount) || amount < 1 || amount > payment.total_amount) {
      throw new DodoEmulatorError(
        `openDispute: amount must be an integer of minor units from 1 to the payment's ${payment.total_amount}.`,
      );
    }
    const digits = minorUnitDigits(payment.currency);
    const dispute: Dispute = {
      // "represented as a string to accommodate precision": the amount in major units, "4.00".
      amount: majorUnits(amount, digits),
      business_id: this.runtime.businessId,
      created_at: this.runtime.iso(),
      currency: payment.currency,
      dispute_id: this.runtime.id('dsp'),
      dispute_stage: 'dispute',
      dispute_status: 'dispute_opened',
      payment_id: payment.payment_id,
      is_resolved_by_rdr: false,
      remarks: null,
    };
    this.disputes.set(dispute.dispute_id, dispute);
    payment.disputes.push(dispute);
    this.emit('dispute.opened', dispute, amount);
    return dispute;
  }

  /** Moves an open dispute on: `challenged`, then one of the outcomes. */
  resolve(disputeId: string, outcome: DisputeOutcome): Dispute {
    const dispute = this.disputes.get(disputeId);
    if (!dispute)
      throw new DodoEmulatorError(`resolveDispute: unknown dispute ${JSON.stringify(disputeId)}.`);
    if (FINAL.has(dispute.dispute_status)) {
      throw new DodoEmulatorError(
        `resolveDispute: dispute ${disputeId} is already ${dispute.dispute_status}.`,
      );
    }
    dispute.dispute_status = `dispute_${outcome}` as DisputeStatus;
    const payment = this.payments.find(dispute.payment_id);
    const minor = payment ? this.minorUnits(dispute, payment.currency) : 0;
    this.emit(`dispute.${outcome}`, dispute, minor);
    return dispute;
  }

  get(disputeId: string): Dispute {
    const dispute = this.disputes.get(disputeId);
    if (!dispute) throw notFound('Dispute', disputeId);
    return dispute;
  }

  list(): Dispute[] {
    return [...this.disputes.values()].reverse();
  }

  private minorUnits(dispute: Dispute, currency: string): number {
    const [whole = '0', fraction = ''] = dispute.amount.split('.');
    const digits = minorUnitDigits(currency);
    return Number(`${whole}${fraction.padEnd(digits, '0').slice(0, digits)}`);
  }

  /**
   * A dispute webhook. With `amountStyle: 'numbers'` the amount is a JSON number of minor units
   * (`400`), as Dodo has been seen to send amounts the SDK types as strings.
   */
  private emit(type: string, dispute: Dispute, minor: number): void {
    const data: Record<string, unknown> = { payload_type: 'Dispute', ...structuredClone(dispute) };
    if (this.amountStyle === 'numbers') data.amount = minor;
    this.webhooks.emit(type, data);
  }
}

/** Minor units as a major-unit decimal with all the currency's digits: 400 cents → `"4.00"`. */
function majorUnits(minor: number, digits: number): string {
  if (digits === 0) return String(minor);
  const text = String(minor).padStart(digits + 1, '0');
  return `${text.slice(0, -digits)}.${text.slice(-digits)}`;
}
