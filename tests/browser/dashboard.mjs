// The dashboard in a real headless browser: Debian's chromium, driven by playwright-core.
// Run by tests/it/dashboard.rs against a daemon with real backups, with:
//   DASHBOARD_URL     the daemon, e.g. http://127.0.0.1:41234
//   DASHBOARD_TOKEN   its [server] token
//   DASHBOARD_EXPECT  GET /api/v1/sources as the test read it (the numbers the page must show)
//   DASHBOARD_SHOTS   a folder for the screenshots (overview and a source page, desktop and phone)
// Exits non-zero, saying what differed, on the first failed check.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import path from 'node:path';

const base = process.env.DASHBOARD_URL;
const token = process.env.DASHBOARD_TOKEN;
const expect = JSON.parse(process.env.DASHBOARD_EXPECT ?? '{}');
const shots = process.env.DASHBOARD_SHOTS;
assert.ok(base && token && shots && expect.sources, 'DASHBOARD_URL, _TOKEN, _EXPECT and _SHOTS must be set');

const red = expect.sources.find((s) => s.health.level === 'red');
const green = expect.sources.find((s) => s.health.level === 'green');
assert.ok(red && green, 'the test gives one red and one green source');

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  // Chromium refuses to start as root with its sandbox.
  args: process.getuid?.() === 0 ? ['--no-sandbox'] : [],
});
const step = (what) => console.log(`- ${what}`);

try {
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await desktop.newPage();
  await page.goto(`${base}/`);
  step('overview');
  assert.equal(await page.title(), 'Overview · OffsiteDB');
  for (const s of expect.sources) {
    const row = page.locator(`tr[data-source="${s.name}"]`);
    assert.equal(await row.count(), 1, `a row for ${s.name}`);
    const state = row.locator('.state');
    assert.equal(await state.getAttribute('data-level'), s.health.level, `${s.name}'s level`);
    assert.equal((await state.textContent()).trim(), s.health.word, `${s.name}'s state in words`);
    assert.equal(await row.locator('.n-snapshots').getAttribute('value'), String(s.snapshots));
    assert.equal(await row.locator('.n-bytes').first().getAttribute('value'), String(s.stored_bytes));
    for (const r of s.health.reasons) {
      assert.ok((await row.textContent()).includes(r.text), `${s.name}: reason "${r.text}" shown`);
    }
  }
  // Red is a colour and a word.
  const redState = page.locator(`tr[data-source="${red.name}"] .state`);
  assert.equal((await redState.textContent()).trim(), 'Failing');
  assert.equal(await redState.evaluate((e) => getComputedStyle(e).color), 'rgb(207, 34, 46)');

  step('keyboard: the first Tab reaches the skip link, and its focus shows');
  await page.keyboard.press('Tab');
  const focused = await page.evaluate(() => {
    const e = document.activeElement;
    const st = getComputedStyle(e);
    const r = e.getBoundingClientRect();
    return { text: e.textContent, tag: e.tagName, outline: st.outlineStyle, width: st.outlineWidth, x: r.left, y: r.top, w: r.width };
  });
  assert.equal(focused.tag, 'A');
  assert.equal(focused.text, 'Skip to content');
  assert.ok(focused.x >= 0 && focused.y >= 0 && focused.w > 0, `the skip link is on screen: ${JSON.stringify(focused)}`);
  assert.notEqual(focused.outline, 'none', 'a visible focus ring');
  assert.equal(focused.width, '3px');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Overview');
  await page.goto(`${base}/`);
  await page.screenshot({ path: path.join(shots, 'overview-desktop.png'), fullPage: true });

  step('a source page, by its link');
  await page.getByRole('link', { name: green.name, exact: true }).click();
  await page.waitForURL(`${base}/sources/${green.name}`);
  assert.ok((await page.locator('h1').textContent()).includes(green.name));
  assert.equal(await page.locator('main .n-snapshots').first().getAttribute('value'), String(green.snapshots));

  step('a snapshot page, by its link');
  const snapLink = page.locator('section[aria-labelledby="snapshots"] tbody a').first();
  const snapId = (await snapLink.textContent()).trim();
  await snapLink.click();
  await page.waitForURL(`${base}/sources/${green.name}/snapshots/${snapId}`);
  const body = await page.textContent('main');
  assert.ok(body.includes(`offsitedb restore ${snapId} --source ${green.name} --to postgres://...`), 'the restore command');
  assert.ok(body.includes('tools/offsitedb-decrypt.py'), 'the path without OffsiteDB');

  step('the red source says why');
  await page.goto(`${base}/sources/${red.name}`);
  assert.ok((await page.textContent('main')).includes('failed'));
  assert.equal((await page.locator('h1 .state').textContent()).trim(), 'Failing');

  step('sign in with the token, then Back up now');
  await page.goto(`${base}/sources/${green.name}`);
  assert.equal(await page.getByRole('button', { name: 'Back up now' }).count(), 0, 'no action before signing in');
  await page.locator('section[aria-labelledby="actions"]').getByRole('link', { name: 'Sign in' }).click();
  await page.getByLabel(/Token/).fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${base}/sources/${green.name}`);
  await page.getByRole('button', { name: 'Back up now' }).click();
  await page.waitForURL(`${base}/sources/${green.name}?msg=backup`);
  const msg = await page.getByRole('status').textContent();
  assert.ok(msg.includes(`Backup of ${green.name} started`), `the message: ${msg}`);
  await page.screenshot({ path: path.join(shots, 'source-desktop.png'), fullPage: true });

  step('phone width: nothing wider than the screen');
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2 });
  const p2 = await phone.newPage();
  for (const [url, name] of [[`${base}/`, 'overview-phone.png'], [`${base}/sources/${green.name}`, 'source-phone.png']]) {
    await p2.goto(url);
    const wide = await p2.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(wide <= 1, `${url} scrolls sideways on a phone by ${wide}px`);
    await p2.screenshot({ path: path.join(shots, name), fullPage: true });
  }
  console.log('dashboard.mjs: all checks passed');
} finally {
  await browser.close();
}
