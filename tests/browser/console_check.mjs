#!/usr/bin/env node
// A headless browser (Chromium; Firefox with --browser firefox: browsers.mjs) drives the
// management console (tests/console.rs sets the scene: a paho publisher filling queue
// `fill`, one dead letter in `work.dlq`, a stomp.py consumer waiting on `work`). Logs in,
// watches the queue fill, peeks, replays the dead letter with the keyboard, breaks a route
// file and reads its error and line, explains an address. Prints one JSON line; exit 0 on
// success, 1 otherwise.
//   node console_check.mjs [--browser chromium|firefox] URL USER PASSWORD ROUTES_DIR DEAD_LETTER_BODY
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { browserArg, launch } from './browsers.mjs';

//   node console_check.mjs [--browser NAME] --no-admin URL   (a router with no admin configured)
const usage = 'usage: node console_check.mjs [--browser chromium|firefox] URL USER PASSWORD ROUTES_DIR DEAD_LETTER_BODY | --no-admin URL';
let browserName, args;
try {
  [browserName, args] = browserArg(process.argv.slice(2));
} catch (e) {
  console.error(`${e.message}\n${usage}`);
  process.exit(2);
}
const [url, user, password, routesDir, deadBody] = args;
const noAdmin = url === '--no-admin';
if (!deadBody && !(noAdmin && user)) {
  console.error(usage);
  process.exit(2);
}
const browser = await launch(browserName);
const browserSeen = `${browserName} ${browser.version()}`; // in the report: which build ran
if (noAdmin) {
  // No login asked; figures shown; an action refused with the API's reason.
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(15000);
    await page.goto(`${user}/?every=300`);
    await page.waitForSelector('#nav', { state: 'visible' });
    if (await page.isVisible('#login-form')) throw new Error('a login was asked');
    const who = await page.textContent('#who');
    if (!who.includes('No admin is configured')) throw new Error(`who: ${who}`);
    await page.waitForFunction(() => document.getElementById('overview-figures').textContent.includes('needs an admin'));
    await page.click('a[href="#connections"]');
    await page.waitForFunction(() => document.getElementById('status').textContent.includes('this needs an admin'));
    // Links: the link that cannot connect, its state and why.
    await page.click('a[href="#links"]');
    await page.waitForFunction(() => {
      const r = document.querySelector('#links-rows tr[data-key="rabbit"]');
      return r && r.cells[3].textContent === 'retrying' && r.cells[9].textContent.length > 0;
    });
    const link = await page.$eval('#links-rows tr[data-key="rabbit"]', (r) => ({
      kind: r.cells[1].textContent, state: r.cells[3].textContent, last_error: r.cells[9].textContent }));
    const cluster = await page.textContent('#cluster');
    if (!cluster.includes('runs alone')) throw new Error(`cluster: ${cluster}`);
    console.log(JSON.stringify({ ok: true, browser: browserSeen, who, link }));
  } catch (e) {
    console.error(`console check (no admin) failed: ${e.message}`);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
  process.exit();
}
const report = { ok: false, browser: browserSeen, steps: [] };
const step = (name, detail) => { report.steps.push(detail === undefined ? name : { [name]: detail }); };
// CONSOLE_SCREENSHOTS=DIR keeps a picture of each screen (for a human to look at).
const shots = process.env.CONSOLE_SCREENSHOTS;
const shoot = async (page, name) => { if (shots) await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true }); };
const problems = []; // script errors and CSP violations: any fails the test
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // The refused login and the failed reload answer 401 and 422: Chromium logs those
  // responses (Firefox does not); anything else logged as an error (a CSP violation, a
  // script error) counts. Firefox reports CSP violations as page errors: counted too.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console: ${m.text()}`);
  });
  const response = await page.goto(`${url}/?every=300`);
  const csp = response.headers()['content-security-policy'] || '';
  if (!csp.includes("script-src 'self'")) throw new Error(`no strict CSP on the page: ${csp}`);

  // Log in: the form, typed and submitted with Enter.
  await page.waitForSelector('#login-user', { state: 'visible' });
  const authBefore = await page.evaluate(() => sessionStorage.length);
  await page.fill('#login-user', user);
  await page.fill('#login-password', 'wrong-password');
  await page.press('#login-password', 'Enter');
  await page.waitForFunction(() => document.getElementById('login-error').textContent.includes('Wrong'));
  await page.fill('#login-password', password);
  await page.press('#login-password', 'Enter');
  await page.waitForSelector('#nav', { state: 'visible' });
  step('login', { refused_first: true, stored_before: authBefore });

  // Overview: the received-rate chart has points and a rate above zero while paho publishes.
  await page.waitForFunction(() => {
    const now = Number(document.querySelector('.now[data-chart="received"]').textContent);
    const pts = document.querySelector('figure[data-chart="received"] polyline').getAttribute('points') || '';
    return now > 0 && pts.split(' ').length >= 3;
  });
  await shoot(page, 'overview');
  step('overview', await page.$eval('.now[data-chart="received"]', (e) => e.textContent));

  // Queues: `fill` grows while the publisher runs (three rising readings).
  await page.click('a[href="#queues"]');
  const readyCell = 'tr[data-key="fill"] td:nth-child(2)';
  await page.waitForSelector(readyCell);
  const seen = [];
  const deadline = Date.now() + 20000;
  while (seen.length < 3 && Date.now() < deadline) {
    const v = Number(await page.textContent(readyCell));
    if (!seen.length || v > seen[seen.length - 1]) seen.push(v);
    await page.waitForTimeout(200);
  }
  if (seen.length < 3) throw new Error(`queue fill did not grow: ${seen}`);
  step('queue_fills', seen);

  // Peek: the first messages, left in place.
  await page.click('tr[data-key="fill"] button:text("Peek")');
  await page.waitForSelector('#queue-panel article.message');
  const bodies = await page.$$eval('#queue-panel pre.body-text', (ps) => ps.map((p) => p.textContent));
  if (bodies[0] !== 'fill-0' || bodies[1] !== 'fill-1') throw new Error(`peek shows ${bodies.slice(0, 3)}`);
  const after = Number(await page.textContent(readyCell));
  if (after < seen[seen.length - 1]) throw new Error(`peek consumed: ${after} < ${seen}`);
  await shoot(page, 'queues');
  step('peek', bodies.length);

  // Move the first 5 to another queue, then purge that one: confirmed with the keyboard.
  await page.click('tr[data-key="fill"] button:text("Move…")');
  await page.fill('#move-to', 'queue:fill.moved');
  await page.fill('#move-count', '5');
  await page.press('#move-count', 'Enter');
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Moved 5 message(s)'));
  await page.waitForFunction(() => {
    const r = document.querySelector('tr[data-key="fill.moved"]');
    return r && r.cells[1].textContent === '5';
  });
  await page.click('tr[data-key="fill.moved"] button:text("Purge…")');
  // The confirmation takes the focus: Enter confirms.
  const confirmFocused = await page.evaluate(() => document.activeElement.textContent);
  if (confirmFocused !== 'Purge') throw new Error(`focus on the confirmation: ${confirmFocused}`);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'Purged 5 message(s) from fill.moved.');
  await page.waitForFunction(() => document.querySelector('tr[data-key="fill.moved"]').cells[1].textContent === '0');
  step('move_and_purge', 5);

  // Connections: the stomp.py consumer waiting for the replay is listed, and the paho
  // publisher with its client id (cells: id, protocol, listener, user, client id, ...).
  await page.click('a[href="#connections"]');
  await page.waitForFunction(() => [...document.querySelectorAll('#connections-rows tr')]
    .some((r) => r.cells[1].textContent === 'stomp'));
  await page.waitForFunction(() => [...document.querySelectorAll('#connections-rows tr')]
    .some((r) => r.cells[1].textContent === 'mqtt' && r.cells[2].textContent === 'mqtt'
      && r.cells[4].textContent.startsWith('console-pub-')));
  await shoot(page, 'connections');
  step('connections', await page.$$eval('#connections-rows tr', (rs) => rs.length));

  // Dead letters: the rejected message, its body and why it died; replayed with the keyboard.
  await page.click('a[href="#dead-letters"]');
  await page.waitForFunction(() => {
    const r = document.querySelector('#dlq-rows tr[data-key="work.dlq"]');
    return r && r.cells[1].textContent === '1';
  });
  await page.click('#dlq-rows tr[data-key="work.dlq"] button.show');
  await page.waitForSelector('#dlq-panel article.message');
  const card = await page.$eval('#dlq-panel article.message', (a) => ({
    body: a.querySelector('pre.body-text').textContent,
    facts: a.querySelector('dl.facts').textContent,
    headers: [...a.querySelectorAll('table.headers tbody tr')].map((r) => [r.cells[0].textContent, r.cells[1].textContent]),
  }));
  if (card.body !== deadBody) throw new Error(`dead letter body: ${card.body}`);
  if (!card.headers.some(([k, v]) => k === 'x-death-reason' && v === 'rejected')) throw new Error(`headers: ${JSON.stringify(card.headers)}`);
  if (!card.facts.includes('queue:work')) throw new Error(`facts: ${card.facts}`);
  // Focus is on the panel's heading: Tab along the focus order to the replay button.
  const focused = () => page.evaluate(() => {
    const e = document.activeElement;
    return `${e.tagName}${e.className ? `.${e.className}` : ''}:${e.textContent.trim().slice(0, 40)}`;
  });
  if (!(await focused()).startsWith('H3')) throw new Error(`focus after showing: ${await focused()}`);
  const path = [];
  for (let i = 0; i < 15; i++) {
    await page.keyboard.press('Tab');
    path.push(await focused());
    if (path[path.length - 1].startsWith('BUTTON.replay')) break;
  }
  if (!path[path.length - 1].startsWith('BUTTON.replay')) throw new Error(`tabbing never reached Replay: ${path}`);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('status').textContent.includes('Replayed 1'));
  await page.waitForFunction(() => {
    const r = document.querySelector('#dlq-rows tr[data-key="work.dlq"]');
    return r && r.cells[1].textContent === '0';
  });
  await shoot(page, 'dead-letters');
  step('replayed_with_keyboard', path);

  // Routes: a broken file; the reload keeps the table in force and shows file and line.
  await page.click('a[href="#routes"]');
  await page.waitForSelector('#routes-rows tr[data-key="fill-in"]');
  const version = await page.textContent('dd[data-field="Table version in force"]');
  writeFileSync(join(routesDir, 'broken.yaml'), 'routes:\n  - name: broken\n    from: { queue: in }\n    to: [ { nowhere: x } ]\n');
  await page.click('#routes-reload');
  await page.waitForFunction(() => document.getElementById('routes-errors').textContent.includes('broken.yaml'));
  const errors = await page.textContent('#routes-errors');
  if (!/broken\.yaml, line 4/.test(errors)) throw new Error(`error without its line: ${errors}`);
  if ((await page.textContent('dd[data-field="Table version in force"]')) !== version) throw new Error('the table changed');
  const matched = Number(await page.textContent('#routes-rows tr[data-key="fill-in"] td:nth-child(5)'));
  if (!(matched > 0)) throw new Error(`route counter: ${matched}`);
  step('route_error', { errors, matched });

  // Explain: the same walk as `switchboard explain`.
  await page.selectOption('#explain-protocol', 'mqtt');
  await page.fill('#explain-address', 'console/fill');
  await page.click('#explain-form button[type="submit"]');
  await page.waitForFunction(() => document.getElementById('explain-output').textContent.includes('fill-in'));
  const explained = await page.textContent('#explain-output');
  if (!explained.includes('queue:fill')) throw new Error(`explain: ${explained}`);
  await shoot(page, 'routes');
  step('explain', explained.split('\n').length);

  if (problems.length) throw new Error(problems.join('; '));
  report.ok = true;
  console.log(JSON.stringify(report));
} catch (e) {
  console.error(`console check failed: ${e.message}\nsteps so far: ${JSON.stringify(report.steps)}\nproblems: ${problems.join('; ')}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
