import { invalid, notFound } from '../errors.js';
import type { Parts } from '../parts.js';
import type { Router } from '../router.js';
import { dateParam, paginate } from '../runtime.js';
import * as read from '../validate.js';

/** Credit entitlements, balances, grants and ledger entries. */
export function registerCreditRoutes(router: Router, { catalog, credits }: Parts): void {
  router.add('POST', '/credit-entitlements', ({ body }) => ({
    status: 201,
    json: catalog.createEntitlement(body),
  }));
  router.add('GET', '/credit-entitlements', ({ query }) => ({
    json: paginate(catalog.listEntitlements(), query),
  }));
  router.add('GET', '/credit-entitlements/{id}', ({ params }) => ({
    json: catalog.entitlement(params.id as string),
  }));
  router.add('PATCH', '/credit-entitlements/{id}', ({ params, body }) => {
    catalog.updateEntitlement(params.id as string, body);
    return { status: 204, empty: true };
  });

  router.add('GET', '/credit-entitlements/{id}/balances', ({ params, query }) => {
    catalog.entitlement(params.id as string);
    const customerId = query.get('customer_id');
    const balances = credits
      .balancesOf(params.id as string)
      .filter((record) => customerId === null || record.customerId === customerId)
      .map((record) => credits.balanceView(record));
    return { json: paginate(balances, query) };
  });

  router.add('GET', '/credit-entitlements/{id}/balances/{customer_id}', ({ params }) => {
    const { id, customer_id: customerId } = params as { id: string; customer_id: string };
    catalog.entitlement(id);
    catalog.customer(customerId);
    const record = credits.balance(customerId, id);
    if (!record) throw notFound('Credit balance of customer', customerId);
    return { json: credits.balanceView(record) };
  });

  router.add('GET', '/credit-entitlements/{id}/balances/{customer_id}/grants', ({ params, query }) => {
    const { id, customer_id: customerId } = params as { id: string; customer_id: string };
    catalog.entitlement(id);
    catalog.customer(customerId);
    const status = query.get('status');
    if (status !== null && !['active', 'expired', 'depleted'].includes(status)) {
      throw invalid('status must be active, expired or depleted.');
    }
    const grants = credits
      .grantsOf(customerId, id)
      .filter((grant) => status === null || (status === 'depleted') === (grant.remaining === 0n))
      .filter(() => status !== 'expired') // no grant expires in the emulator
      .reverse()
      .map((grant) => credits.grantView(grant));
    return { json: paginate(grants, query) };
  });

  router.add('GET', '/credit-entitlements/{id}/balances/{customer_id}/ledger', ({ params, query }) => {
    const { id, customer_id: customerId } = params as { id: string; customer_id: string };
    catalog.entitlement(id);
    catalog.customer(customerId);
    const type = query.get('transaction_type');
    const start = dateParam(query, 'start_date');
    const end = dateParam(query, 'end_date');
    const entries = credits
      .ledger({ customerId, entitlementId: id })
      .filter(
        (entry) =>
          (type === null || entry.transactionType === type) &&
          (start === undefined || entry.createdAt >= start) &&
          (end === undefined || entry.createdAt <= end),
      )
      .reverse()
      .map((entry) => credits.view(entry));
    return { json: paginate(entries, query) };
  });

  router.add(
    'POST',
    '/credit-entitlements/{id}/balances/{customer_id}/ledger-entries',
    ({ params, body: raw }) => {
      const { id, customer_id: customerId } = params as { id: string; customer_id: string };
      const entitlement = catalog.entitlement(id);
      catalog.customer(customerId);
      const body = read.object(raw, 'body');
      const entryType = body.entry_type;
      if (entryType !== 'credit' && entryType !== 'debit')
        throw invalid('entry_type must be "credit" or "debit".');
      const amount = read.credits(body.amount, 'amount', entitlement.precision);
      if (amount <= 0n) throw invalid('amount must be greater than zero.');
      if (amount >= 10n ** 10n * 10n ** 12n) throw invalid('amount must be less than 10^10.');
      const idempotencyKey = read.optionalString(body, 'idempotency_key');
      if (idempotencyKey !== undefined) {
        const previous = credits.idempotent(customerId, id, idempotencyKey);
        if (previous) {
          return {
            status: 409,
            json: {
              code: 'IDEMPOTENCY_KEY_EXISTS',
              message: `A ledger entry with idempotency_key ${JSON.stringify(idempotencyKey)} already exists (${previous.id}).`,
            },
          };
        }
      }
      const reason = read.optionalString(body, 'reason');
      const source = {
        customerId,
        entitlementId: id,
        amount,
        description: reason,
        referenceType: 'api',
        metadata: read.metadata(body.metadata),
      };
      const entry =
        entryType === 'credit'
          ? credits.grant({ ...source, transactionType: 'credit_added' }, idempotencyKey)
          : credits.debit({ ...source, transactionType: 'credit_deducted' }, idempotencyKey);
      const view = credits.view(entry);
      return {
        status: 201,
        json: {
          id: view.id,
          amount: view.amount,
          balance_after: view.balance_after,
          balance_before: view.balance_before,
          created_at: view.created_at,
          credit_entitlement_id: view.credit_entitlement_id,
          customer_id: view.customer_id,
          entry_type: entryType,
          is_credit: view.is_credit,
          metadata: view.metadata,
          overage_after: view.overage_after,
          overage_before: view.overage_before,
          grant_id: view.grant_id ?? null,
          reason: reason ?? null,
        },
      };
    },
  );
}
