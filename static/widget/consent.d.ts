// Types for the consent banner's one global, window.Consent, and its DOM events.
// Served at /widget/consent.d.ts; reference it from page code:
//   /// <reference path="./consent.d.ts" />

export interface ConsentState {
  /** Whether the visitor has made a choice (false: first visit, expired or stale). */
  decided: boolean;
  /** Each purpose of the site: allowed now or not (required purposes are always true;
   * under a site's opt-out or notice rule for the visitor's region, a purpose it marked
   * is true until the visitor opts out). */
  purposes: Record<string, boolean>;
  /** Per purpose, the services decided on their own: {analytics: {matomo: false}}. */
  services: Record<string, Record<string, boolean>>;
  policy_version: string | null;
  config_hash: string | null;
  /** ISO 8601 times of the choice and of when it lapses; null before any choice. */
  decided_at: string | null;
  expires_at: string | null;
  /** The browser sent Global Privacy Control (marketing is then off by default). */
  gpc: boolean;
  visitor_id: string | null;
  /** Choices applied here but not yet recorded by the service (sent when it can be). */
  pending: number;
  /** True when the service refused this page (its origin is not allowed): nothing runs. */
  refused: boolean;
}

export interface ConsentRecord {
  id: number;
  sequence: number;
  recorded_at: string;
  event: string;
  source: string;
  decisions: Array<{ purpose: string; granted: boolean; services?: Record<string, boolean> }>;
  record_hash: string;
  [field: string]: unknown;
}

export interface ConsentSavedDetail {
  record: ConsentRecord;
  state: ConsentState;
}

export interface ConsentApi {
  readonly version: string;
  /** Resolves with the state once the banner knows it (stored choice or configuration). */
  readonly ready: Promise<ConsentState>;
  /** May this purpose (or one of its services) run now? Synchronous; false until chosen
   * (except a purpose the site's opt-out or notice rule for the region lets run). */
  allowed(purpose: string, service?: string): boolean;
  state(): ConsentState;
  /** Called on every applied choice; returns a function that stops the calls. */
  onChange(callback: (state: ConsentState) => void): () => void;
  /** Open the preference centre. */
  open(): void;
  /** Set purposes from page code, recorded with source "api": set({analytics: true}). */
  set(purposes: Record<string, boolean>): void;
  /** Run a function with the API now (the stub queues them until the script loads). */
  push(callback: (api: ConsentApi) => void): void;
}

declare global {
  interface Window {
    /** Before the script loads, an array of queued callbacks (the stub). */
    Consent: ConsentApi | Array<(api: ConsentApi) => void>;
  }
  interface DocumentEventMap {
    /** A choice was applied on the page. */
    "consent:change": CustomEvent<ConsentState>;
    /** The service recorded a choice. */
    "consent:saved": CustomEvent<ConsentSavedDetail>;
  }
}
