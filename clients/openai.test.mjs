// The official OpenAI SDK against the router's /v1 API.
import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import OpenAI from 'openai';
import { Ollama } from 'ollama';
import { routerURL, model, toolModel, limitedURL, expectCompletion, exactUsage, seed, maxTokens, prompt, noToolModel } from './env.mjs';

const client = new OpenAI({ baseURL: `${routerURL}/v1`, apiKey: 'not-needed', maxRetries: 0, timeout: 60_000 });
const messages = [{ role: 'user', content: prompt }];

// What the node reported for the same request, through the Ollama dialect.
async function nativeCounts() {
  const r = await new Ollama({ host: `${routerURL}/ollama` }).chat({ model, messages, stream: false, options: { seed, temperature: 0, num_predict: maxTokens } });
  return { prompt: r.prompt_eval_count, completion: r.eval_count };
}

test('openai: models.list lists the served model', async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.object, 'model');
    assert.equal(m.owned_by, 'idleclaw');
    ids.push(m.id);
  }
  assert.ok(ids.some((id) => id === model || id === `${model}:latest`), `${model} not in ${ids}`);
});

test('openai: streaming with stream_options.include_usage', async () => {
  const stream = await client.chat.completions.create({
    model, messages, stream: true, stream_options: { include_usage: true }, seed, temperature: 0, max_tokens: maxTokens,
  });
  let text = '';
  let roles = 0;
  let finish = null;
  let usage = null;
  let id = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    id ??= chunk.id;
    assert.equal(chunk.id, id, 'one id for the whole stream');
    if (chunk.usage) {
      assert.deepEqual(chunk.choices, []);
      usage = chunk.usage;
      continue;
    }
    const c = chunk.choices[0];
    if (c.delta.role) roles++;
    text += c.delta.content ?? '';
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.match(id, /^chatcmpl-/);
  assert.equal(roles, 1, 'role only on the first delta');
  assert.ok(text.length > 0, 'no text');
  assert.ok(['stop', 'length'].includes(finish), `finish_reason ${finish}`);
  assert.ok(usage, 'no usage chunk');
  assert.ok(usage.prompt_tokens > 0 && usage.completion_tokens > 0, JSON.stringify(usage));
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  if (expectCompletion !== undefined) assert.equal(usage.completion_tokens, expectCompletion);
  const native = await nativeCounts();
  assert.equal(usage.completion_tokens, native.completion, 'completion tokens differ from the Ollama dialect');
  if (exactUsage) assert.equal(usage.prompt_tokens, native.prompt, 'prompt tokens differ from the Ollama dialect');
});

test('openai: non-streaming', async () => {
  const r = await client.chat.completions.create({ model, messages, seed, temperature: 0, max_tokens: maxTokens });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.ok(r.choices[0].message.content.length > 0);
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
  if (expectCompletion !== undefined) assert.equal(r.usage.completion_tokens, expectCompletion);
});

test('openai: a system message and text content parts are accepted', async () => {
  const r = await client.chat.completions.create({
    model, seed, temperature: 0, max_tokens: maxTokens,
    messages: [{ role: 'system', content: 'You tell short stories.' }, { role: 'user', content: [{ type: 'text', text: prompt }] }],
  });
  assert.ok(r.choices[0].message.content.length > 0);
});

const weatherTools = [{
  type: 'function',
  function: {
    name: 'get_weather', description: 'Current weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}];

test('openai: tool-call round trip', { skip: noToolModel }, async () => {
  const convo = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const first = await client.chat.completions.create({ model: toolModel, messages: convo, tools: weatherTools });
  assert.equal(first.choices[0].finish_reason, 'tool_calls');
  const msg = first.choices[0].message;
  assert.equal(msg.tool_calls.length, 1);
  const call = msg.tool_calls[0];
  assert.match(call.id, /^call_[0-9a-f]+$/);
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.equal(typeof call.function.arguments, 'string');
  assert.equal(JSON.parse(call.function.arguments).city, 'Paris');

  convo.push(msg, { role: 'tool', tool_call_id: call.id, content: '21°C and sunny' });
  const second = await client.chat.completions.create({ model: toolModel, messages: convo, tools: weatherTools });
  assert.equal(second.choices[0].finish_reason, 'stop');
  assert.match(second.choices[0].message.content, /21°C and sunny/);
});

test('openai: streamed tool call', { skip: noToolModel }, async () => {
  const stream = await client.chat.completions.create({
    model: toolModel, stream: true, tools: weatherTools, messages: [{ role: 'user', content: 'Weather in Paris?' }],
  });
  const calls = [];
  let finish = null;
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    for (const tc of c?.delta?.tool_calls ?? []) calls[tc.index] = tc;
    if (c?.finish_reason) finish = c.finish_reason;
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(calls.length, 1);
  assert.match(calls[0].id, /^call_/);
  assert.deepEqual(JSON.parse(calls[0].function.arguments), { city: 'Paris' });
});

test('openai: unknown model is a NotFoundError', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages }),
    (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `${err}`);
      assert.equal(err.status, 404);
      assert.equal(err.code, 'model_not_found');
      return true;
    },
  );
});

test('openai: bad request is a BadRequestError', async () => {
  await assert.rejects(
    client.chat.completions.create({ model, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.invalid/x.png' } }] }] }),
    (err) => err instanceof OpenAI.BadRequestError && err.status === 400 && err.type === 'invalid_request_error',
  );
});

test('openai: rate limit is a RateLimitError with Retry-After', { skip: limitedURL ? false : 'ROUTER_URL_LIMITED is not set' }, async () => {
  const limited = new OpenAI({ baseURL: `${limitedURL}/v1`, apiKey: 'not-needed', maxRetries: 0 });
  await limited.chat.completions.create({ model, messages }).catch(() => {}); // takes the one token
  await assert.rejects(limited.chat.completions.create({ model, messages }), (err) => {
    assert.ok(err instanceof OpenAI.RateLimitError, `${err}`);
    assert.equal(err.status, 429);
    assert.ok(Number(err.headers.get('retry-after')) >= 1);
    return true;
  });
});
