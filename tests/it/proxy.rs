//! A fault-injecting HTTP proxy between OffsiteDB and SeaweedFS: it records every request, and
//! can answer a chosen request with a 503, cut the connection in the middle of a request or a
//! response, lose the reply to a request the server carried out, or make a listing say it goes
//! on with a given continuation token. It serves one request per connection (and says so with `Connection: close`), which
//! keeps it simple and makes every request visible.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What to do to a request that matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer `503 Slow Down` without forwarding.
    ServiceUnavailable,
    /// Close the connection without answering.
    Reset,
    /// Forward, then cut the response body after this many bytes.
    CutResponseAfter(usize),
    /// Forward (the server carries the request out), then close the connection without
    /// answering: a reply lost on the way back.
    DropResponse,
    /// Forward, then rewrite the ListObjectsV2 answer to say it is truncated and continues
    /// with this token.
    TruncatedListing(&'static str),
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

struct Rule {
    method: &'static str,
    target_contains: &'static str,
    fault: Fault,
    remaining: usize,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    rules: Vec<Rule>,
}

pub struct Proxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    /// A proxy on a free loopback port in front of `127.0.0.1:upstream`. It stops with the test.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, &st);
                });
            }
        });
        Proxy { port, state }
    }

    /// The next `times` requests with this method whose target contains `needle` get `fault`.
    pub fn inject(&self, method: &'static str, needle: &'static str, fault: Fault, times: usize) {
        self.state.lock().unwrap().rules.push(Rule {
            method,
            target_contains: needle,
            fault,
            remaining: times,
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A request or status line and its headers.
type Head = (String, Vec<(String, String)>);

fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Head>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok(Some((first.trim_end().to_string(), headers)))
}

fn content_length(headers: &[(String, String)]) -> usize {
    headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn serve(client: TcpStream, upstream: u16, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let Some((request_line, headers)) = read_head(&mut reader)? else {
        return Ok(());
    };
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();

    let fault = {
        let mut st = state.lock().unwrap();
        let fault = st
            .rules
            .iter_mut()
            .find(|r| r.remaining > 0 && r.method == method && target.contains(r.target_contains))
            .map(|r| {
                r.remaining -= 1;
                r.fault
            });
        st.seen.push(Seen {
            method: method.clone(),
            target: target.clone(),
            headers: headers.clone(),
        });
        fault
    };

    let mut body = vec![0u8; content_length(&headers)];
    match fault {
        Some(Fault::Reset) => {
            // Take part of the body, then hang up: a connection reset mid-request.
            let half = body.len() / 2;
            let _ = reader.read_exact(&mut body[..half]);
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::ServiceUnavailable) => {
            reader.read_exact(&mut body)?;
            let msg = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            write!(
                client,
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
                msg.len()
            )?;
            return Ok(());
        }
        _ => reader.read_exact(&mut body)?,
    }

    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    write!(up, "{request_line}\r\n")?;
    for (k, v) in &headers {
        if k != "connection" {
            write!(up, "{k}: {v}\r\n")?;
        }
    }
    write!(up, "connection: close\r\n\r\n")?;
    up.write_all(&body)?;

    let mut upr = BufReader::new(up);
    let Some((status_line, resp_headers)) = read_head(&mut upr)? else {
        return Ok(());
    };
    let mut rest = Vec::new();
    upr.read_to_end(&mut rest)?;
    match fault {
        Some(Fault::DropResponse) => {
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::TruncatedListing(token)) => rest = truncated_listing(&rest, token),
        _ => {}
    }
    write!(client, "{status_line}\r\n")?;
    for (k, v) in &resp_headers {
        if k == "content-length" {
            write!(client, "{k}: {}\r\n", rest.len())?;
        } else if k != "connection" {
            write!(client, "{k}: {v}\r\n")?;
        }
    }
    write!(client, "connection: close\r\n\r\n")?;
    match fault {
        Some(Fault::CutResponseAfter(n)) if n < rest.len() => {
            client.write_all(&rest[..n])?;
            let _ = client.shutdown(Shutdown::Both);
        }
        _ => client.write_all(&rest)?,
    }
    Ok(())
}

/// A ListObjectsV2 answer made to say "truncated, continue with `token`".
fn truncated_listing(body: &[u8], token: &str) -> Vec<u8> {
    let mut xml = String::from_utf8_lossy(body).into_owned();
    xml = xml.replace(
        "<IsTruncated>false</IsTruncated>",
        "<IsTruncated>true</IsTruncated>",
    );
    if let (Some(a), Some(b)) = (
        xml.find("<NextContinuationToken>"),
        xml.find("</NextContinuationToken>"),
    ) {
        xml.replace_range(a..b + "</NextContinuationToken>".len(), "");
    }
    let end = xml
        .rfind("</ListBucketResult>")
        .expect("a ListObjectsV2 answer");
    xml.insert_str(
        end,
        &format!("<NextContinuationToken>{token}</NextContinuationToken>"),
    );
    xml.into_bytes()
}
