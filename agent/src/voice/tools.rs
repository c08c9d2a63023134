//! Function tools the model may call. `get_balance` answers from the
//! session's meter and is offered in every metered session; `calculator`
//! (exact arithmetic, which spoken models get wrong) to personas that list
//! it; a persona's other tools (the personas crate knows their names) are
//! offered once the worker implements them. Results are JSON strings, as the
//! chat API wants.

use metering::meter::Snapshot;
use serde_json::{json, Value};
use tokio::sync::watch;

/// Tools the worker implements.
pub const IMPLEMENTED: &[&str] = &["get_balance", "calculator"];

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

/// Runs one call with its JSON `arguments`; an unknown tool or bad
/// arguments get an error result the model can read.
pub fn call(name: &str, arguments: &str, balance: &watch::Receiver<Snapshot>) -> String {
    match name {
        "calculator" => {
            let args: Value = serde_json::from_str(arguments).unwrap_or(Value::Null);
            let Some(expr) = args["expression"].as_str() else {
                return json!({"error": "calculator needs {\"expression\": \"...\"}"}).to_string();
            };
            match evaluate(expr) {
                Ok(v) => json!({"expression": expr, "result": v}).to_string(),
                Err(e) => json!({"expression": expr, "error": e}).to_string(),
            }
        }
        "get_balance" => {
            let snap = balance.borrow().clone();
            json!({
                "remaining_seconds": snap.remaining.map(|r| r.as_secs()),
                "balance_ms": snap.spendable.0,
                "earned_ms": snap.earned.0,
                "talked_seconds": snap.live.as_secs(),
            })
            .to_string()
        }
        other => json!({"error": format!("no tool named {other}")}).to_string(),
    }
}

/// Evaluates `+ - * / ^`, unary minus and parentheses (recursive descent).
pub fn evaluate(expr: &str) -> Result<f64, String> {
    // Bounded, so nesting from a model cannot run the stack out.
    if expr.len() > 200 {
        return Err("the expression is longer than 200 characters".into());
    }
    let tokens: Vec<char> = expr.chars().filter(|c| !c.is_whitespace()).collect();
    let mut p = Parser { t: &tokens, i: 0 };
    let v = p.sum()?;
    if p.i != tokens.len() {
        return Err(format!("unexpected {:?} at position {}", tokens[p.i], p.i + 1));
    }
    if !v.is_finite() {
        return Err("the result is not a finite number (division by zero?)".into());
    }
    Ok(v)
}

struct Parser<'a> {
    t: &'a [char],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.t.get(self.i).copied()
    }

    fn sum(&mut self) -> Result<f64, String> {
        let mut v = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.i += 1;
            let r = self.product()?;
            v = if op == '+' { v + r } else { v - r };
        }
        Ok(v)
    }

    fn product(&mut self) -> Result<f64, String> {
        let mut v = self.power()?;
        while let Some(op @ ('*' | '/')) = self.peek() {
            self.i += 1;
            let r = self.power()?;
            v = if op == '*' { v * r } else { v / r };
        }
        Ok(v)
    }

    fn power(&mut self) -> Result<f64, String> {
        let base = self.unary()?;
        if self.peek() == Some('^') {
            self.i += 1;
            return Ok(base.powf(self.power()?)); // right-associative
        }
        Ok(base)
    }

    fn unary(&mut self) -> Result<f64, String> {
        if self.peek() == Some('-') {
            self.i += 1;
            return Ok(-self.unary()?);
        }
        if self.peek() == Some('(') {
            self.i += 1;
            let v = self.sum()?;
            if self.peek() != Some(')') {
                return Err("a closing parenthesis is missing".into());
            }
            self.i += 1;
            return Ok(v);
        }
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
            self.i += 1;
        }
        let text: String = self.t[start..self.i].iter().collect();
        text.parse().map_err(|_| match self.peek() {
            Some(c) if text.is_empty() => format!("unexpected {c:?} at position {}", self.i + 1),
            _ if text.is_empty() => "the expression ends too early".to_string(),
            _ => format!("{text:?} is not a number"),
        })
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
            earned: metering::Millis(60_000),
            live: Duration::from_secs(3),
            exhausted: false,
        });
        let v: Value = serde_json::from_str(&call("get_balance", "{}", &rx)).unwrap();
        assert_eq!(v["remaining_seconds"], 125);
        assert_eq!(v["balance_ms"], 125_000);
        assert_eq!(v["earned_ms"], 60_000);
        assert!(call("launch", "{}", &rx).contains("no tool named launch"));
        assert_eq!(definitions(&["web_search".into()]).len(), 1);
        assert_eq!(definitions(&["calculator".into(), "web_search".into()]).len(), 2);
    }

    #[test]
    fn the_calculator_is_exact_and_says_what_it_cannot_read() {
        assert_eq!(evaluate("1 + 2 * 3").unwrap(), 7.0);
        assert_eq!(evaluate("(1 + 2) * 3").unwrap(), 9.0);
        assert_eq!(evaluate("2 ^ 3 ^ 2").unwrap(), 512.0);
        assert_eq!(evaluate("-4.5 / 2 - -1").unwrap(), -1.25);
        assert!(evaluate("1 / 0").unwrap_err().contains("finite"));
        assert!(evaluate("(1 + 2").unwrap_err().contains("parenthesis"));
        assert!(evaluate("2 +").unwrap_err().contains("ends too early"));
        assert!(evaluate("2 $ 3").unwrap_err().contains("'$'"));
        assert!(evaluate(&"(".repeat(10_000)).unwrap_err().contains("200"));
        let (_tx, rx) = watch::channel(Snapshot::default());
        let v: Value = serde_json::from_str(&call("calculator", r#"{"expression": "6 * 7"}"#, &rx)).unwrap();
        assert_eq!(v["result"], 42.0);
        assert!(call("calculator", "{}", &rx).contains("error"));
    }
}
