// The status page: reads GET /billing/balance and GET /billing/activity with the customer's API
// key and runs a $5 top-up through Dodo's checkout. The key comes from the URL fragment (#key=sk-…, never sent to the
// server) or the form, and is kept in sessionStorage for the trip through the checkout.
const KEY = 'llm-billing-api-key';
const BEFORE_TOP_UP = 'llm-billing-balance-before-top-up';
const $ = (id) => document.getElementById(id);

function apiKey() {
  const fragment = new URLSearchParams(location.hash.slice(1)).get('key');
  if (fragment) {
    sessionStorage.setItem(KEY, fragment);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(KEY);
}

async function call(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${apiKey()}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  if (!response.ok) throw new Error(json.error?.message ?? `HTTP ${response.status}`);
  return json;
}

// Money arrives twice: exact decimal strings (`available: "4.999955"`) and, for people, rounded
// to the cent by the server's money module (`display.available: "$5.00"`). The page shows the
// second and keeps the first in a tooltip: it never does arithmetic on money itself.
const exact = (amount) => `$${amount}`;
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);

function show(id, display, exactAmount) {
  $(id).textContent = display;
  $(id).title = exactAmount === undefined ? '' : `exactly ${exact(exactAmount)}`;
}

/** Spend per day: one bar per UTC day, heights in thousandths of the largest day (from the server). */
function drawChart(activity) {
  const days = activity.days;
  const width = 640;
  const top = 18;
  const base = 140;
  const slot = (width - 40) / Math.max(1, days.length);
  const largest = days.find((day) => day.bar === 1000);
  const bars = days.map((day, index) => {
    const x = 40 + index * slot;
    // A day with any spend shows at least a sliver, however small next to the largest.
    const height = day.bar > 0 ? Math.max(2, Math.round(((base - top) * day.bar) / 1000)) : 0;
    // Every other day is labelled, counting back from today (always labelled).
    const label = (days.length - 1 - index) % 2 === 0 ? day.date.slice(5) : '';
    const today = index === days.length - 1 ? ' today' : '';
    return `<g><title>${escapeHtml(`${day.date}: ${day.spend_display} (exactly $${day.spend})`)}</title>
<rect class="bar${today}" x="${x + 3}" y="${base - height}" width="${slot - 6}" height="${height}" rx="2"></rect>
<text x="${x + slot / 2}" y="${base + 16}" text-anchor="middle">${escapeHtml(label)}</text></g>`;
  });
  const scale = largest
    ? `<text x="0" y="${top + 4}">${escapeHtml(largest.spend_display)}</text><line class="axis" x1="36" x2="${width}" y1="${top}" y2="${top}" stroke-dasharray="3 3"></line>`
    : `<text x="${width / 2}" y="${base / 2 + 10}" text-anchor="middle">No spend in these ${days.length} days.</text>`;
  $('chart').innerHTML =
    `${scale}<text x="0" y="${base + 4}">$0</text><line class="axis" x1="36" x2="${width}" y1="${base}" y2="${base}"></line>${bars.join('')}`;
}

function listRequests(activity) {
  if (activity.recent.length === 0) {
    $('requests').innerHTML = '<tr><td colspan="5" class="muted">No requests yet.</td></tr>';
    return;
  }
  $('requests').innerHTML = activity.recent
    .map((request) => {
      const at = new Date(request.at);
      const today = at.toDateString() === new Date().toDateString();
      const time = today
        ? at.toLocaleTimeString()
        : at.toLocaleString(undefined, {
            month: 'short',
            day: 'numeric',
            hour: 'numeric',
            minute: '2-digit',
          });
      const model = request.calls > 1 ? `${request.model} (${request.calls} calls)` : request.model;
      const cost = request.estimated ? `${request.cost_display} (estimated)` : request.cost_display;
      return `<tr><td>${escapeHtml(time)}</td><td>${escapeHtml(model)}</td>
<td class="num">${request.input_tokens}</td><td class="num">${request.output_tokens}</td>
<td class="num" title="exactly $${escapeHtml(request.cost)}">${escapeHtml(cost)}</td></tr>`;
    })
    .join('');
}

function listKeys(keys) {
  $('keys').innerHTML = keys
    .map((key) => {
      const budget = key.budget;
      const name = key.current ? `${key.key_id} (this key)` : key.key_id;
      const cells = budget?.hard
        ? [budget.hard, budget.spent, budget.remaining].map(
            (amount) =>
              `<td class="num" title="exactly $${escapeHtml(amount)}">${escapeHtml(cents(amount))}</td>`,
          )
        : ['<td class="num muted">none</td>', '<td></td>', '<td></td>'];
      return `<tr><td>${escapeHtml(name)}</td>${cells.join('')}</tr>`;
    })
    .join('');
}

/** An exact decimal USD string to the cent, for people (rounded half up on its digits, no floats). */
function cents(amount) {
  const [whole, fraction = ''] = amount.split('.');
  const padded = `${fraction}000`;
  let value = BigInt(whole) * 100n + BigInt(padded.slice(0, 2));
  if (Number(padded[2]) >= 5) value += 1n;
  return `$${value / 100n}.${String(value % 100n).padStart(2, '0')}`;
}

function listAlerts(alerts) {
  $('alerts').innerHTML =
    alerts.length === 0
      ? '<li class="muted">No alerts yet.</li>'
      : alerts
          .map((alert) => {
            const when = new Date(alert.at).toLocaleTimeString();
            const what =
              alert.kind === 'balance'
                ? `Balance fell to ${cents(alert.balance)}, below ${cents(alert.threshold)}${alert.fractionOfLastTopUp ? ` (${alert.fractionOfLastTopUp} of the last top-up)` : ''}`
                : `Key ${alert.key} spent ${cents(alert.spent)}: ${alert.crossed === 'soft' ? 'its soft limit' : `${alert.crossed} % of its budget`}`;
            return `<li>${escapeHtml(when)} · ${escapeHtml(what)}</li>`;
          })
          .join('');
}

