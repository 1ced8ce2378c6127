//! One timed upload or download of the payload on one path, the AWS CLI's way: a single
//! request up to one part's size, else a multipart upload (or ranged GETs) over `streams`
//! connections taking parts from one queue. Every part's answer is checked against what was
//! sent (ETag = MD5, S3's SHA-256 checksum), and the whole object's composite checksum too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::cleanup::Cleanup;
use crate::progress::Progress;
use crate::s3::http::{Client, Peer};
use crate::s3::ops::{Ops, PartSums, xml_text};

/// The payload cut into parts, each with its sums (computed before any timing).
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) ranges: Vec<(usize, usize)>,
    pub(crate) sums: Vec<PartSums>,
    /// The whole object's sums (a single PUT's).
    pub(crate) whole: PartSums,
}

pub(crate) fn sums_of(bytes: &[u8]) -> PartSums {
    let b64 = base64::engine::general_purpose::STANDARD;
    let sha256: [u8; 32] = Sha256::digest(bytes).into();
    let md5 = <md5::Md5 as md5::Digest>::digest(bytes);
    PartSums {
        sha256,
        sha256_b64: b64.encode(sha256),
        md5_hex: md5.iter().map(|b| format!("{b:02x}")).collect(),
        md5_b64: b64.encode(md5),
    }
}

impl Parts {
    pub(crate) fn new(payload: &[u8], part_bytes: usize) -> Parts {
        let ranges: Vec<(usize, usize)> = (0..payload.len())
            .step_by(part_bytes.max(1))
            .map(|start| (start, (start + part_bytes).min(payload.len())))
            .collect();
        let sums = ranges
            .iter()
            .map(|&(start, end)| sums_of(&payload[start..end]))
            .collect();
        Parts {
            ranges,
            sums,
            whole: sums_of(payload),
        }
    }

    /// Whether the object goes up in one PUT (the AWS CLI: below its multipart threshold).
    pub(crate) fn single(&self) -> bool {
        self.ranges.len() <= 1
    }

    /// S3's checksum of a multipart object: SHA-256 of the parts' digests, `-N`.
    fn composite_sha256(&self) -> String {
        let mut hasher = Sha256::new();
        for sums in &self.sums {
            hasher.update(sums.sha256);
        }
        let digest: [u8; 32] = hasher.finalize().into();
        format!(
            "{}-{}",
            base64::engine::general_purpose::STANDARD.encode(digest),
            self.sums.len()
        )
    }

    /// S3's ETag of a multipart object with MD5 ETags: MD5 of the parts' MD5s, `-N`.
    fn composite_md5(&self) -> String {
        let mut all = Vec::with_capacity(16 * self.sums.len());
        for sums in &self.sums {
            for i in (0..sums.md5_hex.len()).step_by(2) {
                all.push(u8::from_str_radix(&sums.md5_hex[i..i + 2], 16).unwrap_or(0));
            }
        }
        let md5 = <md5::Md5 as md5::Digest>::digest(&all);
        let hex: String = md5.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}-{}", self.sums.len())
    }
}

/// What one timed transfer gave.
#[derive(Debug)]
pub(crate) struct Transfer {
    pub(crate) started: Instant,
    pub(crate) finished: Instant,
    /// Everything S3 answered matched what was sent (or, down, what was uploaded).
    pub(crate) intact: bool,
    /// Why not, when it did not.
    pub(crate) mismatch: Option<String>,
}

/// Shared by the connections of one transfer.
struct Shared<'a> {
    ops: &'a Ops,
    peer: &'a Peer,
    tls: &'a Arc<rustls::ClientConfig>,
    progress: &'a Progress,
}

/// An answer's ETag without quotes.
fn etag_of(response: &crate::s3::http::Response) -> Option<String> {
    response
        .header("etag")
        .map(|e| e.trim_matches('"').to_owned())
}

