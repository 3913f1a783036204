// Opens a served Allure report in a real headless Chromium (playwright-core, Debian's binary)
// and prints one JSON line with what a QA engineer would see. Used by tests/test_report_browser.py.
//
// usage: node browse_report.mjs '<json config>'
//   config: {modules, url, chromium, userDataDir, names: [...], open, attachment, expect,
//            screenshot}
// `modules` is the node_modules dir holding playwright-core (.hil/tools/node_modules).
// Exit codes: 0 (JSON printed; the test judges it), 2 (a step failed: JSON with "error").
import { createRequire } from 'node:module';
import path from 'node:path';

const config = JSON.parse(process.argv[2]);
const require = createRequire(path.join(config.modules, 'noop.js'));
const { chromium } = require('playwright-core');

const STEP_MS = 20000;
const out = { listed: {}, external: [], failed: [], pageErrors: [] };
// A hard stop: whatever hangs, the process (and the browser with it) ends.
const guard = setTimeout(() => {
  console.log(JSON.stringify({ ...out, error: 'timed out' }));
  process.exit(3);
}, 60000);

let context;
try {
  context = await chromium.launchPersistentContext(config.userDataDir, {
    executablePath: config.chromium,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic',
    ],
    viewport: { width: 1280, height: 900 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const origin = new URL(config.url).origin;
  page.on('request', (r) => {
    if (!r.url().startsWith(origin) && !r.url().startsWith('data:')) out.external.push(r.url());
  });
  page.on('response', (r) => { if (r.status() >= 400) out.failed.push(`${r.status()} ${r.url()}`); });
  page.on('pageerror', (e) => out.pageErrors.push(String(e)));

  await page.goto(config.url, { timeout: STEP_MS });
  // the tree of results: every scenario is listed by name
  for (const name of config.names) {
    const item = page.getByText(name, { exact: true }).first();
    try {
      await item.waitFor({ timeout: STEP_MS });
      out.listed[name] = true;
    } catch {
      out.listed[name] = false;
    }
  }
  out.title = await page.title();
  // open one result, then its attachment
  await page.getByText(config.open, { exact: true }).first().click({ timeout: STEP_MS });
  const attachment = page.getByText(config.attachment, { exact: true }).first();
  await attachment.waitFor({ timeout: STEP_MS });
  out.attachmentListed = true;
  out.url = page.url();
  await attachment.click({ timeout: STEP_MS });
  await page.getByText(config.expect).first().waitFor({ timeout: STEP_MS });
  out.attachmentShown = true;
  if (config.screenshot) await page.screenshot({ path: config.screenshot, fullPage: true });
} catch (e) {
  out.error = String(e);
} finally {
  if (context) await context.close();
  clearTimeout(guard);
}
console.log(JSON.stringify(out));
process.exit(out.error ? 2 : 0);
