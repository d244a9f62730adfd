// The official OpenAI SDK, unchanged, against `idleclaw gateway`: while
// the user's provider answers, and after it ran out of credit (answers
// from the IdleClaw network), streaming and not, with tool calls. Set by
// internal/cli/gateway_clients_test.go (fake provider, router + node +
// fake Ollama); without GATEWAY_URL this file defines no tests, so that a
// plain `node --test clients/` against a router alone is unchanged.
//
//   GATEWAY_URL             a gateway whose provider answers
//   GATEWAY_URL_EXHAUSTED   a gateway whose provider is out of credit
//   GATEWAY_URL_BROKEN      a gateway whose provider's streams break off mid-answer
//   GATEWAY_MODEL           the model the client asks for (mapped to a network model)
//   GATEWAY_TOOL_MODEL      a model that calls tools on both sides
//   EXPECT_PROVIDER_TEXT    the provider's plain answer
//   EXPECT_NETWORK_TEXT     the network's plain answer
import { test } from 'node:test';
import { strict as assert } from 'node:assert';
import OpenAI from 'openai';

const trim = (u) => (u ?? '').replace(/\/+$/, '');
const healthyURL = trim(process.env.GATEWAY_URL);
const exhaustedURL = trim(process.env.GATEWAY_URL_EXHAUSTED);
const brokenURL = trim(process.env.GATEWAY_URL_BROKEN);
const model = process.env.GATEWAY_MODEL || 'gpt-4o-mini';
const toolModel = process.env.GATEWAY_TOOL_MODEL || 'gpt-4o';
const expected = { provider: process.env.EXPECT_PROVIDER_TEXT, network: process.env.EXPECT_NETWORK_TEXT };

// The SDK as an application uses it: OPENAI_BASE_URL pointed at the
// gateway, any key (the gateway holds the real one).
const sdk = (base) => new OpenAI({ baseURL: `${base}/v1`, apiKey: 'sk-not-the-real-key', maxRetries: 0, timeout: 60_000 });
const messages = [{ role: 'user', content: 'Once upon a time' }];
const weatherTools = [{
  type: 'function',
  function: {
    name: 'get_weather', description: 'Current weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}];

const sides = [];
if (healthyURL) sides.push({ route: 'provider', url: healthyURL });
if (exhaustedURL) sides.push({ route: 'network', url: exhaustedURL });

for (const { route, url } of sides) {
  const client = sdk(url);
  const label = route === 'provider' ? 'while the provider answers' : 'after the provider ran out of credit';

  test(`gateway ${label}: non-streaming, served by the ${route}`, async () => {
    const { data, response } = await client.chat.completions.create({ model, messages }).withResponse();
    assert.equal(response.headers.get('x-idleclaw-route'), route);
    assert.ok(response.headers.get('x-idleclaw-reason'), 'no X-IdleClaw-Reason');
    assert.equal(data.object, 'chat.completion');
    assert.equal(data.choices[0].message.role, 'assistant');
    assert.equal(data.choices[0].finish_reason, 'stop');
    if (expected[route]) assert.equal(data.choices[0].message.content, expected[route]);
    assert.ok(data.usage.completion_tokens > 0);
  });

  test(`gateway ${label}: streaming with usage, served by the ${route}`, async () => {
    const { data: stream, response } = await client.chat.completions
      .create({ model, messages, stream: true, stream_options: { include_usage: true } }).withResponse();
    assert.equal(response.headers.get('x-idleclaw-route'), route);
    let text = '';
    let finish = null;
    let usage = null;
    let id = null;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      id ??= chunk.id;
      assert.equal(chunk.id, id, 'one id for the whole stream: no second answer spliced in');
      if (chunk.usage) usage = chunk.usage;
      const c = chunk.choices[0];
      if (!c) continue;
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
    assert.equal(finish, 'stop');
    if (expected[route]) assert.equal(text, expected[route]);
    assert.ok(usage && usage.completion_tokens > 0, `usage ${JSON.stringify(usage)}`);
  });

  test(`gateway ${label}: tool-call round trip`, async () => {
    const convo = [{ role: 'user', content: 'What is the weather in Paris?' }];
    const { data: first, response } = await client.chat.completions.create({ model: toolModel, messages: convo, tools: weatherTools }).withResponse();
    assert.equal(response.headers.get('x-idleclaw-route'), route);
    assert.equal(first.choices[0].finish_reason, 'tool_calls');
    const msg = first.choices[0].message;
    assert.equal(msg.tool_calls.length, 1);
    const call = msg.tool_calls[0];
    assert.equal(call.type, 'function');
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
    convo.push(msg, { role: 'tool', tool_call_id: call.id, content: '21°C and sunny' });
    const second = await client.chat.completions.create({ model: toolModel, messages: convo, tools: weatherTools });
    assert.equal(second.choices[0].finish_reason, 'stop');
    assert.match(second.choices[0].message.content, /21°C and sunny/);
  });

  test(`gateway ${label}: streamed tool call`, async () => {
    const { data: stream, response } = await client.chat.completions
      .create({ model: toolModel, stream: true, tools: weatherTools, messages: [{ role: 'user', content: 'Weather in Paris?' }] }).withResponse();
    assert.equal(response.headers.get('x-idleclaw-route'), route);
    const calls = [];
    let finish = null;
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      for (const tc of c?.delta?.tool_calls ?? []) {
        // Streamed calls come in pieces: the first names the call, the
        // others add to its arguments.
        const prev = calls[tc.index];
        calls[tc.index] = prev
          ? { ...prev, function: { ...prev.function, arguments: prev.function.arguments + (tc.function?.arguments ?? '') } }
          : { id: tc.id, function: { name: tc.function?.name, arguments: tc.function?.arguments ?? '' } };
      }
      if (c?.finish_reason) finish = c.finish_reason;
    }
    assert.equal(finish, 'tool_calls');
    assert.equal(calls.length, 1);
    assert.ok(calls[0].id);
    assert.equal(calls[0].function.name, 'get_weather');
    assert.deepEqual(JSON.parse(calls[0].function.arguments), { city: 'Paris' });
  });

  test(`gateway ${label}: models.list has the provider's and the network's models`, async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.ok(ids.includes(model), `${model} not in ${ids}`);
    assert.ok(ids.some((id) => id.startsWith('stories')), `no network model in ${ids}`);
  });
}

if (healthyURL) {
  test('gateway: the provider\'s refusal of a bad request reaches the SDK unchanged', async () => {
    await assert.rejects(sdk(healthyURL).chat.completions.create({ model: 'no-such-model', messages }), (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `${err}`);
      assert.equal(err.status, 404);
      assert.equal(err.code, 'model_not_found');
      assert.equal(err.headers.get('x-idleclaw-route'), 'provider');
      return true;
    });
  });
}

if (brokenURL) {
  test('gateway: a provider stream that breaks off mid-answer is an APIError, after the provider\'s own tokens', async () => {
    const stream = await sdk(brokenURL).chat.completions.create({ model, messages, stream: true });
    let text = '';
    await assert.rejects(
      (async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
      })(),
      (err) => {
        assert.ok(err instanceof OpenAI.APIError, `${err}`);
        assert.match(err.message, /broke off/);
        return true;
      },
    );
    if (expected.provider) assert.equal(text, expected.provider);
  });
}
