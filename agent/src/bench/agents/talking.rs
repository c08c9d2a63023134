//! `bench agents --talking N`: what a worker costs while its sessions talk.
//! N users each join a room, the worker under test is dispatched to every
//! room, and the users ask questions (espeak-ng speech rendered once) one
//! after the other with a gap after each answer; the agents answer through
//! the same providers (`[voice]`: the local stack by default). Meanwhile the
//! worker's whole process tree is read each second (PSS, RSS, CPU), the
//! providers' processes too, and every turn is timed as the user hears it.
//! Ours runs `mindbot-agent run` with voice on; theirs is
//! `tests/agents/voice_agent.py` (LiveKit Agents' `AgentSession` with
//! Silero's VAD and the OpenAI plugin) given the same persona's prompt, the
//! same models, the same voice and the same answer length.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use sqlx::PgPool;

use super::contender::{root, Contender, Kind};
use super::procs::{self, TreeSample};
use super::talker::{Pace, Talker, Turn};
use super::users::Server;
use super::{AgentsArgs, Load, PERSONA};
use crate::config::Config;

/// How long the users talk before the window opens (the first answers under way).
const WARM_UP: Duration = Duration::from_secs(10);

/// Everything measured for one worker while its sessions talk.
#[derive(Debug)]
pub(super) struct Talked {
    pub idle: TreeSample,
    pub load: Load,
    pub turns: Vec<Turn>,
    /// Per provider: its name and the cores it used over the window.
    pub providers: Vec<(&'static str, Option<f64>)>,
    /// `/proc/loadavg`'s three figures when the window opened and closed.
    pub load_average: (String, String),
    /// From the first question to the end of the window, seconds.
    pub talked_seconds: f64,
}

impl Talked {
    /// Answered turns per session and minute of talking: the work each worker did.
    pub fn turns_per_minute(&self) -> Option<f64> {
        let answered = self.turns.iter().filter(|t| t.latency.is_some()).count() as f64;
        per_session(self, answered * 60.0 / self.talked_seconds.max(1.0))
    }

