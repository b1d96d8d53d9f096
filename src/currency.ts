/**
 * Minor-unit digits of the currencies Dodo charges in (ISO 4217). Dodo writes every payment,
 * refund and price amount as an integer of the currency's smallest unit: cents for USD, yen for
 * JPY, fils for KWD (the SDK's `Payment.total_amount` doc comment).
 */
const MINOR_UNIT_DIGITS: Readonly<Record<string, number>> = {
  BIF: 0,
  CLP: 0,
  DJF: 0,
  GNF: 0,
  ISK: 0,
  JPY: 0,
  KMF: 0,
  KRW: 0,
  PYG: 0,
  RWF: 0,
  UGX: 0,
  VND: 0,
  VUV: 0,
  XAF: 0,
  XOF: 0,
  XPF: 0,
  BHD: 3,
  IQD: 3,
  JOD: 3,
  KWD: 3,
  LYD: 3,
  OMR: 3,
  TND: 3,
};

/** Minor-unit digits of a currency code; 2 unless listed (and for anything that is not a code). */
export function minorUnitDigits(currency: unknown): number {
  return typeof currency === 'string' ? (MINOR_UNIT_DIGITS[currency.toUpperCase()] ?? 2) : 2;
}
