//! Rendering a [`Report`] for people and for CI systems.

use crate::finding::Report;

pub mod github;
pub mod human;
pub mod json;
pub mod junit;

/// Output formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `file:line: severity KF010 akv-name: message`, then a summary line.
    #[default]
    Human,
    /// One JSON object: summary, counts and findings.
    Json,
    /// JUnit XML (Jenkins `junit` step, GitLab, most CI dashboards).
    Junit,
    /// GitHub Actions workflow commands (`::error file=…,line=…::`), shown inline on pull requests.
    Github,
}

/// Renders a report in `format`. The text always ends with a newline.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Human => human::render(report),
        Format::Json => json::render(report),
        Format::Junit => junit::render(report),
        Format::Github => github::render(report),
    }
}

#[cfg(test)]
pub(crate) fn sample() -> Report {
    use crate::finding::{Finding, Gate, Rule, Severity, Stats};
    let f = |file: &str, line, severity, rule: Rule, message: &str| Finding {
        file: file.into(),
        line,
        severity,
        rule,
        rule_name: rule.name(),
        message: message.into(),
        object: Some("ExternalSecret netbox/a".into()),
    };
    Report {
        gate: Gate::Validate,
        findings: vec![
            f(
                "deploy/a.yaml",
                7,
                Severity::Error,
                Rule::AkvName,
                "spec.data[0].remoteRef.key: \"a_b\" is <bad> & 'odd'",
            ),
            f(
                "deploy/a.yaml",
                9,
                Severity::Warning,
                Rule::Layout,
                "100%, really:\nyes",
            ),
        ],
        files: vec!["deploy/a.yaml".into(), "deploy/b.yaml".into()],
        stats: Stats {
            files: 2,
            documents: 2,
            external_secrets: 2,
            references: 3,
            ..Stats::default()
        },
        path_prefix: String::new(),
    }
}
