// The browsers a check can run in, both stock Debian builds started headless:
//   chromium  Debian 'chromium' (CHROMIUM, default /usr/bin/chromium) through playwright-core
//   firefox   Debian 'firefox-esr' (FIREFOX, default /usr/bin/firefox-esr) over WebDriver BiDi,
//             through playwright-core's `moz-firefox` channel
// Firefox goes through an older playwright-core (the npm alias `playwright-core-bidi`,
// 1.64.1): 1.65 sends `emulation.setMediaFeaturesOverride` whenever it opens a context or a
// page, a BiDi command Firefox ESR 153 does not have ("unknown command"); 1.64 does not send
// it. Both expose the same Browser and Page API, so a scenario does not know which one runs.
import { createRequire } from 'node:module';
import { join } from 'node:path';

export const BROWSERS = ['chromium', 'firefox'];

// Resolved from the working directory (SWITCHBOARD_NODE_DIR, where `npm ci` put
// node_modules), so a script also runs from a checkout without its own node_modules.
const require = createRequire(join(process.cwd(), 'package.json'));

/** Starts `name` (one of BROWSERS) headless; a playwright Browser. */
export async function launch(name) {
  switch (name) {
    case 'chromium':
      return require('playwright-core').chromium.launch({
        executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
      });
    case 'firefox':
      return require('playwright-core-bidi').firefox.launch({
        channel: 'moz-firefox',
        executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
        headless: true,
      });
    default:
      throw new Error(`unknown browser '${name}' (known: ${BROWSERS.join(', ')})`);
  }
}

/**
 * Takes a leading `--browser NAME` off `args` (chromium when absent): [name, rest].
 */
export function browserArg(args) {
  if (args[0] !== '--browser') return ['chromium', args];
  if (!BROWSERS.includes(args[1])) throw new Error(`--browser: one of ${BROWSERS.join(', ')}`);
  return [args[1], args.slice(2)];
}
