//! A few SVG elements written by hand (rectangles, lines, paths, text): all the bench's figures
//! need, without a plotting dependency.

use std::fmt::Write as _;

/// An SVG document being written, or a fragment of one ([`Svg::fragment`]) to append later.
#[derive(Debug)]
pub(crate) struct Svg {
    out: String,
}

/// Escapes text and attribute values (`&`, `<`, `>`, quotes).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

impl Svg {
    /// A document `width` by `height` on a white background, 12 px sans-serif text.
    pub(crate) fn new(width: f64, height: f64) -> Svg {
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n"
        );
        let _ = writeln!(
            out,
            "<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>"
        );
        Svg { out }
    }

    /// Elements without the document around them.
    pub(crate) fn fragment() -> Svg {
        Svg { out: String::new() }
    }

    /// Text at (x, y) with extra attributes (written as given: constants, not user text).
    pub(crate) fn text(&mut self, x: f64, y: f64, attributes: &str, text: &str) {
        let _ = writeln!(
            self.out,
            "<text x=\"{x:.1}\" y=\"{y:.1}\"{}{attributes}>{}</text>",
            if attributes.is_empty() { "" } else { " " },
            escape(text)
        );
    }

    /// A rectangle, with a tooltip (`<title>`) if given.
    pub(crate) fn rect(
        &mut self,
        x: f64,
        y: f64,
        width: f64,
        height: f64,
        attributes: &str,
        tip: Option<&str>,
    ) {
        let _ = write!(
            self.out,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"{height:.1}\" {attributes}"
        );
        match tip {
            Some(tip) => {
                let _ = writeln!(self.out, "><title>{}</title></rect>", escape(tip));
            }
            None => self.out.push_str("/>\n"),
        }
    }

    /// A line from (x1, y1) to (x2, y2).
    pub(crate) fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, attributes: &str) {
        let _ = writeln!(
            self.out,
            "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" {attributes}/>"
        );
    }

    /// A path of `d` commands.
    pub(crate) fn path(&mut self, d: &str, attributes: &str) {
        let _ = writeln!(self.out, "<path d=\"{d}\" {attributes}/>");
    }

    /// Appends a fragment's elements.
    pub(crate) fn append(&mut self, fragment: Svg) {
        self.out.push_str(&fragment.out);
    }

    /// The document, closed.
    pub(crate) fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_escaped_elements() {
        let mut svg = Svg::new(100.0, 50.0);
        svg.text(1.0, 2.0, "", "a < b & \"c\"");
        let mut bars = Svg::fragment();
        bars.rect(0.0, 0.0, 10.0, 5.0, "fill=\"red\"", Some("it's"));
        bars.line(0.0, 0.0, 1.0, 1.0, "stroke=\"#ddd\"");
        bars.path("M0 0H1", "fill=\"none\"");
        svg.append(bars);
        let out = svg.finish();
        assert!(out.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"100\""));
        assert!(out.contains("<text x=\"1.0\" y=\"2.0\">a &lt; b &amp; &quot;c&quot;</text>"));
        assert!(out.contains("<title>it&#x27;s</title></rect>"));
        assert!(out.ends_with("</svg>\n"));
        assert_eq!(out.matches('<').count(), out.matches('>').count());
    }
}
