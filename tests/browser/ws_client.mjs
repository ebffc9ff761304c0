#!/usr/bin/env node
// Browser-side STOMP / MQTT-over-WebSocket round trip in headless Debian Chromium (driven by playwright-core).
//
//   node ws_client.mjs stomp ws://127.0.0.1:PORT/ws   [--login U --passcode P] [--vhost /]
//   node ws_client.mjs mqtt  ws://127.0.0.1:PORT/mqtt [--login U --passcode P] [--qos 1]
//   common: [--count 20] [--timeout 20] (seconds, whole run) [--debug] (page console + client debug to stderr)
//
// In a blank page served from 127.0.0.1: connect over WebSocket, subscribe, publish --count messages with distinct bodies, wait for
// all of them, compare with what was sent (order included).
//   stomp: /queue/browser-test, then /topic/browser-topic; each SEND carries the custom header x-sb-seq,
//          which must come back on the MESSAGE. SUBSCRIBE asks for a RECEIPT before anything is sent.
//   mqtt:  MQTT 3.1.1 (protocolVersion 4), topic browser/test, QoS --qos (default 1), after the SUBACK.
// Prints one JSON summary line on stdout; exit 0 on success, 1 on failure or timeout (message on stderr),
// 2 on bad usage. Env: CHROMIUM (default /usr/bin/chromium). Never downloads a browser.
import { chromium } from 'playwright-core';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import http from 'node:http';

const here = path.dirname(fileURLToPath(import.meta.url));
const BUNDLES = {
  stomp: path.join(here, 'node_modules/@stomp/stompjs/bundles/stomp.umd.min.js'), // global StompJs
  mqtt: path.join(here, 'node_modules/mqtt/dist/mqtt.min.js'), // global mqtt
};
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // Chromium >= 142 blocks a page that is not itself on loopback from opening ws://127.0.0.1 (Local Network
  // Access, net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS; about:blank counts as "public"). The page is
  // served from loopback anyway (see blankPageServer); the flag is a second line of defence.
  '--disable-features=LocalNetworkAccessChecks'];

// An empty page on http://127.0.0.1:<ephemeral>/, so the page's origin is on loopback like the servers it talks to.
function blankPageServer() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end('<!doctype html><meta charset="utf-8"><title>switchboard ws harness</title>');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

function usage(msg) {
  if (msg) console.error(`ws_client: ${msg}`);
  console.error('usage: node ws_client.mjs stomp|mqtt ws://HOST:PORT/PATH [--login U --passcode P] [--vhost V]' +
    ' [--qos 0|1|2] [--count N] [--timeout SECONDS] [--debug]');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { count: 20, timeout: 20, qos: 1, vhost: '/', debug: false, login: undefined, passcode: undefined };
  const pos = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
    switch (a) {
      case '--login': opts.login = val(); break;
      case '--passcode': opts.passcode = val(); break;
      case '--vhost': opts.vhost = val(); break;
      case '--count': opts.count = Number(val()); break;
      case '--timeout': opts.timeout = Number(val()); break;
      case '--qos': opts.qos = Number(val()); break;
      case '--debug': opts.debug = true; break;
      case '-h': case '--help': usage();
      default: if (a.startsWith('--')) usage(`unknown option ${a}`); pos.push(a);
    }
  }
  if (pos.length !== 2) usage('need a protocol and a URL');
  [opts.proto, opts.url] = pos;
  if (!(opts.proto in BUNDLES)) usage(`unknown protocol '${opts.proto}'`);
  if (!/^wss?:\/\//.test(opts.url)) usage(`not a ws:// URL: ${opts.url}`);
  if (!(Number.isInteger(opts.count) && opts.count > 0)) usage('--count must be a positive integer');
  if (!(opts.timeout > 0)) usage('--timeout must be > 0');
  if (![0, 1, 2].includes(opts.qos)) usage('--qos must be 0, 1 or 2');
  return opts;
}

