use super::*;

fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
}

fn env_of(pairs: Vec<(&'static str, &'static str)>) -> impl Fn(&str) -> Option<String> {
    move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
}

#[test]
fn defaults_load_and_validate() {
    let c = Config::from_sources(DEFAULT_TOML, env(&[])).unwrap();
    assert_eq!(c.livekit.agent_name, "mindbot");
    assert_eq!(c.meter.warnings_seconds, vec![60, 10]);
    assert_eq!(c.personas.custom_rules().min_multiplier, metering::Rate::ONE);
    let c = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_PERSONAS_CUSTOM_MIN_MULTIPLIER", "1.25")])).unwrap();
    assert_eq!(c.personas.custom_rules().min_multiplier.ms_per_second(), 1250);
}

#[test]
fn database_password_is_redacted() {
    assert_eq!(redacted_url("postgres://me:pw@h:5432/db"), "postgres://me@h:5432/db");
    assert_eq!(redacted_url("postgres://h/db"), "postgres://h/db");
}

#[test]
fn environment_overrides_with_well_known_and_prefixed_names() {
    let c = Config::from_sources(
        DEFAULT_TOML,
        env(&[
            ("DATABASE_URL", "postgres://a:b@db:5432/x"),
            ("LIVEKIT_API_SECRET", "s3cr3t"),
            ("MINDBOT_METER_TICK_INTERVAL_MS", "500"),
            ("MINDBOT_METER_WARNINGS_SECONDS", "[120, 30]"),
        ]),
    )
    .unwrap();
    assert_eq!(c.database.url.expose(), "postgres://a:b@db:5432/x");
    assert_eq!(c.meter.tick_interval_ms, 500);
    assert_eq!(c.meter.warnings_seconds, vec![120, 30]);
    let shown = format!("{c:?}");
    assert!(!shown.contains("s3cr3t") && !shown.contains("a:b@"), "{shown}");
}

