#!/usr/bin/env node
// Headless Chromium opens the dashboard example's page (examples/dashboard) and waits until it shows live
// readings of every simulated sensor, updating. Prints one JSON line; exit 0 on success, 1 otherwise.
//   node dashboard_check.mjs http://127.0.0.1:PORT/index.html?ws=ws://HOST:PORT/ws
import { chromium } from 'playwright-core';

const url = process.argv[2];
if (!url) { console.error('usage: node dashboard_check.mjs URL'); process.exit(2); }
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-features=LocalNetworkAccessChecks'],
});
try {
  const page = await browser.newPage();
  await page.goto(url);
  // Three sensors, each with at least five readings (so values keep arriving, not just one).
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('#rows tr')];
    return document.getElementById('status').textContent === 'live' && rows.length >= 3
      && rows.every((r) => Number(r.dataset.readings) >= 5);
  }, null, { timeout: 20000 });
  const rows = await page.$$eval('#rows tr', (trs) => trs.map((r) => ({
    sensor: r.dataset.sensor, celsius: r.cells[1].textContent, readings: Number(r.dataset.readings) })));
  console.log(JSON.stringify({ ok: true, rows }));
} catch (e) {
  console.error(`dashboard check failed: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
