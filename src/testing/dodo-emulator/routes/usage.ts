import { invalid, notFound } from '../errors.js';
import type { Parts } from '../parts.js';
import type { Router } from '../router.js';
import { dateParam, paginate } from '../runtime.js';

/** Usage events and meters. */
export function registerUsageRoutes(router: Router, { events, meters }: Parts): void {
  router.add('POST', '/events/ingest', ({ body }) => {
    const fresh = events.ingest(body);
    meters.ingested(fresh);
    return { json: { ingested_count: fresh.length } };
  });

  router.add('GET', '/events', ({ query }) => {
    let eventName = query.get('event_name') ?? undefined;
    const meterId = query.get('meter_id');
    const meter = meterId === null ? undefined : meters.meter(meterId);
    if (meter && eventName !== undefined && eventName !== meter.event_name) {
      throw invalid(
        `event_name ${JSON.stringify(eventName)} does not match meter ${meter.id}'s ${JSON.stringify(meter.event_name)}.`,
      );
    }
    eventName = meter?.event_name ?? eventName;
    const list = events
      .list({
        customerId: query.get('customer_id') ?? undefined,
        eventName,
        start: dateParam(query, 'start'),
        end: dateParam(query, 'end'),
      })
      .filter((event) => !meter || meters.matches(meter, event))
      .reverse();
    return { json: paginate(list, query) };
  });

  router.add('GET', '/events/{event_id}', ({ params }) => {
    const event = events.get(params.event_id as string);
    if (!event) throw notFound('Event', params.event_id as string);
    return { json: event };
  });

  // A meter is linked to credits only on a usage-based product's price (`price.meters[]`).
  router.add('POST', '/meters', ({ body }) => ({ json: meters.create(body) }));
  router.add('GET', '/meters', ({ query }) => ({ json: paginate(meters.list(), query) }));
  router.add('GET', '/meters/{id}', ({ params }) => ({ json: meters.meter(params.id as string) }));
}