/// Checks one part's (or a single PUT's) answer against its sums; None when it matches.
/// S3 answers an MD5 ETag unless the object is encrypted with KMS or a customer key; it
/// answers the SHA-256 checksum when one was sent. At least one must match.
fn part_mismatch(response: &crate::s3::http::Response, sums: &PartSums) -> Option<String> {
    let mut checked = false;
    if let Some(checksum) = response.header("x-amz-checksum-sha256") {
        if checksum != sums.sha256_b64 {
            return Some(format!(
                "S3's SHA-256 {checksum} is not the sent {}",
                sums.sha256_b64
            ));
        }
        checked = true;
    }
    let encrypted = response
        .header("x-amz-server-side-encryption")
        .is_some_and(|v| v.starts_with("aws:kms"))
        || response
            .header("x-amz-server-side-encryption-customer-algorithm")
            .is_some();
    if !encrypted && let Some(etag) = etag_of(response) {
        if etag != sums.md5_hex {
            return Some(format!(
                "S3's ETag {etag} is not the sent MD5 {}",
                sums.md5_hex
            ));
        }
        checked = true;
    }
    (!checked).then(|| "S3 answered neither an MD5 ETag nor a checksum to compare".to_owned())
}

/// Uploads the payload to `key` on one path; an upload that fails is aborted (and so is one
/// interrupted: the abort is registered with `cleanup` while it is open).
#[allow(clippy::too_many_arguments)]
pub(crate) fn upload(
    ops: &Arc<Ops>,
    peer: &Peer,
    tls: &Arc<rustls::ClientConfig>,
    key: &str,
    payload: &[u8],
    parts: &Parts,
    streams: u32,
    progress: &Progress,
    cleanup: &Arc<Cleanup>,
) -> anyhow::Result<Transfer> {
    let shared = Shared {
        ops,
        peer,
        tls,
        progress,
    };
    let advance = |n| progress.advance(n);
    let mut client = Client::new(peer.clone(), Arc::clone(tls));
    if parts.single() {
        let started = Instant::now();
        let response = client.send(&ops.put_object(key, payload, &parts.whole), &advance)?;
        let finished = Instant::now();
        if !response.is_success() {
            return Err(ops.refusal(&format!("PUT {key}"), &response));
        }
        let mismatch = part_mismatch(&response, &parts.whole);
        return Ok(Transfer {
            started,
            finished,
            intact: mismatch.is_none(),
            mismatch,
        });
    }

    let started = Instant::now();
    let response = client.send(&ops.create_multipart(key), &|_| {})?;
    if !response.is_success() {
        return Err(ops.refusal(&format!("CreateMultipartUpload {key}"), &response));
    }
    let upload_id = xml_text(&String::from_utf8_lossy(&response.body), "UploadId")
        .ok_or_else(|| anyhow!("CreateMultipartUpload answered no UploadId"))?;
    let registered = format!("s3 multipart upload {key} {upload_id}");
    {
        let (ops, peer, tls, key, upload_id) = (
            Arc::clone(ops),
            peer.clone(),
            Arc::clone(tls),
            key.to_owned(),
            upload_id.clone(),
        );
        cleanup.track(registered.clone(), move || {
            abort(&ops, &peer, &tls, &key, &upload_id);
        });
    }
    let outcome = upload_parts(&shared, key, &upload_id, payload, parts, streams, client);
    let outcome = outcome.and_then(|(etags, client)| {
        complete(&shared, client, key, &upload_id, parts, &etags, started)
    });
    match outcome {
        Ok(transfer) => {
            cleanup.forget(&registered);
            Ok(transfer)
        }
        Err(error) => {
            cleanup.remove(&registered);
            Err(error)
        }
    }
}

/// How many times an abort is sent before giving up, and the pause between: parts still in
/// flight when it first arrives can make S3 (and moto) refuse it or keep their storage, and
/// S3's documentation asks for the abort to be repeated then.
const ABORT_TRIES: u32 = 5;
const ABORT_PAUSE: std::time::Duration = std::time::Duration::from_millis(300);

