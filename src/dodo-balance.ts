import { type Money, parseCredits } from './money.js';

/**
 * What a customer can still spend, from Dodo's answer for a credit balance: the balance minus
 * the overage, since with overage enabled Dodo keeps the balance at 0 and counts what is owed as
 * overage. Amounts are read whether Dodo sends them as strings or numbers.
 */
export function spendableBalance(
  answer: { balance: string | number; overage?: string | number | null | undefined },
  perCredit: Money,
): Money {
  return (
    parseCredits(String(answer.balance), perCredit) - parseCredits(String(answer.overage ?? '0'), perCredit)
  );
}
