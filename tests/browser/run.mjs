// Real-browser tests of footfall's tracker script, pixel and dashboard, and of its admin
// endpoints' refusal of other origins' pages: they start real footfall processes on temporary
// databases, drive Chromium through playwright-core, and assert what a user sees on the page
// and what the server counted afterwards.
//
// Run with: node tests/browser/run.mjs        (after scripts/browser-setup.sh and a cargo build)
// Environment: FOOTFALL_BIN     the footfall binary (default: the newer of target/release and
//                               target/debug)
//              CHROMIUM         the browser (default /usr/bin/chromium)
//              FOOTFALL_SCREENSHOT  where the dashboard screenshot (1280 px wide, whole page) goes
//                               (default docs/dashboard.png; the cargo wrapper sets a temp path)
// Prints one line per test and a last line "N passed, M failed"; exits 1 on any failure.

import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
// The newer of the release and debug builds, so a stale one is not tested by mistake.
const BIN =
  process.env.FOOTFALL_BIN ||
  ['target/release/footfall', 'target/debug/footfall']
    .map((p) => join(ROOT, p))
    .filter(existsSync)
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = process.env.FOOTFALL_SCREENSHOT || join(ROOT, 'docs/dashboard.png');
const HOUR = 3600_000;
// A name the browser resolves to 127.0.0.1 (see launchBrowser), as an attacker's DNS would.
const REBOUND_HOST = 'rebound.test';
// A hung browser or server must fail the run, not stall CI.
const WATCHDOG_MS = 180_000;

// ---------------------------------------------------------------- tiny runner

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

const cleanups = [];
const onCleanup = (fn) => cleanups.push(fn);

async function runAll() {
  let passed = 0;
  let failed = 0;
  for (const { name, fn } of tests) {
    const started = Date.now();
    try {
      await fn();
      passed++;
      console.log(`ok   ${name} (${Date.now() - started} ms)`);
    } catch (err) {
      failed++;
      console.log(`FAIL ${name}\n${indent(err && err.stack ? err.stack : String(err))}`);
      for (const server of servers) console.log(`  footfall log (${server.base}):\n${indent(server.log().slice(-3000))}`);
    }
  }
  return { passed, failed };
}

const indent = (text) => String(text).replace(/^/gm, '    ');

// ---------------------------------------------------------------- helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value; throws with `what` after `timeoutMs`. */
async function eventually(what, check, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
    await sleep(100);
  }
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

const servers = [];

/**
 * Starts `footfall serve` on `db` and waits until /health answers. The free port is probed
 * first, but the Rust tests bind ports in parallel: a port taken in between is tried again.
 */
async function startFootfall(db, args = []) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startFootfallOnce(db, args);
    } catch (err) {
      if (attempt >= 5 || !String(err).includes('Address already in use')) throw err;
    }
  }
}

