/*! consent.js: the embeddable consent banner. One global: window.Consent.
 *
 * Embed (in <head>, before any tag it gates):
 *   <script src="https://HOST/widget/consent.js" data-site="SITE_KEY" defer></script>
 * Stub: page code that runs before the script has loaded queues callbacks; each is called
 * with the API once it is ready (and at once afterwards):
 *   <script>window.Consent = window.Consent || [];
 *   Consent.push(function (api) { api.onChange(function (state) { ... }); });</script>
 * Gating: <script type="text/plain" data-consent="analytics" [data-consent-service="matomo"]>
 *   and <iframe data-consent="marketing" data-src="...">; data-consent-open on any element
 *   opens the preference centre. Events on document: consent:change, consent:saved.
 */
(function () {
  'use strict';
  if (typeof window === 'undefined' || typeof document === 'undefined') return;
  var queued = window.Consent;
  if (queued && queued.version) return; // already started: the embed is idempotent

  var A_CONSENT = 'data-consent';
  var A_SERVICE = 'data-consent-service';
  var A_OPEN = 'data-consent-open';
  var A_SRC = 'data-src';
  var A_TYPE = 'data-type';
  var GATED = 'script[type="text/plain"][' + A_CONSENT + '],iframe[' + A_CONSENT + ']:not([src])';
  var E_CHANGE = 'consent:change';
  var E_SAVED = 'consent:saved';
  var DAY = 864e5;
  var CM_CORE = ['ad_storage', 'ad_user_data', 'ad_personalization', 'analytics_storage'];
  var AD_SIGNAL = /^ad_/;
  // Used only when the service cannot be reached and nothing is cached.
  var FALLBACK = {
    title: 'Cookies on this site',
    description: 'We use optional cookies only with your consent. You can change your choice at any time.',
    accept_all: 'Accept all', reject_all: 'Reject all', customise: 'Customise', save: 'Save choices',
    close: 'Close', always_on: 'Always on', policy_link: 'Privacy policy', settings_title: 'Cookie settings',
    gpc_notice: 'Your browser sent a Global Privacy Control signal, so marketing is off.',
    services: 'Services', cookies: 'Cookies', load: 'Load content',
    placeholder: 'This content from {service} is blocked until you allow {purpose}.'
  };

  var script = document.currentScript || document.querySelector('script[data-site][src*="consent.js"]');
  var site = script && script.getAttribute('data-site');
  if (!site) return;
  var base = new URL(script.src, location.href).origin;
  var endpoint = base + '/v1/sites/' + encodeURIComponent(site);
  var storeKey = 'consent:' + site;
  var gpc = navigator.globalPrivacyControl === true;

  // ---- storage ---------------------------------------------------------------------------

  function readStore() {
    try { return JSON.parse(localStorage.getItem(storeKey)) || {}; } catch (e) { return {}; }
  }

  function writeStore(value) {
    try { localStorage.setItem(storeKey, JSON.stringify(value)); } catch (e) { /* private mode */ }
  }

  // ---- pure logic: choices, records, Consent Mode, cookies --------------------------------

  function isMarketing(purpose) {
    return purpose.key === 'marketing' || (purpose.consent_mode || []).some(function (s) { return AD_SIGNAL.test(s); });
  }

  /** Say whether a stored choice still stands (not expired; same material policy and banner). */
  function isCurrent(choice, config, now) {
    if (!choice || now >= choice.exp) return false;
    if (!config || !choice.hash) return true;
    return choice.hash === config.config_hash && choice.material === config.material_version;
  }

  /** Build a selection granting everything or nothing optional (GPC keeps marketing off). */
  function allOrNone(config, grant) {
    var sel = { purposes: {}, services: {} };
    if (!config) { sel.purposes['*'] = grant; return sel; }
    config.purposes.forEach(function (p) {
      var on = p.is_required || (grant && !(gpc && isMarketing(p)));
      sel.purposes[p.key] = on;
      sel.services[p.key] = {};
      (p.services || []).forEach(function (s) { sel.services[p.key][s.key] = on; });
    });
    return sel;
  }

  /** Turn a selection into a choice stamped with the policy, banner hash and expiry. */
  function makeChoice(config, sel, now) {
    return {
      purposes: sel.purposes, services: sel.services || {}, at: now,
      exp: now + (config ? config.lifetime_days : 182) * DAY,
      policy: config ? config.policy.version : null,
      material: config ? config.material_version : null,
      hash: config ? config.config_hash : null
    };
  }

  /** Say whether a choice allows a purpose (and optionally one of its services). */
  function isAllowed(config, choice, purpose, service) {
    var p = config && config.purposes.filter(function (x) { return x.key === purpose; })[0];
    if (p && p.is_required) return true;
    if (!choice) return false;
    var on = purpose in choice.purposes ? choice.purposes[purpose] : choice.purposes['*'];
    return !!on && (!service || (choice.services[purpose] || {})[service] !== false);
  }

  /** Build the POST /records body for a choice. */
  function toRecord(config, choice, source, language) {
    if (!choice.hash) choice = makeChoice(config, allOrNone(config, !!choice.purposes['*']), choice.at);
    return {
      decisions: config.purposes.map(function (p) {
        var d = { purpose: p.key, granted: isAllowed(config, choice, p.key) };
        if ((p.services || []).length) {
          d.services = {};
          p.services.forEach(function (s) { d.services[s.key] = d.granted && isAllowed(config, choice, p.key, s.key); });
        }
        return d;
      }),
      source: source, policy_version: choice.policy, config_hash: choice.hash, language: language
    };
  }

  /** Map a choice to Consent Mode v2 signals: granted only if every purpose naming it is allowed. */
  function consentModeFor(config, choice) {
    var out = {};
    if (!config) {
      CM_CORE.forEach(function (s) { out[s] = isAllowed(null, choice, '*') ? 'granted' : 'denied'; });
      return out;
    }
    config.purposes.forEach(function (p) {
      var on = isAllowed(config, choice, p.key);
      (p.consent_mode || []).forEach(function (s) { out[s] = on && out[s] !== 'denied' ? 'granted' : 'denied'; });
    });
    return out;
  }

  /** List the cookies (config entries) that a choice does not allow. */
  function cookiesToDelete(config, choice) {
    var out = [];
    config.purposes.forEach(function (p) {
      var on = isAllowed(config, choice, p.key);
      if (!on) out = out.concat(p.cookies || []);
      (p.services || []).forEach(function (s) {
        if (!on || !isAllowed(config, choice, p.key, s.key)) out = out.concat(s.cookies || []);
      });
    });
    return out;
  }

  // ---- side effects: gtag, cookies, events ------------------------------------------------

  function gtag() {
    // dataLayer is the shared name Google tags read; it is created only if the page has not.
    var dataLayer = window.dataLayer = window.dataLayer || [];
    if (typeof window.gtag === 'function') window.gtag.apply(window, arguments);
    else dataLayer.push(arguments);
  }

  function deleteCookies(list) {
    var names = document.cookie.split(';').map(function (c) { return c.split('=')[0].trim(); });
    var host = location.hostname.split('.');
    list.forEach(function (c) {
      names.forEach(function (name) {
        if (!(c.is_prefix ? name.indexOf(c.name) === 0 : name === c.name)) return;
        // The cookie may have been set with or without a domain, on this host or a parent.
        var domains = [c.domain, ''];
        for (var i = 0; i < host.length - 1; i++) domains.push(host.slice(i).join('.'));
        domains.forEach(function (d) {
          [c.path || '/', '/'].forEach(function (path) {
            document.cookie = name + '=; Max-Age=0; path=' + path + (d ? '; domain=' + d : '');
          });
        });
      });
    });
  }

  function emit(name, detail) {
    document.dispatchEvent(new CustomEvent(name, { detail: detail }));
  }

  function whenDom(fn) {
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', fn);
    else fn();
  }

  // ---- state ------------------------------------------------------------------------------

  var stored = readStore();
  var st = {
    config: stored.config || null,
    choice: isCurrent(stored.choice, null, Date.now()) ? stored.choice : null,
    token: stored.token || null,
    visitor: stored.visitor || null,
    checked: stored.checked || 0,
    outbox: stored.outbox || []
  };
  var listeners = [];
  var lang = 'en';

  function persist() {
    writeStore({
      token: st.token, visitor: st.visitor, choice: st.choice, config: st.config,
      checked: st.checked, outbox: st.outbox
    });
  }

  function allowed(purpose, service) {
    return isAllowed(st.config, st.choice, purpose, service);
  }

  function state() {
    var c = st.choice, purposes = {};
    var keys = st.config ? st.config.purposes.map(function (p) { return p.key; }) : Object.keys(c ? c.purposes : {});
    keys.forEach(function (k) { purposes[k] = allowed(k); });
    return {
      decided: !!c, purposes: purposes, services: c ? JSON.parse(JSON.stringify(c.services)) : {},
      policy_version: c ? c.policy : null, config_hash: c ? c.hash : null,
      decided_at: c ? new Date(c.at).toISOString() : null,
      expires_at: c ? new Date(c.exp).toISOString() : null,
      gpc: gpc, visitor_id: st.visitor, pending: st.outbox.length, language: lang
    };
  }

  /** Make the current choice true on the page: signals, cookies, gated tags, listeners. */
  function apply() {
    if (st.choice) gtag('consent', 'update', consentModeFor(st.config, st.choice));
    if (st.config) deleteCookies(cookiesToDelete(st.config, st.choice));
    whenDom(function () { runGated(); placeholders(); });
    var s = state();
    listeners.forEach(function (cb) {
      try { cb(s); } catch (e) { console.error(e); }
    });
    emit(E_CHANGE, s);
  }

  /** Record a selection: apply it at once, keep it, and queue it for the service. */
  function choose(sel, source) {
    st.choice = makeChoice(st.config, sel, Date.now());
    if (gpc && st.config && st.config.purposes.some(function (p) { return isMarketing(p) && !allowed(p.key); })) source = 'gpc';
    st.outbox.push({ key: uuid(), choice: st.choice, source: source, language: lang });
    persist();
    closeUi();
    apply();
    flush();
  }

  function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID();
    var b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join('');
    return [h.slice(0, 8), h.slice(8, 12), h.slice(12, 16), h.slice(16, 20), h.slice(20)].join('-');
  }

  // ---- network: config, outbox ------------------------------------------------------------

  function getConfig() {
    var opts = { credentials: 'omit' };
    if (AbortSignal.timeout) opts.signal = AbortSignal.timeout(8000);
    return fetch(endpoint + '/config', opts).then(function (r) {
      if (!r.ok) throw new Error(r.status);
      return r.json();
    }).then(function (config) {
      st.config = config;
      st.checked = Date.now();
      lang = pickLanguage(config);
      return config;
    });
  }

  var sending = false, tries = 0, timer = 0;

  /** Send the oldest queued record; on failure retry with back-off (the queue is stored). */
  function flush() {
    if (sending || !st.outbox.length) return;
    sending = true;
    clearTimeout(timer);
    var entry = st.outbox[0];
    (st.config ? Promise.resolve(st.config) : getConfig()).then(function (config) {
      var headers = { 'Content-Type': 'application/json', 'Idempotency-Key': entry.key };
      if (st.token) headers['X-Consent-Token'] = st.token;
      return fetch(endpoint + '/records', {
        method: 'POST', headers: headers, credentials: 'omit', keepalive: true,
        body: JSON.stringify(toRecord(config, entry.choice, entry.source, entry.language))
      });
    }).then(function (r) {
      if (r.status === 401 || r.status === 403) {
        if (!st.token) throw new Error(r.status);
        st.token = null; // a token from elsewhere: start afresh as a new visitor
        return { retry: true };
      }
      if (r.status >= 400 && r.status < 500 && r.status !== 408 && r.status !== 429) {
        console.warn('consent: record refused', r.status);
        return {};
      }
      if (!r.ok) throw new Error(r.status);
      return r.json();
    }).then(function (body) {
      sending = false;
      if (!body.retry) st.outbox = st.outbox.filter(function (e) { return e.key !== entry.key; });
      if (body.visitor_token) { st.token = body.visitor_token; st.visitor = body.visitor_id; }
      persist();
      tries = 0;
      if (body.record) emit(E_SAVED, { record: body.record, state: state() });
      flush();
    }, function () {
      sending = false;
      timer = setTimeout(flush, Math.min(60000, 1000 * Math.pow(2, tries++)) * (0.8 + Math.random() * 0.4));
    });
  }

  function countShown() {
    // A simple request with no body, no credentials and no identifier: nothing to track.
    fetch(endpoint + '/shown', { method: 'POST', mode: 'no-cors', credentials: 'omit', keepalive: true })
      .catch(function () {});
  }

  // ---- gating -----------------------------------------------------------------------------

  function permits(el) {
    var service = el.getAttribute(A_SERVICE);
    return el.getAttribute(A_CONSENT).split(/\s+/).every(function (p) { return allowed(p, service); });
  }

  var gating = false, regate = false;

  /** Run allowed gated scripts and frames, in document order, each once. */
  function runGated() {
    if (gating) { regate = true; return; }
    gating = true;
    (function next() {
      var el = Array.prototype.filter.call(document.querySelectorAll(GATED), permits)[0];
      if (!el) {
        gating = false;
        if (regate) { regate = false; runGated(); }
        return;
      }
      if (el.tagName === 'IFRAME') {
        var ph = el.previousElementSibling;
        if (ph && ph.tagName === 'CONSENT-PLACEHOLDER') ph.remove();
        el.src = el.getAttribute(A_SRC);
        el.hidden = false;
        return next();
      }
      var s = document.createElement('script');
      Array.prototype.forEach.call(el.attributes, function (a) {
        if (a.name !== 'type' && a.name !== 'nonce') s.setAttribute(a.name, a.value);
      });
      if (el.getAttribute(A_TYPE)) s.type = el.getAttribute(A_TYPE);
      s.nonce = el.nonce; // the CSP nonce attribute is hidden once parsed; the property keeps it
      if (el.src) {
        s.async = false;
        s.onload = s.onerror = next; // wait, so later tags run after this one
        el.replaceWith(s);
      } else {
        s.text = el.text;
        el.replaceWith(s);
        next();
      }
    })();
  }

  // ---- rendering --------------------------------------------------------------------------

  function h(tag, attrs, kids) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v == null || v === false) return;
      if (k.slice(0, 2) === 'on') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    });
    (kids || []).forEach(function (k) { if (k != null) el.append(k); });
    return el;
  }

  function pickLanguage(config) {
    var langs = config.languages || [];
    var wanted = [document.documentElement.lang].concat(navigator.languages || [navigator.language]);
    for (var i = 0; i < wanted.length; i++) {
      var tag = (wanted[i] || '').toLowerCase();
      if (langs.indexOf(tag) >= 0) return tag;
      if (langs.indexOf(tag.split('-')[0]) >= 0) return tag.split('-')[0];
    }
    return config.default_language || langs[0] || 'en';
  }

  function t(key) {
    var texts = (st.config && st.config.texts) || {};
    var def = st.config && st.config.default_language;
    return (texts[lang] || {})[key] || (texts[def] || {})[key] || FALLBACK[key];
  }

  function tr(item, key) {
    var all = item.translations || {};
    return (all[lang] || {})[key] || (all[st.config.default_language] || {})[key] || (key === 'title' ? item.key : '');
  }

  /** Create a host element whose shadow root holds our stylesheet, shown once it has loaded. */
  function shadowHost(tag) {
    // A custom element name: host-page rules for div, section... cannot reach the host.
    var host = document.createElement(tag);
    host.style.display = 'none';
    var root = host.attachShadow({ mode: 'open' });
    var link = h('link', { rel: 'stylesheet', href: base + '/widget/consent.css' });
    var ready = new Promise(function (resolve) {
      link.onload = link.onerror = function () { host.style.removeProperty('display'); resolve(); };
    });
    root.append(link);
    return { host: host, root: root, ready: ready };
  }

  var ui = null, opener = null, shownCounted = false;

  function mount() {
    if (!ui) {
      ui = shadowHost('consent-widget');
      ui.root.addEventListener('keydown', onKey);
    }
    if (!ui.host.isConnected) document.body.append(ui.host);
    Array.prototype.forEach.call(ui.root.querySelectorAll('.layer'), function (el) { el.remove(); });
  }

  function rememberOpener() {
    var active = document.activeElement;
    if (!opener && active && active !== document.body && active !== (ui && ui.host)) opener = active;
  }

  function closeUi() {
    if (!ui) return;
    ui.host.remove();
    var back = opener;
    opener = null;
    if (back && back.isConnected) back.focus();
  }

  function button(label, onclick, cls, ariaLabel) {
    return h('button', { type: 'button', class: cls || 'btn', onclick: onclick, 'aria-label': ariaLabel }, [label]);
  }

  function focusSoon(el) {
    // Focus needs the host displayed, which waits for the stylesheet.
    ui.ready.then(function () { if (el.isConnected) el.focus({ preventScroll: true }); });
  }

  function actions(extra) {
    return h('div', { class: 'actions' }, [
      button(t('accept_all'), function () { choose(allOrNone(st.config, true), 'banner'); }),
      button(t('reject_all'), function () { choose(allOrNone(st.config, false), 'banner'); }),
      extra
    ]);
  }

  function policyLink() {
    var policy = st.config && st.config.policy;
    return policy && policy.url ? h('a', { href: policy.url, target: '_blank', rel: 'noopener' }, [t('policy_link')]) : null;
  }

  function gpcNotice() {
    return gpc ? h('p', { class: 'gpc' }, [t('gpc_notice')]) : null;
  }

  /** Show the first layer: Accept all, Reject all, Customise, with equal weight. */
  function showBanner() {
    whenDom(function () {
      rememberOpener();
      mount();
      var purposes = (st.config ? st.config.purposes : []).map(function (p) {
        return h('li', {}, [tr(p, 'title'), p.is_required ? h('span', { class: 'on' }, [t('always_on')]) : null]);
      });
      var layer = h('div', {
        class: 'layer banner', role: 'dialog', 'aria-modal': 'false', tabindex: '-1',
        'aria-labelledby': 'c-title', 'aria-describedby': 'c-desc'
      }, [
        button('\u00d7', closeUi, 'x', t('close')),
        h('h2', { id: 'c-title' }, [t('title')]),
        h('p', { id: 'c-desc' }, [t('description'), ' ', policyLink()]),
        gpcNotice(),
        purposes.length ? h('ul', { class: 'chips' }, purposes) : null,
        actions(button(t('customise'), openPrefs))
      ]);
      ui.root.append(layer);
      focusSoon(layer);
      if (!shownCounted) { shownCounted = true; countShown(); }
    });
  }

  function toggle(sw, on) {
    sw.setAttribute('aria-checked', String(on));
  }

  /** Show the preference centre: a switch per purpose and per service, lists, policy link. */
  function openPrefs() {
    rememberOpener();
    mount();
    var config = st.config || { purposes: [] };
    var draft = st.choice ? JSON.parse(JSON.stringify(st.choice)) : allOrNone(st.config, false);
    var n = 0;
    function cookieList(cookies) {
      if (!cookies || !cookies.length) return null;
      return h('details', {}, [
        h('summary', {}, [t('cookies') + ' (' + cookies.length + ')']),
        h('ul', { class: 'cookies' }, cookies.map(function (c) {
          return h('li', {}, [h('code', {}, [c.name + (c.is_prefix ? '*' : '')]),
            ' ' + [c.provider, c.duration, c.description].filter(Boolean).join(' \u00b7 ')]);
        }))
      ]);
    }
    function sw(labelId, on, onclick) {
      return h('button', { type: 'button', role: 'switch', 'aria-checked': String(on), 'aria-labelledby': labelId, onclick: onclick });
    }
    var sections = config.purposes.map(function (p) {
      var id = 'c-p' + n++, services = p.services || [];
      draft.services[p.key] = draft.services[p.key] || {};
      var serviceSwitches = [];
      var purposeSwitch = p.is_required ? h('span', { class: 'on' }, [t('always_on')]) : sw(id, isAllowed(config, draft, p.key), function () {
        var on = !isAllowed(config, draft, p.key);
        draft.purposes[p.key] = on;
        toggle(purposeSwitch, on);
        services.forEach(function (s, i) { draft.services[p.key][s.key] = on; toggle(serviceSwitches[i], on); });
      });
      var serviceItems = services.map(function (s, i) {
        var sid = 'c-s' + n++;
        serviceSwitches[i] = p.is_required ? null : sw(sid, isAllowed(config, draft, p.key, s.key), function () {
          var on = !isAllowed(config, draft, p.key, s.key);
          draft.services[p.key][s.key] = on;
          toggle(serviceSwitches[i], on);
          if (on && !draft.purposes[p.key]) {
            draft.purposes[p.key] = true;
            toggle(purposeSwitch, true);
            services.forEach(function (o, j) { if (j !== i) { draft.services[p.key][o.key] = false; toggle(serviceSwitches[j], false); } });
          }
        });
        return h('li', {}, [
          h('div', { class: 'row' }, [
            h('span', { id: sid }, [s.name || s.key]),
            serviceSwitches[i]
          ]),
          h('p', { class: 'meta' }, [s.provider || '', s.policy_url ? ' ' : null,
            s.policy_url ? h('a', { href: s.policy_url, target: '_blank', rel: 'noopener' }, [t('policy_link')]) : null]),
          cookieList(s.cookies)
        ]);
      });
      return h('section', {}, [
        h('div', { class: 'row' }, [h('h3', { id: id }, [tr(p, 'title')]), purposeSwitch]),
        h('p', {}, [tr(p, 'description')]),
        services.length ? h('details', {}, [
          h('summary', {}, [t('services') + ' (' + services.length + ')']),
          h('ul', { class: 'services' }, serviceItems)
        ]) : null,
        cookieList(p.cookies)
      ]);
    });
    var dialog = h('div', {
      class: 'prefs', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'c-ptitle', tabindex: '-1'
    }, [
      h('div', { class: 'head' }, [h('h2', { id: 'c-ptitle' }, [t('settings_title')]), button('\u00d7', closePrefs, 'x', t('close'))]),
      h('div', { class: 'body' }, [gpcNotice()].concat(sections, [h('p', {}, [policyLink()])])),
      actions(button(t('save'), function () { choose(draft, 'preferences'); }))
    ]);
    ui.root.append(h('div', { class: 'layer overlay' }, [dialog]));
    focusSoon(dialog);
  }

  /** Close the preference centre; without a choice the first layer comes back. */
  function closePrefs() {
    if (st.choice) closeUi();
    else showBanner();
  }

  function onKey(e) {
    var dialog = ui.root.querySelector('.prefs');
    if (!dialog) return;
    if (e.key === 'Escape') { e.preventDefault(); closePrefs(); return; }
    if (e.key !== 'Tab') return;
    // Trap focus: the preference centre is modal.
    var items = Array.prototype.filter.call(dialog.querySelectorAll('button,a[href],summary'), function (el) {
      return el.getClientRects().length;
    });
    var first = items[0], last = items[items.length - 1], active = ui.root.activeElement;
    if (e.shiftKey ? active === first || active === dialog : active === last) {
      e.preventDefault();
      (e.shiftKey ? last : first).focus();
    }
  }

  /** Put a click-to-load placeholder before each gated frame that is not allowed. */
  function placeholders() {
    Array.prototype.forEach.call(document.querySelectorAll('iframe[' + A_CONSENT + ']:not([src])'), function (frame) {
      var old = frame.previousElementSibling;
      if (old && old.tagName === 'CONSENT-PLACEHOLDER') old.remove();
      var purposeKey = frame.getAttribute(A_CONSENT).split(/\s+/)[0], serviceKey = frame.getAttribute(A_SERVICE);
      var p = st.config && st.config.purposes.filter(function (x) { return x.key === purposeKey; })[0];
      var s = p && (p.services || []).filter(function (x) { return x.key === serviceKey; })[0];
      var text = t('placeholder').replace('{purpose}', p ? tr(p, 'title') : purposeKey)
        .replace('{service}', s ? s.name : serviceKey || (p ? tr(p, 'title') : purposeKey));
      var ph = shadowHost('consent-placeholder');
      ['width', 'height'].forEach(function (d) {
        var v = frame.getAttribute(d);
        if (v) ph.host.style[d] = /^\d+$/.test(v) ? v + 'px' : v;
      });
      ph.root.append(h('div', { class: 'ph' }, [h('p', {}, [text]), button(t('load'), function () {
        var sel = st.choice ? JSON.parse(JSON.stringify(st.choice)) : allOrNone(st.config, false);
        frame.getAttribute(A_CONSENT).split(/\s+/).forEach(function (k) {
          sel.purposes[k] = true;
          if (serviceKey) (sel.services[k] = sel.services[k] || {})[serviceKey] = true;
        });
        choose(sel, 'banner');
      })]));
      frame.hidden = true;
      frame.before(ph.host);
    });
  }

  // ---- public API and start ---------------------------------------------------------------

  var resolveReady;
  var Consent = {
    version: '1',
    ready: new Promise(function (resolve) { resolveReady = resolve; }),
    allowed: allowed,
    state: state,
    onChange: function (cb) {
      listeners.push(cb);
      return function () { listeners = listeners.filter(function (x) { return x !== cb; }); };
    },
    open: function () {
      if (st.config) return whenDom(openPrefs);
      getConfig().catch(function () {}).then(function () { whenDom(openPrefs); });
    },
    close: closeUi,
    /** Set purposes from page code, e.g. set({analytics: true}); recorded with source "api". */
    set: function (purposes) {
      var sel = st.choice ? JSON.parse(JSON.stringify(st.choice)) : allOrNone(st.config, false);
      Object.keys(purposes).forEach(function (k) { sel.purposes[k] = !!purposes[k]; });
      choose(sel, 'api');
    },
    push: function (fn) {
      try { fn(Consent); } catch (e) { console.error(e); }
    },
    // Internals for tests; not part of the public API.
    _: {
      isCurrent: isCurrent, isAllowed: isAllowed, allOrNone: allOrNone, makeChoice: makeChoice,
      toRecord: toRecord, consentModeFor: consentModeFor, cookiesToDelete: cookiesToDelete,
      readStore: readStore, flush: flush, storeKey: storeKey
    }
  };
  window.Consent = Consent;
  if (Array.isArray(queued)) queued.forEach(Consent.push);

  // Consent Mode's default must precede every gated tag, so it is issued before anything else.
  var defaults = {};
  CM_CORE.concat.apply(CM_CORE, (st.config ? st.config.purposes : []).map(function (p) { return p.consent_mode || []; }))
    .forEach(function (s) { defaults[s] = 'denied'; });
  defaults.wait_for_update = 500;
  gtag('consent', 'default', defaults);

  if (st.choice) {
    // Returning visitor: apply from storage now, without a request.
    lang = st.config ? pickLanguage(st.config) : lang;
    apply();
    resolveReady(state());
    if (Date.now() - st.checked > DAY || !st.choice.hash) {
      getConfig().then(function (config) {
        if (!st.choice.hash) st.choice = makeChoice(config, allOrNone(config, !!st.choice.purposes['*']), st.choice.at);
        if (!isCurrent(st.choice, config, Date.now())) {
          st.choice = null;
          apply();
          showBanner();
        }
        persist();
      }).catch(function () {});
    }
  } else {
    // First visit, expired or stale: nothing is written until the visitor chooses.
    if (st.config) deleteCookies(cookiesToDelete(st.config, null));
    whenDom(mount); // start loading the stylesheet alongside the config
    getConfig().catch(function () {}).then(function () {
      if (st.choice) return; // chosen meanwhile, e.g. in another tab
      if (st.config) deleteCookies(cookiesToDelete(st.config, null));
      showBanner();
      whenDom(placeholders);
      resolveReady(state());
    });
  }
  flush();

  window.addEventListener('online', flush);
  window.addEventListener('storage', function (e) {
    if (e.key !== storeKey) return;
    var s = readStore();
    st.token = s.token || null;
    st.visitor = s.visitor || null;
    st.outbox = s.outbox || [];
    if (s.config) st.config = s.config;
    var choice = isCurrent(s.choice, null, Date.now()) ? s.choice : null;
    if (JSON.stringify(choice) !== JSON.stringify(st.choice)) {
      st.choice = choice;
      if (choice) closeUi();
      apply();
    }
  });
  document.addEventListener('click', function (e) {
    var el = e.target.closest && e.target.closest('[' + A_OPEN + ']');
    if (!el) return;
    e.preventDefault();
    Consent.open();
  });
})();