#[test]
fn ads_settings_are_validated_naming_the_key() {
    let c = Config::from_sources(DEFAULT_TOML, env(&[])).unwrap();
    let p = c.reward_policy();
    assert_eq!((p.reward_seconds, p.daily_cap_seconds, p.rewarded_types.len()), (300, 1800, 1));
    for (key, value, named) in [
        ("MINDBOT_ADS_REWARD_SECONDS", "90", "ads.reward_seconds"),
        ("MINDBOT_ADS_REWARD_SECONDS", "0", "ads.reward_seconds"),
        ("MINDBOT_ADS_DAILY_REWARD_CAP", "100000", "ads.daily_reward_cap"),
        ("MINDBOT_ADS_REWARDED_TYPES", r#"["Rewarded Video"]"#, "ads.rewarded_types"),
        ("MINDBOT_ADS_CALLBACK_TOLERANCE_SECONDS", "0", "ads.callback_tolerance_seconds"),
    ] {
        let e = Config::from_sources(DEFAULT_TOML, |k: &str| (k == key).then(|| value.to_string())).unwrap_err();
        assert!(e.to_string().contains(named), "{key}={value}: {e}");
    }
    // A config file without an [ads] table gets the defaults.
    let without: String =
        DEFAULT_TOML.split("[ads]").next().unwrap().to_string() + &DEFAULT_TOML[DEFAULT_TOML.find("[log]").unwrap()..];
    let c = Config::from_sources(&without, env(&[])).unwrap();
    assert_eq!(c.ads.reward_seconds, 300);
}

#[test]
fn bad_values_name_the_key() {
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_METER_TICK_INTERVAL_MS", "fast")])).unwrap_err();
    assert!(e.to_string().contains("tick_interval_ms"), "{e}");
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_PERSONAS_TIMEZONE", "Mars/Olympus")])).unwrap_err();
    assert!(e.to_string().contains("personas.timezone"), "{e}");
    for bad in ["0", "-1", "0.0001", "cheap", "1e3"] {
        let e = Config::from_sources(DEFAULT_TOML, |k: &str| {
            (k == "MINDBOT_PERSONAS_CUSTOM_MIN_MULTIPLIER").then(|| bad.to_string())
        })
        .unwrap_err();
        assert!(e.to_string().contains("personas.custom_min_multiplier"), "{bad}: {e}");
    }
    let e = Config::from_sources(DEFAULT_TOML, env(&[("LIVEKIT_URL", "ftp://x")])).unwrap_err();
    assert!(e.to_string().contains("livekit.url"), "{e}");
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_LIVEKIT_SERVER_API_URL", "127.0.0.1:1")])).unwrap_err();
    assert!(e.to_string().contains("livekit.server_api_url"), "{e}");
    let typo = DEFAULT_TOML.replace("[meter]", "[meter]\ntick_intervall_ms = 3");
    let e = Config::from_sources(&typo, env(&[])).unwrap_err();
    assert!(e.to_string().contains("tick_intervall_ms"), "{e}");
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_LOG_FORMAT", "xml")])).unwrap_err();
    assert!(e.to_string().contains("log.format"), "{e}");
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_VOICE_STT_BASE_URL", "ftp://x")])).unwrap_err();
    assert!(e.to_string().contains("voice.stt.base_url"), "{e}");
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_VOICE_LLM_TIMEOUT_MS", "soon")])).unwrap_err();
    assert!(e.to_string().contains("voice.llm.timeout_ms"), "{e}");
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_API_STRIPE_CURRENCY", "US$")])).unwrap_err();
    assert!(e.to_string().contains("api.stripe_currency") && e.to_string().contains("US$"), "{e}");
}

#[test]
fn voice_keys_nest_in_the_environment_and_keys_stay_secret() {
    let c = Config::from_sources(
        DEFAULT_TOML,
        env(&[
            ("MINDBOT_VOICE_ENABLED", "true"),
            ("MINDBOT_VOICE_LLM_API_KEY", "sk-hidden"),
            ("MINDBOT_VOICE_TTS_DEFAULT_BASE_URL", "http://127.0.0.1:9"),
            ("MINDBOT_VOICE_TTS_DEFAULT_VOICES", r#"{ "warm-mature-female" = "en-us+f2" }"#),
            ("MINDBOT_PERSONAS_PLAN_LEVELS", r#"{ gold = "premium" }"#),
        ]),
    )
    .unwrap();
    assert!(c.voice.enabled);
    assert_eq!(c.voice.llm.api_key.expose(), "sk-hidden");
    assert_eq!(c.voice.tts["default"].base_url, "http://127.0.0.1:9");
    assert_eq!(c.voice.tts["default"].voices["warm-mature-female"], "en-us+f2");
    assert_eq!(c.personas.plan_levels.len(), 1);
    assert!(!format!("{c:?}").contains("sk-hidden"));
    let no_default = DEFAULT_TOML.replace("[voice.tts.default]", "[voice.tts.cartesia]");
    let e = Config::from_sources(&no_default, env(&[("MINDBOT_VOICE_ENABLED", "true")])).unwrap_err();
    assert!(e.to_string().contains("voice.tts.default"), "{e}");
    // A config file without [voice] gets the defaults: voice off.
    let start = DEFAULT_TOML.find("[voice]").unwrap();
    let c = Config::from_sources(&DEFAULT_TOML[..start], env(&[])).unwrap();
    assert!(!c.voice.enabled);
}

#[test]
fn provider_prices_are_integers_per_provider_and_a_misspelt_key_is_named() {
    let c = Config::from_sources(
        DEFAULT_TOML,
        env(&[
            ("MINDBOT_VOICE_PRICES_LOCAL_STT_MICROS_PER_SECOND", "100"),
            ("MINDBOT_VOICE_PRICES", r#"{ openai = { llm_prompt_micros_per_1k_tokens = 150 } }"#),
        ]),
    );
    // A whole table from the environment replaces the file's.
    let c = c.unwrap();
    assert_eq!(c.voice.prices["openai"].llm_prompt_micros_per_1k_tokens, 150);
    assert_eq!(c.voice.prices["openai"].stt_micros_per_second, 0, "a missing key is 0");
    let c = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_VOICE_PRICES_LOCAL_STT_MICROS_PER_SECOND", "100")]))
        .unwrap();
    assert_eq!(c.voice.prices["local"].stt_micros_per_second, 100);
    let typo = format!("{DEFAULT_TOML}\n[voice.prices.openai]\nstt_micro_per_second = 5\n");
    let e = format!("{:#}", Config::from_sources(&typo, env(&[])).unwrap_err());
    assert!(e.contains("stt_micro_per_second"), "{e}");
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_VOICE_PRICES_LOCAL_STT_MICROS_PER_SECOND", "-1")]))
        .unwrap_err();
    assert!(format!("{e:#}").contains("stt_micros_per_second"), "{e:#}");
}

#[test]
fn turn_taking_keys_are_typed_and_checked_naming_the_key() {
    let c = Config::from_sources(DEFAULT_TOML, env(&[])).unwrap();
    assert_eq!(c.voice.turn_detection, TurnDetection::Transcript);
    let c = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_VOICE_TURN_DETECTION", "silence")])).unwrap();
    assert_eq!(c.voice.turn_detection, TurnDetection::Silence);
    let cases: [(&'static str, &'static str, &str); 5] = [
        ("MINDBOT_VOICE_TURN_DETECTION", "model", "turn_detection"),
        ("MINDBOT_VOICE_TURN_PAUSE_MS", "900", "voice.turn_pause_ms"),
        ("MINDBOT_VOICE_TRAILING_END_OF_TURN_MS", "100", "voice.trailing_end_of_turn_ms"),
        ("MINDBOT_VOICE_INTERRUPTION_MS", "20", "voice.interruption_ms"),
        ("MINDBOT_VOICE_NOISE_MARGIN_DB", "-3.0", "voice.noise_margin_db"),
    ];
    for (key, value, named) in cases {
        let e = Config::from_sources(DEFAULT_TOML, env_of(vec![("MINDBOT_VOICE_ENABLED", "true"), (key, value)]))
            .unwrap_err();
        assert!(format!("{e:#}").contains(named), "{key}={value}: {e:#}");
    }
}

#[test]
fn an_enabled_api_needs_its_token_settings() {
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_API_ENABLED", "true")])).unwrap_err();
    assert!(e.to_string().contains("api.jwt_key"), "{e}");
    let e = Config::from_sources(
        DEFAULT_TOML,
        env(&[
            ("MINDBOT_API_ENABLED", "true"),
            ("MINDBOT_API_JWT_KEY", "k3y-of-thirty-two-bytes-at-least"),
            ("MINDBOT_API_JWT_ISSUER", "i"),
        ]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("api.jwt_audience"), "{e}");
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_API_JWT_ALGORITHM", "none")])).unwrap_err();
    assert!(e.to_string().contains("api.jwt_algorithm"), "{e}");
    let c = Config::from_sources(
        DEFAULT_TOML,
        env(&[
            ("MINDBOT_API_ENABLED", "true"),
            ("MINDBOT_API_JWT_KEY", "k3y-of-thirty-two-bytes-at-least"),
            ("MINDBOT_API_JWT_ISSUER", "i"),
            ("MINDBOT_API_JWT_AUDIENCE", "a"),
            ("MINDBOT_API_STRIPE_WEBHOOK_SECRET", "whsec_s3cr3t"),
        ]),
    )
    .unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("k3y") && !shown.contains("whsec_s3cr3t"), "{shown}");
}

#[test]
fn a_short_hs256_key_is_refused_naming_the_key_and_the_length() {
    let e = Config::from_sources(
        DEFAULT_TOML,
        env(&[
            ("MINDBOT_API_ENABLED", "true"),
            ("MINDBOT_API_JWT_KEY", "thirty-one-bytes-is-one-too-few"),
            ("MINDBOT_API_JWT_ISSUER", "i"),
            ("MINDBOT_API_JWT_AUDIENCE", "a"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("api.jwt_key") && e.contains("31 bytes") && e.contains("at least 32 bytes"), "{e}");
    assert!(!e.contains("thirty-one"), "the key itself is never shown: {e}");
}

#[test]
fn dev_credentials_are_refused_for_a_livekit_that_is_not_loopback() {
    let e = Config::from_sources(DEFAULT_TOML, env(&[("LIVEKIT_URL", "wss://lk.example.com")])).unwrap_err();
    assert!(e.to_string().contains("livekit.api_key") && e.to_string().contains("not a loopback"), "{e}");
    let e = Config::from_sources(
        DEFAULT_TOML,
        env(&[("LIVEKIT_URL", "ws://10.1.2.3:7880"), ("LIVEKIT_API_KEY", "APIk3y")]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("livekit.api_secret"), "{e}");
    let c = Config::from_sources(
        DEFAULT_TOML,
        env(&[("LIVEKIT_URL", "wss://lk.example.com"), ("LIVEKIT_API_KEY", "APIk3y"), ("LIVEKIT_API_SECRET", "s")]),
    );
    assert!(c.is_ok(), "{:?}", c.err());
    assert!(Config::from_sources(DEFAULT_TOML, env(&[("LIVEKIT_URL", "ws://localhost:7880")])).is_ok());
}

#[test]
fn dev_login_is_refused_unless_the_address_is_loopback_and_tokens_are_hs256() {
    let api: Vec<(&str, &str)> = vec![
        ("MINDBOT_API_ENABLED", "true"),
        ("MINDBOT_API_JWT_KEY", "a-demo-key-of-at-least-32-bytes-long"),
        ("MINDBOT_API_JWT_ISSUER", "iss"),
        ("MINDBOT_API_JWT_AUDIENCE", "aud"),
        ("MINDBOT_API_DEV_LOGIN", "true"),
    ];
    assert!(Config::from_sources(DEFAULT_TOML, env_of(api.clone())).is_ok());
    let mut public = api.clone();
    public.extend([("MINDBOT_HTTP_ADDRESS", "0.0.0.0:9464"), ("MINDBOT_HTTP_METRICS_TOKEN", "t0ken")]);
    let e = Config::from_sources(DEFAULT_TOML, env_of(public)).unwrap_err().to_string();
    assert!(e.contains("api.dev_login") && e.contains("http.address") && e.contains("loopback"), "{e}");
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_API_DEV_LOGIN", "true")])).unwrap_err().to_string();
    assert!(e.contains("api.dev_login") && e.contains("api.enabled"), "{e}");
}

#[test]
fn public_metrics_need_their_own_address_or_a_token() {
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_HTTP_ADDRESS", "0.0.0.0:9464")])).unwrap_err();
    assert!(e.to_string().contains("http.metrics_token"), "{e}");
    for extra in [("MINDBOT_HTTP_METRICS_TOKEN", "t0ken"), ("MINDBOT_HTTP_METRICS_ADDRESS", "127.0.0.1:9465")] {
        let c = Config::from_sources(DEFAULT_TOML, env_of(vec![("MINDBOT_HTTP_ADDRESS", "0.0.0.0:9464"), extra]));
        assert!(c.is_ok(), "{:?}", c.err());
    }
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_HTTP_METRICS_ADDRESS", "127.0.0.1:9464")])).unwrap_err();
    assert!(e.to_string().contains("http.metrics_address"), "{e}");
    let c = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_HTTP_METRICS_TOKEN", "t0ken")])).unwrap();
    assert!(!format!("{c:?}").contains("t0ken"));
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_HTTP_HEADER_READ_TIMEOUT_MS", "0")])).unwrap_err();
    assert!(e.to_string().contains("http.header_read_timeout_ms"), "{e}");
    let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_API_RATE_LIMIT_BURST", "0")])).unwrap_err();
    assert!(e.to_string().contains("api.rate_limit_burst"), "{e}");
}

#[test]
fn settings_with_a_fixed_set_of_values_are_enums_and_a_bad_value_names_the_key() {
    let c = Config::from_sources(DEFAULT_TOML, env(&[])).unwrap();
    assert_eq!(c.worker.hangup, HangUp::RemoveParticipant);
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.api.jwt_algorithm, JwtAlgorithm::Hs256);
    assert_eq!(c.personas.timezone, chrono_tz::Tz::UTC);
    assert_eq!(c.personas.plan_levels["premium_yearly"], ::personas::AccessLevel::Premium);
    let c = Config::from_sources(
        DEFAULT_TOML,
        env(&[
            ("MINDBOT_WORKER_HANGUP", "delete_room"),
            ("MINDBOT_LOG_FORMAT", "json"),
            ("MINDBOT_API_JWT_ALGORITHM", "ES256"),
            ("MINDBOT_PERSONAS_TIMEZONE", "Europe/Paris"),
        ]),
    )
    .unwrap();
    assert_eq!(c.worker.hangup, HangUp::DeleteRoom);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.api.jwt_algorithm, JwtAlgorithm::Es256);
    assert_eq!(c.reward_policy().timezone, "Europe/Paris");
    for (key, value, named) in [
        (
            "MINDBOT_WORKER_HANGUP",
            "hang_up",
            r#"config key worker.hangup must be "remove_participant" or "delete_room" (got "hang_up")"#,
        ),
        ("MINDBOT_LOG_FORMAT", "xml", r#"config key log.format must be "text" or "json" (got "xml")"#),
        (
            "MINDBOT_API_JWT_ALGORITHM",
            "none",
            r#"config key api.jwt_algorithm must be "HS256", "RS256" or "ES256" (got "none")"#,
        ),
        (
            "MINDBOT_PERSONAS_PLAN_LEVELS",
            r#"{ gold = "platinum" }"#,
            r#"config key personas.plan_levels.gold: unknown access level "platinum""#,
        ),
    ] {
        let e = Config::from_sources(DEFAULT_TOML, |k: &str| (k == key).then(|| value.to_string())).unwrap_err();
        assert!(e.to_string().contains(named), "{key}={value}: {e}");
    }
}