async function startFootfallOnce(db, args) {
  const port = await freePort();
  const child = spawn(BIN, ['serve', '--bind', `127.0.0.1:${port}`, '--db', db, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  const exited = new Promise((r) => child.once('exit', r));
  const server = { base: `http://127.0.0.1:${port}`, child, log: () => log };
  onCleanup(async () => {
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(5000)]);
  });
  const deadline = Date.now() + 20_000;
  for (;;) {
    // An exit (a port taken meanwhile) ends the wait at once, so the caller can try another.
    if (child.exitCode !== null) throw new Error(`footfall exited with ${child.exitCode}: ${log}`);
    try {
      if ((await fetch(`${server.base}/health`)).ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`footfall on port ${port} did not answer in 20 s: ${log}`);
    await sleep(100);
  }
  servers.push(server);
  return server;
}

async function getJson(url) {
  const res = await fetch(url);
  assert.equal(res.status, 200, `GET ${url}: ${res.status} ${await res.clone().text()}`);
  return res.json();
}

/** `/stats/{url}` total of one page, asked the way API.md §2 recommends (percent-encoded). */
async function pageTotal(base, url) {
  return (await getJson(`${base}/stats/${encodeURIComponent(url)}`)).total_visits;
}

function waitForVisits(base, url, expected) {
  return eventually(`${expected} visit(s) of ${url}`, async () => (await pageTotal(base, url)) === expected);
}

const isoSeconds = (ms) => new Date(ms).toISOString().slice(0, 19);

// ---------------------------------------------------------------- fixture

const PAGES = [
  'https://shop.example/',
  'https://shop.example/products',
  'https://shop.example/cart',
  'https://blog.example.org/post-1?utm_source=newsletter&utm_medium=email&utm_campaign=launch',
  'https://www.example.com/',
];
// The sites of PAGES as the server names them (host without www.), in the selector's order.
const SITES = ['blog.example.org', 'example.com', 'shop.example'];
const AGENTS = [
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Gecko/20100101 Firefox/127.0',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)',
];
// API.md §12's device type of each agent.
const AGENT_TYPES = ['desktop', 'desktop', 'mobile', 'bot'];
// Referrers by visit (i % 3), with the host the server keeps: a link from another site, one
// whose www. is dropped, and a link from the page's own site, which counts as direct.
const REFERRERS = [
  { referrer: () => 'https://news.ycombinator.com/item?id=1', host: 'news.ycombinator.com' },
  { referrer: () => 'https://www.google.com/search?q=x', host: 'google.com' },
  { referrer: (url) => new URL('/elsewhere', url).href, host: '(direct)' },
];
const IPS = 8;

/**
 * 48 visits spread over the last 23 hours (more in recent hours, every page, IP, agent and
 * referrer used) and 12 more of the first page 3 to 6 days ago without a referrer, which only
 * the 7 d and 30 d views include: the first page is then the top page (10 + 12 visits).
 * Each visit keeps its expected dimensions (`site`, `ref`, `type`) for the assertions.
 */
function fixture(now) {
  const visits = [];
  for (let i = 0; i < 48; i++) {
    const hoursAgo = Math.max(0, 22 - Math.floor(Math.sqrt(i * 10.5)));
    const url = PAGES[i % PAGES.length];
    const source = REFERRERS[i % REFERRERS.length];
    visits.push({
      url,
      ip: `203.0.113.${(i % IPS) + 1}`,
      user_agent: AGENTS[i % AGENTS.length],
      referrer: source.referrer(url),
      timestamp: isoSeconds(now - hoursAgo * HOUR - (5 + (i % 50)) * 60_000),
      expect: { ref: source.host, type: AGENT_TYPES[i % AGENTS.length] },
    });
  }
  for (let i = 0; i < 12; i++) {
    visits.push({
      url: PAGES[0],
      ip: `203.0.113.${(i % IPS) + 1}`,
      user_agent: AGENTS[0],
      timestamp: isoSeconds(now - (72 + i * 6) * HOUR),
      expect: { ref: '(direct)', type: AGENT_TYPES[0] },
    });
  }
  for (const v of visits) {
    const host = new URL(v.url).hostname;
    v.expect.site = host.replace(/^www\./, '');
    v.expect.at = Date.parse(`${v.timestamp}Z`);
    v.expect.utm = Object.fromEntries(new URL(v.url).searchParams);
  }
  return { visits, now, lastDay: 48, total: 60, uniqueIps: IPS, pages: PAGES.length, sites: SITES.length };
}

/** The fixture's visits of the last `hours` (of `site`, or of all sites), as the API counts them. */
function expected(hours, site) {
  const all = fx.visits.filter((v) => !site || v.expect.site === site);
  // API.md §12's window: the last `hours` whole hours, now's included.
  const from = (Math.floor(Date.now() / HOUR) - hours + 1) * HOUR;
  const inWindow = all.filter((v) => v.expect.at >= from);
  const tally = (key) => {
    const out = {};
    for (const v of inWindow) {
      const name = key(v);
      if (name != null) out[name] = (out[name] || 0) + 1;
    }
    return out;
  };
  return {
    total: all.length,
    inWindow: inWindow.length,
    uniqueIps: new Set(all.map((v) => v.ip)).size,
    referrers: tally((v) => v.expect.ref),
    utm_source: tally((v) => v.expect.utm.utm_source),
    utm_campaign: tally((v) => v.expect.utm.utm_campaign),
    device_types: { desktop: 0, mobile: 0, tablet: 0, bot: 0, ...tally((v) => v.expect.type) },
  };
}

// ---------------------------------------------------------------- browser

let context;

async function launchBrowser() {
  const profile = mkdtempSync(join(tmpdir(), 'footfall-chromium-'));
  onCleanup(() => rmSync(profile, { recursive: true, force: true }));
  // A persistent context on a fresh temporary profile: nothing from an earlier run leaks in.
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      // For the DNS-rebinding test: a name that resolves to this machine, as a rebound one does.
      `--host-resolver-rules=MAP ${REBOUND_HOST} 127.0.0.1`,
    ],
  });
  onCleanup(() => context.close());
}

/** A new tab that records console errors, page errors and every request it makes. */
async function openPage() {
  const page = await context.newPage();
  const problems = [];
  const requests = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('request', (req) => requests.push({ method: req.method(), url: req.url(), headers: req.headers() }));
  return { page, problems, requests };
}

async function waitForDashboard(page) {
  await page.waitForSelector('body[data-loaded="true"]', { timeout: 10_000 });
}

const figure = (page, id) => page.$eval(id, (node) => Number(node.getAttribute('data-value')));

/** The chart's bars as numbers: how many, and the visits they add up to. */
const bars = (page) =>
  page.$$eval('#hourly-chart svg rect.bar', (rects) => ({
    count: rects.length,
    sum: rects.reduce((total, rect) => total + Number(rect.getAttribute('data-count')), 0),
    drawn: rects.filter((rect) => Number(rect.getAttribute('height')) > 0).length,
  }));