/// Aborts a multipart upload (best effort: a final failure is logged). Bounded: ABORT_TRIES.
pub(crate) fn abort(
    ops: &Ops,
    peer: &Peer,
    tls: &Arc<rustls::ClientConfig>,
    key: &str,
    upload_id: &str,
) {
    for attempt in 1..=ABORT_TRIES {
        let mut client = Client::new(peer.clone(), Arc::clone(tls));
        let failure = match client.send(&ops.abort_multipart(key, upload_id), &|_| {}) {
            // 404 NoSuchUpload: an earlier try went through.
            Ok(r) if r.is_success() || (attempt > 1 && r.status == 404) => return,
            Ok(r) => ops.refusal(&format!("aborting the upload of {key}"), &r),
            Err(e) => e.context(format!("aborting the upload of {key}")),
        };
        if attempt == ABORT_TRIES {
            tracing::warn!("{failure:#}");
        } else {
            tracing::debug!("{failure:#}; trying again");
            std::thread::sleep(ABORT_PAUSE);
        }
    }
}

type PartOutcome = (Vec<Option<String>>, Option<String>);

/// Sends every part over `streams` connections; returns the ETags (and a mismatch, if any)
/// and a client whose connection can send the completion.
fn upload_parts(
    shared: &Shared<'_>,
    key: &str,
    upload_id: &str,
    payload: &[u8],
    parts: &Parts,
    streams: u32,
    first: Client,
) -> anyhow::Result<(PartOutcome, Client)> {
    let next = AtomicUsize::new(0);
    let etags = Mutex::new(vec![None; parts.ranges.len()]);
    let mismatch: Mutex<Option<String>> = Mutex::new(None);
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let connections = (streams as usize).min(parts.ranges.len()).max(1);
    let mut clients: Vec<Client> = vec![first];
    for _ in 1..connections {
        clients.push(Client::new(shared.peer.clone(), Arc::clone(shared.tls)));
    }
    let clients = std::thread::scope(|scope| {
        let handles: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                let (next, etags, mismatch, failed) = (&next, &etags, &mismatch, &failed);
                scope.spawn(move || {
                    let advance = |n| shared.progress.advance(n);
                    // Bounded: each round takes a part off the queue or ends.
                    loop {
                        if failed.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(start, end)) = parts.ranges.get(i) else {
                            break;
                        };
                        let number = (i + 1) as u16;
                        let sums = &parts.sums[i];
                        let request = shared.ops.upload_part(
                            key,
                            upload_id,
                            number,
                            &payload[start..end],
                            sums,
                        );
                        let outcome = client.send(&request, &advance).and_then(|r| {
                            if r.is_success() {
                                Ok(r)
                            } else {
                                Err(shared.ops.refusal(&format!("part {number}"), &r))
                            }
                        });
                        match outcome {
                            Ok(response) => {
                                if let Some(why) = part_mismatch(&response, sums) {
                                    mismatch
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .get_or_insert(format!("part {number}: {why}"));
                                }
                                etags.lock().unwrap_or_else(|e| e.into_inner())[i] =
                                    etag_of(&response);
                            }
                            Err(error) => {
                                failed
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .get_or_insert(error);
                                break;
                            }
                        }
                    }
                    client
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .collect::<Vec<Client>>()
    });
    if let Some(error) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(error);
    }
    let client = clients
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("every connection's thread panicked"))?;
    Ok((
        (
            etags.into_inner().unwrap_or_else(|e| e.into_inner()),
            mismatch.into_inner().unwrap_or_else(|e| e.into_inner()),
        ),
        client,
    ))
}

