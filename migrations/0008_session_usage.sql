-- What each voice session used of its speech and language providers: audio
-- sent to speech to text, tokens the language model reported, characters
-- sent to text to speech. One row per (session, stage, provider), holding
-- the session's running totals (the worker rewrites them periodically and
-- at the session's end, so a rewrite never double-counts). This is not
-- money: no balance or charge reads or writes it; the operator's usage
-- report prices it with the configured `[voice.prices]`.
CREATE TABLE session_usage (
    voice_session_id UUID NOT NULL REFERENCES voice_sessions(id) ON DELETE CASCADE,
    -- `stt`, `llm` or `tts`.
    stage TEXT NOT NULL CONSTRAINT session_usage_stage_known CHECK (stage IN ('stt', 'llm', 'tts')),
    -- The stage's provider name in `[voice]` (a TTS profile's name for tts).
    provider TEXT NOT NULL,
    -- Milliseconds of user audio transcribed.
    stt_audio_ms BIGINT NOT NULL DEFAULT 0 CHECK (stt_audio_ms >= 0),
    -- Tokens as the provider's `usage` reported them (nothing is guessed).
    llm_prompt_tokens BIGINT NOT NULL DEFAULT 0 CHECK (llm_prompt_tokens >= 0),
    llm_completion_tokens BIGINT NOT NULL DEFAULT 0 CHECK (llm_completion_tokens >= 0),
    -- Characters (Unicode scalar values) sent to be spoken.
    tts_characters BIGINT NOT NULL DEFAULT 0 CHECK (tts_characters >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (voice_session_id, stage, provider)
);
