//! One JSON object: `{"gate", "summary", "exitCode", "errors", "warnings", "stats", "files", "findings"}`.

use serde_json::json;

use crate::finding::Report;

/// Renders the JSON format (pretty-printed, newline-terminated).
pub fn render(report: &Report) -> String {
    let value = json!({
        "gate": report.gate,
        "summary": report.summary(),
        "exitCode": report.exit_status(),
        "errors": report.errors(),
        "warnings": report.warnings(),
        "stats": report.stats,
        "files": report.files,
        "findings": report.findings,
    });
    // Serializing a `serde_json::Value` cannot fail.
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn findings_carry_rule_id_and_name() {
        let v: serde_json::Value = serde_json::from_str(&super::render(&crate::report::sample())).unwrap();
        assert_eq!(v["gate"], "validate");
        assert_eq!(v["exitCode"], 1);
        assert_eq!(v["findings"][0]["rule"], "KF010");
        assert_eq!(v["findings"][0]["ruleName"], "akv-name");
        assert_eq!(v["findings"][0]["line"], 7);
        assert_eq!(v["findings"][1]["severity"], "warning");
        assert_eq!(v["stats"]["references"], 3);
    }
}
