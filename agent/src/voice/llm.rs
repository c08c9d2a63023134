//! The language model: a streamed `/v1/chat/completions` (server-sent
//! events) read piece by piece, so the first sentence can be spoken while
//! the model is still writing. Tool calls arrive in fragments and are put
//! together here.

use serde_json::{json, Value};

use super::provider::{Endpoint, ProviderError};
use crate::usage::SessionUsage;

pub struct Llm {
    pub endpoint: Endpoint,
    pub max_tokens: u32,
    /// `voice.llm.warm_up`: send each session's prompt once at its start.
    pub warm_up: bool,
}

/// A function call the model asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// What the stream said next.
#[derive(Debug, PartialEq, Eq)]
pub enum Delta {
    Text(String),
    /// The whole answer was these calls (sent once the stream has finished them).
    ToolCalls(Vec<ToolCall>),
}

impl Llm {
    /// Starts a streamed completion of `messages` with `tools` offered; the
    /// tokens the provider reports are counted in `usage`.
    pub async fn stream<'a>(
        &'a self,
        client: &reqwest::Client,
        messages: &[Value],
        tools: &[Value],
        persona: &str,
        usage: &'a SessionUsage,
    ) -> Result<LlmStream<'a>, ProviderError> {
        self.start(client, messages, tools, persona, usage, self.max_tokens).await
    }

    /// Has the provider read `messages` (a session's system prompt) once, for
    /// one token, so that a server caching prompts answers the first turn
    /// without reading it again; its tokens are counted like any answer's.
    pub async fn warm(
        &self,
        client: &reqwest::Client,
        messages: &[Value],
        tools: &[Value],
        persona: &str,
        usage: &SessionUsage,
    ) -> Result<(), ProviderError> {
        let mut stream = self.start(client, messages, tools, persona, usage, 1).await?;
        while stream.next().await?.is_some() {}
        Ok(())
    }

    async fn start<'a>(
        &'a self,
        client: &reqwest::Client,
        messages: &[Value],
        tools: &[Value],
        persona: &str,
        usage: &'a SessionUsage,
        max_tokens: u32,
    ) -> Result<LlmStream<'a>, ProviderError> {
        let mut body = json!({
            "model": self.endpoint.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": max_tokens,
        });
        if !tools.is_empty() {
            body["tools"] = Value::Array(tools.to_vec());
        }
        let resp = self
            .endpoint
            .post(client, "/v1/chat/completions", "application/json", body.to_string().into_bytes())
            .await?;
        Ok(LlmStream {
            llm: self,
            resp,
            sse: SseBuffer::default(),
            calls: Vec::new(),
            done: false,
            persona: persona.into(),
            tokens: (0, 0),
            reported: false,
            usage,
        })
    }
}

/// An answer being streamed.
pub struct LlmStream<'a> {
    llm: &'a Llm,
    resp: reqwest::Response,
    sse: SseBuffer,
    calls: Vec<ToolCall>,
    done: bool,
    persona: String,
    /// Prompt and completion tokens the provider reported.
    pub tokens: (u64, u64),
    /// Whether the provider sent a `usage` (asked for with `include_usage`).
    reported: bool,
    usage: &'a SessionUsage,
}

impl LlmStream<'_> {
    /// The next piece of the answer; `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Delta>, ProviderError> {
        loop {
            while let Some(data) = self.sse.next_event() {
                if data == "[DONE]" {
                    self.done = true;
                    continue;
                }
                let chunk: Value = serde_json::from_str(&data).map_err(|e| self.llm.endpoint.invalid(e))?;
                self.usage(&chunk);
                let Some(choice) = chunk["choices"].get(0) else { continue };
                let delta = &choice["delta"];
                if let Some(calls) = delta["tool_calls"].as_array() {
                    for c in calls {
                        let i = c["index"].as_u64().unwrap_or(0) as usize;
                        if self.calls.len() <= i {
                            self.calls.resize(i + 1, ToolCall::default());
                        }
                        let call = &mut self.calls[i];
                        if let Some(id) = c["id"].as_str() {
                            call.id = id.to_string();
                        }
                        if let Some(name) = c["function"]["name"].as_str() {
                            call.name.push_str(name);
                        }
                        if let Some(args) = c["function"]["arguments"].as_str() {
                            call.arguments.push_str(args);
                        }
                    }
                }
                if let Some(text) = delta["content"].as_str() {
                    if !text.is_empty() {
                        return Ok(Some(Delta::Text(text.to_string())));
                    }
                }
            }
            if self.done {
                break;
            }
            match self.llm.endpoint.chunk(&mut self.resp).await? {
                Some(bytes) => self.sse.push(&bytes),
                None => break,
            }
        }
        if !self.reported {
            self.reported = true; // said once per answer
            self.usage.llm_unreported(&self.llm.endpoint.provider);
        }
        if self.calls.is_empty() {
            Ok(None)
        } else {
            Ok(Some(Delta::ToolCalls(std::mem::take(&mut self.calls))))
        }
    }

    fn usage(&mut self, chunk: &Value) {
        let usage = &chunk["usage"];
        let ep = &self.llm.endpoint;
        if usage.is_object() {
            self.reported = true;
            let n = |key: &str| usage[key].as_u64().unwrap_or(0);
            self.usage.llm(&ep.provider, n("prompt_tokens"), n("completion_tokens"));
        }
        for (kind, key) in [("prompt", "prompt_tokens"), ("completion", "completion_tokens")] {
            if let Some(n) = usage[key].as_u64() {
                if kind == "prompt" {
                    self.tokens.0 += n;
                } else {
                    self.tokens.1 += n;
                }
                metrics::counter!("mindbot_voice_llm_tokens_total", "persona" => self.persona.clone(),
                    "provider" => ep.provider.clone(), "kind" => kind)
                .increment(n);
            }
        }
    }
}

