"""An Azure OpenAI emulator: the chat-completions REST shape, keyless auth, quotas, faults.

It exists to test the protocol around the model, not the model: answers are
deterministic and clearly fake.

Endpoints
---------
- `POST /openai/deployments/{deployment}/chat/completions?api-version=...` (what
  `AsyncAzureOpenAI` calls). A missing api-version is a 404, as in Azure.
- `POST /openai/v1/chat/completions` (the v1 shape: the deployment is the body's `model`).

An unknown deployment is a 404 `DeploymentNotFound` (deployments are a configured list,
default `gpt-5.6-luna`, a reasoning model as in infra/main.bicep, and `gpt-4.1-mini`, a
standard one); a body without a non-empty `messages` list is a 400. Each deployment has a
model profile (reasoning or not, model name, retired or not) that decides which parameters
it takes and how it spends its token budget.

Modules
-------
- `server`: the aiohttp application, its routes and the order of the checks on a request.
- `auth`: bearer-token verification (`disableLocalAuth: true`: no api-key).
- `chat`: the request body's validation and its prompt tokens.
- `tokens`: OpenAI's tokenizer (bpe-openai): prompt and answer tokens as the service counts them.
- `answers`: the deterministic answer rule and the completion body with its usage.
- `models`: model profiles: what a reasoning or retired model answers that a standard one does not.
- `quota`: RPM/TPM over a sliding 60-second window per deployment.
- `faults`: injected faults, drawn from a seeded random or triggered by markers.
- `errors`: Azure's error bodies.
- `config`: the settings and their validation; `stats`: the counters.
- `cli`: `python -m localdev.openai_emulator` (the flags, the ready line).

The control API (`/_emulator/config`, `/_emulator/stats`, `/_emulator/reset`,
`/_emulator/health`) is `localdev.control`'s, with the settings of `config` and the
counters of `stats`; reset zeroes the counters and quota windows, forgets marker counts
and reseeds the fault draw (the configuration stays). Every route but health requires
`X-IDENTITY-HEADER` with the stack's IDENTITY_HEADER (401 without, 403 if wrong).
"""
