//! `file:line: severity KF010 akv-name: message`, one finding a line, then the summary.

use crate::finding::Report;

/// Renders the human format.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        // One line per finding, whatever a message contains, so grep and editors can jump to it.
        let message = f.message.replace(['\n', '\r'], " ");
        out.push_str(&format!(
            "{}:{}: {} {}: {message}\n",
            f.file, f.line, f.severity, f.rule
        ));
    }
    out.push_str(&report.summary());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_line_per_finding_then_summary() {
        let text = crate::report::sample().render(crate::report::Format::Human);
        assert_eq!(
            text,
            "deploy/a.yaml:7: error KF010 akv-name: spec.data[0].remoteRef.key: \"a_b\" is <bad> & 'odd'\n\
             deploy/a.yaml:9: warning KF050 layout: 100%, really: yes\n\
             keyferry validate: 1 error, 1 warning (2 files, 2 ExternalSecrets, 3 references)\n"
        );
    }
}
