//! What the server answers, as HTTP/1.1 bytes: the routes (`/metrics`, `/healthz`, `/readyz`,
//! `/`) and the error statuses of a request it will not serve.
//!
//! The bodies and statuses of the routes are those the endpoint has always had (load
//! balancers and probes match on them): see `docs/operations.md`.

use std::io::Write as _;

use spliceway::RelayHandle;

use super::exposition;
use super::request::{HeadError, Method, Request};

/// Content type of the Prometheus text exposition format.
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of every other answer.
const TEXT: &str = "text/plain; charset=utf-8";

/// An answer before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: TEXT,
            body: body.as_bytes().to_vec(),
        }
    }

    /// The answer to a request.
    pub fn to(request: &Request, handle: &RelayHandle) -> Response {
        if !matches!(request.method, Method::Get | Method::Head) {
            return Response::text(405, "method not allowed\n");
        }
        let running = handle.is_healthy();
        let stopping = handle.is_stopping();
        match request.path.as_str() {
            "/metrics" => Response {
                status: 200,
                content_type: PROMETHEUS,
                body: exposition::render(handle).into_bytes(),
            },
            "/healthz" if running => Response::text(200, "ok\n"),
            "/healthz" => Response::text(503, "not running\n"),
            "/readyz" if running && !stopping => Response::text(200, "ready\n"),
            "/readyz" if stopping => Response::text(503, "draining\n"),
            "/readyz" => Response::text(503, "not running\n"),
            "/" => Response::text(200, "spliceway: metrics are at /metrics\n"),
            _ => Response::text(404, "not found\n"),
        }
    }

    /// The answer to a head that cannot be served.
    pub fn refusal(error: HeadError) -> Response {
        match error {
            HeadError::TooLarge => Response::text(431, "request head too large\n"),
            HeadError::Malformed(why) => Response::text(400, &format!("bad request: {why}\n")),
            HeadError::Version => Response::text(505, "HTTP version not supported\n"),
        }
    }

    /// The answer to a head that did not arrive in time.
    pub fn timeout() -> Response {
        Response::text(408, "request timeout\n")
    }

    /// Appends the status line, headers and (unless `head_only`) body to `out`. `close`: the
    /// server closes the connection once this is written (`Connection: close`); otherwise it
    /// says `Connection: keep-alive`, which an HTTP/1.0 client needs to hear to reuse the
    /// connection rather than wait for its end.
    pub fn write_to(&self, out: &mut Vec<u8>, head_only: bool, close: bool) {
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: \
             no-store\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.extend_from_slice(b"Allow: GET, HEAD\r\n");
        }
        out.extend_from_slice(if close {
            b"Connection: close\r\n"
        } else {
            b"Connection: keep-alive\r\n"
        });
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The reason phrase of the statuses this server sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_carry_the_length_of_the_body_they_leave_out() {
        let response = Response::text(200, "ok\n");
        let mut full = Vec::new();
        response.write_to(&mut full, false, false);
        assert_eq!(
            String::from_utf8(full).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\
             Cache-Control: no-store\r\nConnection: keep-alive\r\n\r\nok\n"
        );
        let mut head = Vec::new();
        response.write_to(&mut head, true, true);
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.ends_with(
                "Content-Length: 3\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
            ),
            "{head}"
        );
    }

    #[test]
    fn refusals_have_their_statuses() {
        assert_eq!(Response::refusal(HeadError::TooLarge).status, 431);
        assert_eq!(Response::refusal(HeadError::Malformed("x")).status, 400);
        assert_eq!(Response::refusal(HeadError::Version).status, 505);
        let mut out = Vec::new();
        Response::text(405, "method not allowed\n").write_to(&mut out, false, false);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("Allow: GET, HEAD\r\n")
        );
    }
}
