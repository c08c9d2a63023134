//! Function tools the model may call. `get_balance` answers from the
//! session's meter and is offered in every metered session; a persona's
//! other tools (the personas crate knows their names) are offered once the
//! worker implements them. Results are JSON strings, as the chat API wants.

use metering::meter::Snapshot;
use serde_json::{json, Value};
use tokio::sync::watch;

/// Tools the worker implements.
pub const IMPLEMENTED: &[&str] = &["get_balance"];

/// The function definitions to offer for a persona's `tools`.
pub fn definitions(persona_tools: &[String]) -> Vec<Value> {
    let mut out = vec![json!({
        "type": "function",
        "function": {
            "name": "get_balance",
            "description": "The user's remaining talk time and prepaid balance for this conversation.",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": false},
        },
    })];
    // Only tools with an implementation are offered; get_balance already is.
    out.extend(persona_tools.iter().filter(|t| IMPLEMENTED.contains(&t.as_str()) && *t != "get_balance").map(
        |t| json!({"type": "function", "function": {"name": t, "parameters": {"type": "object", "properties": {}}}}),
    ));
    out
}

/// Runs one call; an unknown tool gets an error result the model can read.
pub fn call(name: &str, balance: &watch::Receiver<Snapshot>) -> String {
    match name {
        "get_balance" => {
            let snap = balance.borrow().clone();
            json!({
                "remaining_seconds": snap.remaining.map(|r| r.as_secs()),
                "balance_ms": snap.spendable.0,
                "talked_seconds": snap.live.as_secs(),
            })
            .to_string()
        }
        other => json!({"error": format!("no tool named {other}")}).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn get_balance_reads_the_meter() {
        let (tx, rx) = watch::channel(Snapshot::default());
        tx.send_replace(Snapshot {
            remaining: Some(Duration::from_secs(125)),
            spendable: metering::Millis(125_000),
            live: Duration::from_secs(3),
            exhausted: false,
        });
        let v: Value = serde_json::from_str(&call("get_balance", &rx)).unwrap();
        assert_eq!(v["remaining_seconds"], 125);
        assert_eq!(v["balance_ms"], 125_000);
        assert!(call("launch", &rx).contains("no tool named launch"));
        assert_eq!(definitions(&["web_search".into()]).len(), 1);
    }
}