// ---- runs inside the page (serialised by playwright: no closures over Node values) ----
async function stompInPage({ url, login, passcode, vhost, count, deadlineMs, nonce, debug }) {
  const log = (...a) => { if (debug) console.log('[stomp]', ...a); };
  const results = [];
  const connectHeaders = {};
  if (vhost) connectHeaders.host = vhost;
  if (login !== undefined) connectHeaders.login = login;
  if (passcode !== undefined) connectHeaders.passcode = passcode;
  let fatal = null;
  let onFatal = () => {};
  const client = new StompJs.Client({
    brokerURL: url, connectHeaders, reconnectDelay: 0, heartbeatIncoming: 0, heartbeatOutgoing: 0,
    connectionTimeout: deadlineMs, debug: (s) => log(s),
  });
  const fail = (msg) => { if (!fatal) { fatal = msg; onFatal(msg); } };
  client.onStompError = (f) => fail(`STOMP ERROR frame: ${f.headers.message || ''} ${f.body || ''}`.trim());
  client.onWebSocketError = () => fail('WebSocket error (connection refused or handshake rejected?)');
  client.onWebSocketClose = (e) => fail(`WebSocket closed (code ${e.code}${e.reason ? ', ' + e.reason : ''})`);
  const deadline = Date.now() + deadlineMs;
  const guard = (p, what) => {
    let timer;
    return Promise.race([p, new Promise((_, rej) => {
      if (fatal) rej(new Error(`${what}: ${fatal}`));
      onFatal = (m) => rej(new Error(`${what}: ${m}`));
      timer = setTimeout(() => rej(new Error(`${what}: timed out`)), Math.max(0, deadline - Date.now()));
    })]).finally(() => clearTimeout(timer));
  };

  const connected = new Promise((res) => { client.onConnect = (f) => res(f); });
  client.activate();
  const connFrame = await guard(connected, 'connect');
  log('CONNECTED', JSON.stringify(connFrame.headers));

  for (const dest of ['/queue/browser-test', '/topic/browser-topic']) {
    const sent = Array.from({ length: count }, (_, i) => `stomp ${dest} #${i} ${nonce}`);
    const received = [];
    const headerErrors = [];
    let done;
    const allIn = new Promise((res) => { done = res; });
    const receiptId = `sub-${dest}-${nonce}`;
    const subscribed = new Promise((res) => client.watchForReceipt(receiptId, res));
    const sub = client.subscribe(dest, (m) => {
      const i = received.length;
      received.push(m.body);
      if (m.headers['x-sb-seq'] !== String(i) && headerErrors.length < 5) {
        headerErrors.push(`message ${i}: x-sb-seq=${JSON.stringify(m.headers['x-sb-seq'])}`);
      }
      if (received.length >= count) done();
    }, { receipt: receiptId });
    await guard(subscribed, `RECEIPT for SUBSCRIBE ${dest}`);
    sent.forEach((body, i) => client.publish({
      destination: dest, body, headers: { 'x-sb-seq': String(i), 'content-type': 'text/plain' },
    }));
    try {
      await guard(allIn, `receiving on ${dest}`);
    } catch (e) {
      results.push({ dest, sent, received, headerErrors, error: e.message });
      break;
    }
    sub.unsubscribe();
    results.push({ dest, sent, received, headerErrors });
  }
  onFatal = () => {};
  client.onWebSocketClose = () => {};
  await client.deactivate();
  return results;
}

async function mqttInPage({ url, login, passcode, count, qos, deadlineMs, nonce, debug }) {
  const log = (...a) => { if (debug) console.log('[mqtt]', ...a); };
  const lib = (typeof mqtt.connect === 'function') ? mqtt : mqtt.default;
  const topic = 'browser/test';
  const sent = Array.from({ length: count }, (_, i) => `mqtt ${topic} #${i} ${nonce}`);
  const received = [];
  const client = lib.connect(url, {
    protocolVersion: 4, clientId: `sb-browser-${nonce}`, clean: true, reconnectPeriod: 0,
    connectTimeout: deadlineMs, keepalive: 30, username: login, password: passcode,
  });
  let onFatal = () => {};
  let fatal = null;
  const fail = (msg) => { if (!fatal) { fatal = msg; onFatal(msg); } };
  client.on('error', (e) => fail(`MQTT error: ${e && e.message ? e.message : e}`));
  client.on('close', () => fail('connection closed'));
  const deadline = Date.now() + deadlineMs;
  const guard = (p, what) => {
    let timer;
    return Promise.race([p, new Promise((_, rej) => {
      if (fatal) rej(new Error(`${what}: ${fatal}`));
      onFatal = (m) => rej(new Error(`${what}: ${m}`));
      timer = setTimeout(() => rej(new Error(`${what}: timed out`)), Math.max(0, deadline - Date.now()));
    })]).finally(() => clearTimeout(timer));
  };
  try {
    const connack = await guard(new Promise((res) => client.once('connect', res)), 'connect');
    log('CONNACK', JSON.stringify(connack));
    let done;
    const allIn = new Promise((res) => { done = res; });
    client.on('message', (t, payload) => {
      received.push(new TextDecoder().decode(payload));
      if (received.length >= count) done();
    });
    const granted = await guard(new Promise((res, rej) => client.subscribe(topic, { qos },
      (err, g) => (err ? rej(err) : res(g)))), `SUBSCRIBE ${topic}`);
    log('SUBACK', JSON.stringify(granted));
    if (!granted || !granted.length || granted[0].qos === 128) throw new Error(`SUBSCRIBE ${topic} refused: ${JSON.stringify(granted)}`);
    for (const body of sent) client.publish(topic, body, { qos });
    await guard(allIn, `receiving on ${topic}`);
    onFatal = () => {};
    fatal = 'closing';
    await new Promise((res) => client.end(false, {}, res));
    return [{ dest: topic, sent, received }];
  } catch (e) {
    onFatal = () => {};
    fatal = 'closing';
    try { client.end(true); } catch { /* ignore */ }
    return [{ dest: topic, sent, received, error: e.message }];
  }
}

