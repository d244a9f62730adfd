// The official Ollama JavaScript library against the router's /ollama API,
// configured exactly as for a local Ollama, only with another host.
import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import { Ollama } from 'ollama';
import { routerURL, model, toolModel, seed, maxTokens, prompt, noToolModel } from './env.mjs';

const ollama = new Ollama({ host: `${routerURL}/ollama` });
const options = { seed, temperature: 0, num_predict: maxTokens };

test('ollama: chat streaming', async () => {
  const stream = await ollama.chat({ model, messages: [{ role: 'user', content: prompt }], stream: true, options });
  let text = '';
  let last = null;
  for await (const part of stream) {
    assert.equal(part.message.role, 'assistant');
    text += part.message.content;
    last = part;
  }
  assert.ok(text.length > 0, 'no text');
  assert.equal(last.done, true);
  assert.ok(['stop', 'length'].includes(last.done_reason), last.done_reason);
  assert.ok(last.prompt_eval_count > 0 && last.eval_count > 0, JSON.stringify(last));
  assert.ok(last.eval_duration > 0 && last.total_duration >= last.eval_duration);
});

test('ollama: chat without streaming', async () => {
  const r = await ollama.chat({ model, messages: [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: prompt }], options });
  assert.equal(r.done, true);
  assert.ok(r.message.content.length > 0);
});

test('ollama: generate', async () => {
  const r = await ollama.generate({ model, prompt, options });
  assert.equal(r.done, true);
  assert.ok(r.response.length > 0);
  assert.ok(r.eval_count > 0);
  const stream = await ollama.generate({ model, prompt, options, stream: true });
  let text = '';
  for await (const part of stream) text += part.response;
  assert.equal(text, r.response, 'streamed and whole answers differ with the same seed');
});

test('ollama: list', async () => {
  const { models } = await ollama.list();
  const m = models.find((x) => x.name === model || x.name === `${model}:latest`);
  assert.ok(m, `${model} not in ${models.map((x) => x.name)}`);
  assert.ok(m.size > 0);
  assert.equal(m.model, m.name);
  assert.equal(typeof m.details.family, 'string');
});

test('ollama: show', async () => {
  const r = await ollama.show({ model });
  assert.ok(r.capabilities.includes('completion'), JSON.stringify(r.capabilities));
  const arch = r.model_info['general.architecture'];
  assert.equal(arch, r.details.family);
  assert.ok(r.model_info[`${arch}.context_length`] > 0, JSON.stringify(r.model_info));
  await assert.rejects(ollama.show({ model: 'no-such-model' }), (err) => err.status_code === 404 && /not found/.test(err.error));
});

test('ollama: version and ps', async () => {
  assert.equal((await ollama.version()).version, '0.9.6');
  const { models } = await ollama.ps();
  assert.ok(Array.isArray(models));
});

test('ollama: unknown model', async () => {
  await assert.rejects(
    ollama.chat({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
    (err) => err.name === 'ResponseError' && err.status_code === 404,
  );
});

test('ollama: tool-call round trip', { skip: noToolModel }, async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather of a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
  const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const first = await ollama.chat({ model: toolModel, messages, tools });
  const calls = first.message.tool_calls ?? [];
  assert.equal(calls.length, 1);
  assert.equal(calls[0].function.name, 'get_weather');
  assert.deepEqual(calls[0].function.arguments, { city: 'Paris' });
  messages.push(first.message, { role: 'tool', tool_name: 'get_weather', content: '21°C and sunny' });
  const second = await ollama.chat({ model: toolModel, messages, tools });
  assert.match(second.message.content, /21°C and sunny/);
});
