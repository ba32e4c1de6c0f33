// bench/agents/peer_openai_agents.mjs - the same workload on the OpenAI Agents SDK (JS).
//
// node peer_openai_agents.mjs EVENTS.jsonl ORDERS.json OUT.jsonl BASE_URL CONCURRENCY
// One Agent with one function tool; each event is one run() of the dynamic loop,
// at most CONCURRENCY runs at once. Tracing is off; no memory is persisted.
import fs from 'node:fs';
import readline from 'node:readline';
import OpenAI from 'openai';
import { Agent, run, tool, setDefaultOpenAIClient, setOpenAIAPI, setTracingDisabled } from '@openai/agents';
import { z } from 'zod';

const [eventsPath, ordersPath, outPath, baseURL, conc] = process.argv.slice(2);
const orders = JSON.parse(fs.readFileSync(ordersPath, 'utf8'));
setDefaultOpenAIClient(new OpenAI({ baseURL, apiKey: 'bench', maxRetries: 5, timeout: 60000 }));
setOpenAIAPI('chat_completions');
setTracingDisabled(true);

const lookup = tool({
  name: 'lookup_order',
  description: 'Look up the status, carrier and expected delivery date of an order',
  parameters: z.object({ order_id: z.string() }),
  execute: async ({ order_id }) => {
    const o = orders[order_id.toUpperCase()];
    if (!o) throw new Error('no order ' + order_id);
    return { order_id, status: o.status, carrier: o.carrier, eta: o.eta };
  },
});
const agent = new Agent({
  name: 'support',
  instructions: 'You are the support agent of ACME Outdoor. Call lookup_order for order numbers.',
  tools: [lookup],
  model: 'gpt-4o-mini',
});

const out = fs.createWriteStream(outPath);
const rl = readline.createInterface({ input: fs.createReadStream(eventsPath) });
const limit = Number(conc);
let active = 0;
const waiters = [];
const jobs = [];
for await (const line of rl) {
  if (!line.trim()) continue;
  const ev = JSON.parse(line);
  if (active >= limit) await new Promise((r) => waiters.push(r));
  active++;
  jobs.push(
    run(agent, ev.text)
      .then((res) => out.write(JSON.stringify({ event_id: ev.id, key: ev.customer_id, output: res.finalOutput }) + '\n'))
      .catch((e) => out.write(JSON.stringify({ event_id: ev.id, error: String(e) }) + '\n'))
      .finally(() => { active--; const w = waiters.shift(); if (w) w(); }),
  );
}
await Promise.all(jobs);
out.end();
