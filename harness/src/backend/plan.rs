//! What a backend would do, as data (`--plan`): steps shared by the matrix, then each cell's steps in order.

/// One step of a plan: what, and the details a reviewer checks (commands, objects, values).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlanStep {
    pub what: String,
    pub detail: String,
}

impl PlanStep {
    pub fn new(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// A backend's plan for a matrix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackendPlan {
    pub backend: String,
    /// Why this backend (for `--backend auto`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen_because: Option<String>,
    /// Once per matrix, before any cell.
    pub shared: Vec<PlanStep>,
    /// Per cell (`scenario@version`), in order.
    pub cells: Vec<(String, Vec<PlanStep>)>,
}

impl BackendPlan {
    pub fn new(backend: &str) -> Self {
        Self {
            backend: backend.to_string(),
            chosen_because: None,
            shared: Vec::new(),
            cells: Vec::new(),
        }
    }

    /// The plan for a person: numbered steps, details indented (multi-line details, e.g. YAML, kept whole).
    pub fn to_text(&self) -> String {
        let mut out = format!("backend: {}\n", self.backend);
        if let Some(why) = &self.chosen_because {
            out.push_str(&format!("  chosen because: {why}\n"));
        }
        let mut section = |title: &str, steps: &[PlanStep]| {
            out.push_str(&format!("\n{title}\n"));
            for (i, s) in steps.iter().enumerate() {
                let mut lines = s.detail.lines();
                out.push_str(&format!(
                    "  {}. {}: {}\n",
                    i + 1,
                    s.what,
                    lines.next().unwrap_or("")
                ));
                for l in lines {
                    out.push_str(&format!("       {l}\n"));
                }
            }
        };
        section("once per matrix:", &self.shared);
        for (label, steps) in &self.cells {
            section(&format!("cell {label}:"), steps);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_numbers_steps_per_section_and_keeps_multi_line_details() {
        let mut p = BackendPlan::new("kind");
        p.chosen_because = Some("docker, kind, kubectl and helm answer".into());
        p.shared
            .push(PlanStep::new("cluster", "kind create cluster"));
        p.cells.push((
            "seed@2.15.0".into(),
            vec![PlanStep::new("apply", "---\nkind: Namespace\n")],
        ));
        assert_eq!(
            p.to_text(),
            "backend: kind\n  chosen because: docker, kind, kubectl and helm answer\n\nonce per matrix:\n  1. \
             cluster: kind create cluster\n\ncell seed@2.15.0:\n  1. apply: ---\n       kind: Namespace\n"
        );
    }
}