    /// Latencies (ms) of the turns answered without talking over an answer.
    pub fn latencies(&self) -> Vec<f64> {
        self.turns
            .iter()
            .filter(|t| !t.over_answer)
            .filter_map(|t| t.latency)
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect()
    }
}

/// The persona's prompt as our worker builds it (voice/prompt.rs), for
/// theirs: name, prompt, character, purpose, safety, the spoken-call rule
/// and the name again; tools are off on the local model, so none is named.
fn instructions(p: &personas::PersonaConfig) -> String {
    format!(
        "You are {name}.\n\n{}\n\nCharacter: {}\nPurpose: {}\nSafety: {}\n\
         This is a live voice call: answer in short spoken sentences, with no lists, markdown or symbols.\n\
         Your name is {name}; when asked your name, say it.\n",
        p.system_prompt.trim(),
        p.persona.trim(),
        p.purpose.trim(),
        p.safety.trim(),
        name = p.name,
    )
}

/// The environment `voice_agent.py` reads its providers from: `[voice]`'s.
fn python_env(config: &Config) -> Result<Vec<(String, String)>> {
    let v = &config.voice;
    let persona = personas::Catalog::builtin().get(PERSONA).cloned().context("the bench persona is missing")?;
    let tts = v
        .tts
        .get(&persona.voice.tts)
        .or_else(|| v.tts.get("default"))
        .context("voice.tts has no profile for the bench persona and no \"default\"")?;
    let voice = tts.voices.get(&persona.voice.style).cloned().unwrap_or(persona.voice.style.clone());
    let v1 = |base: &str| format!("{}/v1", base.trim_end_matches('/'));
    let key = |k: &str| if k.is_empty() { "none".to_string() } else { k.to_string() };
    Ok(vec![
        ("AGENT_STT_BASE_URL".into(), v1(&v.stt.base_url)),
        ("AGENT_STT_MODEL".into(), v.stt.model.clone()),
        ("AGENT_STT_API_KEY".into(), key(v.stt.api_key.expose())),
        ("AGENT_LLM_BASE_URL".into(), v1(&v.llm.base_url)),
        ("AGENT_LLM_MODEL".into(), v.llm.model.clone()),
        ("AGENT_LLM_API_KEY".into(), key(v.llm.api_key.expose())),
        ("AGENT_LLM_MAX_TOKENS".into(), v.llm.max_tokens.to_string()),
        ("AGENT_TTS_BASE_URL".into(), v1(&tts.base_url)),
        ("AGENT_TTS_MODEL".into(), tts.model.clone()),
        ("AGENT_TTS_API_KEY".into(), key(tts.api_key.expose())),
        ("AGENT_TTS_VOICE".into(), voice),
    ])
}

fn metadata(kind: Kind, user: &str) -> Result<Value> {
    Ok(match kind {
        Kind::Mindbot => json!({"user_id": user, "persona": PERSONA}),
        Kind::LivekitAgents => {
            let persona = personas::Catalog::builtin().get(PERSONA).cloned().context("the bench persona is missing")?;
            json!({"user_id": user, "instructions": instructions(&persona)})
        }
    })
}

/// The local stack's processes (`scripts/local-voice.sh` keeps their pids).
fn provider_pids() -> Vec<(&'static str, Option<u32>)> {
    ["llm", "stt", "tts"]
        .into_iter()
        .map(|name| {
            let pid = std::fs::read_to_string(root().join(format!(".cache/local-{name}/server.pid")))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
            (name, pid)
        })
        .collect()
}

pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs `kind` with `n` talking sessions and measures it.
pub(super) async fn measure(
    config: &Config,
    args: &AgentsArgs,
    kind: Kind,
    pool: &PgPool,
    db_url: &str,
    questions: &Arc<Vec<Arc<Vec<i16>>>>,
) -> Result<Talked> {
    let n = args.talking.unwrap_or_default();
    let ids = super::seed_users(pool, n, 3_600_000).await?;
    let env = python_env(config)?;
    let mut c = Contender::start(kind, config, db_url, n + 5, Some(&env)).await?;
    let server = Server::new(config);
    let run = talk(config, args, &c, &server, &ids, questions).await;
    if let Err(e) = &run {
        eprintln!("{} failed: {e:#}\nits last log lines:\n{}", kind.label(), c.tail());
    }
    c.stop().await;
    run
}

async fn talk(
    config: &Config,
    args: &AgentsArgs,
    c: &Contender,
    server: &Server,
    ids: &[String],
    questions: &Arc<Vec<Arc<Vec<i16>>>>,
) -> Result<Talked> {
    let label = c.kind.label();
    let pace =
        Pace { gap: Duration::from_secs(args.gap_seconds), answer_timeout: Duration::from_secs(args.answer_timeout) };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = procs::sample(c.pid());
    let started = Instant::now();
    let joined: Vec<Result<_>> = futures_util::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| async move {
            let room = format!("bench-{}-{label}-talk-{i}", std::process::id());
            let (talker, voice) = Talker::join(config, &room, id).await?;
            server.dispatch(&room, &c.agent_name, &metadata(c.kind, id)?).await?;
            if server.wait_agent_active(&room, Duration::from_millis(50), Duration::from_secs(60)).await.is_none() {
                eprintln!("{label}: no agent in {room} after 60 s");
            }
            Ok((i, talker, voice))
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut talkers = Vec::new();
    for j in joined {
        match j {
            Ok((i, mut talker, voice)) => {
                // Spread over one gap, each user from a question of its own.
                let delay = pace.gap * i as u32 / ids.len().max(1) as u32;
                talker.converse(voice, questions.clone(), i, pace, delay);
                talkers.push(talker);
            }
            Err(e) => eprintln!("{label}: a talking session did not start: {e:#}"),
        }
    }
    let talk_start = Instant::now();
    let rooms: Vec<String> = talkers.iter().map(|t| t.room_name.clone()).collect();
    let present = super::phases::count_present(server, &rooms).await;
    println!(
        "{label}: {present} of {} sessions with their agent after {:.1} s; talking, window opens in {} s",
        ids.len(),
        started.elapsed().as_secs_f64(),
        WARM_UP.as_secs()
    );
    if present == 0 {
        futures_util::stream::iter(rooms.iter()).for_each_concurrent(8, |r| server.delete_room(r)).await;
        futures_util::stream::iter(talkers).for_each_concurrent(8, Talker::leave).await;
        anyhow::bail!("no agent joined any of the {} rooms", ids.len());
    }
    tokio::time::sleep(WARM_UP).await;
    let pids = provider_pids();
    let providers_first: Vec<Option<TreeSample>> = pids.iter().map(|(_, p)| p.map(procs::sample)).collect();
    let load_before = load_average();
    let t0 = Instant::now();
    let mut load = Load::measure(c.pid(), args.window_seconds(), present).await;
    let wall = t0.elapsed().as_secs_f64();
    let providers = pids
        .iter()
        .zip(&providers_first)
        .map(|((name, pid), before)| {
            let cores = match (pid, before) {
                (Some(pid), Some(before)) => Some((procs::sample(*pid).cpu_seconds - before.cpu_seconds) / wall),
                _ => None,
            };
            (*name, cores)
        })
        .collect();
    let load_after = load_average();
    load.present_at_end = super::phases::count_present(server, &rooms).await;
    let talked_seconds = talk_start.elapsed().as_secs_f64();
    let turns: Vec<Turn> = talkers.iter().flat_map(Talker::turns).collect();
    futures_util::stream::iter(rooms.iter()).for_each_concurrent(8, |r| server.delete_room(r)).await;
    futures_util::stream::iter(talkers).for_each_concurrent(8, Talker::leave).await;
    let talked = Talked { idle, load, turns, providers, load_average: (load_before, load_after), talked_seconds };
    print_one(label, &talked);
    Ok(talked)
}

fn print_one(label: &str, t: &Talked) {
    let l = &t.load;
    let per = l.sessions.max(1) as f64;
    let lat = t.latencies();
    let missed = t.turns.iter().filter(|t| t.latency.is_none()).count();
    let over = t.turns.iter().filter(|t| t.over_answer).count();
    println!(
        "{label}: {} talking sessions: {:.1} MB PSS ({:.1} MB RSS) in {} processes, {:.1}% of a core; per session \
         {:.2} MB PSS, {:.2}% of a core; {} turns: {} answered (p50 {:.0} ms, p95 {:.0} ms), {missed} unanswered \
         within the timeout, {over} asked over an answer; load average {} -> {}",
        l.sessions,
        l.pss / 1e6,
        l.rss / 1e6,
        l.processes,
        l.cores * 100.0,
        l.pss / per / 1e6,
        l.cores * 100.0 / per,
        t.turns.len(),
        lat.len(),
        super::percentile(&lat, 0.5),
        super::percentile(&lat, 0.95),
        t.load_average.0,
        t.load_average.1,
    );
}

/// One table row: a label and how to read it from a worker's figures.
fn rows(n: usize) -> Vec<super::Row<Talked>> {
    vec![
        (format!("PSS per talking session at {n} (tree / sessions)"), |t| per_session(t, t.load.pss / 1e6), "MB"),
        (
            format!("PSS per talking session at {n}, above idle"),
            |t| per_session(t, (t.load.pss - t.idle.pss as f64) / 1e6),
            "MB",
        ),
        (format!("RSS per talking session at {n} (tree / sessions)"), |t| per_session(t, t.load.rss / 1e6), "MB"),
        (format!("CPU per talking session at {n}"), |t| per_session(t, t.load.cores * 100.0), "% core"),
        ("answered turns per session per minute".into(), Talked::turns_per_minute, "turns"),
        ("turn: end of speech -> first agent audio, p50".into(), |t| pct(&t.latencies(), 0.5), "ms"),
        ("turn: end of speech -> first agent audio, p95".into(), |t| pct(&t.latencies(), 0.95), "ms"),
    ]
}

fn per_session(t: &Talked, v: f64) -> Option<f64> {
    (t.load.sessions > 0).then(|| v / t.load.sessions as f64)
}

fn pct(samples: &[f64], q: f64) -> Option<f64> {
    (!samples.is_empty()).then(|| super::percentile(samples, q))
}

/// The side-by-side table of a talking run.
pub(super) fn print_table(n: usize, all: &[(Kind, Talked)]) {
    let get = |kind: Kind| all.iter().find(|(k, _)| *k == kind).map(|(_, t)| t);
    let (ours, theirs) = (get(Kind::Mindbot), get(Kind::LivekitAgents));
    super::print_rows("metric (talking)", 56, rows(n), ours, theirs);
    for (kind, t) in all {
        let providers: Vec<String> = t
            .providers
            .iter()
            .map(|(name, cores)| match cores {
                Some(c) => format!("{name} {:.0}%", c * 100.0),
                None => format!("{name} -"),
            })
            .collect();
        println!(
            "{}: {} of {n} sessions up, {} with their agent at the end; {} processes; {} turns, {} answered, {} \
             unanswered, {} asked over an answer; providers' CPU (% of a core) {}; load average {} -> {}",
            kind.label(),
            t.load.sessions,
            t.load.present_at_end,
            t.load.processes,
            t.turns.len(),
            t.latencies().len(),
            t.turns.iter().filter(|t| t.latency.is_none()).count(),
            t.turns.iter().filter(|t| t.over_answer).count(),
            providers.join(", "),
            t.load_average.0,
            t.load_average.1,
        );
    }
    println!("ratio = livekit-agents / mindbot; CPU and memory are the worker's process tree only (not the providers)");
}
