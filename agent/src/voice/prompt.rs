//! The system prompt a persona gives the model: its name first (a user's
//! name override included), then its own prompt, character, purpose and
//! safety text, with the content filters and the age restriction spelled
//! out as rules, a reminder that this is speech (naming the balance tool
//! only when tools are offered), and the name again, last.

use personas::PersonaConfig;

/// The system message for `persona`; `tools` says whether its tools are offered.
pub fn system_prompt(persona: &PersonaConfig, tools: bool) -> String {
    let mut out = format!("You are {}.\n\n{}\n", persona.name, persona.system_prompt.trim());
    out.push_str(&format!("\nCharacter: {}\n", persona.persona.trim()));
    out.push_str(&format!("Purpose: {}\n", persona.purpose.trim()));
    out.push_str(&format!("Safety: {}\n", persona.safety.trim()));
    if !persona.content_filters.is_empty() {
        let topics: Vec<String> = persona.content_filters.iter().map(|f| f.replace('_', " ")).collect();
        out.push_str(&format!(
            "Content rules: never produce {}; if the user asks for it, decline briefly and move on.\n",
            topics.join(", ")
        ));
    }
    match persona.age_restriction {
        Some(age) => out.push_str(&format!("Audience: adults aged {age} or over, as checked at the start.\n")),
        None => out.push_str("Audience: anyone, children included; keep every answer suitable for all ages.\n"),
    }
    out.push_str("This is a live voice call: answer in short spoken sentences, with no lists, markdown or symbols.\n");
    if tools {
        out.push_str("If the user asks about their balance or remaining time, use the get_balance tool.\n");
    }
    // Last, nearest the conversation: a small model otherwise invents a name.
    out.push_str(&format!("Your name is {}; when asked your name, say it.\n", persona.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_carries_name_filters_and_audience() {
        let mut p = personas::Catalog::builtin().get("professor-ada").unwrap().clone();
        p.name = "Ada Lovelace".into();
        let text = system_prompt(&p, true);
        assert!(text.starts_with("You are Ada Lovelace.\n"), "{text}");
        assert!(text.contains("never produce profanity, sexual content, violence"), "{text}");
        assert!(text.contains("children included"), "{text}");
        assert!(text.contains("get_balance"), "{text}");
        assert!(text.ends_with("Your name is Ada Lovelace; when asked your name, say it.\n"), "{text}");
        assert!(!system_prompt(&p, false).contains("get_balance"), "no tool is named when none is offered");
        p.age_restriction = Some(18);
        assert!(system_prompt(&p, true).contains("aged 18 or over"));
    }
}
