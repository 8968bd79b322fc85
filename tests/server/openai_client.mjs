// The official OpenAI Node client against `v4serve serve` (run by
// tests/test_server_clients.c): completions and chat, streamed and not,
// the model list, and an error. Prints one JSON object with what came back;
// the C test checks it against the golden continuation and the tokenizer.
//
// usage: node openai_client.mjs TINY_URL TINY_MODEL PROMPT_IDS MAX_TOKENS DEMO_URL DEMO_MODEL
import OpenAI from 'openai';

const [tinyUrl, tinyModel, promptIds, maxTokens, demoUrl, demoModel] = process.argv.slice(2);
const prompt = promptIds.split(',').map(Number);
const n = Number(maxTokens);
const opts = { apiKey: 'unused', maxRetries: 0, timeout: 120000 };
const tiny = new OpenAI({ ...opts, baseURL: tinyUrl });
const demo = new OpenAI({ ...opts, baseURL: demoUrl });
const out = {};

// completions, token-id prompt, greedy (return_token_ids is a vLLM
// extension: the client sends extra fields as they are)
const c = await tiny.completions.create({
  model: tinyModel, prompt, max_tokens: n, temperature: 0, ignore_eos: true, return_token_ids: true,
});
out.completion = {
  object: c.object, text: c.choices[0].text, ids: c.choices[0].token_ids,
  finish: c.choices[0].finish_reason, usage: c.usage,
};

const cs = await tiny.completions.create({
  model: tinyModel, prompt, max_tokens: n, temperature: 0, ignore_eos: true, return_token_ids: true,
  stream: true, stream_options: { include_usage: true },
});
const s1 = { text: '', ids: [], finish: null, usage: null, chunks: 0 };
for await (const ch of cs) {
  s1.chunks++;
  if (ch.usage) s1.usage = ch.usage;
  for (const choice of ch.choices) {
    s1.text += choice.text;
    s1.ids.push(...(choice.token_ids || []));
    if (choice.finish_reason) s1.finish = choice.finish_reason;
  }
}
out.completion_stream = s1;

// chat on the demo model (the real vocabulary), a seed so stream and
// non-stream sample the same tokens
const messages = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Name a colour.' },
];
const chat = await demo.chat.completions.create({
  model: demoModel, messages, max_completion_tokens: 8, seed: 42, temperature: 0.7, return_token_ids: true,
});
out.chat = {
  object: chat.object, role: chat.choices[0].message.role, content: chat.choices[0].message.content,
  reasoning: chat.choices[0].message.reasoning_content ?? null, ids: chat.choices[0].token_ids,
  prompt_ids: chat.prompt_token_ids, finish: chat.choices[0].finish_reason, usage: chat.usage,
};

const chs = await demo.chat.completions.create({
  model: demoModel, messages, max_completion_tokens: 8, seed: 42, temperature: 0.7,
  stream: true, stream_options: { include_usage: true },
});
const s2 = { role: null, content: '', reasoning: '', finish: null, usage: null, objects: new Set() };
for await (const ch of chs) {
  s2.objects.add(ch.object);
  if (ch.usage) s2.usage = ch.usage;
  for (const choice of ch.choices) {
    if (choice.delta.role) s2.role = s2.role ?? choice.delta.role;
    s2.content += choice.delta.content ?? '';
    s2.reasoning += choice.delta.reasoning_content ?? '';
    if (choice.finish_reason) s2.finish = choice.finish_reason;
  }
}
s2.objects = [...s2.objects];
out.chat_stream = s2;

// thinking on: the answer streams as reasoning_content
const think = await demo.chat.completions.create({
  model: demoModel, messages, max_tokens: 6, temperature: 0, chat_template_kwargs: { thinking: true },
  return_token_ids: true,
});
out.think = {
  content: think.choices[0].message.content, reasoning: think.choices[0].message.reasoning_content,
  ids: think.choices[0].token_ids, prompt_ids: think.prompt_token_ids,
};

out.models = (await tiny.models.list()).data.map((m) => m.id);

try {
  await tiny.completions.create({ model: tinyModel, prompt, max_tokens: 2, temperature: 7 });
  out.error = null;
} catch (e) {
  out.error = { status: e.status, type: e.type ?? e.error?.type, param: e.param ?? e.error?.param };
}
try {
  await tiny.completions.create({ model: 'no-such-model', prompt, max_tokens: 2 });
  out.error404 = null;
} catch (e) {
  out.error404 = { status: e.status, code: e.code ?? e.error?.code };
}

process.stdout.write(JSON.stringify(out) + '\n');
