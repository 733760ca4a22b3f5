import { test } from 'vitest';
import { buildDataplane } from '../../src/netns/dataplane.js';
import { summarizeProbe, checkExpected } from '../../src/netns/analysis.js';

test('scratch', async () => {
  const dp = await buildDataplane({ logDir: '/tmp/dpx/logs' });
  console.log('setup', dp.setupMs);
  try {
    const o = await dp.waitSettled({ timeoutMs: 40_000 });
    console.log('settled', JSON.stringify([...o.kernel]));
    const exp = await dp.expectedOwners(o.claims);
    const r = await dp.probe({ tcp: true });
    console.log(JSON.stringify(summarizeProbe(r)), JSON.stringify(checkExpected(r, exp).slice(0, 5)));
  } finally {
    console.log('teardown', await dp.destroy());
  }
}, 120_000);
