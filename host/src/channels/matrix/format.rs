//! Formatted messages: the bots write Markdown, Matrix shows HTML
//! (`org.matrix.custom.html`) beside the plain body.

use pulldown_cmark::{html, Event, Parser};

/// The HTML of `text`'s Markdown, or `None` when it is plain text (one
/// paragraph with no formatting). Raw HTML in the text is shown as text,
/// never passed through.
pub fn markdown_html(text: &str) -> Option<String> {
    let events = Parser::new(text).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        other => other,
    });
    let mut out = String::new();
    html::push_html(&mut out, events);
    let plain = format!("<p>{}</p>\n", escape(text));
    (out != plain).then(|| out.trim_end().to_owned())
}

fn escape(text: &str) -> String {
    let mut out = String::new();
    html::push_html(&mut out, std::iter::once(Event::Text(text.into())));
    out
}

#[cfg(test)]
mod tests {
    use super::markdown_html;

    #[test]
    fn markdown_becomes_html_and_plain_text_stays_plain() {
        assert_eq!(markdown_html("hello there"), None);
        assert_eq!(
            markdown_html("**Ticket #4** is open").as_deref(),
            Some("<p><strong>Ticket #4</strong> is open</p>")
        );
    }

    #[test]
    fn raw_html_is_escaped() {
        let html = markdown_html("*a* <script>x</script>").unwrap();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
    }
}
