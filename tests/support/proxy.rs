//! A fault-injecting HTTP proxy between `kubeanon` and moto's server.
//!
//! For each request it asks the test's plan what to do: forward it, answer
//! `400 ThrottlingException`, answer a 5xx, hold it past the client's
//! timeout, forward it and cut the response off half way, or close the
//! connection without answering. Nothing else
//! is changed, except operations the test answers itself
//! ([`Proxy::answer`]: an emulator's missing Insights states, for one). It records every request (arrival time, operation, fault)
//! so a test can count calls and measure the request rate.
//!
//! REST requests (S3: no `X-Amz-Target`) have their own plan, called with
//! `METHOD /path?query` as the target and an index counting them; it runs
//! in the proxy before the request goes on, so a plan can make another
//! writer change an object between a client's read and its write.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Forward,
    Throttle,
    Status(u16),
    /// Wait this long, then forward (the client has given up by then).
    Delay(Duration),
    /// Forward, but send only half of the response and close.
    CutResponse,
    /// Answer with this status, error type and message.
    Reject(u16, &'static str, &'static str),
    /// Read the request, then close the connection without a word (a
    /// pooled keep-alive connection the server dropped).
    CloseBeforeAnswer,
    /// Forward it (the server acts on it), then close the connection
    /// without the answer: the client cannot know it happened.
    ForwardThenClose,
    /// Answer with an S3 (XML) error: status and code.
    S3Error(u16, &'static str),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    /// The operation, from `X-Amz-Target` (e.g. `Logs_20140328.FilterLogEvents`),
    /// or `METHOD /path?query` for a REST request (S3).
    pub target: String,
    /// A REST request (no `X-Amz-Target`).
    pub rest: bool,
    pub fault: Fault,
    /// Who asked where: `ACCESS_KEY_ID/REGION/SERVICE` from the SigV4
    /// credential scope (a role's assumed keys name its account).
    pub scope: String,
    /// The request's body (JSON), as text.
    pub body: String,
}

type Plan = dyn FnMut(usize, &str) -> Fault + Send;

pub struct Proxy {
    pub endpoint: String,
    log: Arc<Mutex<Vec<Request>>>,
    plan: Arc<Mutex<Box<Plan>>>,
    denied: Arc<Mutex<Vec<String>>>,
    answers: Answers,
    rest_plan: Arc<Mutex<Box<Plan>>>,
}

/// Operations the proxy answers itself: (target suffix, 200 body).
type Answers = Arc<Mutex<Vec<(String, String)>>>;

impl Proxy {
    /// Starts a proxy to `upstream` (`http://host:port`) on a free port.
    pub fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let plan: Arc<Mutex<Box<Plan>>> = Arc::new(Mutex::new(Box::new(|_, _| Fault::Forward)));
        let rest_plan: Arc<Mutex<Box<Plan>>> =
            Arc::new(Mutex::new(Box::new(|_, _| Fault::Forward)));
        let denied: Arc<Mutex<Vec<String>>> = Arc::default();
        let answers: Answers = Arc::default();
        let shared = Shared {
            log: log.clone(),
            plan: plan.clone(),
            rest_plan: rest_plan.clone(),
            denied: denied.clone(),
            answers: answers.clone(),
        };
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (shared, up) = (shared.clone(), upstream.clone());
                std::thread::spawn(move || serve(conn, &up, &shared));
            }
        });
        Proxy {
            endpoint,
            log,
            plan,
            denied,
            answers,
            rest_plan,
        }
    }

    /// From now on, STS refuses to let anyone assume a role in `account`
    /// (a trust policy that does not trust the caller).
    pub fn deny_assume_role(&self, account: &str) {
        self.denied.lock().unwrap().push(account.to_string());
    }

    /// Answers every following request whose operation ends with
    /// `target_suffix` (e.g. `GetQueryResults`) with 200 and `body`,
    /// without asking upstream.
    pub fn answer(&self, target_suffix: &str, body: &str) {
        self.answers
            .lock()
            .unwrap()
            .push((target_suffix.to_string(), body.to_string()));
    }

    /// Sets what happens to each following REST (S3) request:
    /// `plan(index, "METHOD /path?query")`, index counting REST requests
    /// from 0.
    pub fn set_rest_plan(&self, plan: impl FnMut(usize, &str) -> Fault + Send + 'static) {
        *self.rest_plan.lock().unwrap() = Box::new(plan);
    }

    /// Sets what happens to each following request: `plan(index, target)`,
    /// where index counts FilterLogEvents requests from 0.
    pub fn set_plan(&self, plan: impl FnMut(usize, &str) -> Fault + Send + 'static) {
        *self.plan.lock().unwrap() = Box::new(plan);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }

    /// The most FilterLogEvents requests that arrived in any one-second
    /// window [t, t + 1 s).
    pub fn max_per_second(&self) -> usize {
        let times: Vec<Instant> = self
            .requests()
            .iter()
            .filter(|r| r.target.ends_with("FilterLogEvents"))
            .map(|r| r.at)
            .collect();
        let mut best = 0;
        for (i, t) in times.iter().enumerate() {
            let n = times[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
                .count();
            best = best.max(n);
        }
        best
    }
}

/// What the connection threads share with the proxy.
#[derive(Clone)]
struct Shared {
    log: Arc<Mutex<Vec<Request>>>,
    plan: Arc<Mutex<Box<Plan>>>,
    rest_plan: Arc<Mutex<Box<Plan>>>,
    denied: Arc<Mutex<Vec<String>>>,
    answers: Answers,
}

