// footfall dashboard: fetches /stats, /summary and /domains/day from this server and draws the
// page. Every value from the API goes into the page as text (textContent, SVG attributes),
// never as markup: URLs and user agents are whatever anyone chose to record.
(function () {
  'use strict';

  var REFRESH_MS = 30000;
  var HOUR_MS = 3600000;
  var SVG_NS = 'http://www.w3.org/2000/svg';
  var LIST_LIMIT = 10;
  var RANGE_NAMES = { 24: 'last 24 h', 168: 'last 7 days', 720: 'last 30 days' };

  var hours = 24;
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

  // Relative URLs, so a dashboard served under a path prefix calls the same prefix.
  function getJson(path) {
    return fetch(path, { headers: { Accept: 'application/json' }, cache: 'no-store' })
      .then(function (res) {
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

  // A ranked list of [label, count] pairs with a bar relative to the first.
  function drawRanking(id, entries, asLinks) {
    var list = $(id);
    list.replaceChildren();
    var top = entries.length ? entries[0][1] : 0;
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

  // Sums every page's by_hour and user_agents of a /summary answer.
  function sumSummary(summary) {
    var byHour = {};
    var agents = {};
    var inWindow = 0;
    Object.keys(summary.data || {}).forEach(function (url) {
      var page = summary.data[url];
      Object.keys(page.by_hour || {}).forEach(function (key) {
        var at = parseUtc(key);
        byHour[at] = (byHour[at] || 0) + page.by_hour[key];
        inWindow += page.by_hour[key];
      });
      Object.keys(page.user_agents || {}).forEach(function (agent) {
        agents[agent] = (agents[agent] || 0) + page.user_agents[agent];
      });
    });
    return { byHour: byHour, agents: agents, inWindow: inWindow };
  }

  // One bucket per hour the window touches, zeros included. The window is "now minus N hours",
  // so when now is not on the hour it touches N + 1 hours (the first one partly).
  function hourBuckets(byHour, now, windowHours) {
    var last = Math.floor(now / HOUR_MS) * HOUR_MS;
    var first = Math.floor((now - windowHours * HOUR_MS) / HOUR_MS) * HOUR_MS;
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

  function render() {
    if (!latest) return;
    var stats = latest.stats;
    var sums = sumSummary(latest.summary);
    var pages = sortedEntries(stats.popular_pages);
    setFigure('total-visits', stats.total_visits || 0);
    setFigure('unique-visitors', stats.unique_visitors || 0);
    setFigure('window-visits', sums.inWindow);
    setFigure('page-count', Object.keys(latest.summary.data || {}).length);
    $('empty').hidden = (stats.total_visits || 0) > 0;
    Array.prototype.forEach.call(document.querySelectorAll('.window-label'), function (node) {
      node.textContent = RANGE_NAMES[latest.hours];
    });
    drawChart(hourBuckets(sums.byHour, latest.now, latest.hours), latest.hours);
    drawRanking('top-pages', pages.slice(0, LIST_LIMIT), true);
    drawRanking('top-sites', sortedEntries(latest.domains.domains).slice(0, LIST_LIMIT), false);
    drawRanking('user-agents', sortedEntries(sums.agents).slice(0, LIST_LIMIT), false);
    drawRecent(stats.recent_visits || []);
  }

  function showStatus(text, isError) {
    var status = $('status');
    status.textContent = text;
    status.classList.toggle('error', !!isError);
  }

  function refresh() {
    if (loading) return;
    loading = true;
    var wanted = hours;
    Promise.all([getJson('stats'), getJson('summary?hours=' + wanted), getJson('domains/day')])
      .then(function (answers) {
        var now = answers[1].now;
        latest = {
          stats: answers[0].body, summary: answers[1].body, domains: answers[2].body,
          hours: wanted, now: isNaN(now) ? Date.now() : now
        };
        render();
        showStatus('Updated ' + new Date().toLocaleTimeString());
        document.body.setAttribute('data-loaded', 'true');
      })
      .catch(function (err) {
        showStatus('Could not load the figures (' + err.message + '); retrying in 30 s', true);
      })
      .then(function () {
        loading = false;
        // The range changed while the answers were on their way: fetch the new one.
        if (wanted !== hours) refresh();
      });
  }

  function selectRange(button) {
    hours = Number(button.getAttribute('data-hours'));
    Array.prototype.forEach.call(document.querySelectorAll('.range button'), function (b) {
      b.setAttribute('aria-pressed', String(b === button));
    });
    refresh();
  }

  Array.prototype.forEach.call(document.querySelectorAll('.range button'), function (button) {
    button.addEventListener('click', function () { selectRange(button); });
  });

  var resizeTimer;
  addEventListener('resize', function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(render, 150);
  });

  // A hidden tab does not poll; it catches up as soon as it is shown again.
  setInterval(function () { if (!document.hidden) refresh(); }, REFRESH_MS);
  document.addEventListener('visibilitychange', function () { if (!document.hidden) refresh(); });
  refresh();
})();
