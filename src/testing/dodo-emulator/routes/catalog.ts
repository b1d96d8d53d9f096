import type { Parts } from '../parts.js';
import type { Router } from '../router.js';
import { paginate } from '../runtime.js';

/** Customers and products. */
export function registerCatalogRoutes(router: Router, { catalog, credits }: Parts): void {
  router.add('POST', '/customers', ({ body }) => ({ json: catalog.createCustomer(body) }));
  router.add('GET', '/customers', ({ query }) => {
    const email = query.get('email');
    const list = catalog.listCustomers().filter((customer) => email === null || customer.email === email);
    return { json: paginate(list, query) };
  });
  router.add('GET', '/customers/{id}', ({ params }) => ({ json: catalog.customer(params.id as string) }));
  router.add('GET', '/customers/{id}/credit-entitlements', ({ params }) => {
    const customer = catalog.customer(params.id as string);
    const items = catalog.listEntitlements().flatMap((entitlement) => {
      const record = credits.balance(customer.customer_id, entitlement.id);
      if (!record) return [];
      const view = credits.balanceView(record);
      return [
        {
          balance: view.balance,
          credit_entitlement_id: entitlement.id,
          name: entitlement.name,
          overage: view.overage,
          unit: entitlement.unit,
          description: entitlement.description ?? null,
        },
      ];
    });
    return { json: { items } };
  });

  router.add('POST', '/products', ({ body }) => ({ json: catalog.createProduct(body) }));
  router.add('GET', '/products', ({ query }) => {
    const recurring = query.get('recurring');
    return {
      json: paginate(catalog.listProducts(recurring === null ? undefined : recurring === 'true'), query),
    };
  });
  router.add('GET', '/products/{id}', ({ params }) => ({ json: catalog.product(params.id as string) }));
  router.add('PATCH', '/products/{id}', ({ params, body }) => {
    catalog.updateProduct(params.id as string, body);
    return { status: 204, empty: true };
  });
}
