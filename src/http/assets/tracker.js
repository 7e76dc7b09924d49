/*! footfall tracker: POST /visit for this page, also on SPA navigation. Attributes:
 * data-event="order"; data-allow-local (record localhost pages);
 * data-allow-automation (record when navigator.webdriver is set, for browser tests) */
(function () {
  'use strict';
  var tag = document.currentScript;
  if (!tag || !tag.src || !window.URL) return;
  var opt = tag.dataset || {};
  // Relative to the script: a server behind a path prefix works too.
  var endpoint = new URL('visit', tag.src).href;
  if (navigator.webdriver && opt.allowAutomation == null) return;
  var local = /^(localhost|127(\.\d+){3}|\[::1\])$/.test(location.hostname);
  if (local && opt.allowLocal == null) return;
  // An SPA view's referrer is the view before it (own site: direct), not the first one.
  var ref = document.referrer;
  var last;

  function record() {
    // The server drops the #fragment: a hash change is the same page.
    var url = location.href.split('#')[0];
    if (url === last || !/^https?:/.test(url)) return;
    if (last) ref = last;
    last = url;
    var visit = { url: location.href, referrer: ref };
    if (opt.event) visit.event = opt.event;
    var body = JSON.stringify(visit);
    // text/plain keeps it a "simple" cross-origin request: no CORS preflight.
    try {
      if (navigator.sendBeacon(endpoint, new Blob([body], { type: 'text/plain' }))) return;
    } catch (e) { /* no sendBeacon */ }
    if (window.fetch) {
      fetch(endpoint, {
        method: 'POST', body: body, keepalive: true, credentials: 'omit',
        headers: { 'Content-Type': 'text/plain' }
      }).catch(function () {});
    }
  }

  var push = history.pushState;
  if (push) {
    history.pushState = function () {
      var r = push.apply(this, arguments);
      record();
      return r;
    };
  }
  addEventListener('popstate', record);
  // A prerendered page the user never opens is not a visit.
  if (document.prerendering) {
    document.addEventListener('prerenderingchange', record, { once: true });
  } else {
    record();
  }
})();
