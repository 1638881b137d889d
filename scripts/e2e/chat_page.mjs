// The Control UI at `/` in a real headless Chromium: sign in with the token, type a message,
// send it, and wait for the streamed reply to finish. Usage: node chat_page.mjs URL TOKEN
// SCREENSHOT.png
import { chromium } from 'playwright-core';

const [url, token, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Keep Chromium off the network: this machine reaches nothing but loopback.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 600 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url, { timeout: 15000 });
  await page.waitForFunction(
    () => !document.getElementById('status').textContent.includes('checking'), null, { timeout: 15000 });
  if (token) {
    await page.waitForSelector('#login:not([hidden])', { timeout: 15000 });
    await page.fill('#login-form input[name=token]', token);
    await page.click('#login-form button[type=submit]');
    await page.waitForSelector('#login[hidden]', { state: 'attached', timeout: 15000 });
  }
  await page.fill('#chat-form input[name=message]', 'What is the capital of France?');
  await page.click('#chat-form button[type=submit]');
  await page.waitForSelector('.msg.assistant[data-done="1"], .msg.error[data-done="1"]', { timeout: 120000 });
  // The reply text without its metadata line.
  const reply = (await page.evaluate(() => document.querySelector('.msg[data-done="1"]').firstChild.textContent)).trim();
  const isError = await page.$('.msg.error');
  // A reload shows the stored conversation (same tab, same session).
  await page.reload();
  await page.waitForSelector('.msg.assistant[data-history="1"]', { timeout: 15000 });
  const history = await page.$$eval('.msg[data-history="1"]', (els) => els.map((e) => e.textContent));
  await page.screenshot({ path: shot });
  if (isError || !reply || reply === '…' || errors.length) {
    console.log(`FAIL chat page: reply ${JSON.stringify(reply)} errors ${JSON.stringify(errors)}`);
    failed = true;
  } else if (history.length !== 2 || history[0] !== 'What is the capital of France?' || history[1].trim() !== reply) {
    console.log(`FAIL chat page: history after reload ${JSON.stringify(history)}`);
    failed = true;
  } else {
    console.log(`PASS chat page in Chromium (reply, then history after reload): ${JSON.stringify(reply.slice(0, 80))}`);
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
