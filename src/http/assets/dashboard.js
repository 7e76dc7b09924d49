// footfall dashboard: fetches /stats, /hourly, /sources, /devices and /domains/day from this
// server, for all sites or the chosen one, and draws the page. Every value from the API goes
// into the page as text (textContent, SVG attributes), never as markup: URLs, referrers and
// campaign tags are whatever anyone chose to record.
(function () {
  'use strict';

  var REFRESH_MS = 30000;
  var HOUR_MS = 3600000;
  var SVG_NS = 'http://www.w3.org/2000/svg';
  var LIST_LIMIT = 10;
  var RANGE_NAMES = { 24: 'last 24 h', 168: 'last 7 days', 720: 'last 30 days' };

  var hours = 24;
  var site = ''; // '' is every site
  var awaitingToken = false; // a 401 came back: nothing is fetched until a token is given
  var latest = null; // the last successful answers, redrawn on resize
  var loading = false;
  var numbers = new Intl.NumberFormat();

  function $(id) { return document.getElementById(id); }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG_NS, tag);
    for (var name in attrs) node.setAttribute(name, attrs[name]);
    return node;
  }

  // The analytics token (API.md §12, --analytics-token), kept in this browser's local storage.
  // Storage can be refused (private modes, policies): then the token lasts as long as the tab.
  var TOKEN_KEY = 'footfall.analyticsToken';
  var token = readToken();

  function readToken() {
    try { return localStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }

  function storeToken(value) {
    token = value;
    try {
      if (value == null) localStorage.removeItem(TOKEN_KEY);
      else localStorage.setItem(TOKEN_KEY, value);
    } catch (e) { /* kept in memory only */ }
    $('forget-token').hidden = value == null;
  }

  // A 401: the server wants a token, or another one.
  function Unauthorized() { this.message = 'the analytics token is missing or wrong'; }

  // Relative URLs, so a dashboard served under a path prefix calls the same prefix. Every data
  // call carries the token when there is one.
  function getJson(path) {
    var headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    return fetch(path, { headers: headers, cache: 'no-store' })
      .then(function (res) {
        if (res.status === 401) throw new Unauthorized();
        if (!res.ok) throw new Error(path + ': HTTP ' + res.status);
        // The server's clock anchors the chart, so a skewed client clock cannot shift it.
        var date = Date.parse(res.headers.get('Date') || '');
        return res.json().then(function (body) { return { body: body, now: date }; });
      });
  }

  // API times are UTC without an offset: "2025-07-28T10:30:00" or "2025-07-28 10:30:00".
  function parseUtc(text) { return Date.parse(String(text).replace(' ', 'T') + 'Z'); }

  function formatTime(ms) {
    return new Date(ms).toLocaleString(undefined, {
      month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit'
    });
  }

  function setFigure(id, value) {
    var node = $(id);
    node.textContent = numbers.format(value);
    node.setAttribute('data-value', String(value));
  }

  function isWebUrl(text) { return /^https?:\/\//i.test(text); }

  function link(url, className) {
    if (!isWebUrl(url)) return el('span', className, url);
    var a = el('a', className, url);
    a.href = url;
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    return a;
  }

  // A ranked list of [label, count] pairs with a bar relative to the largest.
  function drawRanking(id, entries, asLinks) {
    var list = $(id);
    list.replaceChildren();
    var top = entries.reduce(function (max, e) { return Math.max(max, e[1]); }, 0);
    entries.forEach(function (entry) {
      var item = el('li');
      item.appendChild(asLinks ? link(entry[0], 'label') : el('span', 'label', entry[0]));
      var count = el('span', 'count', numbers.format(entry[1]));
      count.setAttribute('data-value', String(entry[1]));
      item.appendChild(count);
      var meter = el('span', 'meter');
      var fill = el('span');
      fill.style.width = (top ? Math.max(1, (100 * entry[1]) / top) : 0) + '%';
      meter.appendChild(fill);
      item.appendChild(meter);
      list.appendChild(item);
    });
    list.nextElementSibling.hidden = entries.length > 0;
  }

  function drawRecent(visits) {
    var list = $('recent-visits');
    list.replaceChildren();
    visits.forEach(function (visit) {
      var item = el('li');
      item.appendChild(link(visit.url, 'url'));
      item.appendChild(el('span', 'when', formatTime(parseUtc(visit.timestamp))));
      item.appendChild(el('span', 'ip', ' · ' + visit.ip));
      list.appendChild(item);
    });
    list.nextElementSibling.hidden = visits.length > 0;
  }

  function sortedEntries(object) {
    return Object.keys(object || {})
      .map(function (key) { return [key, Number(object[key]) || 0]; })
      .sort(function (a, b) { return b[1] - a[1] || (a[0] < b[0] ? -1 : 1); });
  }

  // The site a page URL belongs to, as the server names it: the host without `www.`.
  function siteOf(url) {
    var host;
    try { host = new URL(url).hostname.toLowerCase(); } catch (e) { return null; }
    return /^www\../.test(host) ? host.slice(4) : host;
  }

  function query(params) {
    var parts = [];
    for (var name in params) {
      if (params[name] !== '' && params[name] != null) {
        parts.push(name + '=' + encodeURIComponent(params[name]));
      }
    }
    return parts.length ? '?' + parts.join('&') : '';
  }

  function hourMap(byHour) {
    var out = {};
    var sum = 0;
    Object.keys(byHour || {}).forEach(function (key) {
      var n = Number(byHour[key]) || 0;
      out[parseUtc(key)] = n;
      sum += n;
    });
    return { byMs: out, sum: sum };
  }

  // One bucket per hour of the window, zeros included: /hourly's window is the last N whole
  // hours up to now's, the current one included.
  function hourBuckets(byHour, now, windowHours) {
    var last = Math.floor(now / HOUR_MS) * HOUR_MS;
    var first = last - (windowHours - 1) * HOUR_MS;
    var buckets = [];
    for (var at = first; at <= last; at += HOUR_MS) buckets.push({ at: at, count: byHour[at] || 0 });
    return buckets;
  }

  // The smallest of 1, 2, 4, 6, 8 × 10^k at or above `max`: the top gridline and the one
  // halfway up then fall on round whole numbers.
  function niceCeiling(max) {
    if (max <= 1) return 1;
    var power = Math.pow(10, Math.floor(Math.log10(max)));
    var steps = [1, 2, 4, 6, 8, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * power >= max) return steps[i] * power;
    return 10 * power;
  }

  function tickLabel(at, windowHours) {
    var date = new Date(at);
    if (windowHours <= 24) {
      return date.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
    }
    return date.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
  }

  function drawChart(buckets, windowHours) {
    var box = $('hourly-chart');
    var width = Math.max(260, Math.floor(box.clientWidth || 600));
    var height = 190;
    var pad = { left: 40, right: 6, top: 10, bottom: 24 };
    var plotW = width - pad.left - pad.right;
    var plotH = height - pad.top - pad.bottom;
    var max = 0;
    var total = 0;
    buckets.forEach(function (b) { max = Math.max(max, b.count); total += b.count; });
    var ceiling = niceCeiling(max);

    var chart = svg('svg', {
      width: width, height: height, viewBox: '0 0 ' + width + ' ' + height, role: 'img',
      'aria-label': 'Visits per hour, ' + RANGE_NAMES[windowHours] + ': ' + total + ' in total'
    });
    [0, ceiling / 2, ceiling].forEach(function (value) {
      var y = pad.top + plotH - (value / ceiling) * plotH;
      chart.appendChild(svg('line', {
        class: 'grid-line', x1: pad.left, x2: width - pad.right, y1: y, y2: y
      }));
      var label = svg('text', { x: pad.left - 6, y: y + 4, 'text-anchor': 'end' });
      label.textContent = Number.isInteger(value) ? numbers.format(value) : '';
      chart.appendChild(label);
    });

    var slot = plotW / buckets.length;
    var gap = slot > 4 ? 1 : 0;
    buckets.forEach(function (b, i) {
      var h = (b.count / ceiling) * plotH;
      var bar = svg('rect', {
        class: 'bar', x: (pad.left + i * slot + gap / 2).toFixed(2),
        y: (pad.top + plotH - h).toFixed(2), width: Math.max(slot - gap, 0.5).toFixed(2),
        height: h.toFixed(2), 'data-hour': new Date(b.at).toISOString(), 'data-count': b.count
      });
      var tip = svg('title', {});
      tip.textContent = formatTime(b.at) + ': ' + numbers.format(b.count);
      bar.appendChild(tip);
      chart.appendChild(bar);
    });

    // Labels on local midnights (or every 6 hours for a day), thinned to keep them apart.
    var minGap = windowHours <= 24 ? 48 : 64;
    var lastX = -Infinity;
    buckets.forEach(function (b, i) {
      var local = new Date(b.at);
      var marks = windowHours <= 24 ? local.getHours() % 6 === 0 : local.getHours() === 0;
      var x = pad.left + (i + 0.5) * slot;
      if (!marks || x - lastX < minGap || x > width - 20) return;
      lastX = x;
      var label = svg('text', { x: x, y: height - 6, 'text-anchor': 'middle' });
      label.textContent = tickLabel(b.at, windowHours);
      chart.appendChild(label);
    });

    if (total === 0) {
      var empty = svg('text', {
        class: 'empty-label', x: pad.left + plotW / 2, y: pad.top + plotH / 2, 'text-anchor': 'middle'
      });
      empty.textContent = 'No visits in this period';
      chart.appendChild(empty);
    }
    box.replaceChildren(chart);
  }

  // The selector's sites: yesterday's active ones (cheap: /domains/day), the sites of the
  // all-time top pages and of the newest visits, and the chosen one, so it never vanishes.
  function drawSiteChoices(stats, domains) {
    var names = {};
    Object.keys(domains.domains || {}).forEach(function (name) { names[name] = true; });
    Object.keys(stats.popular_pages || {}).concat((stats.recent_visits || []).map(function (v) {
      return v.url;
    })).forEach(function (url) {
      var name = siteOf(url);
      if (name) names[name] = true;
    });
    if (site) names[site] = true;
    var sorted = Object.keys(names).sort();
    var select = $('site');
    var shown = Array.prototype.slice.call(select.options, 1).map(function (o) { return o.value; });
    // Rebuilt only when the list changed, so an open drop-down is not closed under the user.
    if (shown.join('\n') === sorted.join('\n')) return;
    select.replaceChildren(el('option', null, 'All sites'));
    select.options[0].value = '';
    sorted.forEach(function (name) {
      var option = el('option', null, name);
      option.value = name;
      select.appendChild(option);
    });
    select.value = site;
  }

  function render() {
    if (!latest) return;
    var stats = latest.stats;
    var hourly = latest.hourly;
    var perHour = hourMap(hourly.by_hour);
    var types = latest.devices.device_types || {};
    var mine = function (url) { return !latest.site || siteOf(url) === latest.site; };
    setFigure('total-visits', hourly.total_visits || 0);
    setFigure('unique-visitors', hourly.unique_ips || 0);
    setFigure('window-visits', perHour.sum);
    setFigure('bot-visits', Number(types.bot) || 0);
    $('empty').hidden = (stats.total_visits || 0) > 0;
    Array.prototype.forEach.call(document.querySelectorAll('.window-label'), function (node) {
      node.textContent = RANGE_NAMES[latest.hours];
    });
    drawChart(hourBuckets(perHour.byMs, latest.now, latest.hours), latest.hours);

    var sources = latest.sources;
    drawRanking('referrers', sortedEntries(sources.referrers), false);
    drawRanking('utm-source', sortedEntries(sources.utm_source), false);
    drawRanking('utm-medium', sortedEntries(sources.utm_medium), false);
    drawRanking('utm-campaign', sortedEntries(sources.utm_campaign), false);
    // Device types in the server's fixed order (desktop, mobile, tablet, bot), zeros included.
    var typeEntries = Object.keys(types).map(function (k) { return [k, Number(types[k]) || 0]; });
    drawRanking('device-types', perHour.sum ? typeEntries : [], false);
    drawRanking('browsers', sortedEntries(latest.devices.browsers), false);
    drawRanking('os', sortedEntries(latest.devices.os), false);

    // /stats knows the all-time top 100 pages and the newest 10 visits of all sites: a chosen
    // site shows its share of those (per-page figures per site would need /summary's weight).
    var pages = sortedEntries(stats.popular_pages).filter(function (e) { return mine(e[0]); });
    $('pages-note').textContent = latest.site ? 'all time, among the top 100 of all sites' : 'all time';
    $('recent-note').textContent = latest.site ? 'among the newest 10 of all sites' : '';
    drawRanking('top-pages', pages.slice(0, LIST_LIMIT), true);
    drawRecent((stats.recent_visits || []).filter(function (v) { return mine(v.url); }));
    drawRanking('top-sites', sortedEntries(latest.domains.domains).slice(0, LIST_LIMIT), false);
    drawSiteChoices(stats, latest.domains);
  }

  function showStatus(text, isError) {
    var status = $('status');
    status.textContent = text;
    status.classList.toggle('error', !!isError);
  }

  // Asks for the token; `refused` when the one sent was wrong.
  function askForToken(refused) {
    awaitingToken = true;
    $('auth').hidden = false;
    $('figures').hidden = true;
    $('token-error').hidden = !refused;
    showStatus('Waiting for the analytics token', true);
    $('token').focus();
  }

  function refresh() {
    if (loading || awaitingToken) return;
    loading = true;
    var wanted = { hours: hours, site: site };
    var span = query({ hours: wanted.hours, site: wanted.site });
    var ranked = query({ hours: wanted.hours, site: wanted.site, limit: LIST_LIMIT });
    Promise.all([
      getJson('stats'), getJson('hourly' + span), getJson('sources' + ranked),
      getJson('devices' + ranked), getJson('domains/day?limit=1000')
    ])
      .then(function (answers) {
        var now = answers[1].now;
        latest = {
          stats: answers[0].body, hourly: answers[1].body, sources: answers[2].body,
          devices: answers[3].body, domains: answers[4].body,
          hours: wanted.hours, site: wanted.site, now: isNaN(now) ? Date.now() : now
        };
        $('auth').hidden = true;
        $('figures').hidden = false;
        render();
        showStatus('Updated ' + new Date().toLocaleTimeString());
        document.body.setAttribute('data-loaded', 'true');
      })
      .catch(function (err) {
        if (err instanceof Unauthorized) {
          askForToken(token != null);
          return;
        }
        showStatus('Could not load the figures (' + err.message + '); retrying in 30 s', true);
      })
      .then(function () {
        loading = false;
        // The range or site changed while the answers were on their way: fetch the new one.
        if (!awaitingToken && (wanted.hours !== hours || wanted.site !== site)) refresh();
      });
  }

  // The range and site live in the address (#hours=168&site=example.com): a view can be
  // bookmarked, and a reload keeps it.
  function readAddress() {
    var params = new URLSearchParams(location.hash.slice(1));
    var wanted = Number(params.get('hours'));
    hours = RANGE_NAMES[wanted] ? wanted : 24;
    site = params.get('site') || '';
  }

  function writeAddress() {
    history.replaceState(null, '', '#' + query({ hours: hours, site: site }).slice(1));
  }

  function showRange() {
    Array.prototype.forEach.call(document.querySelectorAll('.range button'), function (b) {
      b.setAttribute('aria-pressed', String(Number(b.getAttribute('data-hours')) === hours));
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll('.range button'), function (button) {
    button.addEventListener('click', function () {
      hours = Number(button.getAttribute('data-hours'));
      showRange();
      writeAddress();
      refresh();
    });
  });

  $('site').addEventListener('change', function () {
    site = $('site').value;
    writeAddress();
    refresh();
  });

  $('token-form').addEventListener('submit', function (event) {
    event.preventDefault();
    var value = $('token').value.trim();
    if (!value) return;
    storeToken(value);
    $('token').value = '';
    awaitingToken = false;
    $('token-error').hidden = true;
    showStatus('Loading…');
    refresh();
  });

  $('forget-token').addEventListener('click', function () {
    storeToken(null);
    latest = null;
    document.body.removeAttribute('data-loaded');
    showStatus('Token forgotten');
    refresh();
  });

  var resizeTimer;
  addEventListener('resize', function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(render, 150);
  });

  // A hidden tab does not poll; it catches up as soon as it is shown again.
  setInterval(function () { if (!document.hidden) refresh(); }, REFRESH_MS);
  document.addEventListener('visibilitychange', function () { if (!document.hidden) refresh(); });
  readAddress();
  showRange();
  if (site) $('site').appendChild(el('option', null, site)).value = site;
  $('site').value = site;
  storeToken(token);
  refresh();
})();