/** A ranking list (`ol` of the dashboard) as {label: count}, checking it is highest first. */
async function ranking(page, id) {
  const rows = await page.$$eval(`#${id} li`, (items) =>
    items.map((li) => [li.querySelector('.label').textContent, Number(li.querySelector('.count').getAttribute('data-value'))]),
  );
  return Object.fromEntries(rows);
}

/** The lists of the sources and devices panels, as the page shows them. */
async function panels(page) {
  const out = {};
  for (const id of ['referrers', 'utm-source', 'utm-medium', 'utm-campaign', 'browsers', 'os', 'device-types']) {
    out[id] = await ranking(page, id);
  }
  return out;
}

/** The same lists as the API answers them for `query` (e.g. `?hours=24&site=x&limit=10`). */
async function apiPanels(base, query, headers = {}) {
  const get = async (path) => {
    const res = await fetch(`${base}/${path}${query}`, { headers });
    assert.equal(res.status, 200, `GET /${path}${query}: ${res.status}`);
    return res.json();
  };
  const sources = await get('sources');
  const devices = await get('devices');
  return {
    referrers: sources.referrers,
    'utm-source': sources.utm_source,
    'utm-medium': sources.utm_medium,
    'utm-campaign': sources.utm_campaign,
    browsers: devices.browsers,
    os: devices.os,
    'device-types': devices.device_types,
  };
}

/** The dashboard's calls for figures (not its own files), as URLs. */
const DATA_PATHS = ['/stats', '/hourly', '/sources', '/devices', '/domains/day'];
const dataCalls = (requests, base) =>
  requests.filter((r) => r.url.startsWith(base)).map((r) => ({ ...r, parsed: new URL(r.url) }))
    .filter((r) => DATA_PATHS.includes(r.parsed.pathname));

async function selectRange(page, hours, expectedBars) {
  await page.click(`.range button[data-hours="${hours}"]`);
  await eventually(`${expectedBars}+ bars for ${hours} h`, async () => (await bars(page)).count >= expectedBars);
}

async function assertNoHorizontalScroll(page) {
  const { scroll, client } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
  }));
  assert.ok(scroll <= client, `page is ${scroll}px wide in a ${client}px viewport`);
}

// ---------------------------------------------------------------- a site on another origin

