//! S3's operations as signed requests (rusty-s3 presigns them: SigV4 in the query, the
//! checksum headers among the signed ones) and their answers read into typed outcomes, S3's
//! error codes into the one-line messages a user acts on.

use std::time::Duration;

use anyhow::anyhow;
use rusty_s3::{Bucket, Credentials, S3Action as _};

use crate::s3::http::{Request, Response};

/// How long a signed request stays valid: longer than any part takes.
const SIGNED_FOR: Duration = Duration::from_secs(3600);

/// The bucket and the keys that sign requests to it.
#[derive(Debug)]
pub(crate) struct Ops {
    pub(crate) bucket: Bucket,
    pub(crate) credentials: Credentials,
    pub(crate) region: String,
}

/// What one part (or a single PUT) carries so that S3 can verify it, and we its answer.
#[derive(Debug, Clone)]
pub(crate) struct PartSums {
    /// SHA-256, raw (for the composite checksum) and base64 (the header).
    pub(crate) sha256: [u8; 32],
    pub(crate) sha256_b64: String,
    /// MD5 as hex (the ETag S3 answers for an unencrypted or SSE-S3 part) and base64
    /// (`Content-MD5`).
    pub(crate) md5_hex: String,
    pub(crate) md5_b64: String,
}

fn target(url: &url::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

fn checksum_headers(sums: &PartSums) -> [(String, String); 2] {
    [
        ("content-md5".to_owned(), sums.md5_b64.clone()),
        ("x-amz-checksum-sha256".to_owned(), sums.sha256_b64.clone()),
    ]
}

impl Ops {
    fn creds(&self) -> Option<&Credentials> {
        Some(&self.credentials)
    }

    /// A cheap signed request that tells whether the bucket exists, is in this region and
    /// the keys are good (ListObjectsV2 of one key under the prefix: it answers with an
    /// error code, where HEAD answers bare statuses).
    pub(crate) fn probe(&self, prefix: &str) -> Request<'static> {
        let mut action = self.bucket.list_objects_v2(self.creds());
        action.with_prefix(prefix);
        action.with_max_keys(1);
        let url = action.sign(SIGNED_FOR);
        get(target(&url), Vec::new())
    }

    pub(crate) fn put_object<'a>(&self, key: &str, body: &'a [u8], sums: &PartSums) -> Request<'a> {
        let mut action = self.bucket.put_object(self.creds(), key);
        for (name, value) in checksum_headers(sums) {
            action.headers_mut().insert(name, value);
        }
        let url = action.sign(SIGNED_FOR);
        Request {
            method: "PUT",
            target: target(&url),
            headers: checksum_headers(sums).to_vec(),
            body,
        }
    }

    pub(crate) fn create_multipart(&self, key: &str) -> Request<'static> {
        let mut action = self.bucket.create_multipart_upload(self.creds(), key);
        action
            .headers_mut()
            .insert("x-amz-checksum-algorithm", "SHA256");
        let url = action.sign(SIGNED_FOR);
        Request {
            method: "POST",
            target: target(&url),
            headers: vec![("x-amz-checksum-algorithm".into(), "SHA256".into())],
            body: &[],
        }
    }

    pub(crate) fn upload_part<'a>(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        body: &'a [u8],
        sums: &PartSums,
    ) -> Request<'a> {
        let mut action = self
            .bucket
            .upload_part(self.creds(), key, number, upload_id);
        for (name, value) in checksum_headers(sums) {
            action.headers_mut().insert(name, value);
        }
        let url = action.sign(SIGNED_FOR);
        Request {
            method: "PUT",
            target: target(&url),
            headers: checksum_headers(sums).to_vec(),
            body,
        }
    }

    /// CompleteMultipartUpload with each part's ETag and checksum (S3 wants the checksums
    /// back when the upload was created with one). The body is ours: rusty-s3's has no
    /// checksums; it is signed like every request (the payload is UNSIGNED-PAYLOAD).
    pub(crate) fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(String, String)],
    ) -> (Request<'static>, Vec<u8>) {
        let action = self.bucket.complete_multipart_upload(
            self.creds(),
            key,
            upload_id,
            parts.iter().map(|(etag, _)| etag.as_str()),
        );
        let url = action.sign(SIGNED_FOR);
        let mut body = String::from("<CompleteMultipartUpload>");
        for (i, (etag, sha256)) in parts.iter().enumerate() {
            body += &format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag><ChecksumSHA256>{}</ChecksumSHA256></Part>",
                i + 1,
                xml_escape(etag),
                sha256
            );
        }
        body += "</CompleteMultipartUpload>";
        (
            Request {
                method: "POST",
                target: target(&url),
                headers: Vec::new(),
                body: &[],
            },
            body.into_bytes(),
        )
    }

    pub(crate) fn abort_multipart(&self, key: &str, upload_id: &str) -> Request<'static> {
        let action = self
            .bucket
            .abort_multipart_upload(self.creds(), key, upload_id);
        let url = action.sign(SIGNED_FOR);
        Request {
            method: "DELETE",
            target: target(&url),
            headers: Vec::new(),
            body: &[],
        }
    }

    /// GET of bytes `start..end` (None: the whole object).
    pub(crate) fn get_range(&self, key: &str, range: Option<(usize, usize)>) -> Request<'static> {
        let action = self.bucket.get_object(self.creds(), key);
        let url = action.sign(SIGNED_FOR);
        let headers = match range {
            Some((start, end)) => vec![("range".into(), format!("bytes={start}-{}", end - 1))],
            None => Vec::new(),
        };
        get(target(&url), headers)
    }

    pub(crate) fn delete_object(&self, key: &str) -> Request<'static> {
        let action = self.bucket.delete_object(self.creds(), key);
        let url = action.sign(SIGNED_FOR);
        Request {
            method: "DELETE",
            target: target(&url),
            headers: Vec::new(),
            body: &[],
        }
    }

    /// An error for a refused request: S3's code and message, and what to do about it.
    pub(crate) fn refusal(&self, what: &str, response: &Response) -> anyhow::Error {
        let body = String::from_utf8_lossy(&response.body);
        let code = xml_text(&body, "Code").unwrap_or_else(|| format!("HTTP {}", response.status));
        let message = xml_text(&body, "Message").unwrap_or_default();
        let bucket = self.bucket.name();
        let region = response
            .header("x-amz-bucket-region")
            .map(str::to_owned)
            .or_else(|| xml_text(&body, "Region"));
        let hint = match code.as_str() {
            "NoSuchBucket" => {
                return crate::error::usage(anyhow!(
                    "bucket {bucket} does not exist ({what}: NoSuchBucket)"
                ));
            }
            "PermanentRedirect"
            | "AuthorizationHeaderMalformed"
            | "IllegalLocationConstraintException"
                if region.as_deref().is_some_and(|r| r != self.region) =>
            {
                return crate::error::usage(anyhow!(
                    "bucket {bucket} is in region {}, not {}: give --region {}",
                    region.as_deref().unwrap_or_default(),
                    self.region,
                    region.as_deref().unwrap_or_default()
                ));
            }
            "InvalidAccessKeyId" => "S3 does not know the access key: check the credentials",
            "SignatureDoesNotMatch" => {
                "the secret key does not match the access key: check the credentials"
            }
            "ExpiredToken" | "InvalidToken" => {
                "the session token has expired or is invalid: renew the credentials"
            }
            "AccessDenied" => {
                "access denied: the credentials lack a permission the bench needs (docs/s3-benchmark.md has the policy)"
            }
            "BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch" => {
                "S3 refused the data: its checksum did not match (corrupted on the way)"
            }
            "RequestTimeTooSkewed" => {
                "this host's clock is too far off for S3 to accept signatures"
            }
            _ => "",
        };
        let message = if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        };
        if hint.is_empty() {
            anyhow!("{what}: S3 answered {code}{message}")
        } else {
            anyhow!("{what}: {hint} ({code}{message})")
        }
    }
}

fn get(target: String, headers: Vec<(String, String)>) -> Request<'static> {
    Request {
        method: "GET",
        target,
        headers,
        body: &[],
    }
}

/// The text of the first `<tag>...</tag>` in a small XML answer.
pub(crate) fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(
        xml[start..end]
            .replace("&quot;", "\"")
            .replace("&#34;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_texts() {
        let xml = "<Error><Code>NoSuchBucket</Code><ETag>&quot;ab&quot;</ETag></Error>";
        assert_eq!(xml_text(xml, "Code").as_deref(), Some("NoSuchBucket"));
        assert_eq!(xml_text(xml, "ETag").as_deref(), Some("\"ab\""));
        assert_eq!(xml_text(xml, "Message"), None);
    }
}