async function newKey() {
  const button = $('new-key');
  button.disabled = true;
  try {
    const created = await call('POST', '/billing/keys', { budget: '1.00' });
    $('key-notice').textContent = `New key (shown once): ${created.api_key}`;
    listKeys((await call('GET', '/billing/keys')).keys);
  } catch (error) {
    $('key-notice').textContent = `Could not create a key: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

async function refresh() {
  const [status, activity, keys, alerts] = await Promise.all([
    call('GET', '/billing/balance'),
    call('GET', '/billing/activity?days=14'),
    call('GET', '/billing/keys'),
    call('GET', '/billing/alerts'),
  ]);
  listKeys(keys.keys);
  listAlerts(alerts.alerts);
  const display = status.display;
  $('who').textContent = `Customer ${status.customer_id}`;
  show('balance', display.available, status.available);
  show('reserved', display.reserved, status.reserved);
  $('tier').textContent = status.tier.name;
  const limits = status.tier.limits;
  $('limits').textContent =
    `${limits.rpm} requests/min` +
    (limits.tpm ? ` · ${limits.tpm} tokens/min` : '') +
    ` · lifetime spend ${display.lifetime_spend}` +
    (status.tier.next ? ` (next: ${status.tier.next.name} at ${display.next_tier_min_spend})` : '');
  show('period-cost', display.period_cost, status.period.cost);
  $('period-tokens').textContent =
    `${status.period.input_tokens} input + ${status.period.output_tokens} output tokens (${status.period.key})`;
  $('period-models').innerHTML = status.period.by_model
    .map(
      (row) => `<div>${escapeHtml(row.model)}: ${row.tokens} tokens, ${escapeHtml(row.cost_display)}</div>`,
    )
    .join('');
  $('subscription').textContent = status.subscription
    ? `Subscribed to ${status.subscription.plan} (${status.subscription.seats} seat(s)) until ${status.subscription.period_end.slice(0, 10)}.`
    : '';
  drawChart(activity);
  listRequests(activity);
  await showAutoRecharge();
  $('coverage').textContent = `Figures: ${activity.coverage}. Days are UTC.`;
  $('status').hidden = false;
  return status;
}

/** The demo's auto-recharge: below $1.00, charge $5.00 on the saved card, at most $20.00 a month. */
const DEMO_RECHARGE = { threshold: '1.00', amount: '5.00', monthly_limit: '20.00' };

async function showAutoRecharge() {
  try {
    const { auto_recharge: setting } = await call('GET', '/billing/auto-recharge');
    $('recharge').textContent = !setting
      ? 'Off: requests are refused when the balance runs out.'
      : setting.disabled
        ? `Disabled after ${setting.failures} failed charges: turn it on again once the card is fixed.`
        : `Below ${setting.display.threshold}, ${setting.display.amount} is charged to your saved card ` +
          `(${setting.display.recharged} of ${setting.display.monthly_limit} this month` +
          `${setting.inFlight ? ', a recharge is in progress' : ''}).`;
    $('recharge-toggle').textContent = setting && !setting.disabled ? 'Turn off' : 'Turn on';
    $('recharge-toggle').hidden = false;
  } catch (error) {
    $('recharge').textContent = `Auto-recharge cannot be read: ${error.message}`;
  }
}

async function toggleAutoRecharge() {
  const button = $('recharge-toggle');
  button.disabled = true;
  try {
    if (button.textContent === 'Turn off') await call('DELETE', '/billing/auto-recharge');
    else await call('PUT', '/billing/auto-recharge', DEMO_RECHARGE);
    await showAutoRecharge();
  } catch (error) {
    $('recharge').textContent = `Auto-recharge could not be changed: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

async function topUp() {
  const button = $('top-up');
  button.disabled = true;
  $('notice').textContent = 'Opening the checkout…';
  try {
    sessionStorage.setItem(BEFORE_TOP_UP, (await refresh()).balance);
    const { checkout_url } = await call('POST', '/billing/top-up', { pack: 5 });
    location.assign(checkout_url);
  } catch (error) {
    $('notice').textContent = `Top-up failed: ${error.message}`;
    button.disabled = false;
  }
}

/** Back from the checkout: the credits arrive by webhook, so wait for the balance to change. */
async function awaitCredits() {
  const before = sessionStorage.getItem(BEFORE_TOP_UP);
  sessionStorage.removeItem(BEFORE_TOP_UP);
  history.replaceState(null, '', location.pathname);
  $('notice').textContent = 'Payment received; waiting for the credits…';
  for (let attempt = 0; attempt < 40; attempt++) {
    const status = await refresh();
    if (status.balance !== before) {
      $('notice').textContent = `Credits added: balance ${status.display.available}.`;
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  $('notice').textContent = 'The payment went through; the credits have not arrived yet. Reload in a moment.';
}

async function main() {
  $('top-up').addEventListener('click', topUp);
  $('recharge-toggle').addEventListener('click', toggleAutoRecharge);
  $('new-key').addEventListener('click', newKey);
  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $('key-input').value.trim());
    location.reload();
  });
  if (!apiKey()) {
    $('who').textContent = 'Enter an API key to see its balance.';
    $('key-form').hidden = false;
    return;
  }
  try {
    const params = new URLSearchParams(location.search);
    if (params.get('status') === 'succeeded') await awaitCredits();
    else await refresh();
  } catch (error) {
    $('who').textContent = `Could not load the status: ${error.message}`;
    $('key-form').hidden = false;
  }
}

main();