/** A tiny site on its own port: `/<name>.html` pages built by `pages[name](footfallBase)`. */
async function startSite(footfallBase, pages) {
  const server = createServer((req, res) => {
    const name = new URL(req.url, 'http://x').pathname.replace(/^\/|\.html$/g, '');
    const build = pages[name] || pages.spa;
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(build(footfallBase));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  onCleanup(() => new Promise((r) => server.close(r)));
  return `http://127.0.0.1:${server.address().port}`;
}

const html = (body) => `<!doctype html><html><head><meta charset="utf-8"><title>test page</title></head><body>${body}</body></html>`;
const tag = (base, attrs = 'data-allow-local data-allow-automation') =>
  `<script defer src="${base}/tracker.js" ${attrs}></script>`;

// Keeps a copy of each beacon's body in window.sent: playwright does not show a Blob body.
const SPY = `<script>window.sent = []; var beacon = navigator.sendBeacon.bind(navigator);
navigator.sendBeacon = function (u, d) { d.text().then(function (t) { window.sent.push(JSON.parse(t)); }); return beacon(u, d); };</script>`;

const SITE_PAGES = {
  page: (b) => html(`<h1>page</h1>${SPY}${tag(b)}`),
  spa: (b) => html(`<h1>spa</h1>${SPY}${tag(b)}`),
  order: (b) => html(`<h1>thanks</h1>${tag(b, 'data-event="order" data-allow-local data-allow-automation')}`),
  // Without data-allow-automation: navigator.webdriver is set under playwright, so nothing is sent.
  noauto: (b) => html(`<h1>no automation</h1>${tag(b, 'data-allow-local')}`),
  // Without data-allow-local: opened as http://localhost:..., so nothing is sent.
  nolocal: (b) => html(`<h1>no local</h1>${tag(b, 'data-allow-automation')}`),
  marker: (b) => html(`<h1>marker</h1>${tag(b)}`),
  // sendBeacon missing (older or locked-down browsers): the tracker falls back to fetch.
  nobeacon: (b) =>
    html(`<script>Object.defineProperty(Navigator.prototype, 'sendBeacon', { value: undefined });</script>${tag(b)}`),
  pixel: (b) =>
    html(`<img id="px" alt="" src="${b}/pixel.gif?url=${encodeURIComponent('https://pixel.example/noscript')}&event=signup">`),
  // No url=: the pixel falls back to the Referer, which Chromium cuts to the origin cross-site.
  referer: (b) => html(`<img id="px" alt="" src="${b}/pixel.gif">`),
  // A page of another origin, for the admin tests: it scripts its attacks through evaluate().
  blank: () => html('<h1>another site</h1>'),
};

// ---------------------------------------------------------------- the tests

let dash; // footfall with the fixture
let dashDb; // its database, which a second footfall with --analytics-token also serves
let fx;
let site; // origin of the test site
let trackerServer; // footfall the test site reports to

test('the dashboard shows the totals, the pages and an hourly chart of the imported visits', async () => {
  const { page, problems, requests } = await openPage();
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(`${dash.base}/dashboard`);
  await waitForDashboard(page);
  const day1 = expected(24);

  assert.equal(await figure(page, '#total-visits'), fx.total);
  assert.equal(await page.textContent('#total-visits'), String(fx.total));
  assert.equal(await figure(page, '#unique-visitors'), fx.uniqueIps);
  assert.equal(await figure(page, '#window-visits'), fx.lastDay);
  assert.equal(await figure(page, '#bot-visits'), day1.device_types.bot);
  assert.equal(await page.locator('#top-pages li').count(), fx.pages);
  assert.equal(await page.locator('#top-sites li').count(), fx.sites);
  assert.equal(await page.locator('#recent-visits li').count(), 10);
  assert.ok(await page.locator('#empty').isHidden(), 'the "No visits yet" notice is hidden');

  // The sources and devices panels show the fixture's referrers, campaign and device types,
  // and exactly what /sources and /devices answer.
  const shown = await panels(page);
  assert.deepEqual(shown.referrers, day1.referrers);
  assert.deepEqual(shown['utm-source'], day1.utm_source);
  assert.deepEqual(shown['utm-campaign'], day1.utm_campaign);
  assert.deepEqual(shown['device-types'], day1.device_types);
  for (const browser of ['Chrome', 'Firefox', 'Safari']) {
    assert.ok(shown.browsers[browser] > 0, `${browser} among the browsers: ${JSON.stringify(shown.browsers)}`);
  }
  for (const os of ['Linux', 'macOS', 'iOS']) {
    assert.ok(shown.os[os] > 0, `${os} among the OS: ${JSON.stringify(shown.os)}`);
  }
  assert.deepEqual(shown, await apiPanels(dash.base, '?hours=24&limit=10'));
  // The chart comes from /hourly: the 18 MB /summary of a big database is not loaded.
  assert.deepEqual(requests.filter((r) => new URL(r.url).pathname === '/summary').map((r) => r.url), []);

  const day = await bars(page);
  assert.equal(day.count, 24, 'one bar per hour of the last 24, now\'s included');
  assert.equal(day.sum, fx.lastDay, 'the 24 h bars add up to the visits of the last day');
  assert.ok(day.drawn > 3, `${day.drawn} bars have a height`);

  // The top page is the one with the most visits, shown as a link with its count.
  const first = await page.$eval('#top-pages li', (li) => ({
    label: li.querySelector('.label').textContent,
    count: Number(li.querySelector('.count').getAttribute('data-value')),
  }));
  assert.equal(first.label, PAGES[0]);
  assert.equal(first.count, 10 + 12);

  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  await selectRange(page, 168, 168);
  const week = await bars(page);
  assert.equal(week.count, 168);
  assert.equal(week.sum, fx.total);
  assert.equal(await figure(page, '#window-visits'), fx.total);
  assert.deepEqual(await ranking(page, 'referrers'), expected(168).referrers);

  await selectRange(page, 720, 720);
  assert.equal((await bars(page)).sum, fx.total);

  const foreign = requests.filter((r) => !r.url.startsWith(dash.base) && !r.url.startsWith('data:'));
  assert.deepEqual(foreign.map((r) => r.url), [], 'the dashboard requests nothing from another origin');
  assert.deepEqual(problems, []);
  await page.close();
});

test('the site selector lists the sites and filters every panel; its requests carry &site=', async () => {
  const { page, problems, requests } = await openPage();
  await page.goto(`${dash.base}/dashboard`);
  await waitForDashboard(page);
  assert.deepEqual(await page.$$eval('#site option', (options) => options.map((o) => o.value)), ['', ...SITES]);

  const shop = 'shop.example';
  const want = expected(24, shop);
  const before = requests.length;
  await page.selectOption('#site', shop);
  await eventually(`the figures of ${shop}`, async () => (await figure(page, '#total-visits')) === want.total);
  assert.equal(await figure(page, '#unique-visitors'), want.uniqueIps);
  assert.equal(await figure(page, '#window-visits'), want.inWindow);
  assert.equal((await bars(page)).sum, want.inWindow);
  const calls = dataCalls(requests.slice(before), dash.base);
  for (const path of ['/hourly', '/sources', '/devices']) {
    const call = calls.find((c) => c.parsed.pathname === path);
    assert.ok(call, `a ${path} call after choosing ${shop}`);
    assert.equal(call.parsed.searchParams.get('site'), shop, call.url);
    assert.equal(call.parsed.searchParams.get('hours'), '24', call.url);
  }
  const shown = await panels(page);
  assert.deepEqual(shown.referrers, want.referrers);
  assert.deepEqual(shown['device-types'], want.device_types);
  assert.deepEqual(shown['utm-campaign'], {}, 'the campaign is on another site');
  assert.deepEqual(shown, await apiPanels(dash.base, `?hours=24&site=${shop}&limit=10`));
  const pages = Object.keys(await ranking(page, 'top-pages'));
  assert.deepEqual(pages.sort(), PAGES.filter((url) => url.startsWith(`https://${shop}/`)).sort());
  const recent = await page.$$eval('#recent-visits li .url', (links) => links.map((a) => a.textContent));
  assert.ok(recent.length > 0 && recent.every((url) => url.startsWith(`https://${shop}/`)), recent.join(' '));

  // The 7 d view keeps the site; the view lives in the address, so a reload keeps both.
  await selectRange(page, 168, 168);
  assert.equal(await figure(page, '#window-visits'), expected(168, shop).inWindow);
  assert.equal(new URL(page.url()).hash, `#hours=168&site=${shop}`);
  await page.reload();
  await waitForDashboard(page);
  assert.equal(await page.inputValue('#site'), shop);
  assert.equal(await figure(page, '#window-visits'), expected(168, shop).inWindow);

  // www.example.com is the site example.com.
  await page.selectOption('#site', 'example.com');
  await eventually('the figures of example.com', async () =>
    (await figure(page, '#total-visits')) === expected(168, 'example.com').total);

  // Back to all sites: no site parameter at all.
  const again = requests.length;
  await page.selectOption('#site', '');
  await eventually('the figures of all sites', async () => (await figure(page, '#total-visits')) === fx.total);
  const unfiltered = dataCalls(requests.slice(again), dash.base);
  assert.ok(unfiltered.length >= 3);
  assert.ok(unfiltered.every((c) => !c.parsed.searchParams.has('site')), unfiltered.map((c) => c.url).join(' '));
  assert.deepEqual(problems, []);
  await page.close();
});

const ANALYTICS_TOKEN = 'dashboard-test-token';

test('with --analytics-token the dashboard asks for the token, keeps it, sends it, and forgets it', async () => {
  const locked = await startFootfall(dashDb, ['--analytics-token', ANALYTICS_TOKEN]);
  // The server does refuse an anonymous read: the prompt below is the answer to a real 401.
  assert.equal((await fetch(`${locked.base}/hourly`)).status, 401);
  const { page, problems, requests } = await openPage();
  await page.goto(`${locked.base}/dashboard`);
  await page.waitForSelector('#auth:not([hidden])');
  assert.ok(await page.locator('#figures').isHidden(), 'no figures without the token');
  assert.ok(await page.locator('#token-error').isHidden(), 'nothing refused yet');
  assert.ok(await page.locator('#forget-token').isHidden(), 'no token to forget');
  assert.ok(dataCalls(requests, locked.base).every((r) => !r.headers.authorization));

  // A wrong token is refused, and the prompt says so.
  await page.fill('#token', 'not-the-token');
  await page.click('#token-form button[type="submit"]');
  await page.waitForSelector('#token-error:not([hidden])');
  assert.ok(await page.locator('#auth').isVisible());

  const before = requests.length;
  await page.fill('#token', ANALYTICS_TOKEN);
  await page.press('#token', 'Enter');
  await waitForDashboard(page);
  assert.ok(await page.locator('#auth').isHidden());
  assert.equal(await figure(page, '#total-visits'), fx.total);
  assert.deepEqual(await ranking(page, 'referrers'), expected(24).referrers);
  const sent = dataCalls(requests.slice(before), locked.base);
  assert.deepEqual([...new Set(sent.map((c) => c.parsed.pathname))].sort(), [...DATA_PATHS].sort());
  for (const call of sent) assert.equal(call.headers.authorization, `Bearer ${ANALYTICS_TOKEN}`, call.url);

  // Kept in this browser: a reload shows the figures without asking, the site filter too.
  await page.reload();
  await waitForDashboard(page);
  assert.ok(await page.locator('#auth').isHidden());
  assert.equal(await page.evaluate(() => localStorage.getItem('footfall.analyticsToken')), ANALYTICS_TOKEN);
  const beforeSite = requests.length;
  await page.selectOption('#site', 'blog.example.org');
  await eventually('the figures of blog.example.org', async () =>
    (await figure(page, '#total-visits')) === expected(24, 'blog.example.org').total);
  for (const call of dataCalls(requests.slice(beforeSite), locked.base)) {
    assert.equal(call.headers.authorization, `Bearer ${ANALYTICS_TOKEN}`, call.url);
  }

  // Forgotten: gone from storage, and the next load asks again.
  await page.click('#forget-token');
  await page.waitForSelector('#auth:not([hidden])');
  assert.equal(await page.evaluate(() => localStorage.getItem('footfall.analyticsToken')), null);
  assert.ok(await page.locator('#token-error').isHidden());
  assert.ok(await page.locator('#forget-token').isHidden());
  await page.reload();
  await page.waitForSelector('#auth:not([hidden])');
  // Chromium logs each 401 answer as a console error; anything else is a problem.
  assert.deepEqual(problems.filter((p) => !/status of 401/.test(p)), []);
  await page.close();
});

test('the dashboard fits a 390 px phone screen without horizontal scrolling', async () => {
  const { page, problems } = await openPage();
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${dash.base}/dashboard`);
  await waitForDashboard(page);
  await assertNoHorizontalScroll(page);
  await selectRange(page, 720, 720);
  await assertNoHorizontalScroll(page);
  const chart = await page.$eval('#hourly-chart svg', (svg) => svg.getBoundingClientRect().right);
  assert.ok(chart <= 390, `the chart ends at ${chart}px`);
  assert.deepEqual(problems, []);
  await page.close();
});

test('on an empty database the dashboard says "No visits yet" and shows recorded markup as text', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'footfall-empty-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const empty = await startFootfall(join(dir, 'visits.db'));
  const { page, problems } = await openPage();
  await page.goto(`${empty.base}/dashboard`);
  await waitForDashboard(page);
  assert.equal(await figure(page, '#total-visits'), 0);
  assert.ok(await page.locator('#empty').isVisible());
  assert.match(await page.textContent('#empty'), /No visits yet/);
  assert.equal(await page.locator('#top-pages li').count(), 0);
  assert.ok(await page.locator('#top-pages + .none').isVisible());
  assert.match(await page.textContent('#hourly-chart'), /No visits in this period/);

  // Anyone can record any URL, user agent and campaign: the page must show them, never run them.
  const evilUrl = 'https://evil.example/<img src=x onerror="window.pwned=1">?utm_campaign=<script>window.pwned=3</script>';
  const res = await fetch(`${empty.base}/visit`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'User-Agent': '<script>window.pwned=2</script>' },
    body: JSON.stringify({ url: evilUrl }),
  });
  assert.equal(res.status, 200, await res.text());
  await page.reload();
  await waitForDashboard(page);
  assert.equal(await figure(page, '#total-visits'), 1);
  assert.equal(await page.textContent('#top-pages li .label'), evilUrl);
  const campaigns = Object.keys(await ranking(page, 'utm-campaign'));
  assert.equal(campaigns.length, 1);
  assert.match(campaigns[0], /<script>window\.pwned=3<\/script>|%3Cscript%3E/i);
  assert.equal(await page.locator('main img, main script').count(), 0);
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.ok(await page.locator('#empty').isHidden());
  assert.deepEqual(problems, []);
  await page.close();
});

test('the tracker on another origin records the page with a preflight-free text/plain POST', async () => {
  const { page, problems, requests } = await openPage();
  // Arriving from a link on another site: document.referrer is that page (cut to its origin
  // by Chromium's default referrer policy), and the tracker sends it.
  await page.goto(`${site}/page.html`, { referer: 'https://news.example.net/item?id=7' });
  await waitForVisits(trackerServer.base, `${site}/page.html`, 1);
  const visit = await getJson(`${trackerServer.base}/stats/${encodeURIComponent(`${site}/page.html`)}`);
  assert.equal(visit.recent_visits[0].user_agent, await page.evaluate(() => navigator.userAgent));
  const toVisit = requests.filter((r) => r.url === `${trackerServer.base}/visit`);
  assert.deepEqual(toVisit.map((r) => r.method), ['POST'], 'one POST /visit and no OPTIONS preflight');
  assert.match(toVisit[0].headers['content-type'], /^text\/plain/);
  const [body] = await eventually('the beacon copied', () => page.evaluate(() => window.sent[0] && window.sent));
  assert.equal(body.url, `${site}/page.html`);
  assert.equal(body.referrer, await page.evaluate(() => document.referrer));
  assert.match(body.referrer, /^https:\/\/news\.example\.net\//);
  // The server kept the referrer's host (the only visit so far with a referrer). Two hours: the
  // window is whole hours up to now's, and the visit may have been in the one before.
  const sources = await getJson(`${trackerServer.base}/sources?hours=2`);
  assert.equal(sources.referrers['news.example.net'], 1, JSON.stringify(sources));
  assert.deepEqual(problems, []);
  await page.close();
});

test('the tracker records SPA navigation: pushState and the back button', async () => {
  const { page, problems } = await openPage();
  const start = `${site}/spa.html`;
  await page.goto(start);
  await waitForVisits(trackerServer.base, start, 1);
  await page.evaluate(() => history.pushState({}, '', '/spa/next?tab=2'));
  await waitForVisits(trackerServer.base, `${site}/spa/next?tab=2`, 1);
  // The first view came from nowhere; the SPA view's referrer is the view before it.
  // The spy reads each Blob asynchronously: the server may count a visit before it is copied.
  const sent = await eventually('both beacons copied', async () => {
    const copies = await page.evaluate(() => window.sent);
    return copies.length === 2 && copies;
  });
  assert.deepEqual(sent.map((v) => [v.url, v.referrer]), [[start, ''], [`${site}/spa/next?tab=2`, start]]);
  // A fragment change is the same page (the server drops #fragments): not a new visit.
  await page.evaluate(() => history.pushState({}, '', '/spa/next?tab=2#details'));
  await page.goBack(); // back to /spa/next?tab=2 (same page: nothing)
  await page.goBack(); // back to spa.html: popstate, a second visit
  await waitForVisits(trackerServer.base, start, 2);
  assert.equal(await pageTotal(trackerServer.base, `${site}/spa/next?tab=2`), 1);
  assert.deepEqual(problems, []);
  await page.close();
});

test('data-event names the event: it counts in /breakdown/all/order/<year>', async () => {
  const { page, problems } = await openPage();
  const url = `${site}/order.html`;
  await page.goto(url);
  await waitForVisits(trackerServer.base, url, 1);
  const year = new Date().getUTCFullYear();
  const breakdown = await getJson(`${trackerServer.base}/breakdown/all/order/${year}`);
  const orders = Object.values(breakdown.data).reduce((a, b) => a + b, 0);
  assert.equal(orders, 1);
  assert.deepEqual(problems, []);
  await page.close();
});

test('without sendBeacon the tracker falls back to fetch with keepalive', async () => {
  const { page, problems } = await openPage();
  const url = `${site}/nobeacon.html`;
  await page.goto(url);
  await waitForVisits(trackerServer.base, url, 1);
  assert.deepEqual(problems, []);
  await page.close();
});

test('the tracker skips automated browsers and localhost pages unless their data attribute allows them', async () => {
  const { page } = await openPage();
  const localOrigin = site.replace('127.0.0.1', 'localhost');
  await page.goto(`${site}/noauto.html`);
  await page.goto(`${localOrigin}/nolocal.html`);
  // A page that is allowed, opened after both: once it is counted, the others had their turn.
  await page.goto(`${site}/marker.html`);
  await waitForVisits(trackerServer.base, `${site}/marker.html`, 1);
  await sleep(300);
  assert.equal(await pageTotal(trackerServer.base, `${site}/noauto.html`), 0);
  assert.equal(await pageTotal(trackerServer.base, `${localOrigin}/nolocal.html`), 0);
  await page.close();
});

test('the pixel loads as a 1×1 image and records its url and event, or the Referer', async () => {
  const { page, problems } = await openPage();
  await page.goto(`${site}/pixel.html`);
  const size = await page.$eval('#px', (img) =>
    img.decode().then(() => [img.naturalWidth, img.naturalHeight]),
  );
  assert.deepEqual(size, [1, 1]);
  assert.equal(await pageTotal(trackerServer.base, 'https://pixel.example/noscript'), 1);
  const year = new Date().getUTCFullYear();
  const signups = await getJson(`${trackerServer.base}/breakdown/pixel.example/signup/${year}`);
  assert.equal(Object.values(signups.data).reduce((a, b) => a + b, 0), 1);

  await page.goto(`${site}/referer.html`);
  await page.$eval('#px', (img) => img.decode());
  // Cross-origin, Chromium sends only the origin as Referer (strict-origin-when-cross-origin).
  await waitForVisits(trackerServer.base, `${site}/`, 1);
  assert.deepEqual(problems, []);
  await page.close();
});

// ---------------------------------------------------------------- admin endpoints (issue 26)

const VICTIM_IP = '198.51.100.77';

/** footfall without an admin token, holding 3 visits ten days old (a cleanup would take them). */
async function startVictim() {
  const dir = mkdtempSync(join(tmpdir(), 'footfall-victim-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const at = isoSeconds(Date.now() - 240 * HOUR);
  const visits = [0, 1, 2].map((i) => ({ url: `https://shop.example/${i}`, ip: VICTIM_IP, user_agent: 'Mozilla/5.0', timestamp: at }));
  const jsonl = join(dir, 'old.jsonl');
  writeFileSync(jsonl, visits.map((v) => JSON.stringify(v)).join('\n') + '\n');
  const db = join(dir, 'visits.db');
  execFileSync(BIN, ['import', jsonl, '--db', db], { stdio: 'pipe' });
  return startFootfall(db);
}

/** The export as a local script gets it (no Origin, no Sec-Fetch-Site): one line per visit. */
async function exported(base) {
  const res = await fetch(`${base}/all-visits?format=jsonl`);
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.text()).split('\n').filter(Boolean).map((line) => JSON.parse(line));
}

/** Waits for footfall's log line of `method path` answered `status` (lines are written off-thread). */
const logged = (server, method, path, status) =>
  eventually(`a log line of ${method} ${path} ${status}`, async () =>
    server.log().split('\n').some((l) => l.includes(`method=${method}`) && l.includes(`path=${path}`) && l.includes(`status=${status}`)),
  );

test('a page of another origin can neither read the export nor delete or import visits', async () => {
  const victim = await startVictim();
  const { page } = await openPage();
  await page.goto(`${site}/blank.html`);
  const record = JSON.stringify({ url: 'https://evil.example/', ip: '203.0.113.66', user_agent: 'x', timestamp: isoSeconds(Date.now()) });
  const attempts = await page.evaluate(
    async ({ base, record }) => {
      const attempt = async (run) => {
        try {
          return await run();
        } catch (err) {
          return `blocked: ${err.name}`;
        }
      };
      return {
        read: await attempt(async () => (await fetch(`${base}/all-visits?format=jsonl`)).text()),
        // no-cors: the request is sent, its answer is opaque (nothing readable).
        opaque: await attempt(async () => {
          const res = await fetch(`${base}/all-visits?format=jsonl`, { mode: 'no-cors' });
          return `${res.type} ${res.status} ${(await res.text()).length}`;
        }),
        // DELETE needs a preflight, which is refused: the DELETE is never sent.
        cleanup: await attempt(async () => (await fetch(`${base}/cleanup?days=1`, { method: 'DELETE' })).status),
        // A text/plain POST needs no preflight: it is sent, and the server must refuse it.
        import: await attempt(async () =>
          (await fetch(`${base}/import`, { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' }, body: record })).type,
        ),
      };
    },
    { base: victim.base, record },
  );
  assert.deepEqual(attempts, { read: 'blocked: TypeError', opaque: 'opaque 0 0', cleanup: 'blocked: TypeError', import: 'opaque' });
  // The requests that reached footfall were refused there, not just hidden by the browser.
  await logged(victim, 'GET', '/all-visits', 403);
  await logged(victim, 'OPTIONS', '/cleanup', 405);
  await logged(victim, 'POST', '/import', 403);
  assert.ok(!/method=DELETE/.test(victim.log()), 'no DELETE reached footfall');
  const left = await exported(victim.base);
  assert.equal(left.length, 3, 'nothing deleted, nothing imported');
  assert.ok(left.every((v) => v.ip === VICTIM_IP));
  await page.close();
});

test('a page whose name is rebound to 127.0.0.1 can neither read the export nor delete visits', async () => {
  const victim = await startVictim();
  const { page } = await openPage();
  // The attacker's name now resolves to footfall, so its page's requests are same-origin and
  // reach footfall, with that name as Host. The script runs in a document of that origin (here
  // footfall's own /health: a page fulfilled by the test itself counts as a public one, which
  // Chromium's local-network checks would stop before footfall sees anything).
  const origin = `http://${REBOUND_HOST}:${new URL(victim.base).port}`;
  await page.goto(`${origin}/health`);
  const attempts = await page.evaluate(async () => {
    const answer = async (res) => {
      const text = await res.text();
      try {
        return [res.status, JSON.parse(text).detail];
      } catch {
        return [res.status, text.slice(0, 200)];
      }
    };
    return {
      // Same-origin now: the page reaches footfall and can read its answers.
      health: (await fetch('/health')).status,
      read: await answer(await fetch('/all-visits?format=jsonl')),
      cleanup: await answer(await fetch('/cleanup?days=1', { method: 'DELETE' })),
    };
  });
  assert.equal(attempts.health, 200, 'the rebound page reaches footfall');
  for (const [status, detail] of [attempts.read, attempts.cleanup]) {
    assert.equal(status, 403);
    assert.match(detail, /localhost, 127\.0\.0\.1 or \[::1\]/);
  }
  const left = await exported(victim.base);
  assert.equal(left.length, 3, 'nothing deleted');
  await page.close();
});

// ---------------------------------------------------------------- main

async function main() {
  const watchdog = setTimeout(() => {
    console.log(`timed out after ${WATCHDOG_MS / 1000} s`);
    process.exit(1);
  }, WATCHDOG_MS);
  watchdog.unref();

  assert.ok(BIN && existsSync(BIN), `no footfall binary (${BIN}): run cargo build or set FOOTFALL_BIN`);
  assert.ok(existsSync(CHROMIUM), `no browser at ${CHROMIUM}: run scripts/browser-setup.sh`);

  const dir = mkdtempSync(join(tmpdir(), 'footfall-browser-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  fx = fixture(Date.now());
  const jsonl = join(dir, 'fixture.jsonl');
  writeFileSync(jsonl, fx.visits.map(({ expect, ...v }) => JSON.stringify(v)).join('\n') + '\n');
  dashDb = join(dir, 'visits.db');
  execFileSync(BIN, ['import', jsonl, '--db', dashDb], { stdio: 'pipe' });

  dash = await startFootfall(dashDb);
  trackerServer = await startFootfall(join(dir, 'tracker.db'));
  site = await startSite(trackerServer.base, SITE_PAGES);
  await launchBrowser();

  const { passed, failed } = await runAll();
  return { passed, failed };
}

let result = { passed: 0, failed: 1 };
try {
  result = await main();
} catch (err) {
  console.log(`setup failed:\n${indent(err && err.stack ? err.stack : err)}`);
}
for (const cleanup of cleanups.reverse()) {
  try {
    await cleanup();
  } catch {
    // Cleaning up is best effort: the result is already decided.
  }
}
console.log(`${result.passed} passed, ${result.failed} failed`);
process.exit(result.failed === 0 ? 0 : 1);
