// The status page: reads GET /billing/balance with the customer's API key and runs a $5 top-up
// through Dodo's checkout. The key comes from the URL fragment (#key=sk-…, never sent to the
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

const dollars = (amount) => `$${amount}`;
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);

function drawChart(byModel) {
  const svg = $('chart');
  const rowHeight = 28;
  const max = Math.max(1, ...byModel.map((row) => row.tokens));
  svg.setAttribute('height', String(Math.max(1, byModel.length) * rowHeight + 8));
  if (byModel.length === 0) {
    svg.innerHTML = '<text x="0" y="20">No usage yet this period.</text>';
    return;
  }
  svg.innerHTML = byModel
    .map((row, index) => {
      const y = index * rowHeight + 4;
      const width = Math.max(2, (row.tokens / max) * 40);
      return `<text x="0" y="${y + 17}">${escapeHtml(row.model)}</text>
<rect class="bar" x="25%" y="${y + 4}" width="${width}%" height="18" rx="3"></rect>
<text x="${25 + width + 1}%" y="${y + 17}">${row.tokens} tokens · ${escapeHtml(dollars(row.cost))}</text>`;
    })
    .join('');
}

async function refresh() {
  const status = await call('GET', '/billing/balance');
  $('who').textContent = `Customer ${status.customer_id}`;
  $('balance').textContent = dollars(status.available);
  $('reserved').textContent = dollars(status.reserved);
  $('tier').textContent = status.tier.name;
  const limits = status.tier.limits;
  $('limits').textContent =
    `${limits.rpm} requests/min` +
    (limits.tpm ? ` · ${limits.tpm} tokens/min` : '') +
    ` · lifetime spend ${dollars(status.tier.lifetime_spend)}` +
    (status.tier.next ? ` (next: ${status.tier.next.name} at ${dollars(status.tier.next.min_spend)})` : '');
  $('period-cost').textContent = dollars(status.period.cost);
  $('period-tokens').textContent =
    `${status.period.input_tokens} input + ${status.period.output_tokens} output tokens (${status.period.key})`;
  $('subscription').textContent = status.subscription
    ? `Subscribed to ${status.subscription.plan} (${status.subscription.seats} seat(s)) until ${status.subscription.period_end.slice(0, 10)}.`
    : '';
  drawChart(status.period.by_model);
  $('status').hidden = false;
  return status;
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
      $('notice').textContent = `Credits added: balance ${dollars(status.available)}.`;
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  $('notice').textContent = 'The payment went through; the credits have not arrived yet. Reload in a moment.';
}

async function main() {
  $('top-up').addEventListener('click', topUp);
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
