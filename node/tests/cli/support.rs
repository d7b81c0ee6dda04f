//! Running `starling` processes in tests: scratch directories, agents whose
//! start-up lines are parsed, guards that kill every process when a test ends (or
//! fails), and a minimal HTTP client for raw requests to the control API.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

/// Generous bound on waiting for anything a process prints.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

pub(crate) fn starling() -> Command {
    Command::new(env!("CARGO_BIN_EXE_starling"))
}

/// Runs `starling` to completion; kills it and fails the test if it takes longer
/// than [`WAIT`].
pub(crate) fn run(args: &[&str]) -> Output {
    let mut child = starling()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "starling {args:?} did not finish in {WAIT:?}:\n{}\n{}",
                text(&out.join().unwrap()),
                text(&err.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A directory removed when the test ends.
pub(crate) struct Scratch(pub(crate) PathBuf);

static SCRATCH: AtomicU32 = AtomicU32::new(0);

impl Scratch {
    pub(crate) fn new(name: &str) -> Scratch {
        let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("starling-cli-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// A new key file; returns its path and PeerId.
    pub(crate) fn key(&self, name: &str) -> (PathBuf, String) {
        let p = self.path(name);
        let out = run(&["keygen", "--out", p.to_str().unwrap()]);
        assert!(out.status.success(), "keygen: {}", text(&out.stderr));
        (p, text(&out.stdout).trim().to_string())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process whose output lines are collected; killed on drop.
pub(crate) struct Proc {
    pub(crate) child: Child,
    stdout: mpsc::Receiver<String>,
    pub(crate) seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    name: String,
}

impl Proc {
    pub(crate) fn spawn(name: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Proc {
            child,
            stdout: rx,
            seen: Vec::new(),
            stderr,
            name: name.to_string(),
        }
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for a stdout line that `pred` accepts; panics (with everything seen)
    /// if none comes in time or the process ends.
    pub(crate) fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "{}: no line {what} ({e:?}); stdout so far:\n{}\nstderr:\n{}",
                    self.name,
                    self.seen.join("\n"),
                    self.stderr()
                ),
            }
        }
    }

    /// Waits until stderr contains `needle`.
    pub(crate) fn wait_stderr(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{}: stderr never said {needle:?}:\n{}",
                self.name,
                self.stderr()
            );
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                assert!(
                    self.stderr().contains(needle),
                    "{}: exited ({status}) without saying {needle:?}:\n{}",
                    self.name,
                    self.stderr()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} ignored SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `starling agent` and what it printed on start.
pub(crate) struct Agent {
    pub(crate) proc: Proc,
    pub(crate) peer_id: String,
    pub(crate) listen: Vec<String>,
    /// `http://127.0.0.1:PORT`.
    pub(crate) api: String,
}

impl Agent {
    /// Starts an agent with these arguments (add `--listen`, `--control-api` …).
    pub(crate) fn start(name: &str, args: &[&str]) -> Agent {
        let mut cmd = starling();
        cmd.arg("agent").args(args).env_remove("RUST_LOG");
        let mut proc = Proc::spawn(name, cmd);
        let peer_id = proc.wait_line("peer-id", |l| l.starts_with("peer-id "))["peer-id ".len()..]
            .to_string();
        let mut listen = Vec::new();
        let api = loop {
            let line = proc.wait_line("listening/control-api", |l| {
                l.starts_with("listening ") || l.starts_with("control-api ")
            });
            if let Some(addr) = line.strip_prefix("listening ") {
                listen.push(addr.to_string());
            } else {
                let url = line["control-api ".len()..].split(' ').next().unwrap();
                break url.to_string();
            }
        };
        Agent {
            proc,
            peer_id,
            listen,
            api,
        }
    }

    /// A loopback agent with a key in `dir` and these extra arguments.
    pub(crate) fn local(dir: &Scratch, name: &str, extra: &[&str]) -> Agent {
        let (key, _) = dir.key(&format!("{name}.key"));
        let mut args = vec![
            "--key",
            key.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--control-api",
            "127.0.0.1:0",
            "--log-level",
            "info",
        ];
        args.extend_from_slice(extra);
        let data = dir.path(&format!("{name}-data"));
        let data = data.to_str().unwrap().to_string();
        args.push("--data-dir");
        args.push(&data);
        Agent::start(name, &args)
    }

    /// `host:port` of the control API.
    pub(crate) fn api_addr(&self) -> &str {
        self.api.trim_start_matches("http://")
    }

    /// Runs a client command against this agent's API.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--api", &self.api]);
        run(&all)
    }
}

/// Waits until `check` holds, asking again every 100 ms.
pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// The `error.code` of a JSON error answer.
    pub(crate) fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..pos]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&rest[pos + 2..pos + 2 + size]);
        rest = &rest[pos + 2 + size + 2..];
    }
    out
}

/// One raw HTTP/1.1 request. `body: None` sends headers only (with whatever
/// Content-Length `headers` declare).
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    if let Some(b) = body {
        // The server may answer (and close) before reading all of an oversize body.
        let _ = s.write_all(b);
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", text(&raw)));
    let head = text(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head,
        body: text(&body),
    }
}

pub(crate) fn json_post(addr: &str, path: &str, body: &str) -> Answer {
    http(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    )
}

pub(crate) fn get(addr: &str, path: &str) -> Answer {
    http(addr, "GET", path, &[], None)
}

/// Where a file of the repository is.
pub(crate) fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}
