//! The answers a CONNECT route gives, as bytes: each is one complete HTTP/1.1 response.

use std::fmt;

/// What the relay answers a CONNECT request. Each answer is counted
/// (`spliceway_http_connect_answers_total{status}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Answer {
    /// 200: connected to the target; relaying from here on.
    Established,
    /// 400: a malformed request, one longer than the limit (8 KiB), not a `CONNECT`, or not
    /// complete within the route's request timeout.
    BadRequest,
    /// 403: the target is not in `connect_allow`, or every address it resolved to is outside
    /// `upstream_allow` or refused by the address policy (or is the relay itself).
    Forbidden,
    /// 502: the target did not resolve, or refused or reset the connection.
    BadGateway,
    /// 504: resolving or connecting took longer than the connect timeout.
    GatewayTimeout,
}

impl Answer {
    /// Every answer, in the order of their status codes.
    pub const ALL: [Answer; 5] = [
        Answer::Established,
        Answer::BadRequest,
        Answer::Forbidden,
        Answer::BadGateway,
        Answer::GatewayTimeout,
    ];

    /// The status code.
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            Answer::Established => 200,
            Answer::BadRequest => 400,
            Answer::Forbidden => 403,
            Answer::BadGateway => 502,
            Answer::GatewayTimeout => 504,
        }
    }

    /// The position of this answer in [`Answer::ALL`] (for arrays of counters).
    #[must_use]
    pub fn index(self) -> usize {
        match self {
            Answer::Established => 0,
            Answer::BadRequest => 1,
            Answer::Forbidden => 2,
            Answer::BadGateway => 3,
            Answer::GatewayTimeout => 4,
        }
    }

    /// The whole response. Refusals say `Connection: close` and carry no body: the relay
    /// closes once it is sent.
    #[must_use]
    pub fn response(self) -> &'static [u8] {
        match self {
            Answer::Established => b"HTTP/1.1 200 Connection established\r\n\r\n",
            Answer::BadRequest => {
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Answer::Forbidden => {
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Answer::BadGateway => {
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Answer::GatewayTimeout => {
                b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_response_is_one_complete_response_with_its_status() {
        for (i, answer) in Answer::ALL.into_iter().enumerate() {
            assert_eq!(answer.index(), i);
            let mut headers = [httparse::EMPTY_HEADER; 4];
            let mut response = httparse::Response::new(&mut headers);
            let parsed = response.parse(answer.response()).unwrap();
            assert_eq!(parsed, httparse::Status::Complete(answer.response().len()));
            assert_eq!(response.code, Some(answer.status()));
        }
    }
}
