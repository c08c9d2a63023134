//! `bench rooms`: what an agent participant with audio both ways costs.
//! Every room gets two participants in this process, each publishing a
//! tone and decoding what it hears; after a settling pause the process's CPU
//! time and RSS growth are divided among the participants.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mindbot_transport::room::{self, ConnectOptions, Room, RoomEvent, SAMPLE_RATE};
use tokio::task::JoinHandle;

use crate::config::Config;

struct Participant {
    room: Room,
    tasks: Vec<JoinHandle<()>>,
}

async fn join(config: &Config, room_name: &str, identity: &str, hz: f64, heard: Arc<AtomicU64>) -> Result<Participant> {
    let (room, mut events) =
        room::connect(&config.livekit.url, &super::room_token(config, room_name, identity)?, ConnectOptions::default())
            .await
            .with_context(|| format!("{identity} joining {room_name}"))?;
    let source = room.publish_audio("microphone").await.context("publishing audio")?;
    let tone: Vec<i16> = (0..SAMPLE_RATE as usize)
        .map(|i| ((i as f64 * hz * std::f64::consts::TAU / f64::from(SAMPLE_RATE)).sin() * 6000.0) as i16)
        .collect();
    let talk = tokio::spawn(async move { while source.push(&tone).await.is_ok() {} });
    let listen = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let RoomEvent::AudioTrackSubscribed { mut stream, .. } = event {
                let heard = heard.clone();
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        heard.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }
    });
    Ok(Participant { room, tasks: vec![talk, listen] })
}

pub async fn rooms(config: &Config, rooms: usize, seconds: u64) -> Result<ExitCode> {
    anyhow::ensure!(rooms > 0 && seconds > 0, "--rooms and --seconds must be positive");
    let run = format!("bench-{}", std::process::id());
    let heard = Arc::new(AtomicU64::new(0));
    // One warm-up join so one-time allocations (crypto tables, runtime) are not counted.
    let warm = join(config, &format!("{run}-warm"), "warm", 440.0, heard.clone()).await?;
    warm.room.leave().await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let rss_before = super::rss_bytes();
    let started = Instant::now();
    let mut all = Vec::with_capacity(rooms * 2);
    for i in 0..rooms {
        let name = format!("{run}-{i}");
        all.push(join(config, &name, "agent", 880.0, heard.clone()).await?);
        all.push(join(config, &name, "user", 440.0, heard.clone()).await?);
    }
    println!(
        "bench rooms: {} participants in {rooms} rooms joined in {:.1} s",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await; // subscriptions settle
    let (cpu0, heard0, t0) = (super::cpu_seconds(), heard.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (super::cpu_seconds() - cpu0) / wall;
    let frames = heard.load(Ordering::Relaxed) - heard0;
    let rss = super::rss_bytes();

    let n = all.len() as f64;
    println!(
        "per participant: {:.2} MB RSS, {:.3}% of a core; {:.1} audio frames decoded per second (50 = all)",
        rss.saturating_sub(rss_before) as f64 / n / 1e6,
        cpu / n * 100.0,
        frames as f64 / wall / n,
    );
    println!("process: {:.1} MB RSS, {:.1}% of a core over {wall:.1} s", rss as f64 / 1e6, cpu * 100.0);
    for p in all {
        for t in &p.tasks {
            t.abort();
        }
        p.room.leave().await.ok();
    }
    Ok(ExitCode::SUCCESS)
}
