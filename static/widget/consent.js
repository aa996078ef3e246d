/* consent.js: the embeddable consent banner. One global: window.Consent.
 *
 * Embed (in <head>, before any tag it gates):
 *   <script src="https://HOST/widget/consent.js" data-site="SITE_KEY" defer></script>
 *   or, with the site's configuration inside (one request): .../consent.js?site=SITE_KEY
 * Stub: page code that runs before the script has loaded queues callbacks; each is called
 * with the API once the script has started (and at once afterwards):
 *   <script>window.Consent = window.Consent || [];
 *   Consent.push(api => api.onChange(state => { ... }));</script>
 * Gating: <script type="text/plain" data-consent="analytics" [data-consent-service="matomo"]>
 *   and <iframe data-consent="marketing" data-src="...">; data-consent-open on any element
 *   opens the preference centre. Events on document: consent:change, consent:saved.
 */
(() => {
  'use strict';
  if (typeof window === 'undefined' || typeof document === 'undefined') return;
  const queued = window.Consent;
  if (queued && queued.version) return; // already started: the embed is idempotent

  const A_CONSENT = 'data-consent';
  const A_SERVICE = 'data-consent-service';
  const A_OPEN = 'data-consent-open';
  const A_SRC = 'data-src';
  const A_TYPE = 'data-type';
  const FRAMES = `iframe[${A_CONSENT}]:not([src])`;
  const GATED = `script[type="text/plain"][${A_CONSENT}],${FRAMES}`;
  const E_CHANGE = 'consent:change';
  const E_SAVED = 'consent:saved';
  const DAY = 864e5;
  const RTL = /^(ar|he|fa|ur|yi|ps|sd|ug|dv|ckb)\b/;
  const ALIASES = { nb: 'no', nn: 'no' };
  // Denied by default before the config is known; security_storage is left to the config.
  const CM_SIGNALS = ['ad_storage', 'ad_user_data', 'ad_personalization', 'analytics_storage',
    'functionality_storage', 'personalization_storage'];


  // Filled in by the server: the stylesheet (consent.css), and in ?site= bundles the
  // site's config, so that the banner needs no other request.
  const CSS = '';
  const PRELOADED = null;

  const script = document.currentScript ||
    document.querySelector('script[data-site][src*="consent.js"],script[src*="consent.js?site="]');
  const site = script && (script.getAttribute('data-site') || new URL(script.src, location.href).searchParams.get('site'));
  if (!site) return;
  const base = new URL(script.src, location.href).origin;
  const endpoint = `${base}/v1/sites/${encodeURIComponent(site)}`;
  const storeKey = 'consent:' + site;
  const gpc = navigator.globalPrivacyControl === true;
  const copy = (value) => JSON.parse(JSON.stringify(value));
  const all = (selector, root = document) => [...root.querySelectorAll(selector)];

  // ---- storage ---------------------------------------------------------------------------

  const readStore = () => {
    try { return JSON.parse(localStorage.getItem(storeKey)) || {}; } catch (e) { return {}; }
  };

  const writeStore = (value) => {
    try { localStorage.setItem(storeKey, JSON.stringify(value)); } catch (e) {} // private mode: keep going
  };

  // ---- pure logic: choices, records, Consent Mode, cookies --------------------------------

  const isMarketing = (p) => p.key === 'marketing' || (p.consent_mode || []).some((s) => s.startsWith('ad_'));
  const findPurpose = (config, key) => config && config.purposes.find((p) => p.key === key);

  /** Say whether a purpose may run before any choice under a mode: the site marked it so. */
  const defaultable = (p, mode) => mode === 'opt-out' ? p.opt_out : mode === 'notice' && (p.opt_out || p.notice_only);
  /** ...and not for advertising under GPC, nor once refused here: an opt-out never lapses. */
  const byDefault = (config, p) => !!p && !!defaultable(p, config.mode) && !(gpc && isMarketing(p)) && !st.off[p.key] && !refused;
  /** A selection of these purposes, each on or off (its services follow it). */
  const selecting = (ps, on, services = {}) => ({ purposes: Object.fromEntries(ps.map((p) => [p.key, on(p)])), services });
  /** A selection refusing these purposes only: the rest keep their defaults. */
  const refusing = (ps) => selecting(ps, () => false);

  /** Return the policy in effect at a time, and the latest material one (scheduled ones count from their time). */
  const policyAt = (config, now) => {
    let policy = config?.policy || null, material = config?.material_version || null;
    for (const p of config?.scheduled_policies || []) {
      if (Date.parse(p.published_at) > now) continue;
      policy = p;
      if (p.is_material) material = p.version;
    }
    return { policy, material };
  };

  /** When the next scheduled version takes effect after now, or Infinity. */
  const nextChange = (config, now) => Math.min(...(config?.scheduled_policies || [])
    .map((p) => Date.parse(p.published_at)).filter((t) => t > now));

  /** Say whether a stored choice still stands (not expired; same material policy and banner). */
  const isCurrent = (choice, config, now) => !!choice && now < choice.exp &&
    (!config || (choice.hash === config.config_hash && choice.material === policyAt(config, now).material));

  /** Say whether the page may use the site: its origin is allowed (or the service's own). */
  const isAllowedHere = (config) => !config?.origins || location.origin === base || config.origins.includes(location.origin);

  /** Build a selection granting everything or nothing optional (GPC keeps marketing off). */
  const allOrNone = (config, grant) => selecting(config.purposes, (p) => p.is_required || (grant && !(gpc && isMarketing(p))));

  /** Turn a selection into a choice stamped with the policy, banner hash and expiry. */
  const makeChoice = (config, sel, now) => {
    const { policy, material } = policyAt(config, now);
    return {
      purposes: sel.purposes, services: sel.services || {}, at: now,
      exp: now + (config ? config.lifetime_days : 182) * DAY,
      policy: policy?.version, material, hash: config?.config_hash
    };
  };

  /** Say whether a choice allows a purpose (and optionally one of its services); a purpose
   * the choice does not name has its default. */
  const isAllowed = (config, choice, purpose, service) => {
    const p = findPurpose(config, purpose), on = choice?.purposes[purpose];
    if (p?.is_required) return true;
    if (on === undefined) return byDefault(config, p);
    return !!on && (!service || (choice.services[purpose] || {})[service] !== false);
  };

  /** Build the POST /records body for a choice: the purposes it names. */
  const toRecord = (config, choice, source, language) => {
    const decisions = config.purposes.filter((p) => p.key in choice.purposes).map((p) => {
      const d = { purpose: p.key, granted: isAllowed(config, choice, p.key) };
      if (p.services?.length) {
        d.services = {};
        for (const s of p.services) d.services[s.key] = d.granted && isAllowed(config, choice, p.key, s.key);
      }
      return d;
    });
    // JSON.stringify drops the undefined ones (no policy published yet).
    return { decisions, source, policy_version: choice.policy || undefined, config_hash: choice.hash, language };
  };

  /** Map a choice to Consent Mode v2 signals: granted only if every purpose naming it is allowed. */
  const consentModeFor = (config, choice) => {
    const out = {};
    for (const p of config.purposes) {
      const on = isAllowed(config, choice, p.key);
      for (const s of p.consent_mode || []) out[s] = on && out[s] !== 'denied' ? 'granted' : 'denied';
    }
    return out;
  };

  /** List the cookies (config entries) that a choice does not allow. */
  const cookiesToDelete = (config, choice) => config.purposes.flatMap((p) => {
    const on = isAllowed(config, choice, p.key);
    return (on ? [] : p.cookies || []).concat(...(p.services || [])
      .filter((s) => !on || !isAllowed(config, choice, p.key, s.key)).map((s) => s.cookies || []));
  });

  // ---- side effects: gtag, cookies, events ------------------------------------------------

  function gtag() {
    // dataLayer is the name Google tags read; it is created only if the page has not.
    const dataLayer = window.dataLayer = window.dataLayer || [];
    if (typeof window.gtag === 'function') window.gtag(...arguments);
    else dataLayer.push(arguments);
  }

  const deleteCookies = (list) => {
    const names = document.cookie.split(';').map((c) => c.split('=')[0].trim());
    const host = location.hostname.split('.');
    for (const c of list) {
      for (const name of names) {
        if (!(c.is_prefix ? name.startsWith(c.name) : name === c.name)) continue;
        // It may have been set with or without a domain, for this host or a parent.
        for (const d of [c.domain, '', ...host.map((_, i) => host.slice(i).join('.'))]) {
          for (const path of [c.path || '/', '/']) {
            document.cookie = `${name}=; Max-Age=0; path=${path}${d ? '; domain=' + d : ''}`;
          }
        }
      }
    }
  };

  const emit = (name, detail) => document.dispatchEvent(new CustomEvent(name, { detail }));

  const whenDom = (fn) => {
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', fn);
    else fn();
  };

  // ---- state ------------------------------------------------------------------------------

  // Everything in st is what the store keeps, so persisting is writing st.
  // off: purposes this browser refused; seen: the config hash whose notice was closed.
  const st = { config: null, choice: null, token: null, visitor: null, checked: 0, outbox: [], off: {}, seen: null };
  const load = () => {
    Object.assign(st, readStore());
    if (!st.choice?.hash || !isCurrent(st.choice, null, Date.now())) st.choice = null;
    st.outbox = st.outbox.filter((entry) => entry.body); // a record is built with its config
  };
  load();
  if (PRELOADED) {
    st.config = PRELOADED; // fresher than any stored copy: it came with the code
    st.checked = Date.now();
  }
  let listeners = [];
  let lang = 'en';
  // Set when the service refuses this page (origin not allowed, unknown site): then
  // nothing runs, nothing is shown and nothing is written.
  let refused = null;

  const persist = () => refused || writeStore(st);

  /** The stored choice if it still stands now (a scheduled policy ends it at its time). */
  const standing = () => (!refused && isCurrent(st.choice, st.config, Date.now()) ? st.choice : null);

  const allowed = (purpose, service) => !refused && isAllowed(st.config, standing(), purpose, service);

  /** A selection of what is allowed now (the standing choice, else the defaults), to edit. */
  const current = () => selecting(st.config.purposes, (p) => allowed(p.key), copy(standing()?.services || {}));

  const state = () => {
    const c = standing(), purposes = {};
    for (const k of st.config ? st.config.purposes.map((p) => p.key) : Object.keys(c ? c.purposes : {})) {
      purposes[k] = allowed(k);
    }
    const iso = (ms) => (c ? new Date(ms).toISOString() : null);
    return {
      decided: !!c, purposes, services: c ? copy(c.services) : {},
      policy_version: c?.policy || null, config_hash: c?.hash || null,
      decided_at: iso(c?.at), expires_at: iso(c?.exp),
      gpc, visitor_id: st.visitor, pending: st.outbox.length, refused: !!refused
    };
  };

  /** Whether the site's rule for the visitor's region (the service placed them) lets
   * purposes run before a choice: opt-out or notice. */
  const lax = () => ['opt-out', 'notice'].includes(st.config?.mode);

  /** Make the current choice true on the page: signals, cookies, gated tags, listeners. */
  const apply = () => {
    const choice = standing();
    if (choice || lax()) gtag('consent', 'update', consentModeFor(st.config, choice));
    if (st.config) deleteCookies(cookiesToDelete(st.config, choice));
    if (!refused) whenDom(() => { runGated(); placeholders(); });
    showButton();
    const s = state();
    for (const cb of listeners) {
      try { cb(s); } catch (e) { console.error(e); }
    }
    emit(E_CHANGE, s);
  };

  /** Record a selection: apply it at once, keep it, and queue it for the service. */
  const choose = (sel, source) => {
    if (refused || !st.config) return;
    st.choice = makeChoice(st.config, sel, Date.now());
    for (const k in sel.purposes) sel.purposes[k] ? delete st.off[k] : (st.off[k] = 1);
    // The body is fixed now: a retry must send exactly what the first attempt sent.
    const body = toRecord(st.config, st.choice, source, lang);
    st.outbox.push({ key: uuid(), choice: st.choice, body, source, language: lang });
    persist();
    closeUi();
    apply();
    flush();
  };

  /** Show the first layer where the mode asks: opt-in, or a notice not yet closed. */
  const ask = () => {
    if (!lax() || (st.config.mode === 'notice' && st.seen !== st.config.config_hash)) showBanner();
  };

  /** Ask again: the stored choice no longer stands (policy, banner, expiry, not recorded). */
  const askAgain = () => {
    st.choice = null;
    persist();
    apply();
    ask();
  };

  /** Stop for good on this page: the service refused it; say why in the console. */
  const refuse = (message) => {
    if (refused) return;
    refused = message;
    console.error('consent: ' + message);
    closeUi();
    apply(); // clears the optional purposes' cookies, runs nothing
    resolveReady(state());
  };

  // randomUUID needs a secure context; elsewhere a blob URL ends with a fresh random UUID.
  const uuid = () => crypto.randomUUID?.() || URL.createObjectURL(new Blob()).slice(-36);

  // ---- network: config, outbox ------------------------------------------------------------

  const refusal = (message) => ({ refused: message });
  const notHere = () => refusal(`add ${location.origin} to the allowed origins of site ${site}`);

  /** Read a 4xx answer's reason: the service names the fix. */
  const refusalOf = (r) => r.json().catch(() => ({})).then((body) => {
    throw refusal(body.message || `the service refused site ${site} (${r.status})`);
  });

  // The page's language, then the browser's: the config carries the texts of the first
  // one the site offers (and its default).
  const wanted = () => [...new Set([document.documentElement.lang, ...navigator.languages]
    .filter((tag) => /^[a-z]{2,3}(-[a-z0-9]{1,8})*$/i.test(tag || '')))].slice(0, 10);

  // The browser's HTTP cache revalidates with the ETag: an unchanged config costs a 304.
  const fetchConfig = () => fetch(`${endpoint}/config?lang=${encodeURIComponent(wanted().join(','))}`,
    { credentials: 'omit', signal: AbortSignal.timeout?.(8000) })
    .then((r) => {
      if (r.status >= 400 && r.status < 500) return refusalOf(r);
      if (!r.ok) throw new Error(r.status);
      return r.json();
    })
    .then((config) => {
      if (!isAllowedHere(config)) throw notHere();
      st.config = config;
      st.checked = Date.now();
      lang = pickLanguage(config);
      return config;
    });

  /** Whether the stored configuration may still be used without asking: within its max
   * age, and with the texts of this page's language. */
  const isFresh = () => !!st.config && Date.now() - st.checked < (st.config.max_age ?? 300) * 1000 &&
    !!st.config.texts[pickLanguage(st.config)];

  let sending = false, tries = 0, timer = 0;

  /** Send the oldest queued record; on failure retry with back-off (the queue is stored). */
  const flush = () => {
    if (sending || refused || !st.outbox.length) return;
    sending = true;
    clearTimeout(timer);
    const entry = st.outbox[0];
    const headers = { 'Content-Type': 'application/json', 'Idempotency-Key': entry.key };
    if (st.token) headers['X-Consent-Token'] = st.token;
    fetch(endpoint + '/records', {
      method: 'POST', headers, credentials: 'omit', keepalive: true, body: JSON.stringify(entry.body)
    }).then((r) => {
      if ((r.status === 401 || r.status === 403) && st.token) {
        st.token = null; // a token the service no longer accepts: go on as a new visitor
        return { retry: true };
      }
      if (r.status === 403 || r.status === 404) return refusalOf(r);
      if (r.status >= 400 && r.status < 500 && r.status !== 408 && r.status !== 429) {
        console.error('consent: the service refused the choice', r.status); // retrying cannot help
        return { lost: true };
      }
      if (!r.ok) throw new Error(r.status);
      return r.json();
    }).then((body) => {
      sending = false;
      tries = 0;
      if (!body.retry) st.outbox = st.outbox.filter((e) => e.key !== entry.key);
      if (body.visitor_token) {
        st.token = body.visitor_token;
        st.visitor = body.visitor_id;
      }
      // A choice that cannot be recorded does not stand: ask again.
      if (body.lost && st.choice && st.choice.at === entry.choice.at) askAgain();
      persist();
      if (body.record) emit(E_SAVED, { record: body.record, state: state() });
      flush();
    }, (e) => {
      sending = false;
      if (e?.refused) return refuse(e.refused);
      timer = setTimeout(flush, Math.min(60000, 1000 * 2 ** tries++) * (0.8 + Math.random() * 0.4));
    });
  };

  // A simple request with no body, no credentials and no identifier: nothing to track.
  const countShown = () => fetch(endpoint + '/shown', { method: 'POST', mode: 'no-cors', credentials: 'omit', keepalive: true })
    .catch(() => {});

  // ---- gating -----------------------------------------------------------------------------

  const permits = (el) => el.getAttribute(A_CONSENT).split(/\s+/).every((p) => allowed(p, el.getAttribute(A_SERVICE)));
  let gating = false, regate = false;

  /** Run allowed gated scripts and frames, in document order, each once. */
  const runGated = () => {
    if (gating) {
      regate = true;
      return;
    }
    gating = true;
    const next = () => {
      const el = all(GATED).find(permits);
      if (!el) {
        gating = false;
        if (regate) {
          regate = false;
          runGated();
        }
        return;
      }
      if (el.tagName === 'IFRAME') {
        dropPlaceholder(el);
        el.src = el.getAttribute(A_SRC);
        el.hidden = false;
        return next();
      }
      const s = document.createElement('script');
      for (const a of el.attributes) if (a.name !== 'type' && a.name !== 'nonce') s.setAttribute(a.name, a.value);
      if (el.getAttribute(A_TYPE)) s.type = el.getAttribute(A_TYPE);
      s.nonce = el.nonce; // CSP hides the nonce attribute once parsed; the property keeps it
      if (el.src) {
        s.async = false;
        s.onload = s.onerror = next; // later tags wait for this one: document order
        el.replaceWith(s);
      } else {
        s.text = el.text;
        el.replaceWith(s);
        next();
      }
    };
    next();
  };

  // ---- rendering --------------------------------------------------------------------------

  const h = (tag, attrs = {}, kids = []) => {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v);
    }
    el.append(...kids.filter(Boolean));
    return el;
  };

  const pickLanguage = (config) => {
    const langs = config.languages || [];
    for (const wanted of [document.documentElement.lang, ...navigator.languages]) {
      const tag = (wanted || '').toLowerCase(), base = tag.split('-')[0];
      const found = [tag, base, ALIASES[base]].find((l) => langs.includes(l));
      if (found) return found;
    }
    return config.default_language || 'en';
  };

  const t = (key) => {
    const texts = st.config?.texts || {};
    return texts[lang]?.[key] || texts[st.config.default_language]?.[key] || key;
  };

  const tr = (item, key) => {
    const texts = item.translations || {};
    return texts[lang]?.[key] || texts[st.config.default_language]?.[key] || (key === 'title' ? item.key : '');
  };

  let sheet = null;

  /** Create a host element whose shadow root holds our styles. */
  const shadowHost = (tag) => {
    // A custom element name: host-page rules for div, section... cannot reach the host.
    const host = document.createElement(tag);
    const root = host.attachShadow({ mode: 'open' });
    if (CSS) {
      // A constructed sheet needs no request, and CSP's style-src does not apply to it.
      if (!sheet) (sheet = new CSSStyleSheet()).replaceSync(CSS);
      root.adoptedStyleSheets = [sheet];
    } else root.append(h('link', { rel: 'stylesheet', href: base + '/widget/consent.css' })); // raw source
    return { host, root };
  };

  let ui = null, opener = null, shownCounted = false;

  const look = () => st.config?.appearance || {};

  /** Dark for the site's theme "dark", or "auto" with a dark system preference. */
  const theme = (host) => host.toggleAttribute('data-dark', look().theme === 'dark' ||
    (look().theme !== 'light' && matchMedia('(prefers-color-scheme: dark)').matches));

  const mount = () => {
    if (!ui) {
      ui = shadowHost('consent-widget');
      ui.root.addEventListener('keydown', onKey);
    }
    theme(ui.host);
    if (!ui.host.isConnected) document.body.append(ui.host);
    for (const el of all('.layer', ui.root)) el.remove();
    fab?.host.remove();
  };

  /** The language attributes of a layer: right-to-left scripts read from the right. */
  const speech = () => ({ lang, dir: RTL.test(lang) ? 'rtl' : 'ltr' });

  // Focus moves once the layer is painted: asking for it sooner forces style and layout
  // of the new tree before the first frame.
  const focusSoon = (el) => requestAnimationFrame(() => setTimeout(() => el.isConnected && el.focus({ preventScroll: true })));

  const rememberOpener = () => {
    const active = document.activeElement;
    if (!opener && active && active !== document.body && active !== ui?.host) opener = active;
  };

  const closeUi = () => {
    if (!ui) return;
    ui.host.remove();
    if (opener?.isConnected) opener.focus();
    opener = null;
    showButton();
  };

  let fab = null;
  const SVG = 'http://www.w3.org/2000/svg';

  /** Show the floating "cookie settings" button once a choice stands (unless turned off);
   * under an opt-out or notice rule, "Your Privacy Choices" always. */
  const showButton = () => whenDom(() => {
    if (refused || !(standing() || lax()) || look().settings_button === false || ui?.host.isConnected) {
      fab?.host.remove();
      return;
    }
    if (!fab) {
      fab = shadowHost('consent-settings');
      const icon = document.createElementNS(SVG, 'svg'), path = document.createElementNS(SVG, 'path');
      icon.setAttribute('viewBox', '0 0 24 24');
      icon.setAttribute('aria-hidden', 'true');
      path.setAttribute('d', 'M12 2a10 10 0 1 0 10 10 4 4 0 0 1-5-5 4 4 0 0 1-5-5zM8 9a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3zm3 5a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3zm5 0a1 1 0 1 1 0 2 1 1 0 0 1 0-2z');
      icon.append(path);
      fab.button = h('button', { type: 'button', class: 'fab', onclick: () => Consent.open() });
      fab.icon = icon;
      fab.root.append(fab.button);
    }
    const label = prefsTitle();
    fab.button.setAttribute('aria-label', label);
    fab.button.title = label;
    // The law asks for the words ("Your Privacy Choices"): a button with its text.
    fab.button.className = lax() ? 'btn' : 'fab';
    fab.button.replaceChildren(lax() ? label : fab.icon);
    fab.host.setAttribute('data-side', look().button_side || 'left');
    theme(fab.host);
    if (!fab.host.isConnected) document.body.append(fab.host);
  });


  const button = (label, onclick, cls = 'btn', ariaLabel = null) =>
    h('button', { type: 'button', class: cls, onclick, 'aria-label': ariaLabel }, [label]);

  const closeButton = (onclick) => button('\u00d7', onclick, 'x', t('close'));

  const actions = (last) => h('div', { class: 'actions' }, [
    button(t('accept_all'), () => choose(allOrNone(st.config, true), 'banner')),
    button(t('reject_all'), () => choose(allOrNone(st.config, false), 'banner')),
    last
  ]);

  const link = (href, text) => href && h('a', { href: new URL(href, base), target: '_blank', rel: 'noopener' }, [text]);
  const policyLink = () => link(policyAt(st.config, Date.now()).policy?.url, t('policy_link'));

  /** The policy's "Last updated" date, in the banner's language. */
  const lastUpdated = () => {
    const when = policyAt(st.config, Date.now()).policy?.updated_at;
    return when && h('p', { class: 'meta' }, [t('last_updated').replace('{date}', new Date(when).toLocaleDateString(lang))]);
  };
  const prefsTitle = () => t(lax() ? 'privacy_choices' : 'settings_title');
  const gpcNotice = () => gpc && h('p', { class: 'gpc' }, [t('gpc_notice')]);
  const alwaysOn = () => h('span', { class: 'on' }, [t('always_on')]);

  /** Refuse selling and sharing at once: the advertising purposes. */
  const doNotSell = (source) => button(t('do_not_sell'), () => choose(refusing(st.config.purposes.filter(isMarketing)), source));

  /** A notice closed (or OK): it is not shown again, and nothing more is allowed. */
  const seen = () => {
    st.seen = st.config.config_hash;
    persist();
    closeUi();
  };

  /** Show the first layer: Accept all, Reject all and Customise, with equal weight; under
   * a notice rule, the notice with OK, Do Not Sell or Share, and Customise. */
  const showBanner = () => whenDom(() => {
    if (refused) return;
    rememberOpener();
    mount();
    const notice = lax();
    const chips = (st.config?.purposes || []).map((p) => h('li', {}, [tr(p, 'title'), p.is_required && alwaysOn()]));
    const more = button(t('customise'), openPrefs);
    const layer = h('div', {
      class: `layer banner ${look().layout || 'box'}`, role: 'dialog', 'aria-modal': 'false', tabindex: '-1',
      'aria-labelledby': 'c-title', 'aria-describedby': 'c-desc', ...speech()
    }, [
      closeButton(notice ? seen : closeUi),
      h('h2', { id: 'c-title' }, [t('title')]),
      h('p', { id: 'c-desc' }, [t(notice ? 'notice' : 'description'), ' ', policyLink()]),
      gpcNotice(),
      chips.length && h('ul', { class: 'chips' }, chips),
      notice ? h('div', { class: 'actions' }, [button(t('ok'), seen), doNotSell('banner'), more]) : actions(more)
    ]);
    ui.root.append(layer);
    focusSoon(layer);
    if (!shownCounted) {
      shownCounted = true;
      countShown();
    }
  });

  const toggle = (sw, on) => sw && sw.setAttribute('aria-checked', String(on));
  const switchFor = (labelId, on, onclick) =>
    h('button', { type: 'button', role: 'switch', 'aria-checked': String(on), 'aria-labelledby': labelId, onclick });

  const cookieList = (cookies) => cookies?.length && h('details', {}, [
    h('summary', {}, [`${t('cookies')} (${cookies.length})`]),
    h('ul', { class: 'cookies' }, cookies.map((c) => h('li', {}, [
      h('code', {}, [c.name + (c.is_prefix ? '*' : '')]),
      ' ' + [c.provider, c.duration, c.description].filter(Boolean).join(' \u00b7 ')
    ])))
  ]);

  /** Show the preference centre: a switch per purpose and per service, lists, policy link. */
  const openPrefs = () => {
    if (refused || !st.config) return;
    rememberOpener();
    mount();
    const config = st.config;
    const draft = current();
    const on = (p, s) => isAllowed(config, draft, p.key, s && s.key);
    const sections = config.purposes.map((p, i) => {
      const services = p.services || [];
      const serviceSwitches = [];
      const mine = draft.services[p.key] = draft.services[p.key] || {};
      const purposeSwitch = p.is_required ? alwaysOn() : switchFor('c-p' + i, on(p), () => {
        draft.purposes[p.key] = !on(p);
        toggle(purposeSwitch, on(p));
        services.forEach((s, j) => toggle(serviceSwitches[j], (mine[s.key] = on(p))));
      });
      const serviceItems = services.map((s, j) => {
        serviceSwitches[j] = !p.is_required && switchFor(`c-s${i}-${j}`, on(p, s), () => {
          // A service switched on turns its purpose on; switched-off services stay off.
          if ((mine[s.key] = !on(p, s))) draft.purposes[p.key] = true;
          toggle(purposeSwitch, on(p));
          services.forEach((o, k) => toggle(serviceSwitches[k], on(p, o)));
        });
        return h('li', {}, [
          h('div', { class: 'row' }, [h('span', { id: `c-s${i}-${j}` }, [s.name || s.key]), serviceSwitches[j]]),
          h('p', { class: 'meta' }, [s.provider || '', ' ', link(s.policy_url, t('policy_link'))]),
          cookieList(s.cookies)
        ]);
      });
      return h('section', {}, [
        h('div', { class: 'row' }, [h('h3', { id: 'c-p' + i }, [tr(p, 'title')]), purposeSwitch]),
        h('p', {}, [tr(p, 'description')]),
        services.length && h('details', {}, [
          h('summary', {}, [`${t('services')} (${services.length})`]),
          h('ul', { class: 'services' }, serviceItems)
        ]),
        cookieList(p.cookies)
      ]);
    });
    const dialog = h('div', {
      class: 'prefs', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'c-ptitle', tabindex: '-1', ...speech()
    }, [
      h('div', { class: 'head' }, [h('h2', { id: 'c-ptitle' }, [prefsTitle()]), closeButton(closePrefs)]),
      h('div', { class: 'body' }, [
        gpcNotice(), lax() && doNotSell('preferences'), ...sections,
        h('p', {}, [policyLink(), ' ', link(config.rights_request_url, t('privacy_request'))]), lastUpdated()
      ]),
      actions(button(t('save'), () => choose(draft, 'preferences')))
    ]);
    ui.root.append(h('div', { class: 'layer overlay' }, [dialog]));
    dialog.focus(); // opened by the visitor, after the page's first frame: at once
  };

  /** Close the preference centre; without a choice the first layer comes back (opt-in). */
  const closePrefs = () => (standing() || lax() ? closeUi() : showBanner());

  const onKey = (e) => {
    const dialog = ui.root.querySelector('.prefs');
    if (!dialog) return;
    if (e.key === 'Escape') {
      e.preventDefault();
      return closePrefs();
    }
    if (e.key !== 'Tab') return;
    // Trap focus: the preference centre is modal.
    const items = all('button,a[href],summary', dialog).filter((el) => el.getClientRects().length);
    const first = items[0], last = items[items.length - 1], active = ui.root.activeElement;
    if (e.shiftKey ? active === first || active === dialog : active === last) {
      e.preventDefault();
      (e.shiftKey ? last : first).focus();
    }
  };

  const dropPlaceholder = (frame) => {
    if (frame.previousElementSibling?.tagName === 'CONSENT-PLACEHOLDER') frame.previousElementSibling.remove();
  };

  /** Unload gated frames no longer allowed; put a click-to-load placeholder before each. */
  const placeholders = () => {
    for (const frame of all(`iframe[${A_CONSENT}][src]`)) if (!permits(frame)) frame.removeAttribute('src');
    for (const frame of all(FRAMES)) {
      dropPlaceholder(frame);
      const keys = frame.getAttribute(A_CONSENT).split(/\s+/), serviceKey = frame.getAttribute(A_SERVICE);
      const p = findPurpose(st.config, keys[0]);
      const title = p ? tr(p, 'title') : keys[0];
      const service = p?.services?.find((s) => s.key === serviceKey);
      const text = t('placeholder').replace('{purpose}', title).replace('{service}', service?.name || serviceKey || title);
      const ph = shadowHost('consent-placeholder');
      for (const d of ['width', 'height']) {
        const v = frame.getAttribute(d);
        if (v) ph.host.style[d] = /^\d+$/.test(v) ? v + 'px' : v;
      }
      ph.root.append(h('div', { class: 'ph' }, [h('p', {}, [text]), button(t('load'), () => {
        const sel = current();
        for (const k of keys) {
          sel.purposes[k] = true;
          if (serviceKey) (sel.services[k] = sel.services[k] || {})[serviceKey] = true;
        }
        choose(sel, 'preferences'); // one purpose, chosen on its own
      })]));
      frame.hidden = true;
      frame.before(ph.host);
    }
  };

  // ---- public API and start ---------------------------------------------------------------

  let resolveReady;
  const Consent = {
    version: '1',
    ready: new Promise((resolve) => (resolveReady = resolve)),
    allowed,
    state,
    onChange(cb) {
      listeners.push(cb);
      return () => (listeners = listeners.filter((x) => x !== cb));
    },
    open() {
      (st.config ? Promise.resolve() : fetchConfig()).catch(() => {}).then(() => whenDom(openPrefs));
    },
    /** Set purposes from page code, e.g. set({analytics: true}); recorded with source "api". */
    set(purposes) {
      const sel = current();
      for (const k in purposes) sel.purposes[k] = !!purposes[k];
      choose(sel, 'preferences'); // the site's own settings UI, purpose by purpose
    },
    push(fn) {
      try { fn(Consent); } catch (e) { console.error(e); }
    },
    // Internals the browser tests read; not part of the public API.
    _: { readStore, storeKey }
  };
  window.Consent = Consent;
  if (Array.isArray(queued)) queued.forEach((fn) => Consent.push(fn));

  // Consent Mode's default must come before every gated tag, so it is issued first: denied,
  // then per region of an opt-out or notice rule, what runs there before a choice.
  const defaults = { wait_for_update: 500 };
  for (const s of CM_SIGNALS.concat(...(st.config?.purposes || []).map((p) => p.consent_mode || []))) defaults[s] = 'denied';
  gtag('consent', 'default', defaults);
  for (const r of st.config?.consent_mode_regions || []) {
    gtag('consent', 'default', { ...defaults, ...consentModeFor({ ...st.config, mode: r.mode }, null), region: r.region });
  }

  let switchTimer = 0;
  /** At the time a scheduled policy takes effect, ask again if the choice no longer stands. */
  const watchSchedule = () => {
    clearTimeout(switchTimer);
    const at = nextChange(st.config, Date.now());
    if (at === Infinity) return;
    switchTimer = setTimeout(() => {
      if (st.choice && !standing()) askAgain();
      watchSchedule();
    }, Math.min(at - Date.now(), 2 ** 31 - 1));
  };

  /** Apply the stored choice if it still stands under this configuration, else ask again. */
  const settle = () => {
    if (standing()) apply();
    else askAgain();
    persist();
    resolveReady(state());
    watchSchedule();
  };

  /** First visit, expired or stale: nothing is written until the visitor chooses (under an
   * opt-out rule, the defaults apply, and a GPC browser's opt-out is recorded). */
  const welcome = () => {
    if (st.choice) return; // chosen meanwhile, e.g. in another tab
    if (lax()) apply();
    else deleteCookies(cookiesToDelete(st.config, null));
    const ads = st.config.purposes.filter((p) => isMarketing(p) && defaultable(p, st.config.mode) && !st.off[p.key]);
    if (gpc && ads.length) choose(refusing(ads), 'gpc');
    ask();
    whenDom(placeholders);
    resolveReady(state());
    watchSchedule();
  };

  if (st.config && !isAllowedHere(st.config)) refuse(notHere().refused);
  else {
    if (st.config) lang = pickLanguage(st.config);
    const begin = () => (st.choice ? settle() : welcome());
    if (isFresh()) begin(); // within its max age: the stored copy, with no request
    else {
      // Has the policy or the banner changed? Offline, a stored copy stands; with none
      // there is no banner (and nothing runs) until the service can be reached.
      fetchConfig().catch((e) => {
        if (e?.refused || !st.config) throw e;
      }).then(begin, (e) => {
        if (e?.refused) return refuse(e.refused);
        console.warn('consent: the service cannot be reached; nothing optional runs');
        resolveReady(state());
      });
    }
    flush();
  }

  window.addEventListener('online', flush);
  window.addEventListener('storage', (e) => {
    if (e.key !== storeKey) return;
    const before = JSON.stringify(st.choice);
    load();
    if (JSON.stringify(st.choice) !== before) {
      if (st.choice) closeUi();
      apply();
    }
  });
  document.addEventListener('click', (e) => {
    if (!e.target.closest?.(`[${A_OPEN}]`)) return;
    e.preventDefault();
    Consent.open();
  });
})();
