import { ApiError } from '../errors.js';
import type { Parts } from '../parts.js';
import type { Reply, Router } from '../router.js';
import { paginate } from '../runtime.js';

/** Checkout sessions (API and the page), payments, refunds, subscriptions. */
export function registerCommerceRoutes(
  router: Router,
  { checkouts, payments, subscriptions, disputes }: Parts,
): void {
  router.add('POST', '/checkouts', ({ body }) => ({ json: checkouts.create(body) }));
  router.add('GET', '/checkouts/{id}', ({ params }) => ({ json: checkouts.status(params.id as string) }));

  // The page a customer (or a test) opens from checkout_url: no API key, like Dodo's hosted page.
  const pay = (id: string, form: Record<string, string>): Reply => {
    checkouts.status(id); // 404 for an unknown session
    try {
      const result = checkouts.complete(id, { email: form.email, name: form.name });
      return result.redirectUrl ? { redirect: result.redirectUrl } : { html: checkouts.paidPage(result) };
    } catch (caught) {
      if (caught instanceof ApiError && caught.status === 409)
        return { status: 409, html: checkouts.page(id) };
      throw caught;
    }
  };
  router.add(
    'GET',
    '/checkout/{id}',
    ({ params, query }) => {
      const id = params.id as string;
      if (query.get('complete') === '1') return pay(id, Object.fromEntries(query));
      return { html: checkouts.page(id) };
    },
    { auth: false },
  );
  router.add(
    'POST',
    '/checkout/{id}',
    ({ params, body }) => pay(params.id as string, (body ?? {}) as Record<string, string>),
    { auth: false },
  );

  router.add('GET', '/payments', ({ query }) => {
    const list = payments.list({
      customerId: query.get('customer_id') ?? undefined,
      subscriptionId: query.get('subscription_id') ?? undefined,
      status: query.get('status') ?? undefined,
    });
    return { json: paginate(list, query) };
  });
  router.add('GET', '/payments/{id}', ({ params }) => ({ json: payments.get(params.id as string) }));

  router.add('POST', '/refunds', ({ body }) => ({ json: payments.refund(body) }));
  router.add('GET', '/refunds', ({ query }) => ({
    json: paginate(payments.listRefunds({ customerId: query.get('customer_id') ?? undefined }), query),
  }));
  router.add('GET', '/refunds/{id}', ({ params }) => ({ json: payments.getRefund(params.id as string) }));

  router.add('GET', '/subscriptions', ({ query }) => {
    const list = subscriptions.list({
      customerId: query.get('customer_id') ?? undefined,
      status: query.get('status') ?? undefined,
      productId: query.get('product_id') ?? undefined,
    });
    return { json: paginate(list, query) };
  });
  router.add('GET', '/subscriptions/{id}', ({ params }) => ({
    json: subscriptions.get(params.id as string),
  }));
  router.add('PATCH', '/subscriptions/{id}', ({ params, body }) => ({
    json: subscriptions.update(params.id as string, body),
  }));
  router.add('POST', '/subscriptions/{id}/charge', ({ params, body }) => ({
    json: subscriptions.chargeOnDemand(params.id as string, body),
  }));
  router.add('GET', '/disputes', ({ query }) => ({ json: paginate(disputes.list(), query) }));
  router.add('GET', '/disputes/{id}', ({ params }) => ({ json: disputes.get(params.id as string) }));
  router.add('POST', '/subscriptions/{id}/change-plan', ({ params, body }) => {
    subscriptions.changePlan(params.id as string, body);
    return { json: { client_secret: null, expires_on: null, payment_id: null, payment_link: null } };
  });
}