/// CompleteMultipartUpload, then the object's checksum (or ETag) against the data's.
fn complete(
    shared: &Shared<'_>,
    mut client: Client,
    key: &str,
    upload_id: &str,
    parts: &Parts,
    (etags, mismatch): &PartOutcome,
    started: Instant,
) -> anyhow::Result<Transfer> {
    let list: Vec<(String, String)> = etags
        .iter()
        .zip(&parts.sums)
        .enumerate()
        .map(|(i, (etag, sums))| {
            etag.clone()
                .map(|e| (format!("\"{e}\""), sums.sha256_b64.clone()))
                .ok_or_else(|| anyhow!("part {} was answered without an ETag", i + 1))
        })
        .collect::<anyhow::Result<_>>()?;
    let (request, body) = shared.ops.complete_multipart(key, upload_id, &list);
    let request = crate::s3::http::Request {
        body: &body,
        ..request
    };
    let response = client.send(&request, &|_| {})?;
    let finished = Instant::now();
    let text = String::from_utf8_lossy(&response.body);
    // S3 may answer 200 and put the error in the body.
    if !response.is_success() || text.contains("<Error>") {
        return Err(shared
            .ops
            .refusal(&format!("CompleteMultipartUpload {key}"), &response));
    }
    let mut mismatch = mismatch.clone();
    if mismatch.is_none() {
        let checksum = xml_text(&text, "ChecksumSHA256");
        let etag = xml_text(&text, "ETag").map(|e| e.trim_matches('"').to_owned());
        let (want_sum, want_etag) = (parts.composite_sha256(), parts.composite_md5());
        mismatch = match (checksum, etag) {
            (Some(sum), _) if sum != want_sum => Some(format!(
                "the object's SHA-256 checksum {sum} is not the data's {want_sum}"
            )),
            (Some(_), _) => None,
            (None, Some(etag)) if etag.len() == want_etag.len() && etag != want_etag => Some(
                format!("the object's ETag {etag} is not the data's {want_etag}"),
            ),
            (None, Some(etag)) if etag == want_etag => None,
            _ => Some("S3 answered neither a checksum nor an MD5 ETag for the object".into()),
        };
    }
    Ok(Transfer {
        started,
        finished,
        intact: mismatch.is_none(),
        mismatch,
    })
}

/// Downloads `key` on one path (ranged GETs of each part over `streams` connections, one GET
/// for a single-part object) and checks every range's SHA-256 against the payload's.
pub(crate) fn download(
    ops: &Ops,
    peer: &Peer,
    tls: &Arc<rustls::ClientConfig>,
    key: &str,
    parts: &Parts,
    streams: u32,
    progress: &Progress,
) -> anyhow::Result<Transfer> {
    let next = AtomicUsize::new(0);
    let mismatch: Mutex<Option<String>> = Mutex::new(None);
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let connections = (streams as usize).min(parts.ranges.len()).max(1);
    let single = parts.single();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..connections {
            let (next, mismatch, failed) = (&next, &mismatch, &failed);
            scope.spawn(move || {
                let mut client = Client::new(peer.clone(), Arc::clone(tls));
                let advance = |n| progress.advance(n);
                loop {
                    if failed.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&range) = parts.ranges.get(i) else {
                        break;
                    };
                    let request = ops.get_range(key, (!single).then_some(range));
                    let outcome = client
                        .send(&request, &advance)
                        .context(format!("GET part {}", i + 1))
                        .and_then(|r| {
                            if r.is_success() {
                                Ok(r)
                            } else {
                                Err(ops.refusal(&format!("GET {key}"), &r))
                            }
                        });
                    match outcome {
                        Ok(response) => {
                            let got: [u8; 32] = Sha256::digest(&response.body).into();
                            if got != parts.sums[i].sha256 {
                                mismatch
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .get_or_insert(format!(
                                        "part {} ({} bytes) came back different from what was \
                                         uploaded",
                                        i + 1,
                                        response.body.len()
                                    ));
                            }
                        }
                        Err(error) => {
                            failed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(error);
                            break;
                        }
                    }
                }
            });
        }
    });
    let finished = Instant::now();
    if let Some(error) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(error);
    }
    let mismatch = mismatch.into_inner().unwrap_or_else(|e| e.into_inner());
    if next.load(Ordering::Relaxed) < parts.ranges.len() {
        bail!("not every part was downloaded");
    }
    Ok(Transfer {
        started,
        finished,
        intact: mismatch.is_none(),
        mismatch,
    })
}

/// Deletes an object (best effort: a failure is logged).
pub(crate) fn delete(ops: &Ops, peer: &Peer, tls: &Arc<rustls::ClientConfig>, key: &str) {
    let mut client = Client::new(peer.clone(), Arc::clone(tls));
    match client.send(&ops.delete_object(key), &|_| {}) {
        Ok(r) if r.is_success() => {}
        Ok(r) => tracing::warn!("{:#}", ops.refusal(&format!("deleting {key}"), &r)),
        Err(e) => tracing::warn!("deleting {key}: {e:#}"),
    }
}
