//! GitHub Actions workflow commands: `::error file=F,line=L,title=KF010 akv-name::message`. GitHub
//! shows them on the pull request's diff; the summary line is printed plainly for the log.

use crate::finding::{Report, Severity};

/// Escapes a command's message (`%`, CR and LF).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Escapes a command property (also `:` and `,`, which delimit properties).
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Renders the GitHub format.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        let file = if f.file.starts_with('/') {
            f.file.clone()
        } else {
            format!("{}{}", report.path_prefix, f.file)
        };
        let level = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        out.push_str(&format!(
            "::{level} file={},line={},title={}::{}\n",
            escape_property(&file),
            f.line,
            escape_property(&f.rule.to_string()),
            escape_data(&f.message)
        ));
    }
    out.push_str(&report.summary());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn annotations_are_escaped() {
        let text = super::render(&crate::report::sample());
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines[0],
            "::error file=deploy/a.yaml,line=7,title=KF010 akv-name::spec.data[0].remoteRef.key: \"a_b\" is <bad> & 'odd'"
        );
        assert_eq!(
            lines[1],
            "::warning file=deploy/a.yaml,line=9,title=KF050 layout::100%25, really:%0Ayes"
        );
        assert!(lines[2].starts_with("keyferry validate: 1 error, 1 warning"));
    }

    #[test]
    fn paths_are_from_the_repository_top() {
        let mut report = crate::report::sample();
        report.path_prefix = "platform/".into();
        assert!(super::render(&report).starts_with("::error file=platform/deploy/a.yaml,line=7,"));
    }
}