/// Splits a server-sent event stream into the `data` of each event.
#[derive(Default)]
pub struct SseBuffer {
    buf: String,
    raw: Vec<u8>,
}

impl SseBuffer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
        // Only whole UTF-8 is moved on; a character split across chunks waits.
        let valid = match std::str::from_utf8(&self.raw) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let text: Vec<u8> = self.raw.drain(..valid).collect();
        self.buf.push_str(&String::from_utf8_lossy(&text));
        // A CR LF split across chunks is joined here, then read as one LF.
        if self.buf.contains('\r') {
            self.buf = self.buf.replace("\r\n", "\n");
        }
    }

    /// The data lines of the next complete event, joined.
    pub fn next_event(&mut self) -> Option<String> {
        loop {
            let end = self.buf.find("\n\n")?;
            let event: String = self.buf.drain(..end + 2).collect();
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                return Some(data.join("\n"));
            }
        }
    }
}

/// Cuts streamed text into sentences to speak: at `.`, `!`, `?` or `;`
/// followed by a space, or at a comma once the text is long. The first
/// piece may be a clause (up to a comma, colon or dash once it has
/// [`FIRST_CLAUSE_CHARS`]), so the voice starts before a slow model has
/// finished its first sentence.
#[derive(Default)]
pub struct Sentences {
    buf: String,
    cut_once: bool,
}

/// The shortest first clause spoken on its own (shorter ones sound clipped).
pub const FIRST_CLAUSE_CHARS: usize = 20;