fn serve(client: TcpStream, upstream: &str, shared: &Shared) {
    let Shared {
        log,
        plan,
        rest_plan,
        denied,
        answers,
    } = shared;
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    while let Some((head, body)) = read_request(&mut reader) {
        let target = header(&head, "x-amz-target").unwrap_or_else(|| {
            // The request line: `PUT /bucket/key?x-id=PutObject HTTP/1.1`.
            let line = head.lines().next().unwrap_or_default();
            line.rsplit_once(' ').map_or(line, |(l, _)| l).to_string()
        });
        let rest = header(&head, "x-amz-target").is_none();
        let scope = credential_scope(&head);
        let body_text = String::from_utf8_lossy(&body);
        if body_text.contains("Action=AssumeRole")
            && denied
                .lock()
                .unwrap()
                .iter()
                .any(|a| body_text.contains(&format!("iam%3A%3A{a}%3A")))
        {
            log.lock().unwrap().push(Request {
                at: Instant::now(),
                target: "AssumeRole".into(),
                rest,
                fault: Fault::Reject(403, "AccessDenied", "not trusted"),
                scope,
                body: body_text.clone().into_owned(),
            });
            let body = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
                        <Message>not authorized to perform sts:AssumeRole</Message></Error>\
                        <RequestId>injected</RequestId></ErrorResponse>";
            let answer = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if client.write_all(answer.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let answer = answers
            .lock()
            .unwrap()
            .iter()
            .find(|(suffix, _)| target.ends_with(suffix.as_str()))
            .map(|(_, body)| body.clone());
        let fault = {
            let mut log = log.lock().unwrap();
            let fault = if rest {
                let index = log.iter().filter(|r| r.rest).count();
                (rest_plan.lock().unwrap())(index, &target)
            } else if target.ends_with("FilterLogEvents") {
                let index = log
                    .iter()
                    .filter(|r| r.target.ends_with("FilterLogEvents"))
                    .count();
                (plan.lock().unwrap())(index, &target)
            } else {
                Fault::Forward
            };
            log.push(Request {
                at: Instant::now(),
                target: target.clone(),
                rest,
                fault,
                scope,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            fault
        };
        if let Some(answer) = answer {
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nx-amzn-RequestId: answered\r\n\r\n{answer}",
                answer.len()
            );
            if client.write_all(response.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let ok = match fault {
            Fault::Forward => {
                forward(&head, &body, upstream).is_some_and(|r| client.write_all(&r).is_ok())
            }
            Fault::Throttle => client
                .write_all(&error(400, "ThrottlingException", "Rate exceeded"))
                .is_ok(),
            Fault::Status(code) => {
                let kind = if code == 503 {
                    "ServiceUnavailableException"
                } else {
                    "InternalFailure"
                };
                client.write_all(&error(code, kind, "injected")).is_ok()
            }
            Fault::Delay(d) => {
                std::thread::sleep(d);
                forward(&head, &body, upstream).is_some_and(|r| client.write_all(&r).is_ok())
            }
            Fault::CloseBeforeAnswer => false,
            Fault::ForwardThenClose => {
                let _ = forward(&head, &body, upstream);
                false
            }
            Fault::S3Error(status, code) => client.write_all(&s3_error(status, code)).is_ok(),
            Fault::Reject(status, kind, message) => {
                client.write_all(&error(status, kind, message)).is_ok()
            }
            Fault::CutResponse => {
                if let Some(r) = forward(&head, &body, upstream) {
                    let _ = client.write_all(&r[..r.len() / 2]);
                }
                false
            }
        };
        if !ok {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// One HTTP/1.1 request with a Content-Length body; None at end of stream.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// `AKID/REGION/SERVICE` of `Authorization: AWS4-HMAC-SHA256
/// Credential=AKID/DATE/REGION/SERVICE/aws4_request, ...`.
fn credential_scope(head: &str) -> String {
    let auth = header(head, "authorization").unwrap_or_default();
    let Some(cred) = auth
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split(',').next())
    else {
        return String::new();
    };
    let parts: Vec<&str> = cred.split('/').collect();
    match parts.as_slice() {
        [akid, _date, region, service, ..] => format!("{akid}/{region}/{service}"),
        _ => String::new(),
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Sends the request upstream on a fresh connection and returns the whole
/// response, rewritten to close nothing on the client side.
fn forward(head: &str, body: &[u8], upstream: &str) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(upstream).ok()?;
    let head: String = head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:") && !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect();
    up.write_all(head.as_bytes()).ok()?;
    up.write_all(b"Connection: close\r\n\r\n").ok()?;
    up.write_all(body).ok()?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).ok()?;
    // Upstream closes after one response; tell the client the connection
    // stays usable so that it keeps one connection like against AWS.
    let text_end = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&response[..text_end]).replace("Connection: close\r\n", "");
    let mut out = head.into_bytes();
    out.extend_from_slice(&response[text_end..]);
    Some(out)
}

fn error(status: u16, kind: &str, message: &str) -> Vec<u8> {
    let body = format!(r#"{{"__type":"{kind}","message":"{message}"}}"#);
    format!(
        "HTTP/1.1 {status} Injected\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nx-amzn-RequestId: injected\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn s3_error(status: u16, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected</Message><RequestId>injected</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: injected\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
