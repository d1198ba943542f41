//! Email subjects and bodies, rendered by minijinja from built-in templates or the files the
//! configuration names. HTML templates escape every value automatically.

use minijinja::Environment;
use serde::Serialize;

use crate::config::EmailTemplateFiles;

const SUBJECT: &str = "Your export {{ query }} is ready ({{ request_id }})";
const TEXT: &str = "\
Hello,

your export {{ request_id }} ({{ query }}) is ready: {{ rows }} row{{ '' if rows == 1 else 's' }}, {{ archive_size }} zipped.

Download it here until {{ expires_at }}:
{{ url }}
{% if sha256 %}
SHA-256 of the zip: {{ sha256 }}
{% endif %}
The link works without signing in; anyone who has it can download the file.
";
const HTML: &str = r#"<!doctype html>
<html><body>
<p>Hello,</p>
<p>your export <b>{{ request_id }}</b> ({{ query }}) is ready: {{ rows }} row{{ '' if rows == 1 else 's' }}, {{ archive_size }} zipped.</p>
<p><a href="{{ url }}">Download {{ request_id }}.zip</a> (until {{ expires_at }}).</p>
{% if sha256 %}<p>SHA-256 of the zip: <code>{{ sha256 }}</code></p>{% endif %}
<p>The link works without signing in; anyone who has it can download the file.</p>
</body></html>
"#;
const FAILURE_SUBJECT: &str = "Your export {{ query }} failed ({{ request_id }})";
const FAILURE_TEXT: &str = "\
Hello,

your export {{ request_id }} ({{ query }}) could not be completed.

{{ reason }}

Reference: {{ request_id }}, error code {{ error_code }}.
";

/// What success templates can use.
#[derive(Debug, Serialize)]
pub struct ReadyContext<'a> {
    pub request_id: &'a str,
    pub query: &'a str,
    pub rows: u64,
    pub archive_bytes: u64,
    pub archive_size: String,
    pub url: &'a str,
    pub expires_at: String,
    /// SHA-256 of the zip (hex), to check the download against.
    pub sha256: &'a str,
}

/// What failure templates can use: a plain-words reason, never SQL or internals.
#[derive(Debug, Serialize)]
pub struct FailureContext<'a> {
    pub request_id: &'a str,
    pub query: &'a str,
    pub error_code: &'a str,
    pub reason: &'a str,
}

/// The loaded templates.
pub struct Templates {
    env: Environment<'static>,
}

/// A rendered email.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

impl Templates {
    /// Loads and checks every template (rendering each once with sample values).
    pub fn load(files: &EmailTemplateFiles) -> Result<Templates, String> {
        let mut env = Environment::new();
        let sources = [
            ("subject.txt", &files.subject, SUBJECT),
            ("body.txt", &files.text, TEXT),
            ("body.html", &files.html, HTML),
            (
                "failure_subject.txt",
                &files.failure_subject,
                FAILURE_SUBJECT,
            ),
            ("failure_body.txt", &files.failure_text, FAILURE_TEXT),
        ];
        for (name, file, builtin) in sources {
            let source = match file {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| format!("email template {path}: {e}"))?,
                None => builtin.to_string(),
            };
            env.add_template_owned(name, source)
                .map_err(|e| format!("email template {name}: {e}"))?;
        }
        let t = Templates { env };
        t.ready(&ReadyContext {
            request_id: "r",
            query: "q",
            rows: 1,
            archive_bytes: 1,
            archive_size: "1 B".into(),
            url: "https://example.com/",
            expires_at: "2030-01-01T00:00:00Z".into(),
            sha256: "ab",
        })?;
        t.failure(&FailureContext {
            request_id: "r",
            query: "q",
            error_code: "e",
            reason: "r",
        })?;
        Ok(t)
    }

    fn render(&self, name: &str, ctx: impl Serialize) -> Result<String, String> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(minijinja::value::Serde(&ctx)))
            .map_err(|e| format!("email template {name}: {e}"))
    }

    pub fn ready(&self, ctx: &ReadyContext<'_>) -> Result<Rendered, String> {
        Ok(Rendered {
            subject: single_line(&self.render("subject.txt", ctx)?),
            text: self.render("body.txt", ctx)?,
            html: Some(self.render("body.html", ctx)?),
        })
    }

    pub fn failure(&self, ctx: &FailureContext<'_>) -> Result<Rendered, String> {
        Ok(Rendered {
            subject: single_line(&self.render("failure_subject.txt", ctx)?),
            text: self.render("failure_body.txt", ctx)?,
            html: None,
        })
    }
}

/// A subject is one line: a template must not be able to inject headers.
fn single_line(s: &str) -> String {
    s.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `1536` → `1.5 KiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates_render_and_escape_html() {
        let t = Templates::load(&EmailTemplateFiles::default()).unwrap();
        let r = t
            .ready(&ReadyContext {
                request_id: "r-1",
                query: "q<script>",
                rows: 3,
                archive_bytes: 2048,
                archive_size: human_size(2048),
                url: "https://x.example/a?b=1&c=2",
                expires_at: "2030-01-01T00:00:00Z".into(),
                sha256: "0123abcd",
            })
            .unwrap();
        assert!(
            r.text.contains("SHA-256 of the zip: 0123abcd\n"),
            "{}",
            r.text
        );
        assert_eq!(r.subject, "Your export q<script> is ready (r-1)");
        assert!(r.text.contains("3 rows, 2.0 KiB zipped"));
        assert!(r.text.contains("https://x.example/a?b=1&c=2\n"));
        // minijinja also escapes `/` as `&#x2f;`, which an HTML attribute decodes back.
        let html = r.html.unwrap().replace("&#x2f;", "/");
        assert!(html.contains("q&lt;script&gt;"));
        assert!(html.contains("href=\"https://x.example/a?b=1&amp;c=2\""));
    }

    #[test]
    fn subjects_stay_on_one_line() {
        assert_eq!(
            single_line("a\r\nBcc: x@example.com\n"),
            "a Bcc: x@example.com"
        );
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(10), "10 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