// ---------------------------------------------------------------------------------------------
function check(results, count) {
  const problems = [];
  for (const r of results) {
    if (r.error) problems.push(`${r.dest}: ${r.error}`);
    const got = r.received.length;
    if (got !== count) problems.push(`${r.dest}: received ${got} of ${count} messages`);
    const firstBad = r.sent.findIndex((b, i) => r.received[i] !== undefined && r.received[i] !== b);
    if (firstBad >= 0) {
      problems.push(`${r.dest}: message ${firstBad} is ${JSON.stringify(r.received[firstBad])}, expected ` +
        `${JSON.stringify(r.sent[firstBad])}${r.sent.includes(r.received[firstBad]) ? ' (out of order)' : ''}`);
    }
    for (const h of r.headerErrors || []) problems.push(`${r.dest}: custom header lost or wrong: ${h}`);
  }
  return problems;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const bundle = BUNDLES[opts.proto];
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  const summary = { ok: false, proto: opts.proto, url: opts.url, count: opts.count };
  let finished = false;
  const finish = (ok, error, extra = {}) => {
    if (finished) return 1;
    finished = true;
    Object.assign(summary, extra, { ok, ms: Date.now() - started });
    if (error) summary.error = error;
    console.log(JSON.stringify(summary));
    if (!ok) console.error(`ws_client ${opts.proto} ${opts.url}: FAILED: ${error}`);
    return ok ? 0 : 1;
  };
  if (!existsSync(bundle)) return finish(false, `${bundle} missing: run scripts/setup browser`);
  if (!existsSync(executablePath)) return finish(false, `${executablePath} missing: run scripts/setup browser (or set CHROMIUM)`);

  let browser;
  let server;
  const pageErrors = [];
  const killer = setTimeout(() => {
    process.exitCode = finish(false, `timeout after ${opts.timeout} s`);
    if (browser) browser.close().catch(() => {}).finally(() => process.exit(1)); else process.exit(1);
  }, opts.timeout * 1000);
  try {
    browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS, headless: true, timeout: opts.timeout * 1000 });
    const page = await browser.newPage();
    page.on('console', (m) => {
      if (opts.debug) console.error(`[page ${m.type()}] ${m.text()}`);
      if (m.type() === 'error' && pageErrors.length < 3) pageErrors.push(m.text());
    });
    page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
    server = await blankPageServer();
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    await page.addScriptTag({ path: bundle });
    const remaining = opts.timeout * 1000 - (Date.now() - started);
    const args = {
      url: opts.url, login: opts.login, passcode: opts.passcode, vhost: opts.vhost, count: opts.count, qos: opts.qos,
      deadlineMs: Math.max(1000, remaining - 1500), nonce: Math.random().toString(36).slice(2, 10), debug: opts.debug,
    };
    const results = await page.evaluate(opts.proto === 'stomp' ? stompInPage : mqttInPage, args);
    const problems = check(results, opts.count);
    const destinations = results.map((r) => ({ dest: r.dest, sent: r.sent.length, received: r.received.length }));
    clearTimeout(killer);
    if (problems.length && pageErrors.length) problems.push(`browser console: ${pageErrors.join(' | ')}`);
    return finish(problems.length === 0, problems.join('; '), { destinations, browser: browser.version() });
  } catch (e) {
    clearTimeout(killer);
    const msg = (e && e.message ? e.message : String(e)).split('\n')[0];
    return finish(false, pageErrors.length ? `${msg}; browser console: ${pageErrors.join(' | ')}` : msg);
  } finally {
    if (browser) await browser.close().catch(() => {});
    if (server) server.close();
  }
}

process.exitCode = await main();