impl Sentences {
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            let chars: Vec<(usize, char)> = self.buf.char_indices().collect();
            let cut = chars.windows(2).find_map(|w| {
                let ((i, c), (_, next)) = (w[0], w[1]);
                let clause = !self.cut_once && i >= FIRST_CLAUSE_CHARS && matches!(c, ',' | ':' | '\u{2014}');
                let end = matches!(c, '.' | '!' | '?' | ';') || (c == ',' && i > 120) || clause;
                (end && next.is_whitespace() && i >= 3).then_some(i + c.len_utf8())
            });
            let Some(cut) = cut else { break };
            let sentence: String = self.buf.drain(..cut).collect();
            self.cut_once = true;
            let sentence = sentence.trim().to_string();
            if !sentence.is_empty() {
                out.push(sentence);
            }
        }
        out
    }

    /// What is left at the end of the answer.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_survive_any_chunking() {
        let stream = "data: {\"a\":1}\n\n: comment\n\ndata: é\r\n\r\ndata: [DONE]\n\n";
        for split in 1..stream.len() {
            let bytes = stream.as_bytes();
            let mut sse = SseBuffer::default();
            let mut got = Vec::new();
            for part in [&bytes[..split], &bytes[split..]] {
                sse.push(part);
                while let Some(e) = sse.next_event() {
                    got.push(e);
                }
            }
            assert_eq!(got, vec!["{\"a\":1}", "é", "[DONE]"], "split at {split}");
        }
    }

    /// A one-shot HTTP server on loopback answering with `body` as an event stream.
    async fn serve_once(body: String) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 65536];
            let _ = sock.read(&mut buf).await.unwrap();
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
            sock.write_all(head.as_bytes()).await.unwrap();
            // In small pieces, as a model writes.
            for piece in body.as_bytes().chunks(7) {
                sock.write_all(piece).await.unwrap();
                sock.flush().await.unwrap();
            }
        });
        format!("http://{addr}")
    }

    fn llm(base_url: String) -> Llm {
        Llm {
            endpoint: Endpoint {
                stage: "llm",
                provider: "test".into(),
                base_url,
                model: "m".into(),
                api_key: Default::default(),
                timeout: std::time::Duration::from_secs(5),
            },
            max_tokens: 100,
            warm_up: false,
        }
    }

    #[tokio::test]
    async fn a_streamed_tool_call_is_put_together_from_its_fragments() {
        let events = [
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_", "arguments": ""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"name": "balance", "arguments": "{}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 5}}),
        ];
        let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect::<String>() + "data: [DONE]\n\n";
        let llm = llm(serve_once(body).await);
        let client = crate::voice::http_client().unwrap();
        let usage = SessionUsage::default();
        let mut stream =
            llm.stream(&client, &[json!({"role": "user", "content": "hi"})], &[], "p", &usage).await.unwrap();
        let call = ToolCall { id: "call_1".into(), name: "get_balance".into(), arguments: "{}".into() };
        assert_eq!(stream.next().await.unwrap(), Some(Delta::ToolCalls(vec![call])));
        assert_eq!(stream.next().await.unwrap(), None);
        assert_eq!(stream.tokens, (40, 5));
        let counted = usage.rows()[0].counters;
        assert_eq!((counted.llm_prompt_tokens, counted.llm_completion_tokens), (40, 5));
    }

    #[tokio::test]
    async fn streamed_text_arrives_piece_by_piece() {
        let events = ["My ", "name ", "is ", "Ada."]
            .map(|w| json!({"choices": [{"index": 0, "delta": {"content": w}}]}))
            .iter()
            .map(|e| format!("data: {e}\r\n\r\n"))
            .collect::<String>();
        let llm = llm(serve_once(events + "data: [DONE]\n\n").await);
        let client = crate::voice::http_client().unwrap();
        let usage = SessionUsage::default();
        let mut stream = llm.stream(&client, &[], &[], "p", &usage).await.unwrap();
        let mut text = String::new();
        while let Some(Delta::Text(t)) = stream.next().await.unwrap() {
            text.push_str(&t);
        }
        assert_eq!(text, "My name is Ada.");
        // The provider sent no usage: nothing is counted, nothing guessed.
        assert!(usage.rows().is_empty());
    }

    #[tokio::test]
    async fn warming_up_sends_the_prompt_for_one_token_and_counts_its_usage() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = vec![0; 65536];
            // Headers and the JSON body, read until the body's closing brace.
            while !request.ends_with(b"}") {
                let n = sock.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            let usage = json!({"choices": [], "usage": {"prompt_tokens": 600, "completion_tokens": 1}});
            let body = format!(
                "data: {}\n\ndata: {usage}\n\ndata: [DONE]\n\n",
                json!({"choices": [{"index": 0, "delta": {"content": "Hi"}}]})
            );
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
            sock.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        let llm = llm(format!("http://{addr}"));
        let client = crate::voice::http_client().unwrap();
        let usage = SessionUsage::default();
        let system = [json!({"role": "system", "content": "You are Ada."})];
        llm.warm(&client, &system, &[], "p", &usage).await.unwrap();
        let request = server.await.unwrap();
        let body: Value = serde_json::from_str(&request[request.find("\r\n\r\n").unwrap() + 4..]).unwrap();
        assert_eq!(body["max_tokens"], 1, "{body}");
        assert_eq!(body["messages"], json!(system), "{body}");
        let counted = usage.rows()[0].counters;
        assert_eq!((counted.llm_prompt_tokens, counted.llm_completion_tokens), (600, 1));
    }

    #[test]
    fn sentences_come_out_as_soon_as_they_end() {
        let mut s = Sentences::default();
        assert!(s.push("My name is Ada").is_empty());
        assert_eq!(s.push(". I heard you! How"), vec!["My name is Ada.", "I heard you!"]);
        assert!(s.push(" are you").is_empty());
        assert_eq!(s.finish().as_deref(), Some("How are you"));
        assert_eq!(s.push("It costs 3.5 dollars. Ok"), vec!["It costs 3.5 dollars."]);
    }

    #[test]
    fn a_long_first_clause_is_spoken_before_its_sentence_ends() {
        let mut s = Sentences::default();
        assert!(s.push("Well, fractions are").is_empty(), "too short a clause waits");
        assert_eq!(s.push(" parts of a whole, and a half is one"), vec!["Well, fractions are parts of a whole,"]);
        // After the first piece, commas wait for the sentence's end.
        assert!(s.push(" of two, you see").is_empty());
        assert_eq!(s.push(". Next"), vec!["and a half is one of two, you see."]);
    }
}
