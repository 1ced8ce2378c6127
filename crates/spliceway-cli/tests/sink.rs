//! `spliceway sink`: answers `{bytes} {sha256hex}\n` for each connection, several at once.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use spliceway_test_kit::{TEST_TIMEOUT, connect, generated, half_close, hash_answer, try_echo};

const EXE: &str = env!("CARGO_BIN_EXE_spliceway");

/// A `spliceway sink` on a free loopback port, killed on drop; its stderr lines arrive on
/// `lines`.
struct Sink {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl Sink {
    fn start(extra: &[&str]) -> Sink {
        let mut child = Command::new(EXE)
            .args(["sink", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning spliceway sink");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut sink = Sink {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            lines,
        };
        let line = sink.wait_for_line("listening on ");
        let addr = line.rsplit("listening on ").next().unwrap().trim();
        sink.addr = addr
            .parse()
            .unwrap_or_else(|_| panic!("address in {line:?}"));
        sink
    }

    /// The next stderr line containing `needle` (panics after 10 s).
    fn wait_for_line(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no stderr line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `data`, ends the stream, returns the answer line (the kit's exchange: write,
/// half-close, read to end of stream).
fn upload(addr: SocketAddr, data: &[u8]) -> String {
    let answer = try_echo(addr, data, TEST_TIMEOUT).expect("an upload to the sink");
    String::from_utf8(answer).expect("an answer line in ASCII")
}

/// The answer line the sink owes for `data`: the kit's count and SHA-256, and a newline.
fn expected(data: &[u8]) -> String {
    format!("{}\n", hash_answer(data))
}

#[test]
fn answers_count_and_hash_of_each_connection() {
    let sink = Sink::start(&[]);
    assert_eq!(
        upload(sink.addr, b""),
        "0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
    );
    assert_eq!(upload(sink.addr, b"hello"), expected(b"hello"));
    let big = generated(1, 6 * 1024 * 1024 + 13);
    assert_eq!(upload(sink.addr, &big), expected(&big));
}

#[test]
fn serves_several_connections_at_once() {
    let sink = Sink::start(&[]);
    // Open them all before sending anything, so they are served concurrently.
    let payloads: Vec<Vec<u8>> = (0..4).map(|i| generated(i + 10, 1 << 20)).collect();
    let mut streams: Vec<TcpStream> = payloads.iter().map(|_| connect(sink.addr)).collect();
    let answers: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .iter_mut()
            .zip(&payloads)
            .map(|(stream, data)| {
                scope.spawn(move || {
                    stream.write_all(data).unwrap();
                    half_close(stream);
                    let mut answer = String::new();
                    stream.read_to_string(&mut answer).unwrap();
                    answer
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (answer, data) in answers.iter().zip(&payloads) {
        assert_eq!(answer, &expected(data));
    }
}

#[test]
fn verbose_logs_each_connection() {
    let sink = Sink::start(&["-v"]);
    upload(sink.addr, b"twelve bytes");
    let line = sink.wait_for_line("12 bytes");
    let answer = hash_answer(b"twelve bytes");
    let (_, sha256) = answer.split_once(' ').unwrap();
    assert!(line.contains(sha256), "{line}");
}

#[test]
fn bad_listen_address_is_a_usage_error() {
    let out = Command::new(EXE)
        .args(["sink", "--listen", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// Reads one answer line byte by byte (the sink sends nothing else until the next part).
fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match stream.read(&mut byte).unwrap() {
            0 => break,
            _ => line.push(byte[0]),
        }
    }
    String::from_utf8(line).unwrap()
}

#[test]
fn parts_are_answered_one_by_one_and_a_trailing_part_at_end_of_stream() {
    let sink = Sink::start(&[]);
    let data = generated(7, 2 * 1000 + 300);
    let mut stream = connect(sink.addr);
    stream.write_all(b"SPLICEWAY-BENCH parts 1000\n").unwrap();
    for part in data.chunks(1000).take(2) {
        stream.write_all(part).unwrap();
        assert_eq!(read_line(&mut stream), expected(part));
    }
    stream.write_all(&data[2000..]).unwrap();
    half_close(&stream);
    assert_eq!(read_line(&mut stream), expected(&data[2000..]));
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "nothing after the last part's answer");

    // Whole parts only: no answer at end of stream beyond theirs. The hello line and the part
    // in one write: the sink must split them itself.
    let mut stream = connect(sink.addr);
    let mut first = b"SPLICEWAY-BENCH parts 1000\n".to_vec();
    first.extend_from_slice(&data[..1000]);
    stream.write_all(&first).unwrap();
    assert_eq!(read_line(&mut stream), expected(&data[..1000]));
    half_close(&stream);
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");

    // A part size that is not a number is refused: no answer.
    let mut answer = upload(sink.addr, b"SPLICEWAY-BENCH parts lots\n");
    answer.retain(|c| c != '\n');
    assert_eq!(answer, "");
}
