//! The client side of the control API, for the CLI commands: JSON requests over
//! HTTP/1.1 (one connection per request) and a reader of the Server-Sent Events
//! stream.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, body::Incoming, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::{NodeError, Result};

/// Largest JSON answer read.
const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// Longest line of the event stream.
const MAX_EVENT_LINE: usize = 4 * 1024 * 1024;

/// A control API at a base URL.
#[derive(Debug, Clone)]
pub struct ApiClient {
    url: String,
    authority: String,
    prefix: String,
    token: Option<String>,
}

impl ApiClient {
    /// A client of the API at `url` (`http://HOST:PORT[/prefix]`).
    pub fn new(url: &str, token: Option<String>) -> Result<ApiClient> {
        let bad = |reason: &str| NodeError::Http {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if url.starts_with("https://") {
            return Err(bad(
                "https is not supported: the control API speaks plain HTTP (reach a remote one through an SSH tunnel or a TLS proxy)",
            ));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("expected a URL like http://127.0.0.1:7401"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("the URL has no host"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(ApiClient {
            url: url.trim_end_matches('/').to_string(),
            authority,
            prefix: prefix.to_string(),
            token,
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn http_err(&self, reason: impl std::fmt::Display) -> NodeError {
        NodeError::Http {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<hyper::Response<Incoming>> {
        let stream = TcpStream::connect(&self.authority).await.map_err(|e| {
            self.http_err(format!(
                "cannot connect to {}: {e} (is `starling agent` running there?)",
                self.authority
            ))
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http_err(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(header::HOST, &self.authority)
            .header(header::ACCEPT, "application/json, text/event-stream");
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let bytes = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes)).map_err(|e| self.http_err(e))?;
        sender.send_request(req).await.map_err(|e| self.http_err(e))
    }

    async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| self.http_err(e))?
            .to_bytes();
        let value: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let message = value
                .as_ref()
                .and_then(|v| v.pointer("/error/message"))
                .and_then(Value::as_str)
                .map_or_else(
                    || String::from_utf8_lossy(&bytes).into_owned(),
                    str::to_string,
                );
            return Err(NodeError::Api {
                status: status.as_u16(),
                message,
            });
        }
        value.ok_or_else(|| self.http_err("the answer is not JSON"))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value> {
        self.json(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.json(Method::POST, path, Some(body)).await
    }

    /// Opens the event stream (`GET /v1/events`); its first event is `ready`.
    pub async fn events(&self) -> Result<EventStream> {
        let resp = self.send(Method::GET, "/v1/events", None).await?;
        if resp.status() != StatusCode::OK {
            let status = resp.status().as_u16();
            let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(NodeError::Api { status, message });
        }
        Ok(EventStream {
            body: resp.into_body(),
            buf: Vec::new(),
            kind: String::new(),
            data: String::new(),
            url: self.url.clone(),
        })
    }
}

/// A Server-Sent Events stream of `(kind, JSON)` events.
pub struct EventStream {
    body: Incoming,
    buf: Vec<u8>,
    kind: String,
    data: String,
    url: String,
}

impl EventStream {
    /// The next event; `None` when the agent closed the stream.
    pub async fn next(&mut self) -> Result<Option<(String, Value)>> {
        loop {
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if self.data.is_empty() {
                        continue;
                    }
                    let kind = std::mem::take(&mut self.kind);
                    let data = std::mem::take(&mut self.data);
                    let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    let kind = if kind.is_empty() {
                        "message".to_string()
                    } else {
                        kind
                    };
                    return Ok(Some((kind, value)));
                }
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => self.kind = value.to_string(),
                    "data" => {
                        if !self.data.is_empty() {
                            self.data.push('\n');
                        }
                        self.data.push_str(value);
                    }
                    _ => {}
                }
            }
            if self.buf.len() > MAX_EVENT_LINE {
                return Err(NodeError::Http {
                    url: self.url.clone(),
                    reason: "an event stream line is over 4 MiB".into(),
                });
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    return Err(NodeError::Http {
                        url: self.url.clone(),
                        reason: format!("event stream broke: {e}"),
                    });
                }
                None => return Ok(None),
            }
        }
    }
}
