//! JUnit XML for Jenkins' `junit` step: one test case per file examined, failing (one `<failure>`
//! listing every error of the file) when it has errors; warnings go to the case's `<system-out>`. Clean files show up as
//! passing cases, so the trend graph counts what was checked, not only what broke.

use std::collections::BTreeMap;

use crate::finding::{Finding, Report, Severity};

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            // Other control characters are not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Renders the JUnit format.
pub fn render(report: &Report) -> String {
    let mut by_file: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for f in &report.files {
        by_file.entry(f.as_str()).or_default();
    }
    for f in &report.findings {
        by_file.entry(f.file.as_str()).or_default().push(f);
    }
    let failing = by_file
        .values()
        .filter(|fs| fs.iter().any(|f| f.severity == Severity::Error))
        .count();
    let suite = format!("keyferry {}", report.gate);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"{suite}\" tests=\"{}\" failures=\"{failing}\" errors=\"0\">\n",
        by_file.len()
    ));
    out.push_str(&format!(
        "  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{failing}\" errors=\"0\" skipped=\"0\">\n",
        by_file.len()
    ));
    out.push_str(&format!(
        "    <properties><property name=\"summary\" value=\"{}\"/></properties>\n",
        escape(&report.summary())
    ));
    for (file, findings) in &by_file {
        let classname = format!("keyferry.{}", report.gate);
        out.push_str(&format!(
            "    <testcase classname=\"{classname}\" name=\"{}\"",
            escape(file)
        ));
        if findings.is_empty() {
            out.push_str("/>\n");
            continue;
        }
        out.push_str(">\n");
        // JUnit allows one <failure> per test case (Jenkins reads only the first), so every error of
        // the file goes into one, each on its own line.
        let line = |f: &Finding| format!("{}:{}: {} {}: {}", f.file, f.line, f.severity, f.rule, f.message);
        let errors: Vec<&&Finding> = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .collect();
        if let Some(first) = errors.first() {
            let message = match errors.len() {
                1 => first.message.clone(),
                n => format!("{n} errors; first: {}", first.message),
            };
            let body: Vec<String> = errors.iter().map(|f| escape(&line(f))).collect();
            out.push_str(&format!(
                "      <failure message=\"{}\" type=\"{}\">{}</failure>\n",
                escape(&message),
                first.rule.id(),
                body.join("&#10;")
            ));
        }
        let warnings: String = findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .map(|f| format!("{}&#10;", escape(&line(f))))
            .collect();
        if !warnings.is_empty() {
            out.push_str(&format!("      <system-out>{warnings}</system-out>\n"));
        }
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_per_file_with_escaped_failures() {
        let xml = render(&crate::report::sample());
        assert!(
            xml.contains("<testsuite name=\"keyferry validate\" tests=\"2\" failures=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains("<testcase classname=\"keyferry.validate\" name=\"deploy/b.yaml\"/>"),
            "{xml}"
        );
        assert!(xml.contains("type=\"KF010\""));
        assert!(xml.contains("&lt;bad&gt; &amp; &apos;odd&apos;"));
        assert!(
            xml.contains(
                "<system-out>deploy/a.yaml:9: warning KF050 layout: 100%, really:&#10;yes&#10;</system-out>"
            ),
            "{xml}"
        );
        assert_eq!(xml.matches("<testcase").count(), 2);
    }

    #[test]
    fn escapes_control_characters() {
        assert_eq!(escape("a\u{1}b\"c"), "a b&quot;c");
    }
}
